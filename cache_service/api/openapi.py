"""OpenAPI 3.1 generated from the route table and the wire models, so it cannot drift."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ..protocol import models as m
from .handlers import RECORD_MEDIA_TYPE, single_record_field
from .routes import PARAM_SCHEMAS, ROUTES

_PARAM = re.compile(r"\{(\w+)(?::[^{}]*(?:\{[^{}]*\}[^{}]*)*)?\}")


def _openapi_path(path: str) -> tuple[str, list[str]]:
    names: list[str] = []

    def strip(match: re.Match[str]) -> str:
        names.append(match.group(1))
        return "{" + match.group(1) + "}"

    return _PARAM.sub(strip, path), names


@cache
def openapi_document() -> dict[str, Any]:
    models: set[type[BaseModel]] = {m.Problem}
    for route in ROUTES:
        models.update(x for x in (route.body, *route.responses.values()) if x is not None)
    keyed, schema = models_json_schema(
        [(model, "validation") for model in sorted(models, key=lambda x: x.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    refs = {model: keyed[(model, "validation")]["$ref"] for model in models}

    problem = {
        "application/problem+json": {"schema": {"$ref": refs[m.Problem]}},
        # Refused by aiohttp's HTTP parser before any route is matched (a request line or
        # header field over 8190 bytes, over 128 header fields, malformed HTTP): it answers
        # in plain text itself and closes the connection.
        "text/plain": {"schema": {"type": "string"}},
    }
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        path, names = _openapi_path(route.path)
        op: dict[str, Any] = {"operationId": route.name, "summary": route.summary}
        params = [
            {"name": n, "in": "path", "required": True, "schema": PARAM_SCHEMAS[n]} for n in names
        ]
        if route.query is not None:
            for name, fld in route.query.model_fields.items():
                params.append(
                    {
                        "name": name,
                        "in": "query",
                        "required": fld.is_required(),
                        "schema": route.query.model_json_schema()["properties"][name],
                    }
                )
        if params:
            op["parameters"] = params
        if route.body is not None:
            content: dict[str, Any] = {"application/json": {"schema": {"$ref": refs[route.body]}}}
            if single_record_field(route.body) is not None:
                content[RECORD_MEDIA_TYPE] = {"schema": {"type": "string", "format": "binary"}}
            op["requestBody"] = {"required": True, "content": content}
        responses: dict[str, Any] = {}
        for status, model in route.responses.items():
            if model is None:
                responses[str(status)] = {"description": "done"}
            else:
                responses[str(status)] = {
                    "description": "ok",
                    "content": {"application/json": {"schema": {"$ref": refs[model]}}},
                }
        if not route.responses:
            responses["200"] = {"description": "ok"}
        responses["4XX"] = {
            "description": "refused: problem+json; plain text only when the request is not "
            "HTTP this node parses (too long a request line or header, too many headers)",
            "content": problem,
        }
        if not route.public:
            op["security"] = [{"httpMessageSignature": []}]
            responses["421"] = {
                "description": "wrong_node: the request is signed for another node (its "
                "signature's tag names another node id); sign it for this one, as "
                "GET /v1/node shows it",
                "content": {"application/problem+json": problem["application/problem+json"]},
            }
        op["responses"] = responses
        paths.setdefault(path, {})[route.method.lower()] = op

    return {
        "openapi": "3.1.0",
        "info": {"title": "statecache node", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {
                "httpMessageSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Signature",
                    "description": "RFC 9421 with Ed25519, statecache signature profile 2: "
                    'Signature-Input ends with tag="statecache/2;node=<node id hex>", the id '
                    "GET /v1/node shows; see docs/API.md and cache_service/protocol/httpsig.py",
                }
            },
        },
    }

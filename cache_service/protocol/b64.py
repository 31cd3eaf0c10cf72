"""Strict base64url (RFC 4648 §5, no padding) fields for pydantic models.

pydantic's own base64 types accept padding, mixed alphabets and stray characters; here a
field has exactly one accepted text form, its length is bounded before decoding, and a
Python `bytes` value (as the SDK builds models) is taken as the raw value. Use it as
`Annotated[bytes, Base64Url(max_bytes)]`.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

__all__ = ["Base64Url", "decode_b64url", "encode_b64url"]

_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def encode_b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _max_chars(n: int) -> int:
    return (n * 4 + 2) // 3


def decode_b64url(text: str, *, max_bytes: int) -> bytes:
    if len(text) > _max_chars(max_bytes) or len(text) % 4 == 1:
        raise ValueError("base64url value too long or of impossible length")
    if not _ALPHABET.fullmatch(text):
        raise ValueError("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not unpadded base64url") from exc
    if encode_b64url(data) != text:
        raise ValueError("non-canonical base64url")
    return data


@dataclass(frozen=True)
class Base64Url:
    max_bytes: int
    min_bytes: int = 0

    def _parse(self, value: object) -> bytes:
        if isinstance(value, bytes):
            data = value
        elif isinstance(value, str):
            data = decode_b64url(value, max_bytes=self.max_bytes)
        else:
            raise ValueError("expected a base64url string")
        if not self.min_bytes <= len(data) <= self.max_bytes:
            raise ValueError(f"expected {self.min_bytes} to {self.max_bytes} bytes")
        return data

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            self._parse,
            serialization=core_schema.plain_serializer_function_ser_schema(
                encode_b64url, return_schema=core_schema.str_schema()
            ),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "contentEncoding": "base64url",
            "pattern": "^[A-Za-z0-9_-]*$",
            "minLength": _max_chars(self.min_bytes),
            "maxLength": _max_chars(self.max_bytes),
        }

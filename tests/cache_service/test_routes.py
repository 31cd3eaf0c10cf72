"""Every route not marked public refuses a request that is not signed (a 401 also shows
the sample path matched its route: an unmatched one would be a 404)."""

from __future__ import annotations

import re
import secrets

import pytest

from cache_service.api.middleware import PUBLIC_ROUTES
from cache_service.api.routes import ROUTES, Route
from tests.cache_service.conftest import Node, Tenant, assert_problem, new_account

PRIVATE = [r for r in ROUTES if not r.public]
PUBLIC = [r for r in ROUTES if r.public]


def sample_params(account_id: str) -> dict[str, str]:
    return {
        "account_id": account_id,
        "device_id": secrets.token_hex(16),
        "label": "account",
        "key_epoch": "0",
        "group_id": "Z3JvdXA",
        "kind": "group_state",
    }


def concrete(node: Node, route: Route, account_id: str) -> str:
    names = re.findall(r"\{([a-z_]+):", route.path)
    params = sample_params(account_id)
    resource = node.app.router[route.name]
    return str(resource.url_for(**{n: params[n] for n in names}))


def test_public_routes_are_the_ones_the_middleware_lets_through() -> None:
    assert {r.name for r in PUBLIC} == set(PUBLIC_ROUTES)
    assert all("{account_id" in r.path for r in PRIVATE)
    assert len({r.name for r in ROUTES}) == len(ROUTES)


@pytest.mark.parametrize("route", PRIVATE, ids=lambda r: r.name)
async def test_unsigned_request_is_refused(tenant: Tenant, route: Route) -> None:
    node = tenant.node
    for account_id in (tenant.account.id_hex, secrets.token_hex(32)):
        path = concrete(node, route, account_id)
        body = b"{}" if route.body is not None else b""
        resp = await node.send(route.method, path, body=body)
        assert_problem(resp, 401, "unauthenticated")
        # a signature from no known device is no better
        stranger = new_account(tenant.now).admin
        resp = await node.send(route.method, path, body=body, device=stranger)
        assert_problem(resp, 401, "unauthenticated")


@pytest.mark.parametrize("route", PUBLIC, ids=lambda r: r.name)
async def test_public_routes_answer_unsigned(tenant: Tenant, route: Route) -> None:
    path = concrete(tenant.node, route, tenant.account.id_hex)
    body = b"{}" if route.body is not None else b""
    resp = await tenant.node.send(route.method, path, body=body)
    assert resp.status != 401
    assert resp.status < 500

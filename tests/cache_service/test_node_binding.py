"""Signature profile 2: every signed request is bound to one node, and nonces outlive the
requests they guard.

The `tag` parameter (`statecache/2;node=<node id>`) names the node a request is for. A
request one node received, sent unchanged to another node of the deployment (where the
same account and devices are registered, so it would otherwise be accepted), is refused
there with 421 `wrong_node`, on every signed route of the route table. The old profile
(no tag), unknown profiles and other component orders are refused as `unauthenticated`.
A claimed nonce lives as long as its request is acceptable.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

import pre
from cache_service.api.middleware import PUBLIC_ROUTES
from cache_service.api.routes import ROUTES, Route
from cache_service.embedded_redis import EmbeddedRedis
from cache_service.protocol.httpsig import CURRENT, SignatureProfile, sign_request_headers
from tests.cache_service.conftest import (
    Device,
    Node,
    RawResponse,
    StartNode,
    Tenant,
    assert_problem,
    make_tenant,
    signed_headers,
)
from tests.cache_service.test_operability import metric
from tests.cache_service.test_routes import concrete

SIGNED = [r for r in ROUTES if r.name not in PUBLIC_ROUTES]
Rewrite = Callable[[str, str], str]  # (Signature-Input, node id) -> a changed one
# Answers that would mean the request's signature or binding was not accepted, or that
# it was refused before authentication (so that its signature was never looked at).
NOT_AUTHENTICATED = {
    "wrong_node", "unauthenticated", "replayed", "clock_skew",
    "unsupported_media_type", "too_large", "rate_limited", "method_not_allowed",
}  # fmt: skip


def snapshots_path(tenant: Tenant) -> str:
    return f"/v1/accounts/{tenant.account.id_hex}/snapshots"


def not_refused_for_its_signature(resp: RawResponse, what: str) -> None:
    """Authenticated: it may still fail for what it asks (400 on a sample body, 404 on a
    sample id), but not for its signature or binding, and never with a 5xx."""
    assert resp.status < 500, (what, resp.status, resp.body[:300])
    if resp.status >= 400:
        assert resp.json()["code"] not in NOT_AUTHENTICATED, (what, resp.body[:300])


async def two_nodes(start_node: StartNode) -> tuple[Node, Node, Tenant]:
    """Nodes A and B of one deployment: their own keys, data directories and Redis
    databases; the same account, with the same devices, registered on both."""
    a = await start_node()
    b = await start_node(db=1)
    assert a.node_id != b.node_id
    tenant = await make_tenant(a)
    account = tenant.account
    await b.client().register_account(account.record, account.admin.cert)
    await b.client(account, account.admin).put_device(tenant.member.cert)
    return a, b, tenant


def sample_request(node: Node, route: Route, tenant: Tenant) -> tuple[str, bytes]:
    """A path of `route` in the tenant's account and a body of the route's shape."""
    return concrete(node, route, tenant.account.id_hex), b"{}" if route.body is not None else b""


def sign(
    device: Device, route: Route, path: str, body: bytes, node: Node, for_node: str
) -> dict[str, str]:
    headers = signed_headers(
        device.secrets, route.method, path, body=body, created=node.clock(), node_id=for_node
    )
    if body:
        headers["Content-Type"] = "application/json"
    return headers


async def test_a_request_for_one_node_is_refused_by_another_on_every_signed_route(
    start_node: StartNode,
) -> None:
    a, b, tenant = await two_nodes(start_node)
    admin = tenant.account.admin
    covered: set[str] = set()
    for route in SIGNED:
        path, body = sample_request(a, route, tenant)
        for_a = sign(admin, route, path, body, a, a.node_id)

        # exactly what A would receive, sent to B
        replayed = await b.send(route.method, path, body=body, headers=for_a)
        problem = assert_problem(replayed, 421, "wrong_node")
        assert a.node_id in problem["detail"] and b.node_id in problem["detail"], problem
        # ... and to A, whose it is: not refused for its signature or binding
        not_refused_for_its_signature(
            await a.send(route.method, path, body=body, headers=for_a), f"{route.name} at A"
        )
        # B accepts the same request signed for B: the refusal was the binding alone
        for_b = sign(admin, route, path, body, b, b.node_id)
        not_refused_for_its_signature(
            await b.send(route.method, path, body=body, headers=for_b), f"{route.name} at B"
        )
        covered.add(route.name)

    assert covered == {r.name for r in ROUTES} - PUBLIC_ROUTES
    assert covered == {r.name for r in ROUTES if not r.public}
    text = (await b.send("GET", "/metrics")).body.decode()
    assert metric(text, "statecache_auth_rejections_total", code="wrong_node") == len(SIGNED)


async def test_rebinding_a_request_to_another_node_breaks_its_signature(
    start_node: StartNode,
) -> None:
    a, b, tenant = await two_nodes(start_node)
    path = snapshots_path(tenant)
    headers = signed_headers(
        tenant.member.secrets, "GET", path, created=a.clock(), node_id=a.node_id
    )
    headers["Signature-Input"] = headers["Signature-Input"].replace(a.node_id, b.node_id)
    assert_problem(await b.send("GET", path, headers=headers), 401, "unauthenticated")


async def test_wrong_node_says_nothing_of_the_account(start_node: StartNode) -> None:
    """Refused before any lookup: the same answer for a registered and an unknown account
    (and for a known and an unknown device)."""
    a, b, tenant = await two_nodes(start_node)
    stranger = secrets.token_hex(32)
    answers = []
    for account_id, device in (
        (tenant.account.id_hex, tenant.member),
        (stranger, tenant.member),
        (tenant.account.id_hex, tenant.account.device(a.clock())),  # never certified on B
    ):
        path = f"/v1/accounts/{account_id}/snapshots"
        headers = signed_headers(device.secrets, "GET", path, created=a.clock(), node_id=a.node_id)
        resp = await b.send("GET", path, headers=headers)
        answers.append(assert_problem(resp, 421, "wrong_node"))
    assert all(x == answers[0] for x in answers), answers


# profiles


def profile1_headers(device: Device, method: str, path: str, *, created: float) -> dict[str, str]:
    """A correctly signed request of signature profile 1: no `tag`, no node."""
    digest = pre.content_digest(b"")
    params = (
        f'("@method" "@path" "@query" "content-digest");created={int(created)}'
        f';keyid="{device.id_hex}";nonce="{secrets.token_urlsafe(18)}";alg="ed25519"'
    )
    base = "\n".join(
        [
            f'"@method": {method}',
            f'"@path": {path}',
            '"@query": ?',
            f'"content-digest": {digest}',
            f'"@signature-params": {params}',
        ]
    ).encode()
    signature = device.secrets.sign_request(base)
    device.cert.verify_request(base, signature)  # a valid profile-1 signature
    return {
        "Content-Digest": digest,
        "Signature-Input": "sig1=" + params,
        "Signature": "sig1=:" + base64.b64encode(signature).decode() + ":",
    }


async def test_profile_1_is_refused_with_a_message_saying_so(tenant: Tenant) -> None:
    node, path = tenant.node, snapshots_path(tenant)
    headers = profile1_headers(tenant.member, "GET", path, created=node.clock())
    problem = assert_problem(await node.send("GET", path, headers=headers), 401, "unauthenticated")
    assert "profile 1" in problem["detail"], problem
    assert "no longer accepted" in problem["detail"], problem
    # the same device signing with the current profile is fine
    assert (await node.send("GET", path, device=tenant.member)).status == 200


def headers_with_profile(tenant: Tenant, profile: SignatureProfile, path: str) -> dict[str, str]:
    node = tenant.node
    return sign_request_headers(
        method="GET",
        path=path,
        query="",
        content_digest=pre.content_digest(b""),
        keyid=tenant.member.id_hex,
        created=int(node.clock()),
        nonce=secrets.token_urlsafe(18),
        node_id=node.node_id,
        sign=tenant.member.secrets.sign_request,
        profile=profile,
    )


@pytest.mark.parametrize("version", [0, 1, 3, 9, 999])
async def test_an_unknown_profile_version_is_refused(tenant: Tenant, version: int) -> None:
    path = snapshots_path(tenant)
    headers = headers_with_profile(tenant, SignatureProfile(version, CURRENT.components), path)
    assert f'tag="statecache/{version};node={tenant.node.node_id}"' in headers["Signature-Input"]
    problem = assert_problem(
        await tenant.node.send("GET", path, headers=headers), 401, "unauthenticated"
    )
    assert f"profile {version}" in problem["detail"], problem


@pytest.mark.parametrize(
    "components",
    [
        ("@path", "@method", "@query", "content-digest"),
        ("content-digest", "@query", "@path", "@method"),
        ("@method", "@path", "content-digest", "@query"),
        ("@method", "@path", "@query"),
        ("@method", "@path", "content-digest"),
    ],
    ids=lambda c: "-".join(x.strip("@") for x in c),
)
async def test_components_in_another_order_or_missing_are_refused(
    tenant: Tenant, components: tuple[str, ...]
) -> None:
    """Validly signed over its own component list, but not the profile's."""
    path = snapshots_path(tenant)
    headers = headers_with_profile(tenant, SignatureProfile(2, components), path)
    assert_problem(await tenant.node.send("GET", path, headers=headers), 401, "unauthenticated")


@pytest.mark.parametrize(
    "rewrite",
    [
        pytest.param(lambda s, n: s.replace(f';tag="statecache/2;node={n}"', ""), id="no-tag"),
        pytest.param(
            lambda s, n: s.replace(';alg="ed25519";tag', ";tag").replace(
                f'{n}"', f'{n}";alg="ed25519"'
            ),
            id="tag-not-last",
        ),
        pytest.param(lambda s, n: s.replace(n, n.upper()), id="node-id-uppercase"),
        pytest.param(lambda s, n: s.replace(n, n[:-2]), id="node-id-short"),
        pytest.param(lambda s, n: s.replace("statecache/2;", "statecache/2; "), id="spaced"),
        pytest.param(lambda s, n: s.replace(";node=", ";nodes="), id="not-node"),
    ],
)
async def test_a_malformed_tag_is_refused(tenant: Tenant, rewrite: Rewrite) -> None:
    node, path = tenant.node, snapshots_path(tenant)
    headers = signed_headers(
        tenant.member.secrets, "GET", path, created=node.clock(), node_id=node.node_id
    )
    changed = rewrite(headers["Signature-Input"], node.node_id)
    assert changed != headers["Signature-Input"]
    headers["Signature-Input"] = changed
    assert_problem(await node.send("GET", path, headers=headers), 401, "unauthenticated")


# nonce lifetime


def nonce_key(tenant: Tenant, device: Device, nonce: str) -> str:
    """Where the node keeps a claimed nonce (cache_service/storage/redis_store.py)."""
    return f"sc:{{{tenant.account.id_hex}}}:nonce:{device.id_hex}:{nonce}"


@pytest.mark.parametrize("position", ["earliest", "middle", "latest"])
async def test_a_nonce_lives_as_long_as_its_request_is_acceptable(
    tenant: Tenant, redis_server: EmbeddedRedis, position: str
) -> None:
    """`created` passes while |int(now) - created| <= skew, i.e. from created - skew until
    just before created + skew + 1: claimed at int(now), the nonce must live at least
    created + skew + 1 - int(now) seconds; claimed at the earliest moment, 2 x skew + 1
    (not 2 x skew, which let a replay through in the window's last second)."""
    node = tenant.node
    skew = node.settings.skew_seconds
    now = int(node.clock())
    created = {"earliest": now + skew, "middle": now, "latest": now - skew}[position]
    nonce = secrets.token_urlsafe(18)
    resp = await node.send(
        "GET", snapshots_path(tenant), device=tenant.member, created=created, nonce=nonce
    )
    assert resp.status == 200, resp.body[:300]

    remaining = created + skew + 1 - now  # seconds the request stays acceptable
    async with aioredis.Redis(unix_socket_path=redis_server.socket, db=0) as r:
        pttl = await r.pttl(nonce_key(tenant, tenant.member, nonce))
    assert pttl >= remaining * 1000, (position, pttl, remaining)
    assert pttl <= (2 * skew + 2) * 1000  # and not kept for much longer than any request
    if position == "earliest":
        assert pttl >= (2 * skew + 1) * 1000


async def test_a_replay_in_the_last_second_of_the_window_is_refused(
    start_node: StartNode,
) -> None:
    """The same in real time, with a one-second window: a request claimed at the earliest
    moment is replayed in the last second it is acceptable (a little over 2 s later)."""
    node = await start_node(skew_seconds=1)
    tenant = await make_tenant(node)
    path = snapshots_path(tenant)
    created = int(node.clock()) + 1  # int(now) = created - skew: the earliest moment
    headers = signed_headers(
        tenant.member.secrets, "GET", path, created=created, node_id=node.node_id
    )
    assert (await node.send("GET", path, headers=headers)).status == 200
    await asyncio.sleep(2.2)  # Redis's time: past a TTL of 2 x skew
    node.clock.now = float(created + 1)  # the node's: int(now) = created + skew, still valid
    assert_problem(await node.send("GET", path, headers=headers), 401, "replayed")
    # a fresh nonce at that moment is accepted: it was the nonce, not the clock
    assert (await node.send("GET", path, device=tenant.member, created=created)).status == 200

"""Bad input of any shape or size gets a clear 4xx problem+json with a `code`, never a 5xx.

Authenticated requests here carry a valid signature over exactly the hostile bytes, so
they reach the parsers behind authentication."""

from __future__ import annotations

import gzip
import json
import secrets
from urllib.parse import quote

import pytest

import pre
from cache_service.protocol.b64 import encode_b64url
from tests.cache_service.conftest import (
    Node,
    RawResponse,
    StartNode,
    Tenant,
    assert_problem,
    make_tenant,
    new_account,
)

JSON = {"Content-Type": "application/json"}


def b64(data: bytes) -> str:
    return encode_b64url(data)


async def signed(
    tenant: Tenant,
    method: str,
    suffix: str,
    body: object = b"",
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
    content_type: str | None = "application/json",
) -> RawResponse:
    return await tenant.node.send(
        method,
        f"/v1/accounts/{tenant.account.id_hex}{suffix}",
        body=body,
        query=query,
        device=tenant.account.admin,
        headers=headers,
        content_type=content_type,
    )


def register_body(node: Node) -> dict[str, str]:
    account = new_account(node.clock())
    return {
        "account": b64(account.record.to_bytes()),
        "admin_certificate": b64(account.admin.cert.to_bytes()),
    }


BAD_JSON = [
    b"{bad",
    b"{",
    b"",
    b"null",
    b"[]",
    b'"a string"',
    b"12",
    b"\xff\xfe\x00{}",
    b'{"account": "\xff"}',
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
]


@pytest.mark.parametrize("body", BAD_JSON, ids=range(len(BAD_JSON)))
async def test_malformed_json_on_a_public_route(node: Node, body: bytes) -> None:
    resp = await node.send("POST", "/v1/accounts", body=body, headers=JSON)
    assert_problem(resp, 400, "malformed")


@pytest.mark.parametrize("body", BAD_JSON, ids=range(len(BAD_JSON)))
async def test_malformed_json_on_authenticated_routes(tenant: Tenant, body: bytes) -> None:
    for method, suffix in [("POST", "/snapshots"), ("POST", "/reencrypt")]:
        resp = await signed(tenant, method, suffix, body, headers=JSON)
        assert_problem(resp, 400, "malformed")


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/problem+json",
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ],
)
async def test_wrong_content_type(tenant: Tenant, content_type: str | None) -> None:
    node = tenant.node
    body = json.dumps(register_body(node)).encode()
    headers = {} if content_type is None else {"Content-Type": content_type}
    resp = await node.send("POST", "/v1/accounts", body=body, headers=headers, content_type=None)
    assert_problem(resp, 415, "unsupported_media_type")
    resp = await signed(
        tenant, "POST", "/reencrypt", b"{}", headers=headers, content_type=content_type
    )
    assert_problem(resp, 415, "unsupported_media_type")


async def test_json_with_a_charset_is_fine(tenant: Tenant) -> None:
    resp = await signed(
        tenant, "POST", "/reencrypt", b"{}", content_type="application/json; charset=utf-8"
    )
    assert resp.status == 200


async def test_unknown_fields(tenant: Tenant) -> None:
    body = {**register_body(tenant.node), "admin": True}
    problem = assert_problem(
        await tenant.node.send("POST", "/v1/accounts", body=body), 400, "malformed"
    )
    assert "admin" in problem["detail"]
    resp = await signed(tenant, "POST", "/reencrypt", {"items": None, "all": True})
    assert_problem(resp, 400, "malformed")
    resp = await signed(
        tenant, "POST", "/reencrypt", {"items": [{"label": "account", "key_epoch": 0, "x": 1}]}
    )
    assert_problem(resp, 400, "malformed")


@pytest.mark.parametrize(
    ("suffix", "body"),
    [
        ("/snapshots", {"snapshots": "abc"}),
        ("/snapshots", {"snapshots": [5]}),
        ("/snapshots", {"snapshots": [None]}),
        ("/snapshots", {"snapshots": []}),
        ("/snapshots", {"snapshots": [""]}),
        ("/snapshots", {"snapshots": {"a": "AAAA"}}),
        ("/snapshots", {}),
        ("/reencrypt", {"items": {"label": "account", "key_epoch": 0}}),
        ("/reencrypt", {"items": [{"label": "account", "key_epoch": -1}]}),
        ("/reencrypt", {"items": [{"label": "account", "key_epoch": 2**32}]}),
        ("/reencrypt", {"items": [{"label": "account", "key_epoch": 1.5}]}),
        ("/reencrypt", {"items": [{"label": "account", "key_epoch": 10**400}]}),
        # integers are JSON integers only, as the schema says (found by schemathesis)
        ("/reencrypt", {"items": [{"label": "account", "key_epoch": True}]}),
        ("/reencrypt", {"items": [{"label": "account", "key_epoch": "0"}]}),
        ("/reencrypt", {"items": [{"label": "account", "key_epoch": 0.0}]}),
        ("/reencrypt", {"items": [{"label": "nope", "key_epoch": 0}]}),
        ("/reencrypt", {"items": [{"label": "group:" + "A" * 200, "key_epoch": 0}]}),
        ("/reencrypt", {"items": [{"label": ["account"], "key_epoch": 0}]}),
        ("/reencrypt", {"items": [{"key_epoch": 0}]}),
        ("/reencrypt", {"items": [{"label": "account", "key_epoch": 0}] * 257}),
    ],
)
async def test_wrong_types_and_shapes(tenant: Tenant, suffix: str, body: object) -> None:
    assert_problem(await signed(tenant, "POST", suffix, body), 400, "malformed")


async def test_wrong_types_on_register(node: Node) -> None:
    good = register_body(node)
    for body in [
        {**good, "account": 5},
        {**good, "account": None},
        {**good, "admin_certificate": ["AAAA"]},
        {"account": good["account"]},
        [good],
    ]:
        resp = await node.send("POST", "/v1/accounts", body=body)
        assert_problem(resp, 400, "malformed")


def mangle(text: str, how: str) -> str:
    return {
        "padding": text + "=" * (-len(text) % 4 or 4),
        "plus": "+" + text[1:],
        "slash": "/" + text[1:],
        "space": text[:4] + " " + text[4:],
        "impossible_length": text + "A" * ((1 - len(text)) % 4),
        "non_canonical": text[:-1] + chr(ord(text[-1]) + 1),
        "standard_padded": text + "==",
        "percent": "%41" + text[3:],
        "empty": "",
        "unicode": "\u0410" + text[1:],
    }[how]


BASE64_MANGLES = [
    "padding",
    "plus",
    "slash",
    "space",
    "impossible_length",
    "non_canonical",
    "standard_padded",
    "percent",
    "empty",
    "unicode",
]


@pytest.mark.parametrize("how", BASE64_MANGLES)
async def test_bad_base64url(tenant: Tenant, how: str) -> None:
    node = tenant.node
    good = register_body(node)
    # the account record's base64url ends in a partial group, with spare bits to mangle
    assert len(good["account"]) % 4 in (2, 3)
    resp = await node.send(
        "POST", "/v1/accounts", body={**good, "account": mangle(good["account"], how)}
    )
    assert_problem(resp, 400, "malformed")
    snapshot = b64(b"snapshot")
    resp = await signed(tenant, "POST", "/snapshots", {"snapshots": [mangle(snapshot, how)]})
    assert_problem(resp, 400, "malformed")
    group = quote(mangle("Z3JvdXA", how), safe="/")  # sent, and signed, as given
    resp = await signed(tenant, "GET", "/snapshots", query="group=" + group)
    assert_problem(resp, 400, "malformed")


def test_mangles_really_break_canonical_base64url() -> None:
    """Guard for the test above: each mangled text is refused by the codec itself."""
    from cache_service.protocol.b64 import decode_b64url

    for data in (b"\x00" * 139, b"snapshot", b"group"):
        text = b64(data)
        assert decode_b64url(text, max_bytes=512) == data
        for how in BASE64_MANGLES:
            if how != "empty":
                with pytest.raises(ValueError):
                    decode_b64url(mangle(text, how), max_bytes=512)


@pytest.mark.parametrize(
    ("method", "suffix", "field"),
    [
        ("PUT", "/devices/{device}", "certificate"),
        ("POST", "/devices/{device}/revocation", "revocation"),
        ("PUT", "/capsules/account/0", "capsule"),
        ("PUT", "/grants/{device}/account/0", "share"),
        ("PUT", "/groups/Z3JvdXA/group_state", "snapshot"),
    ],
)
@pytest.mark.parametrize("content", ["random", "empty_record", "other_record"])
async def test_bytes_that_are_not_a_record(
    tenant: Tenant, method: str, suffix: str, field: str, content: str
) -> None:
    data = {
        "random": secrets.token_bytes(100),
        "empty_record": b"\x00",
        # a valid record of another type: the account record
        "other_record": tenant.account.record.to_bytes(),
    }[content]
    path = suffix.format(device=tenant.member.id_hex)
    resp = await signed(tenant, method, path, {field: b64(data)})
    assert_problem(resp, 400, "malformed")


async def test_bytes_that_are_not_a_record_on_register_and_in_a_batch(tenant: Tenant) -> None:
    node = tenant.node
    good = register_body(node)
    for field in ("account", "admin_certificate"):
        body = {**good, field: b64(secrets.token_bytes(64))}
        assert_problem(await node.send("POST", "/v1/accounts", body=body), 400, "malformed")
    swapped = {"account": good["admin_certificate"], "admin_certificate": good["account"]}
    assert_problem(await node.send("POST", "/v1/accounts", body=swapped), 400, "malformed")

    valid = tenant.seal()
    resp = await signed(
        tenant, "POST", "/snapshots", {"snapshots": [b64(b"junk"), b64(valid.to_bytes())]}
    )
    assert resp.status == 200
    results = resp.json()["results"]
    assert [(r["status"], r.get("code")) for r in results] == [
        ("rejected", "malformed"),
        ("stored", None),
    ]


async def test_truncated_and_extended_records(tenant: Tenant) -> None:
    data = tenant.seal().to_bytes()
    for bad in (data[:-1], data + b"\x00", data[:10]):
        resp = await signed(tenant, "PUT", "/groups/Z3JvdXAtMQ/group_state", {"snapshot": b64(bad)})
        assert_problem(resp, 400, "malformed")


async def test_oversize_body(start_node: StartNode) -> None:
    node = await start_node(max_body_bytes=4096)
    tenant = await make_tenant(node)
    big = {"snapshots": [b64(b"\x00" * 4000)]}
    resp = await node.send("POST", "/v1/accounts", body=big)
    assert_problem(resp, 413, "too_large")
    resp = await signed(tenant, "POST", "/snapshots", big)
    assert_problem(resp, 413, "too_large")
    # well beyond the limit, and not even JSON
    resp = await node.send("POST", "/v1/accounts", body=b"x" * 200_000)
    assert_problem(resp, 413, "too_large")
    # just under it is parsed as usual
    resp = await signed(tenant, "POST", "/snapshots", {"snapshots": [b64(b"\x00" * 2900)]})
    assert resp.status == 200


async def test_content_coded_bodies_are_refused_unread(start_node: StartNode) -> None:
    """Content-Digest covers the bytes as sent, so coded bodies are refused outright (and a
    gzip bomb is never inflated)."""
    node = await start_node(max_body_bytes=4096)
    tenant = await make_tenant(node)
    bomb = gzip.compress(b'{"snapshots": ["' + b"A" * 100_000 + b'"]}')
    assert len(bomb) < 4096
    # (aiohttp's own parser answers an unknown coding such as br with a plain 400 first)
    for coding in ("gzip", "deflate"):
        headers = {"Content-Encoding": coding}
        resp = await node.send("POST", "/v1/accounts", body=bomb, headers=headers)
        assert_problem(resp, 415, "unsupported_media_type")
        resp = await signed(tenant, "POST", "/reencrypt", b"not gzip at all", headers=headers)
        assert_problem(resp, 415, "unsupported_media_type")
    resp = await signed(tenant, "POST", "/reencrypt", {}, headers={"Content-Encoding": "identity"})
    assert resp.status == 200


async def test_batch_over_max_batch(start_node: StartNode) -> None:
    node = await start_node(max_batch=2)
    tenant = await make_tenant(node)
    three = [b64(tenant.seal(group=f"g{i}".encode()).to_bytes()) for i in range(3)]
    assert_problem(
        await signed(tenant, "POST", "/snapshots", {"snapshots": three}), 413, "too_large"
    )
    items = [{"label": "account", "key_epoch": e} for e in range(3)]
    assert_problem(await signed(tenant, "POST", "/reencrypt", {"items": items}), 413, "too_large")
    # nothing of the refused batch was stored; two at a time is fine
    assert (await tenant.admin_client.list_snapshots()).items == []
    resp = await signed(tenant, "POST", "/snapshots", {"snapshots": three[:2]})
    assert [r["status"] for r in resp.json()["results"]] == ["stored", "stored"]


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/v1",
        "/v1/",
        "/v1/accounts/",
        "/v1/nodes",
        "/healthz/",
        "/v1/accounts/" + "a" * 64 + "/nope",
        "/v1/accounts/" + "a" * 64 + "/devices/" + "b" * 32 + "/x",
        "/%00",
        "/v1/accounts/" + "a" * 64 + "/groups/A/group_state",
    ],
)
async def test_unknown_route(node: Node, path: str) -> None:
    for method in ("GET", "PUT"):
        resp = await node.send(method, path)
        assert_problem(resp, 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/node", {"GET"}),
        ("POST", "/healthz", {"GET"}),
        ("GET", "/v1/accounts", {"POST"}),
        ("DELETE", "/v1/accounts/" + "a" * 64, {"GET"}),
        ("PATCH", "/v1/accounts/" + "a" * 64 + "/snapshots", {"GET", "POST"}),
    ],
)
async def test_wrong_method(node: Node, method: str, path: str, allowed: set[str]) -> None:
    resp = await node.send(method, path)
    assert_problem(resp, 405, "method_not_allowed")
    assert set(resp.headers.get("Allow", "").split(",")) == allowed


@pytest.mark.parametrize(
    "account_id",
    ["A" * 64, "a" * 63, "a" * 65, "g" * 64, "a" * 32, "-1", "..", "a" * 64 + "%20"],
)
async def test_malformed_account_id_in_the_path(tenant: Tenant, account_id: str) -> None:
    for suffix in ("", "/snapshots", "/devices"):
        resp = await tenant.node.send(
            "GET", f"/v1/accounts/{account_id}{suffix}", device=tenant.account.admin
        )
        assert_problem(resp, 404, "not_found")


@pytest.mark.parametrize(
    "group_id",
    ["AB", "AAAAA", "A" * 172, "Z3JvdXA=", "Z3JvdXB"],
)
async def test_malformed_group_id_in_the_path(tenant: Tenant, group_id: str) -> None:
    body = {"snapshot": b64(tenant.seal().to_bytes())}
    resp = await signed(tenant, "PUT", f"/groups/{group_id}/group_state", body)
    assert_problem(resp, 404, "not_found")


@pytest.mark.parametrize(
    "label",
    ["group:A", "group:AB", "Account", "group:", "group:" + "A" * 172],
)
async def test_malformed_label_in_the_path(tenant: Tenant, label: str) -> None:
    body = {"capsule": b64(tenant.capsule.to_bytes())}
    resp = await signed(tenant, "PUT", f"/capsules/{label}/0", body)
    assert resp.status in (400, 404)
    assert_problem(resp, resp.status, "invalid_record" if resp.status == 400 else "not_found")


@pytest.mark.parametrize(
    "query",
    [
        "limit=1&limit=2",
        "after=1&after=2",
        "limit=0",
        "limit=100000",
        "limit=-1",
        "limit=abc",
        "limit=",
        "limit=1.5",
        "after=-1",
        f"after={2**53}",
        f"after={10**40}",
        "before=x",
        "order=sideways",
        "order=desc&after=1",
        "order=asc&before=1",
        "group=",
        "group=Z3JvdXA=",
        "group=" + "A" * 200,
        "foo=1",
        "data=maybe",
    ],
)
async def test_bad_query(tenant: Tenant, query: str) -> None:
    assert_problem(await signed(tenant, "GET", "/snapshots", query=query), 400, "malformed")


async def test_good_query_edges(tenant: Tenant) -> None:
    for query in ("limit=1", "limit=500", "after=0", f"after={2**53 - 1}", "order=desc"):
        resp = await signed(tenant, "GET", "/snapshots", query=query)
        assert resp.status == 200, (query, resp.body)


async def test_member_certificate_for_another_account(node: Node) -> None:
    a = await make_tenant(node)
    b = await make_tenant(node)
    foreign = b.account.device(node.clock())
    resp = await a.node.send(
        "PUT",
        f"/v1/accounts/{a.account.id_hex}/devices/{foreign.id_hex}",
        body={"certificate": b64(foreign.cert.to_bytes())},
        device=a.account.admin,
    )
    assert_problem(resp, 400, "invalid_record")
    # nor may a valid certificate be stored under another device id
    own = a.account.device(node.clock())
    resp = await a.node.send(
        "PUT",
        f"/v1/accounts/{a.account.id_hex}/devices/{a.member.id_hex}",
        body={"certificate": b64(own.cert.to_bytes())},
        device=a.account.admin,
    )
    assert_problem(resp, 400, "invalid_record")
    revocation = pre.revoke_device(b.account.secrets, b.member.secrets.device_id, now=1)
    resp = await a.node.send(
        "POST",
        f"/v1/accounts/{a.account.id_hex}/devices/{b.member.id_hex}/revocation",
        body={"revocation": b64(revocation.to_bytes())},
        device=a.account.admin,
    )
    assert_problem(resp, 400, "invalid_record")

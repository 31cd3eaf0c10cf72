"""One negative test per authorisation rule: who may call what, with which signature, when."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Awaitable, Callable

import pytest

import pre
from cache_service.protocol.b64 import encode_b64url
from client_sdk.node_client import NodeClient
from tests.cache_service.conftest import (
    Node,
    StartNode,
    Tenant,
    assert_problem,
    expect_error,
    make_tenant,
    new_account,
    signed_headers,
)


def snapshots_path(tenant: Tenant) -> str:
    return f"/v1/accounts/{tenant.account.id_hex}/snapshots"


async def test_device_of_another_account_is_unauthenticated(node: Node) -> None:
    a = await make_tenant(node)
    b = await make_tenant(node)
    # B's admin signs (validly, with its own key) requests for A's account path
    intruder = node.client(a.account, b.account.admin)
    await expect_error(intruder.get_account(), 401, "unauthenticated")
    await expect_error(intruder.list_snapshots(), 401, "unauthenticated")
    await expect_error(intruder.put_snapshot(b.seal()), 401, "unauthenticated")
    await expect_error(intruder.put_device(b.member.cert), 401, "unauthenticated")
    # and A's own devices are unaffected
    assert (await a.admin_client.get_account()).account_id == a.account.id_hex


async def test_revoked_device_is_refused(tenant: Tenant) -> None:
    await tenant.admin_client.put_grant(tenant.grant()[0])
    await tenant.member_client.reencrypt()
    revocation = pre.revoke_device(
        tenant.account.secrets, tenant.member.secrets.device_id, now=int(tenant.now)
    )
    await tenant.admin_client.revoke(revocation)
    await expect_error(tenant.member_client.get_account(), 403, "device_revoked")
    await expect_error(tenant.member_client.reencrypt(), 403, "device_revoked")
    await expect_error(tenant.member_client.list_snapshots(), 403, "device_revoked")


ADMIN_ACTIONS: dict[str, Callable[[Tenant, NodeClient], Awaitable[object]]] = {
    "put_device": lambda t, c: c.put_device(t.account.device(t.now).cert),
    "put_capsule": lambda t, c: c.put_capsule(
        pre.create_key_capsule(t.account.secrets, "group:abc", 0, now=int(t.now))[0]
    ),
    "put_grant": lambda t, c: c.put_grant(t.grant()[0]),
    "revoke": lambda t, c: c.revoke(
        pre.revoke_device(t.account.secrets, t.account.admin.secrets.device_id, now=1)
    ),
}


@pytest.mark.parametrize("action", sorted(ADMIN_ACTIONS))
async def test_member_cannot_do_admin_actions(tenant: Tenant, action: str) -> None:
    await expect_error(ADMIN_ACTIONS[action](tenant, tenant.member_client), 403, "forbidden")
    # the same call from the admin goes through
    await ADMIN_ACTIONS[action](tenant, tenant.admin_client)


async def test_expired_grant_is_not_applicable(tenant: Tenant) -> None:
    await tenant.admin_client.put_grant(tenant.grant(ttl=120)[0])
    [fresh] = (await tenant.member_client.reencrypt()).results
    assert fresh.code is None and fresh.fragment is not None

    # node and client share the clock: the request stays inside the skew window
    tenant.node.clock.advance(121)
    [stale] = (await tenant.member_client.reencrypt()).results
    assert (stale.label, stale.code, stale.fragment) == ("account", "grant_not_applicable", None)
    [named] = (await tenant.member_client.reencrypt([("account", 0)])).results
    assert named.code == "grant_not_applicable"


async def test_expired_grant_share_is_refused_on_upload(tenant: Tenant) -> None:
    share = tenant.grant(ttl=60)[0]
    tenant.node.clock.advance(61)
    await expect_error(tenant.admin_client.put_grant(share), 400, "invalid_record")


async def test_share_for_another_device_is_refused(tenant: Tenant) -> None:
    phone = tenant.account.device(tenant.now, name="phone")
    await tenant.admin_client.put_device(phone.cert)
    share = tenant.grant(device=tenant.member)[0]  # made for the member
    path = f"/v1/accounts/{tenant.account.id_hex}/grants/{phone.id_hex}/account/0"  # phone's path
    body = {"share": encode_b64url(share.to_bytes())}
    resp = await tenant.node.send("PUT", path, body=body, device=tenant.account.admin)
    assert_problem(resp, 400, "invalid_record")
    # a share whose fields were rewritten for the phone no longer verifies
    forged = share.replace(device_id=phone.secrets.device_id)
    resp = await tenant.node.send(
        "PUT",
        path,
        body={"share": encode_b64url(forged.to_bytes())},
        device=tenant.account.admin,
    )
    assert_problem(resp, 400, "invalid_record")
    [result] = (await tenant.node.client(tenant.account, phone).reencrypt([("account", 0)])).results
    assert result.code == "no_grant"


async def test_replayed_request_is_refused(tenant: Tenant) -> None:
    node, path = tenant.node, snapshots_path(tenant)
    headers = signed_headers(
        tenant.member.secrets, "GET", path, created=node.clock(), node_id=node.node_id
    )
    first = await node.send("GET", path, headers=headers)
    assert first.status == 200
    again = await node.send("GET", path, headers=headers)
    assert_problem(again, 401, "replayed")


async def test_replay_is_refused_after_a_restart(start_node: StartNode) -> None:
    node = await start_node()
    tenant = await make_tenant(node)
    path = snapshots_path(tenant)
    headers = signed_headers(
        tenant.member.secrets, "GET", path, created=node.clock(), node_id=node.node_id
    )
    assert (await node.send("GET", path, headers=headers)).status == 200
    await node.stop()

    restarted = await start_node(data_dir=node.settings.data_dir)  # new app, same Redis
    assert_problem(await restarted.send("GET", path, headers=headers), 401, "replayed")
    # a fresh signature from the same device is fine
    assert (await restarted.send("GET", path, device=tenant.member)).status == 200


@pytest.mark.parametrize("offset", [-301, 301, -10_000, 10**9])
async def test_request_outside_the_skew_window_is_refused(tenant: Tenant, offset: int) -> None:
    node, path = tenant.node, snapshots_path(tenant)
    resp = await node.send("GET", path, device=tenant.member, created=node.clock() + offset)
    assert_problem(resp, 401, "clock_skew")


@pytest.mark.parametrize("offset", [-300, 300])
async def test_request_at_the_edge_of_the_skew_window_is_accepted(
    tenant: Tenant, offset: int
) -> None:
    node, path = tenant.node, snapshots_path(tenant)
    resp = await node.send("GET", path, device=tenant.member, created=node.clock() + offset)
    assert resp.status == 200


async def test_altered_body_is_refused(tenant: Tenant) -> None:
    node = tenant.node
    path = f"/v1/accounts/{tenant.account.id_hex}/reencrypt"
    signed_body = b'{"items":[{"label":"account","key_epoch":0}]}'
    other_body = b'{"items":[{"label":"account","key_epoch":1}]}'
    headers = signed_headers(
        tenant.member.secrets,
        "POST",
        path,
        body=signed_body,
        created=node.clock(),
        node_id=node.node_id,
    )
    # the digest no longer matches the body
    resp = await node.send("POST", path, body=other_body, headers=headers)
    assert_problem(resp, 401, "unauthenticated")
    # the digest recomputed for the new body: the signature no longer covers it
    headers["Content-Digest"] = pre.content_digest(other_body)
    resp = await node.send("POST", path, body=other_body, headers=headers)
    assert_problem(resp, 401, "unauthenticated")
    # the untouched request still goes through (nothing above claimed its nonce)
    headers["Content-Digest"] = pre.content_digest(signed_body)
    assert (await node.send("POST", path, body=signed_body, headers=headers)).status == 200


@pytest.mark.parametrize(
    ("signed", "sent"),
    [
        (("snapshots", "limit=5"), ("snapshots", "limit=6")),
        (("snapshots", "limit=5"), ("snapshots", "")),
        (("snapshots", ""), ("snapshots", "limit=5")),
        (("snapshots", "limit=5&order=asc"), ("snapshots", "order=asc&limit=5")),
        (("devices", ""), ("capsules", "")),
        (("capsules", ""), ("snapshots", "")),
    ],
)
async def test_altered_path_or_query_is_refused(
    tenant: Tenant, signed: tuple[str, str], sent: tuple[str, str]
) -> None:
    node, prefix = tenant.node, f"/v1/accounts/{tenant.account.id_hex}/"
    headers = signed_headers(
        tenant.member.secrets,
        "GET",
        prefix + signed[0],
        query=signed[1],
        created=node.clock(),
        node_id=node.node_id,
    )
    resp = await node.send("GET", prefix + sent[0], query=sent[1], headers=headers)
    assert_problem(resp, 401, "unauthenticated")


async def test_altered_method_is_refused(tenant: Tenant) -> None:
    node = tenant.node
    path = f"/v1/accounts/{tenant.account.id_hex}/snapshots"
    headers = signed_headers(
        tenant.member.secrets, "GET", path, body=b"{}", created=node.clock(), node_id=node.node_id
    )
    resp = await node.send("POST", path, body=b"{}", headers=headers)
    assert_problem(resp, 401, "unauthenticated")


async def test_bad_signature_bytes_are_refused(tenant: Tenant) -> None:
    node, path = tenant.node, snapshots_path(tenant)
    headers = signed_headers(
        tenant.member.secrets, "GET", path, created=node.clock(), node_id=node.node_id
    )
    raw = bytearray(base64.b64decode(headers["Signature"][len("sig1=:") : -1]))
    raw[10] ^= 0x01
    headers["Signature"] = "sig1=:" + base64.b64encode(bytes(raw)).decode() + ":"
    assert_problem(await node.send("GET", path, headers=headers), 401, "unauthenticated")
    # a well-formed signature by another device of the same account, under this keyid
    other = signed_headers(
        tenant.account.admin.secrets, "GET", path, created=node.clock(), node_id=node.node_id
    )
    headers = {
        **other,
        "Signature-Input": other["Signature-Input"].replace(
            tenant.account.admin.id_hex, tenant.member.id_hex
        ),
    }
    assert_problem(await node.send("GET", path, headers=headers), 401, "unauthenticated")
    garbage = {**other, "Signature": "sig1=:" + "A" * 86 + "==:"}
    assert_problem(await node.send("GET", path, headers=garbage), 401, "unauthenticated")


@pytest.mark.parametrize(
    "change",
    [
        {"Signature": None},
        {"Signature-Input": None},
        {"Content-Digest": None},
        {"Signature": None, "Signature-Input": None, "Content-Digest": None},
        {"Signature": ""},
        {"Signature-Input": 'sig2=("@method");created=1;keyid="00";alg="ed25519"'},
        {"Content-Digest": "sha-512=:AAAA:"},
    ],
)
async def test_missing_or_malformed_signature_headers_are_refused(
    tenant: Tenant, change: dict[str, str | None]
) -> None:
    node, path = tenant.node, snapshots_path(tenant)
    headers = signed_headers(
        tenant.member.secrets, "GET", path, created=node.clock(), node_id=node.node_id
    )
    for name, value in change.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value
    assert_problem(await node.send("GET", path, headers=headers), 401, "unauthenticated")


async def test_member_sees_only_snapshots_of_granted_labels(tenant: Tenant) -> None:
    admin, member, account = tenant.admin_client, tenant.member_client, tenant.account
    team_label = pre.label_for_group(b"team")
    team_capsule, team_kek = pre.create_key_capsule(
        account.secrets, team_label, 0, now=int(tenant.now)
    )
    await admin.put_capsule(team_capsule)
    account_wide = [tenant.seal(group=g) for g in (b"private-1", b"private-2")]
    team = pre.seal_snapshot(
        team_kek,
        account.admin.secrets,
        group_id=b"team",
        kind="group_state",
        mls_epoch=1,
        plaintext=b"team state",
        now=int(tenant.now),
    )
    await admin.publish([*account_wide, team])

    # no grant at all: nothing, neither snapshots nor capsules
    assert (await member.list_snapshots()).items == []
    assert (await member.list_snapshots(group_id=b"private-1")).items == []
    assert (await member.list_capsules()).capsules == []
    await expect_error(
        member.put_snapshot(tenant.seal(author=tenant.member, group=b"x")), 403, "forbidden"
    )

    # a grant for the team label only: the team snapshot, and none of the others
    await admin.put_grant(tenant.grant(team_capsule)[0])
    page = await member.list_snapshots()
    assert [(i.label, i.group_id) for i in page.items] == [(team_label, b"team")]
    assert (await member.list_snapshots(group_id=b"private-2")).items == []
    assert [c.label for c in (await member.list_capsules()).capsules] == [team_label]
    # nor may it publish under the label it was not granted
    [result] = (await member.publish([tenant.seal(author=tenant.member, group=b"y")])).results
    assert (result.status.value, result.code) == ("rejected", "forbidden")


async def test_unregistered_account_answers_like_a_bad_signature(tenant: Tenant) -> None:
    """No existence oracle: an unknown account, an unknown device and a bad signature
    all get the same problem."""
    node = tenant.node
    stranger = new_account(node.clock())
    unknown = f"/v1/accounts/{stranger.id_hex}/snapshots"
    by_stranger = await node.send("GET", unknown, device=stranger.admin)
    by_known_device = await node.send("GET", unknown, device=tenant.member)
    random_id = f"/v1/accounts/{secrets.token_hex(32)}"
    by_random = await node.send("GET", random_id, device=tenant.member)

    path = snapshots_path(tenant)
    unknown_device = await node.send("GET", path, device=stranger.admin)
    headers = signed_headers(
        tenant.member.secrets, "GET", path, created=node.clock(), node_id=node.node_id
    )
    headers["Signature"] = "sig1=:" + "A" * 86 + "==:"
    bad_signature = await node.send("GET", path, headers=headers)

    problems = [
        assert_problem(r, 401, "unauthenticated")
        for r in (by_stranger, by_known_device, by_random, unknown_device, bad_signature)
    ]
    assert all(p == problems[0] for p in problems), problems


async def test_expired_device_certificate_is_forbidden(tenant: Tenant) -> None:
    assert (await tenant.member_client.get_account()).account_id == tenant.account.id_hex
    tenant.node.clock.advance(tenant.member.cert.not_after - tenant.now)  # node and client
    await expect_error(tenant.member_client.get_account(), 403, "forbidden")
    await expect_error(tenant.member_client.reencrypt(), 403, "forbidden")


async def test_request_rate_is_limited_per_device(start_node: StartNode) -> None:
    node = await start_node(rate_limit_per_minute=3)
    tenant = await make_tenant(node)  # the admin signed two requests setting up
    path = snapshots_path(tenant)
    for _ in range(3):
        assert (await node.send("GET", path, device=tenant.member)).status == 200
    resp = await node.send("GET", path, device=tenant.member)
    assert_problem(resp, 429, "rate_limited")
    assert resp.headers["Retry-After"] == "60"
    # per device, and per minute of the node's clock
    assert (await node.send("GET", path, device=tenant.account.admin)).status == 200
    assert_problem(await node.send("GET", path, device=tenant.account.admin), 429, "rate_limited")
    node.clock.advance(60)
    assert (await node.send("GET", path, device=tenant.member)).status == 200

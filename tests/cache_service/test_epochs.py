"""MLS epochs only move forward per (group, kind); key epochs rotate one at a time and
old ones stop being accepted; retention really deletes older snapshots."""

from __future__ import annotations

import redis.asyncio as aioredis

import pre
from cache_service.embedded_redis import EmbeddedRedis
from cache_service.protocol.b64 import encode_b64url
from tests.cache_service.conftest import (
    Node,
    StartNode,
    Tenant,
    assert_problem,
    expect_error,
    make_tenant,
    seal,
)


def put_path(tenant: Tenant, snapshot: pre.SealedSnapshot) -> str:
    h = snapshot.header
    return f"/v1/accounts/{tenant.account.id_hex}/groups/{encode_b64url(h.group_id)}/{h.kind}"


async def put(tenant: Tenant, snapshot: pre.SealedSnapshot) -> tuple[int, dict[str, object]]:
    resp = await tenant.node.send(
        "PUT",
        put_path(tenant, snapshot),
        body={"snapshot": encode_b64url(snapshot.to_bytes())},
        device=tenant.account.admin,
    )
    return resp.status, resp.json()


async def test_lower_mls_epoch_is_stale_and_states_the_current_epoch(tenant: Tenant) -> None:
    status, body = await put(tenant, tenant.seal(epoch=5))
    assert (status, body["status"]) == (201, "stored")
    resp = await tenant.node.send(
        "PUT",
        put_path(tenant, tenant.seal(epoch=4)),
        body={"snapshot": encode_b64url(tenant.seal(epoch=4).to_bytes())},
        device=tenant.account.admin,
    )
    problem = assert_problem(resp, 409, "stale_epoch")
    assert problem["current_epoch"] == 5
    # through the SDK the same refusal is an EpochConflict carrying the epoch
    err = await expect_error(
        tenant.admin_client.put_snapshot(tenant.seal(epoch=0)), 409, "stale_epoch"
    )
    assert err.problem["current_epoch"] == 5
    # moving forward is fine, and another kind of the same group has its own epochs
    assert (await put(tenant, tenant.seal(epoch=6)))[0] == 201
    assert (await put(tenant, tenant.seal(epoch=1, kind="ratchet_tree")))[0] == 201


async def test_same_epoch_with_other_content_conflicts(tenant: Tenant) -> None:
    await put(tenant, tenant.seal(epoch=3))
    other = tenant.seal(epoch=3)
    resp = await tenant.node.send(
        "PUT",
        put_path(tenant, other),
        body={"snapshot": encode_b64url(other.to_bytes())},
        device=tenant.account.admin,
    )
    problem = assert_problem(resp, 409, "conflict")
    assert problem["current_epoch"] == 3


async def test_identical_retry_is_a_duplicate_with_the_original_seq(tenant: Tenant) -> None:
    await put(tenant, tenant.seal(group=b"before"))
    snapshot = tenant.seal(epoch=9)
    status, first = await put(tenant, snapshot)
    assert (status, first["status"]) == (201, "stored")
    await put(tenant, tenant.seal(group=b"after"))
    status, retry = await put(tenant, snapshot)
    assert (status, retry["status"], retry["seq"]) == (200, "duplicate", first["seq"])
    # nothing new was stored by the retry
    page = await tenant.admin_client.list_snapshots()
    assert [i.seq for i in page.items] == [1, 2, 3]
    assert page.head == 3


async def test_batch_refusals_are_per_item(tenant: Tenant) -> None:
    admin = tenant.admin_client
    base = [tenant.seal(group=b"g-stale", epoch=5), tenant.seal(group=b"g-same", epoch=2)]
    stored = await admin.publish(base)
    assert [r.status.value for r in stored.results] == ["stored", "stored"]

    fresh = tenant.seal(group=b"g-new", epoch=1)
    newer = tenant.seal(group=b"g-stale", epoch=6)
    tampered = tenant.seal(group=b"g-x")
    tampered = tampered.replace(ciphertext=tampered.ciphertext[:-1] + b"\x00")
    batch = [
        tenant.seal(group=b"g-stale", epoch=4),  # stale
        fresh,  # stored
        tenant.seal(group=b"g-same", epoch=2),  # same epoch, other content
        base[1],  # identical retry
        tampered,  # the author's signature no longer verifies
        newer,  # stored, although an older epoch of its group was refused just before
    ]
    answer = await admin.publish(batch)
    got = [(r.status.value, r.code, r.current_epoch) for r in answer.results]
    assert got == [
        ("rejected", "stale_epoch", 5),
        ("stored", None, None),
        ("rejected", "conflict", 2),
        ("duplicate", None, None),
        ("rejected", "invalid_record", None),
        ("stored", None, None),
    ]
    assert answer.results[3].seq == stored.results[1].seq
    assert answer.results[1].seq is not None and answer.results[5].seq is not None
    assert answer.results[5].seq > answer.results[1].seq
    groups = {i.group_id: i.mls_epoch for i in (await admin.list_snapshots()).items}
    assert groups == {b"g-stale": 6, b"g-same": 2, b"g-new": 1}


async def test_rotated_key_epoch_refuses_snapshots_under_the_old_one(tenant: Tenant) -> None:
    admin, account = tenant.admin_client, tenant.account
    await admin.put_snapshot(tenant.seal(group=b"g", epoch=1))
    capsule1, kek1 = pre.create_key_capsule(
        account.secrets, "account", 1, now=int(tenant.now), previous=tenant.kek
    )
    entry = await admin.put_capsule(capsule1)
    assert (entry.key_epoch, entry.current) == (1, True)
    listed = [(c.key_epoch, c.current) for c in (await admin.list_capsules()).capsules]
    assert listed == [(0, False), (1, True)]

    old = tenant.seal(group=b"g", epoch=2)  # sealed under key epoch 0
    resp = await tenant.node.send(
        "PUT",
        put_path(tenant, old),
        body={"snapshot": encode_b64url(old.to_bytes())},
        device=account.admin,
    )
    assert assert_problem(resp, 409, "stale_key_epoch")["current_epoch"] == 1
    [result] = (await admin.publish([tenant.seal(group=b"other", epoch=1)])).results
    assert (result.status.value, result.code, result.current_epoch) == (
        "rejected",
        "stale_key_epoch",
        1,
    )
    new = seal(kek1, account.admin, group=b"g", epoch=2, now=tenant.now)
    assert (await admin.put_snapshot(new)).status.value == "stored"

    # the new capsule carries the old KEK: a device granted epoch 1 reads both
    await admin.put_grant(tenant.grant(capsule1)[0])
    [frag] = (await tenant.member_client.reencrypt([("account", 1)])).results
    assert frag.fragment is not None
    verified = pre.verify_capsule_fragment(
        pre.CapsuleFragment.from_bytes(frag.fragment),
        capsule=capsule1,
        account=account.record,
        receiver=tenant.member.secrets,
    )
    opened1 = pre.open_key_capsule(tenant.member.secrets, capsule1, [verified])
    assert opened1.secret == kek1.secret
    assert opened1.open_previous(capsule1).secret == tenant.kek.secret


async def test_capsule_epochs_start_at_zero_and_move_one_at_a_time(tenant: Tenant) -> None:
    admin, account, now = tenant.admin_client, tenant.account, int(tenant.now)
    capsule1, _ = pre.create_key_capsule(
        account.secrets, "account", 1, now=now, previous=tenant.kek
    )
    await admin.put_capsule(capsule1)
    capsule3, _ = pre.create_key_capsule(account.secrets, "account", 3, now=now)
    err = await expect_error(admin.put_capsule(capsule3), 409, "stale_key_epoch")
    assert err.problem["current_epoch"] == 1
    again0, _ = pre.create_key_capsule(account.secrets, "account", 0, now=now)
    err = await expect_error(admin.put_capsule(again0), 409, "stale_key_epoch")
    assert err.problem["current_epoch"] == 1
    other1, _ = pre.create_key_capsule(account.secrets, "account", 1, now=now, previous=tenant.kek)
    await expect_error(admin.put_capsule(other1), 409, "conflict")
    # a new label cannot start above epoch 0
    late, _ = pre.create_key_capsule(account.secrets, "group:late", 1, now=now)
    err = await expect_error(admin.put_capsule(late), 409, "stale_key_epoch")
    assert err.problem.get("current_epoch") is None
    # a capsule is stored only at its own (label, key epoch) address
    path = f"/v1/accounts/{account.id_hex}/capsules/account/2"
    resp = await tenant.node.send(
        "PUT", path, body={"capsule": encode_b64url(capsule3.to_bytes())}, device=account.admin
    )
    assert_problem(resp, 400, "invalid_record")


async def test_capsule_identical_retry_is_ok_and_says_whether_current(tenant: Tenant) -> None:
    admin, account = tenant.admin_client, tenant.account
    path = f"/v1/accounts/{account.id_hex}/capsules/account/"
    body0 = {"capsule": encode_b64url(tenant.capsule.to_bytes())}
    retry = await tenant.node.send("PUT", path + "0", body=body0, device=account.admin)
    assert retry.status == 200
    assert retry.json()["current"] is True

    capsule1, _ = pre.create_key_capsule(
        account.secrets, "account", 1, now=int(tenant.now), previous=tenant.kek
    )
    body1 = {"capsule": encode_b64url(capsule1.to_bytes())}
    created = await tenant.node.send("PUT", path + "1", body=body1, device=account.admin)
    assert (created.status, created.json()["current"]) == (201, True)
    # retrying epoch 0 now is still an identical retry, but epoch 0 is no longer current
    old = await tenant.node.send("PUT", path + "0", body=body0, device=account.admin)
    assert old.status == 200
    assert old.json()["current"] is False
    assert [c.current for c in (await admin.list_capsules()).capsules] == [False, True]


async def test_retention_really_deletes_older_snapshots(
    start_node: StartNode, redis_server: EmbeddedRedis
) -> None:
    node = await start_node(retain={"group_state": 1}, retain_default=2, retain_tree_bases=2)
    tenant = await make_tenant(node)
    admin = tenant.admin_client
    for epoch in (1, 2, 3):
        for kind in ("group_state", "ratchet_tree", "group_info"):
            await admin.put_snapshot(tenant.seal(group=b"g", kind=kind, epoch=epoch))
    await admin.put_snapshot(tenant.seal(group=b"other", epoch=1))

    page = await admin.list_snapshots()
    kept = sorted((i.kind, i.mls_epoch) for i in page.items if i.group_id == b"g")
    assert kept == [
        ("group_info", 2),
        ("group_info", 3),
        ("group_state", 3),
        ("ratchet_tree", 2),
        ("ratchet_tree", 3),
    ]
    assert [i.mls_epoch for i in page.items if i.group_id == b"other"] == [1]
    by_group = await admin.list_snapshots(group_id=b"g", order="desc")
    assert len(by_group.items) == 5

    # really deleted: no record of a trimmed snapshot is left in Redis
    client = aioredis.Redis(unix_socket_path=redis_server.socket)
    try:
        keys = [k async for k in client.scan_iter(match=f"sc:{{{tenant.account.id_hex}}}:snap:*")]
    finally:
        await client.aclose()
    assert len(keys) == len(page.items) == 6
    # an older epoch cannot come back either
    await expect_error(admin.put_snapshot(tenant.seal(group=b"g", epoch=2)), 409, "stale_epoch")


async def test_snapshot_must_match_its_put_address(tenant: Tenant) -> None:
    snapshot = tenant.seal(group=b"real", kind="group_state")
    path = f"/v1/accounts/{tenant.account.id_hex}/groups/{encode_b64url(b'fake')}/group_state"
    body = {"snapshot": encode_b64url(snapshot.to_bytes())}
    resp = await tenant.node.send("PUT", path, body=body, device=tenant.account.admin)
    assert_problem(resp, 400, "invalid_record")
    path = f"/v1/accounts/{tenant.account.id_hex}/groups/{encode_b64url(b'real')}/ratchet_tree"
    resp = await tenant.node.send("PUT", path, body=body, device=tenant.account.admin)
    assert_problem(resp, 400, "invalid_record")


async def test_snapshot_by_another_author_is_refused(node: Node) -> None:
    a = await make_tenant(node)
    # signed by a's admin but uploaded by a's member: the author is not the caller
    await a.admin_client.put_grant(a.grant()[0])
    err = await expect_error(a.member_client.put_snapshot(a.seal()), 400, "invalid_record")
    assert err.detail


async def test_mls_epochs_are_exact_up_to_the_supported_bound(tenant: Tenant) -> None:
    """Epochs are compared exactly; ones the store cannot order exactly are refused."""
    admin, top = tenant.admin_client, 2**53 - 1
    assert (await admin.put_snapshot(tenant.seal(epoch=top - 1))).status.value == "stored"
    assert (await admin.put_snapshot(tenant.seal(epoch=top))).status.value == "stored"
    err = await expect_error(admin.put_snapshot(tenant.seal(epoch=top - 1)), 409, "stale_epoch")
    assert err.problem["current_epoch"] == top
    await expect_error(admin.put_snapshot(tenant.seal(epoch=top + 1)), 400, "invalid_record")
    [result] = (await admin.publish([tenant.seal(group=b"big", epoch=2**64 - 1)])).results
    assert (result.status.value, result.code) == ("rejected", "invalid_record")
    assert [i.mls_epoch for i in (await admin.list_snapshots()).items] == [top]

"""Snapshot receipts: the node's signed receipt for every snapshot it stores (answered to
the publisher, the same one for a duplicate, served first with the snapshot), the
confirmations route that keeps other nodes' receipts, and the receipts snapshots stored by
the previous version (no `at` / `rc` fields) get when listed or published again."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

import pre
from cache_service.api.keys import SERVICES
from cache_service.embedded_redis import EmbeddedRedis
from cache_service.protocol import models as m
from cache_service.protocol.b64 import encode_b64url
from cache_service.storage import SnapshotWrite
from client_sdk.errors import NodeError
from tests.cache_service.conftest import (
    Clock,
    Node,
    RawResponse,
    Tenant,
    assert_problem,
    make_tenant,
)

SIZE = pre.SNAPSHOT_RECEIPT_SIZE


def b64(data: bytes) -> str:
    return encode_b64url(data)


def own_secrets(node: Node) -> pre.NodeSecrets:
    return node.app[SERVICES].node


def receipt_of(
    signer: pre.NodeSecrets,
    snap: pre.SealedSnapshot,
    *,
    account_id: bytes | None = None,
    digest: bytes | None = None,
    stored_at: int = 1_700_000_000,
) -> bytes:
    """`signer`'s receipt for `snap` (or for another account or digest)."""
    return signer.sign_snapshot_receipt(
        account_id=snap.header.account_id if account_id is None else account_id,
        digest=snap.digest if digest is None else digest,
        stored_at=stored_at,
    ).to_bytes()


def item(snap: pre.SealedSnapshot, receipts: list[bytes], **kw: Any) -> m.ConfirmItem:
    h = snap.header
    fields: dict[str, Any] = {
        "group_id": h.group_id,
        "kind": h.kind,
        "mls_epoch": h.mls_epoch,
        "digest": snap.digest,
        "receipts": receipts,
    }
    return m.ConfirmItem(**(fields | kw))


def raw_item(snap: pre.SealedSnapshot, receipts: list[bytes]) -> dict[str, Any]:
    """`item` as JSON, unchecked (any number of receipts)."""
    h = snap.header
    return {
        "group_id": b64(h.group_id),
        "kind": h.kind,
        "mls_epoch": h.mls_epoch,
        "digest": b64(snap.digest),
        "receipts": [b64(r) for r in receipts],
    }


async def confirm(tenant: Tenant, *items: m.ConfirmItem) -> list[tuple[str, str | None]]:
    answer = await tenant.admin_client.confirm(list(items))
    assert len(answer.results) == len(items)
    return [(r.status, r.code) for r in answer.results]


async def listed(tenant: Tenant, snap: pre.SealedSnapshot, *, data: bool = True) -> list[bytes]:
    """The receipts the node serves with `snap` (which it must hold)."""
    page = await tenant.admin_client.list_snapshots(group_id=snap.header.group_id, data=data)
    (found,) = [i for i in page.items if i.digest == snap.digest]
    assert (found.snapshot == snap.to_bytes()) if data else found.snapshot is None
    return list(found.receipts)


async def post_confirm(tenant: Tenant, body: Any) -> RawResponse:
    return await tenant.node.send(
        "POST",
        f"/v1/accounts/{tenant.account.id_hex}/confirmations",
        body=body,
        device=tenant.account.admin,
    )


def check_receipt(
    data: bytes, node_key: bytes, tenant: Tenant, snap: pre.SealedSnapshot, stored_at: int
) -> pre.SnapshotReceipt:
    assert len(data) == SIZE == 170
    receipt = pre.SnapshotReceipt.from_bytes(data).verify(node_key)
    assert receipt.node_key == node_key
    assert receipt.account_id == tenant.account.account_id
    assert receipt.digest == snap.digest
    assert receipt.stored_at == stored_at
    return receipt


async def with_nodes(tenant: Tenant, keys: list[bytes]) -> pre.AccountManifest:
    """Store a manifest version (the next one) of the account naming these node keys."""
    try:
        stored = await tenant.admin_client.get_manifest()
    except NodeError as exc:
        assert exc.status == 404
        base = None
    else:
        base = pre.AccountManifest.from_bytes(stored.manifest)
    unsigned = tenant.manifest(keys[0], base=base)
    nodes = tuple(
        pre.ManifestNode(node_key=k, share_index=i, url=f"http://127.0.0.{i}", operator="")
        for i, k in enumerate(keys, start=1)
    )
    manifest = pre.sign_manifest(tenant.account.secrets, unsigned.replace(nodes=nodes))
    assert (await tenant.admin_client.put_manifest(manifest)).version == manifest.version
    return manifest


@pytest.fixture
async def tenant(node: Node) -> Tenant:
    """The member holds a grant for the `account` label: it publishes and lists too."""
    return await make_tenant(node, grant=True)


@pytest.fixture
async def redis(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    async with aioredis.Redis(unix_socket_path=redis_server.socket, db=0) as client:
        yield client


# the receipt of a publish


async def test_a_publish_answers_the_nodes_signed_receipt_at_its_clock(
    tenant: Tenant, clock: Clock
) -> None:
    info = await tenant.admin_client.node_info()
    key, node = info.public_key, tenant.node
    assert key == own_secrets(node).public_key
    assert info.node_id == node.node_id
    clock.advance(7)
    single = tenant.seal(group=b"single", epoch=3)
    answer = await tenant.admin_client.put_snapshot(single)
    assert answer.status == "stored" and answer.receipt is not None
    receipt = check_receipt(answer.receipt, key, tenant, single, int(clock.now))
    assert receipt.node_id.hex() == node.node_id
    clock.advance(11)
    batch = [tenant.seal(group=b"batch", epoch=1), tenant.seal(group=b"batch", kind="ratchet_tree")]
    results = (await tenant.admin_client.publish(batch)).results
    assert [r.status for r in results] == ["stored", "stored"]
    for result, snap in zip(results, batch, strict=True):
        assert result.receipt is not None
        check_receipt(result.receipt, key, tenant, snap, int(clock.now))
    assert results[0].receipt != results[1].receipt


async def test_a_duplicate_answers_the_stored_receipt_even_once_the_clock_moved(
    tenant: Tenant, clock: Clock
) -> None:
    snap = tenant.seal(author=tenant.member, epoch=5)
    first = await tenant.member_client.put_snapshot(snap)
    assert first.status == "stored" and first.receipt is not None
    published_at = int(clock.now)
    for _ in range(3):
        clock.advance(90)
        again = await tenant.member_client.put_snapshot(snap)
        assert (again.status, again.seq, again.receipt) == ("duplicate", first.seq, first.receipt)
        batch = (await tenant.member_client.publish([snap])).results[0]
        assert (batch.status, batch.seq, batch.receipt) == ("duplicate", first.seq, first.receipt)
    check_receipt(first.receipt, own_secrets(tenant.node).public_key, tenant, snap, published_at)
    # a rejection carries no receipt
    other = tenant.seal(epoch=5)
    refused = (await tenant.admin_client.publish([other])).results[0]
    assert (refused.status, refused.code, refused.receipt) == ("rejected", "conflict", None)


async def test_listings_serve_the_receipt_first_with_data_and_without(
    tenant: Tenant, clock: Clock
) -> None:
    snaps = [tenant.seal(group=b"listed", epoch=1), tenant.seal(group=b"listed too", epoch=2)]
    answers = (await tenant.admin_client.publish(snaps)).results
    clock.advance(30)  # a listing later serves the same receipts
    for snap, answer in zip(snaps, answers, strict=True):
        assert await listed(tenant, snap) == [answer.receipt]
        assert await listed(tenant, snap, data=False) == [answer.receipt]
    for order in ("asc", "desc"):
        page = await tenant.member_client.list_snapshots(order=order, data=order == "asc")
        assert {i.digest: i.receipts for i in page.items} == {
            s.digest: [a.receipt] for s, a in zip(snaps, answers, strict=True)
        }
    items, _ = await tenant.admin_client.list_metadata()
    assert [i.receipts for i in items] == [[a.receipt] for a in answers]
    # a listing that asks for none (a reader's cross-check) gets none
    for data in (True, False):
        page = await tenant.admin_client.list_snapshots(data=data, receipts=False)
        assert [(i.digest, i.receipts) for i in page.items] == [(s.digest, []) for s in snaps]


# confirmations


async def test_other_nodes_receipts_are_kept_and_served_after_the_own(tenant: Tenant) -> None:
    own = own_secrets(tenant.node)
    others = [pre.NodeSecrets.generate() for _ in range(3)]
    await with_nodes(tenant, [own.public_key, *(o.public_key for o in others)])
    snap = tenant.seal(epoch=4)
    mine = (await tenant.admin_client.put_snapshot(snap)).receipt
    assert mine is not None
    r1, r2, r3 = (receipt_of(o, snap) for o in others)

    # the publisher hands every node all the receipts it got, this node's own included
    assert await confirm(tenant, item(snap, [mine, r1])) == [("stored", None)]
    assert await listed(tenant, snap) == [mine, r1]
    assert await confirm(tenant, item(snap, [r2, mine, r1, r1])) == [("stored", None)]
    served = await listed(tenant, snap, data=False)
    assert served[0] == mine and sorted(served[1:]) == sorted([r1, r2])
    assert served.count(mine) == 1 and len(set(served)) == len(served)
    for r in served[1:]:
        parsed = pre.SnapshotReceipt.from_bytes(r)
        parsed.verify(parsed.node_key)
    # not more than stored: kept as is (also the same set again, in another order)
    for shorter in ([r3], [r1, mine], [r2, r1], [mine], [r3, r3, mine]):
        assert await confirm(tenant, item(snap, shorter)) == [("kept", None)]
        assert await listed(tenant, snap) == served
    # a longer set replaces it
    assert await confirm(tenant, item(snap, [r3, r2, r1, mine])) == [("stored", None)]
    longest = await listed(tenant, snap)
    assert longest[0] == mine and sorted(longest[1:]) == sorted([r1, r2, r3])
    # a member of the account confirms too
    snap2 = tenant.seal(author=tenant.member, epoch=5)
    await tenant.member_client.put_snapshot(snap2)
    answer = await tenant.member_client.confirm([item(snap2, [receipt_of(others[0], snap2)])])
    assert [r.status for r in answer.results] == ["stored"]


async def test_bad_receipts_reject_their_item_and_store_nothing(
    tenant: Tenant, clock: Clock
) -> None:
    own = own_secrets(tenant.node)
    member_node, outsider = pre.NodeSecrets.generate(), pre.NodeSecrets.generate()
    await with_nodes(tenant, [own.public_key, member_node.public_key])
    snap = tenant.seal(group=b"bad receipts", epoch=9)
    mine = (await tenant.admin_client.put_snapshot(snap)).receipt
    assert mine is not None
    good = receipt_of(member_node, snap)
    other_snap = tenant.seal(group=b"bad receipts", epoch=10)
    tampered = bytearray(good)
    tampered[-1] ^= 0x01
    # claims to be the manifest node, signed by the outsider
    forged = pre.SnapshotReceipt.from_bytes(receipt_of(outsider, snap))
    forged = forged.replace(node_key=member_node.public_key)
    stranger = await make_tenant(tenant.node)
    bad = {
        "another digest": receipt_of(member_node, snap, digest=other_snap.digest),
        "another account": receipt_of(member_node, snap, account_id=stranger.account.account_id),
        "a tampered signature": bytes(tampered),
        "a node not in the manifest": receipt_of(outsider, snap),
        "a forged node key": forged.to_bytes(),
        "the own one tampered": mine[:-1] + bytes([mine[-1] ^ 0x80]),
        "the own one for another digest": receipt_of(own, snap, digest=other_snap.digest),
    }
    for what, receipt in bad.items():
        for receipts in ([receipt], [good, receipt], [receipt, good, mine]):
            results = await confirm(tenant, item(snap, receipts))
            assert results == [("rejected", "invalid_record")], what
    assert await listed(tenant, snap) == [mine]  # nothing stored
    # a batch: each item has its own result, the good one is stored
    results = await confirm(
        tenant,
        item(snap, [bad["a tampered signature"]]),
        item(snap, [good, mine]),
        item(snap, [bad["another account"]]),
    )
    assert results == [
        ("rejected", "invalid_record"),
        ("stored", None),
        ("rejected", "invalid_record"),
    ]
    assert await listed(tenant, snap) == [mine, good]
    for what, receipt in bad.items():  # a stored set is not touched by a bad one either
        longer = [good, receipt, receipt_of(member_node, snap, stored_at=5)]
        assert await confirm(tenant, item(snap, longer)) == [("rejected", "invalid_record")], what
    assert await listed(tenant, snap) == [mine, good]
    # 170 bytes that are not a receipt
    results = await confirm(tenant, item(snap, [secrets.token_bytes(SIZE)]))
    assert results[0][0] == "rejected" and results[0][1] in ("malformed", "invalid_record")
    assert await listed(tenant, snap) == [mine, good]


async def test_receipts_for_a_snapshot_not_held_are_not_found(tenant: Tenant) -> None:
    other_node = pre.NodeSecrets.generate()
    await with_nodes(tenant, [own_secrets(tenant.node).public_key, other_node.public_key])
    snap = tenant.seal(group=b"held", epoch=2)
    mine = (await tenant.admin_client.put_snapshot(snap)).receipt
    unsent = tenant.seal(group=b"held", epoch=3)  # never published
    conflicting = tenant.seal(group=b"held", epoch=2)  # another snapshot at the held epoch
    elsewhere = tenant.seal(group=b"never published", epoch=2)
    tree = tenant.seal(group=b"held", kind="ratchet_tree", epoch=2)
    results = await confirm(
        tenant,
        *(item(s, [receipt_of(other_node, s)]) for s in (unsent, conflicting, elsewhere)),
        # the held snapshot's receipts named under another kind or epoch
        item(snap, [receipt_of(other_node, snap)], kind="ratchet_tree"),
        item(snap, [receipt_of(other_node, snap)], mls_epoch=1),
        item(tree, [receipt_of(other_node, tree)]),
    )
    assert results == [("not_found", None)] * 6
    assert await listed(tenant, snap) == [mine]


async def test_the_manifest_in_force_decides_which_nodes_count(tenant: Tenant) -> None:
    own = own_secrets(tenant.node)
    a, b = pre.NodeSecrets.generate(), pre.NodeSecrets.generate()
    snap = tenant.seal(epoch=1)
    mine = (await tenant.admin_client.put_snapshot(snap)).receipt
    # no manifest (an account from before them): any node's valid receipt for this account
    # and snapshot, charged to the account's byte quota like any receipt kept
    assert await confirm(tenant, item(snap, [receipt_of(a, snap)])) == [("stored", None)]
    await with_nodes(tenant, [own.public_key, a.public_key])
    longer = [receipt_of(a, snap), receipt_of(b, snap)]
    assert await confirm(tenant, item(snap, longer)) == [("rejected", "invalid_record")]
    await with_nodes(tenant, [own.public_key, b.public_key, a.public_key])  # a new version
    assert await confirm(tenant, item(snap, longer)) == [("stored", None)]
    await with_nodes(tenant, [own.public_key, b.public_key])  # `a` left the set
    assert await confirm(tenant, item(snap, [receipt_of(a, snap)])) == [
        ("rejected", "invalid_record")
    ]
    served = await listed(tenant, snap)
    assert served[0] == mine and sorted(served[1:]) == sorted(longer)


async def test_confirmation_bounds_are_4xx_problems(tenant: Tenant) -> None:
    own = own_secrets(tenant.node)
    snap = tenant.seal(group=b"bounds", epoch=1)
    mine = (await tenant.admin_client.put_snapshot(snap)).receipt
    assert mine is not None
    many = [pre.NodeSecrets.generate() for _ in range(m.MAX_RECEIPTS + 1)]
    await with_nodes(tenant, [own.public_key, *(n.public_key for n in many)])
    receipts = [receipt_of(n, snap) for n in many]

    def body(items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"items": items}

    too_many_receipts = body([raw_item(snap, receipts)])
    one = raw_item(snap, receipts[:1])
    hostile: dict[str, Any] = {
        "33 receipts": too_many_receipts,
        "257 items": body([one] * (m.MAX_BATCH + 1)),
        "no items": body([]),
        "no receipts": body([{**one, "receipts": []}]),
        "a short receipt": body([{**one, "receipts": [b64(receipts[0][:-1])]}]),
        "a long receipt": body([{**one, "receipts": [b64(receipts[0] + b"\0")]}]),
        "a short digest": body([{**one, "digest": b64(snap.digest[:31])}]),
        "a kind off the pattern": body([{**one, "kind": "Group State/1"}]),
        "a negative epoch": body([{**one, "mls_epoch": -1}]),
        "an epoch of 2^53": body([{**one, "mls_epoch": 1 << 53}]),
        "an extra field": body([{**one, "extra": 1}]),
        "receipts not a list": body([{**one, "receipts": b64(receipts[0])}]),
        "not base64": body([{**one, "receipts": ["*" * 228]}]),
        "items not a list": {"items": one},
        "no body": b"",
        "not JSON": b"{items",
    }
    for what, hostile_body in hostile.items():
        resp = await post_confirm(tenant, hostile_body)
        assert 400 <= resp.status < 500, (what, resp.status, resp.body[:300])
        problem = assert_problem(resp, resp.status, resp.json()["code"])
        assert problem["status"] in (400, 413, 415, 422), what
    assert await listed(tenant, snap) == [mine]
    # at the bounds: 32 receipts, 256 items (the manifest names 34 nodes)
    resp = await post_confirm(tenant, body([raw_item(snap, [mine, *receipts[:31]])]))
    assert resp.status == 200, resp.body[:300]
    assert resp.json()["results"] == [{"status": "stored", "code": None, "detail": None}]
    resp = await post_confirm(tenant, body([one] * m.MAX_BATCH))
    assert resp.status == 200
    assert [r["status"] for r in resp.json()["results"]] == ["kept"] * m.MAX_BATCH
    # 32 other nodes' receipts stored: the listing serves the own one and 31 of them
    assert await confirm(tenant, item(snap, receipts[1:])) == [("stored", None)]
    served = await listed(tenant, snap)
    assert len(served) == m.MAX_RECEIPTS and served[0] == mine
    assert set(served[1:]) < set(receipts[1:])
    assert own.public_key not in {pre.SnapshotReceipt.from_bytes(r).node_key for r in served[1:]}


# snapshots stored by the previous version: no receipt until listed or published again


async def store_legacy(tenant: Tenant, redis: aioredis.Redis, snap: pre.SealedSnapshot) -> int:
    """Store `snap` as the version before receipts did: no `at`, no `rc`."""
    h = snap.header
    node = tenant.node
    outcome = await node.storage.publish(
        tenant.account.id_hex,
        SnapshotWrite(
            label=h.label,
            key_epoch=h.key_epoch,
            group_id=h.group_id,
            kind=h.kind,
            mls_epoch=h.mls_epoch,
            author=h.author.hex(),
            digest=snap.digest,
            data=snap.to_bytes(),
            retain=node.settings.retention(h.kind),
        ),
    )
    assert outcome.status == "stored" and outcome.seq is not None
    key = f"sc:{{{tenant.account.id_hex}}}:snap:{outcome.seq}"
    await redis.hdel(key, "at", "rc")
    fields = await redis.hkeys(key)
    assert b"data" in fields and b"digest" in fields
    assert b"rc" not in fields and b"at" not in fields and b"cert" not in fields
    return outcome.seq


async def test_a_legacy_snapshot_is_receipted_when_first_listed(
    tenant: Tenant, clock: Clock, redis: aioredis.Redis
) -> None:
    key = own_secrets(tenant.node).public_key
    snaps = [tenant.seal(group=b"legacy", kind=k, epoch=2) for k in ("group_state", "ratchet_tree")]
    seqs = [await store_legacy(tenant, redis, s) for s in snaps]
    clock.advance(600)
    page = await tenant.admin_client.list_snapshots(group_id=b"legacy", receipts=False)
    assert [(i.seq, i.receipts) for i in page.items] == [(seq, []) for seq in seqs]
    listed_at = int(clock.now)
    page = await tenant.admin_client.list_snapshots(group_id=b"legacy", data=False)
    assert [i.seq for i in page.items] == seqs
    receipts = []
    for snap, entry in zip(snaps, page.items, strict=True):
        assert len(entry.receipts) == 1
        check_receipt(entry.receipts[0], key, tenant, snap, listed_at)
        receipts.append(entry.receipts[0])
    for seq, receipt in zip(seqs, receipts, strict=True):  # persisted
        stored = await redis.hmget(f"sc:{{{tenant.account.id_hex}}}:snap:{seq}", "rc", "at")
        assert stored == [receipt, str(listed_at).encode()]
    clock.advance(600)
    for data in (True, False):
        assert [await listed(tenant, s, data=data) for s in snaps] == [[r] for r in receipts]
    # a duplicate publish answers the same receipt
    again = await tenant.admin_client.put_snapshot(snaps[1])
    assert (again.status, again.receipt) == ("duplicate", receipts[1])
    # other nodes' receipts are kept for it like for any other
    other = pre.NodeSecrets.generate()
    await with_nodes(tenant, [key, other.public_key])
    assert await confirm(tenant, item(snaps[1], [receipt_of(other, snaps[1])])) == [
        ("stored", None)
    ]
    assert await listed(tenant, snaps[1]) == [receipts[1], receipt_of(other, snaps[1])]


async def test_a_legacy_snapshot_published_again_answers_a_receipt(
    tenant: Tenant, clock: Clock, redis: aioredis.Redis
) -> None:
    key = own_secrets(tenant.node).public_key
    snap = tenant.seal(author=tenant.member, group=b"legacy dup", epoch=3)
    seq = await store_legacy(tenant, redis, snap)
    clock.advance(300)
    answer = await tenant.member_client.put_snapshot(snap)
    assert (answer.status, answer.seq) == ("duplicate", seq) and answer.receipt is not None
    check_receipt(answer.receipt, key, tenant, snap, int(clock.now))
    clock.advance(300)
    batch = (await tenant.member_client.publish([snap])).results[0]
    assert (batch.status, batch.seq, batch.receipt) == ("duplicate", seq, answer.receipt)
    assert await listed(tenant, snap) == [answer.receipt]
    # another legacy record, first published again through the batch route
    snap2 = tenant.seal(group=b"legacy dup", kind="ratchet_tree", epoch=3)
    await store_legacy(tenant, redis, snap2)
    clock.advance(5)
    first = (await tenant.admin_client.publish([snap2])).results[0]
    assert first.status == "duplicate" and first.receipt is not None
    check_receipt(first.receipt, key, tenant, snap2, int(clock.now))
    assert await listed(tenant, snap2, data=False) == [first.receipt]


async def test_a_receipt_is_not_given_to_a_snapshot_that_is_gone(
    tenant: Tenant, redis: aioredis.Redis
) -> None:
    """A legacy record deleted between a listing's read and its receipt leaves no stray
    hash behind."""
    storage = tenant.node.storage
    receipt = receipt_of(own_secrets(tenant.node), tenant.seal())
    missing = 1 << 40
    assert await storage.set_receipt(tenant.account.id_hex, missing, 5, receipt) == receipt
    assert not await redis.exists(f"sc:{{{tenant.account.id_hex}}}:snap:{missing}")

"""Limits a user can read: the largest state worked out once, a node's limits in
`GET /v1/node`, account quotas checked where a snapshot is stored, and registration
limited per client address (counted in Redis, shared by every process on it)."""

from __future__ import annotations

import json
import os

import pytest

import pre
from cache_service.api.client_address import resolve_client
from cache_service.api.keys import SERVICES
from cache_service.protocol import models as m
from cache_service.protocol.limits import (
    SEAL_OVERHEAD,
    SNAPSHOT_OVERHEAD,
    format_mib,
    largest_sealed,
    largest_state,
    publish_body_bytes,
)
from cache_service.settings import Settings
from tests.cache_service.conftest import (
    Node,
    OwnRedis,
    StartNode,
    Tenant,
    assert_problem,
    expect_error,
    make_tenant,
    new_account,
)
from tests.cache_service.test_snapshot_receipts import confirm, item, receipt_of, with_nodes

MiB = 1024 * 1024


# the largest state


def _largest_header_seal(tenant: Tenant, size: int) -> pre.SealedSnapshot:
    """A snapshot whose header is as large as a header gets."""
    group = os.urandom(pre.MAX_GROUP_ID_SIZE)
    _, kek = pre.create_key_capsule(
        tenant.account.secrets, pre.label_for_group(group), 0, now=int(tenant.now)
    )
    return pre.seal_snapshot(
        kek,
        tenant.account.admin.secrets,
        group_id=group,
        kind="k" * 32,
        mls_epoch=2**64 - 1,
        plaintext=bytes(size),
        now=int(tenant.now),
        prev_hash=bytes(32),
        tree_hash=bytes(64),
        epoch_authenticator=b"authenticator",
    )


async def test_the_sealing_overhead_is_what_the_largest_header_adds(tenant: Tenant) -> None:
    for size in (16 * 1024, 300_000):
        sealed = _largest_header_seal(tenant, size)
        assert len(sealed.to_bytes()) - size == SEAL_OVERHEAD
    assert len(tenant.seal(plaintext=bytes(300_000)).to_bytes()) - 300_000 < SEAL_OVERHEAD


def test_the_largest_state_of_the_default_body_limit() -> None:
    body = 16 * MiB
    sealed = largest_sealed(body)
    assert publish_body_bytes([sealed]) <= body < publish_body_bytes([sealed + 1])
    # the JSON body a NodeClient sends, measured
    request = m.PublishRequest(snapshots=[bytes(sealed)]).model_dump_json(exclude_none=True)
    assert len(request) == publish_body_bytes([sealed])
    assert largest_state(body) == 12_582_249 == sealed - SEAL_OVERHEAD
    assert format_mib(largest_state(body)) == "11.9 MiB"  # never overstated
    assert format_mib(13 * MiB + 1, up=True) == "13.1 MiB"
    assert largest_state(1024) == 0 or largest_state(1024) < 1024


async def test_a_node_takes_exactly_the_largest_state_of_its_body_limit(
    start_node: StartNode,
) -> None:
    body = 256 * 1024
    node = await start_node(max_body_bytes=body)
    tenant = await make_tenant(node)
    largest = largest_state(body)
    group = os.urandom(pre.MAX_GROUP_ID_SIZE)
    capsule, kek = pre.create_key_capsule(
        tenant.account.secrets, pre.label_for_group(group), 0, now=int(tenant.now)
    )
    await tenant.admin_client.put_capsule(capsule)

    def sealed(size: int, epoch: int) -> pre.SealedSnapshot:
        return pre.seal_snapshot(
            kek, tenant.account.admin.secrets, group_id=group, kind="k" * 32,
            mls_epoch=epoch, plaintext=os.urandom(size), now=int(tenant.now),
            prev_hash=bytes(32), tree_hash=bytes(64), epoch_authenticator=b"a",
        )  # fmt: skip

    answer = await tenant.admin_client.publish([sealed(largest, 1)])
    assert [r.status for r in answer.results] == ["stored"]
    # one byte more does not fit the body: refused whole, 413
    await expect_error(tenant.admin_client.publish([sealed(largest + 1, 2)]), 413, "too_large")


# what GET /v1/node advertises


async def test_node_info_advertises_the_limits(start_node: StartNode) -> None:
    node = await start_node(max_body_bytes=2 * MiB, quota_groups=7, quota_stored_bytes=5 * MiB)
    info = await node.client().node_info()
    assert info.limits == m.NodeLimits(
        max_body_bytes=2 * MiB,
        largest_state=largest_state(2 * MiB),
        max_batch=node.settings.max_batch,
        quota_groups=7,
        quota_stored_bytes=5 * MiB,
        register_per_hour=node.settings.register_per_hour,
    )
    document = (await node.send("GET", "/v1/openapi.json")).json()
    assert "limits" in document["components"]["schemas"]["NodeInfo"]["properties"]


def test_node_info_of_an_older_node_without_limits_is_read() -> None:
    older = {"node_id": "ab" * 32, "public_key": "A" * 43, "share_index": 1, "version": "0.1.0"}
    assert m.NodeInfo.model_validate_json(json.dumps(older)).limits is None
    # a newer node may advertise more limits: ignored, not refused
    limits = {
        "max_body_bytes": 1024, "largest_state": 100, "max_batch": 1, "quota_groups": 1,
        "quota_stored_bytes": 1, "register_per_hour": 1, "max_something_new": 3,
    }  # fmt: skip
    info = m.NodeInfo.model_validate_json(json.dumps({**older, "limits": limits}))
    assert info.limits is not None and info.limits.largest_state == 100
    with pytest.raises(ValueError):  # but what it advertises is bounded
        m.NodeInfo.model_validate_json(json.dumps({**older, "limits": {**limits, "max_batch": 0}}))


# quotas


async def test_a_new_group_beyond_the_quota_is_refused_naming_it(start_node: StartNode) -> None:
    node = await start_node(quota_groups=2)
    tenant = await make_tenant(node)
    admin = tenant.admin_client
    answer = await admin.publish([tenant.seal(group=b"g1"), tenant.seal(group=b"g2")])
    assert [r.status for r in answer.results] == ["stored", "stored"]
    answer = await admin.publish([tenant.seal(group=b"g3"), tenant.seal(group=b"g1", epoch=2)])
    refused, kept = answer.results
    assert (refused.status, refused.code, refused.quota, refused.limit) == (
        "rejected", "quota_exceeded", "groups", 2,
    )  # fmt: skip
    assert refused.detail is not None and "2 groups" in refused.detail
    assert kept.status == "stored"  # a group it holds is not a new group
    err = await expect_error(admin.put_snapshot(tenant.seal(group=b"g3")), 403, "quota_exceeded")
    assert (err.problem["quota"], err.problem["limit"]) == ("groups", 2)
    raw = await node.send(
        "PUT",
        f"/v1/accounts/{tenant.account.id_hex}/groups/ZzM/group_state",
        body=tenant.seal(group=b"g3").to_bytes(),
        content_type="application/octet-stream",
        device=tenant.account.admin,
    )
    assert_problem(raw, 403, "quota_exceeded")


async def test_one_account_at_its_quota_leaves_another_unaffected(
    start_node: StartNode,
) -> None:
    node = await start_node(quota_groups=1)
    full, other = await make_tenant(node), await make_tenant(node)
    await full.admin_client.put_snapshot(full.seal(group=b"mine"))
    await expect_error(
        full.admin_client.put_snapshot(full.seal(group=b"more")), 403, "quota_exceeded"
    )
    assert (await other.admin_client.put_snapshot(other.seal(group=b"more"))).status == "stored"


async def test_replaced_snapshots_do_not_count_against_the_stored_bytes(
    start_node: StartNode,
) -> None:
    size = 10_000
    node = await start_node(quota_stored_bytes=3 * size)  # retention 1: one per group
    tenant = await make_tenant(node)
    admin = tenant.admin_client
    for epoch in range(1, 6):  # each replaces the last: usage stays one snapshot
        stored = await admin.put_snapshot(tenant.seal(epoch=epoch, plaintext=bytes(size)))
        assert stored.status == "stored"
    usage = await node.storage.usage(tenant.account.id_hex)
    assert usage is not None and size < usage[0] < 2 * size and usage[1] == 1
    await admin.put_snapshot(tenant.seal(group=b"second", plaintext=bytes(size)))
    err = await expect_error(
        admin.put_snapshot(tenant.seal(group=b"third", plaintext=bytes(size))),
        403,
        "quota_exceeded",
    )
    assert (err.problem["quota"], err.problem["limit"]) == ("stored_bytes", 3 * size)


async def test_a_purge_gives_back_bytes_and_groups(start_node: StartNode) -> None:
    node = await start_node(quota_groups=2)
    tenant = await make_tenant(node, grant=True)
    admin, member, now = tenant.admin_client, tenant.member, int(tenant.now)
    await tenant.member_client.publish([tenant.seal(author=member, group=b"wedged")])
    await admin.put_snapshot(tenant.seal(group=b"kept"))
    before = await node.storage.usage(tenant.account.id_hex)
    assert before is not None and before[1] == 2
    await expect_error(admin.put_snapshot(tenant.seal(group=b"new")), 403, "quota_exceeded")
    await admin.revoke(pre.revoke_device(tenant.account.secrets, member.secrets.device_id, now=now))
    purge = pre.purge_group(
        tenant.account.secrets, b"wedged", member.secrets.device_id, from_epoch=0, now=now
    )
    assert (await admin.purge(purge)).deleted == 1
    after = await node.storage.usage(tenant.account.id_hex)
    assert after is not None and after[1] == 1 and after[0] < before[0]
    assert (await admin.put_snapshot(tenant.seal(group=b"new"))).status == "stored"


async def test_an_account_stored_before_quotas_is_counted_at_its_next_publish(
    start_node: StartNode,
) -> None:
    node = await start_node(quota_groups=3)
    tenant = await make_tenant(node)
    admin = tenant.admin_client
    await admin.publish([tenant.seal(group=g, plaintext=bytes(1000)) for g in (b"a", b"b")])
    # what the previous version left: the snapshots, no counters
    await node.storage._r.delete(f"sc:{{{tenant.account.id_hex}}}:usage")
    assert await node.storage.usage(tenant.account.id_hex) is None
    assert (await admin.put_snapshot(tenant.seal(group=b"c"))).status == "stored"
    usage = await node.storage.usage(tenant.account.id_hex)
    rows, _, _ = await node.storage.list_snapshots(
        tenant.account.id_hex, descending=False, start=None, limit=100, group_id=None
    )
    assert usage == (sum(len(r.data) + SNAPSHOT_OVERHEAD for r in rows), 3)
    await expect_error(admin.put_snapshot(tenant.seal(group=b"d")), 403, "quota_exceeded")


async def test_counters_kept_by_the_previous_rule_are_counted_again(start_node: StartNode) -> None:
    """Counters from before a snapshot's overhead and receipts were charged (`v` 1) are
    counted again, whole, at the account's next publish."""
    node = await start_node()
    tenant = await make_tenant(node)
    admin = tenant.admin_client
    await admin.publish([tenant.seal(group=g, plaintext=bytes(500)) for g in (b"a", b"b")])
    key = f"sc:{{{tenant.account.id_hex}}}:usage"
    await node.storage._r.hset(key, mapping={"bytes": 1, "groups": 2, "v": 1})
    await admin.put_snapshot(tenant.seal(group=b"c", plaintext=bytes(500)))
    rows, _, _ = await node.storage.list_snapshots(
        tenant.account.id_hex, descending=False, start=None, limit=100, group_id=None
    )
    assert await node.storage.usage(tenant.account.id_hex) == (
        sum(len(r.data) + SNAPSHOT_OVERHEAD for r in rows),
        3,
    )


async def test_many_small_snapshots_and_kept_receipts_are_charged(start_node: StartNode) -> None:
    """What a snapshot takes in Redis besides its bytes is charged (`SNAPSHOT_OVERHEAD`),
    and so are other nodes' receipts kept with it: tiny snapshots in many kinds, and
    receipts confirmed for them, cannot hold many times the quota."""
    quota = 64 * 1024
    node = await start_node(quota_stored_bytes=quota)
    tenant = await make_tenant(node)
    admin = tenant.admin_client
    stored = 0
    for i in range(200):
        answer = await admin.publish([tenant.seal(kind=f"k{i}", plaintext=b"x")])
        if answer.results[0].status != "stored":
            break
        stored += 1
    sealed = len(tenant.seal(kind="k", plaintext=b"x").to_bytes())  # kinds k0..: 1-3 more
    assert quota // (sealed + 3 + SNAPSHOT_OVERHEAD) <= stored
    assert stored <= quota // (sealed + SNAPSHOT_OVERHEAD)
    used_before = (await node.storage.usage(tenant.account.id_hex) or (0, 0))[0]
    others = [pre.NodeSecrets.generate() for _ in range(3)]
    await with_nodes(tenant, [node.app[SERVICES].node.public_key, *(o.public_key for o in others)])
    rows, _, _ = await node.storage.list_snapshots(
        tenant.account.id_hex, descending=False, start=None, limit=1, group_id=None
    )
    snap = pre.SealedSnapshot.from_bytes(rows[0].data)
    items = [item(snap, [receipt_of(o, snap) for o in others])]
    assert await confirm(tenant, *items) == [("stored", None)]
    used_after = (await node.storage.usage(tenant.account.id_hex) or (0, 0))[0]
    assert used_after - used_before == 3 * pre.SNAPSHOT_RECEIPT_SIZE


# registration


def test_the_client_address_believes_only_trusted_proxies() -> None:
    spoofed = ["203.0.113.9"]
    assert resolve_client("198.51.100.7", spoofed, ()) == "198.51.100.7"
    assert resolve_client("198.51.100.7", spoofed, ("10.0.0.0/8",)) == "198.51.100.7"
    proxies = ("10.0.0.0/8", "192.0.2.1")
    chain = ["203.0.113.9, 198.51.100.7", "192.0.2.1"]  # the client forged the first hop
    assert resolve_client("10.1.2.3", chain, proxies) == "198.51.100.7"
    assert resolve_client("10.1.2.3", [], proxies) == "10.1.2.3"
    assert resolve_client("10.1.2.3", ["not an address"], proxies) == "10.1.2.3"
    assert resolve_client("2001:db8:1:2:3::4", [], ()) == "2001:db8:1:2::/64"
    assert resolve_client("::ffff:198.51.100.7", [], ()) == "198.51.100.7"
    assert resolve_client(None, spoofed, ()) == "unknown"
    # hops as proxies write them, with a port: the client, not the proxy's own bucket
    assert resolve_client("10.1.2.3", ["198.51.100.7:51234"], proxies) == "198.51.100.7"
    assert resolve_client("10.1.2.3", ["[2001:db8::9]:443"], proxies) == "2001:db8::/64"


async def _register(node: Node, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    account = new_account(node.clock())
    body = m.RegisterAccountRequest(
        account=account.record.to_bytes(), admin_certificate=account.admin.cert.to_bytes()
    ).model_dump_json()
    raw = await node.send("POST", "/v1/accounts", body=body.encode(), headers=headers)
    return raw.status, {**raw.headers, **({"body": raw.json()} if raw.body else {})}


async def test_registration_is_limited_per_address_across_processes(
    start_node: StartNode, own_redis: OwnRedis
) -> None:
    redis = await own_redis()  # its own counters: other tests register from 127.0.0.1 too
    one = await start_node(socket=redis.socket, register_per_hour=2)
    two = await start_node(socket=redis.socket, register_per_hour=2)
    assert (await _register(one))[0] == 201
    assert (await _register(two))[0] == 201
    status, answer = await _register(one)
    assert status == 429 and answer["body"]["code"] == "rate_limited"
    assert 3500 <= int(answer["Retry-After"]) <= 3600
    assert "at most 2 account registrations per hour" in answer["body"]["detail"]
    # a client cannot pick another address by naming one
    status, _ = await _register(two, {"X-Forwarded-For": "203.0.113.9"})
    assert status == 429
    # the window closes: the counter expires in Redis
    await one.storage._r.delete("sc:reg:{127.0.0.1}")
    assert (await _register(one))[0] == 201


async def test_registration_behind_a_trusted_proxy_counts_the_forwarded_client(
    start_node: StartNode, own_redis: OwnRedis
) -> None:
    redis = await own_redis()
    node = await start_node(
        socket=redis.socket, register_per_hour=1, trusted_proxies=("127.0.0.0/8",)
    )
    assert (await _register(node, {"X-Forwarded-For": "198.51.100.1"}))[0] == 201
    assert (await _register(node, {"X-Forwarded-For": "198.51.100.2"}))[0] == 201
    status, answer = await _register(node, {"X-Forwarded-For": "198.51.100.1"})
    assert status == 429 and answer["body"]["code"] == "rate_limited"


def test_limit_settings_have_environment_twins() -> None:
    settings = Settings.from_env(
        {
            "STATECACHE_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1,",
            "STATECACHE_REGISTER_PER_HOUR": "5",
            "STATECACHE_QUOTA_GROUPS": "3",
            "STATECACHE_QUOTA_STORED_BYTES": "4096",
        }
    )
    assert settings.trusted_proxies == ("10.0.0.0/8", "192.0.2.1")
    assert (settings.register_per_hour, settings.quota_groups) == (5, 3)
    assert settings.quota_stored_bytes == 4096
    defaults = Settings()
    assert (defaults.register_per_hour, defaults.trusted_proxies) == (20, ())
    assert (defaults.quota_groups, defaults.quota_stored_bytes) == (10_000, 1024 * MiB)
    with pytest.raises(ValueError, match="not-an-address"):
        Settings.from_env({"STATECACHE_TRUSTED_PROXIES": "not-an-address"})


async def test_a_purge_of_snapshots_already_gone_deletes_nothing(node: Node) -> None:
    """Two purges racing (or a purge racing retention) list the same snapshots: the
    second finds them gone and takes nothing off the counters (not an error)."""
    tenant = await make_tenant(node)
    stored = await tenant.admin_client.put_snapshot(tenant.seal(group=b"gone"))
    assert stored.seq is not None
    account = tenant.account.id_hex
    assert await node.storage.delete_snapshots(account, b"gone", [stored.seq]) == 1
    before = await node.storage.usage(account)
    assert await node.storage.delete_snapshots(account, b"gone", [stored.seq]) == 0
    assert await node.storage.usage(account) == before == (0, 0)

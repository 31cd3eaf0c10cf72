"""Redis Cluster runs a script only over the keys it declares: every key a storage script
touches must be in its KEYS, and all keys of one storage operation must share one slot.

A battery of every storage operation runs against a fresh redis-server while a MONITOR
connection records what the server executes; the server resolves each command's keys
(`COMMAND GETKEYS`). Then: every command a script issued names only keys of its EVALSHA's
KEYS, and each operation's keys hash to one cluster slot.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.crc import key_slot

from cache_service.api.middleware import problem_response
from cache_service.embedded_redis import EmbeddedRedis
from cache_service.errors import Code, ServiceError
from cache_service.protocol.limits import SNAPSHOT_OVERHEAD
from cache_service.storage import RedisStorage, SnapshotWrite, StoredManifest, WriteOutcome
from cache_service.storage.redis_base import ATTEMPTS, REACH_GROWTH, REACH_MAX
from cache_service.storage.redis_scripts import SEQ_WINDOW
from tests.cache_service.conftest import OwnRedis, short_tempdir
from tests.cache_service.redis_monitor import Operation, RedisMonitor, script_calls

ADMIN, MEMBER = "aa" * 16, "bb" * 16
STATE, BASE, PATCH = "group_state", "ratchet_tree", "ratchet_tree_patch"


@dataclass
class Recording:
    operations: list[Operation]
    scripts: dict[str, str]  # sha -> the attribute naming the script on RedisStorage


def write(
    group: bytes, kind: str, epoch: int, *, retain: int = 1, prunes: str | None = None,
    tag: bytes = b"",
) -> SnapshotWrite:  # fmt: skip
    data = b"sealed:%s:%s:%d:%s" % (group, kind.encode(), epoch, tag)
    digest = hashlib.sha256(data).digest()
    return SnapshotWrite(
        "account", 0, group, kind, epoch, ADMIN, digest, data, retain, prunes=prunes,
        receipt=b"rc:" + digest,
    )  # fmt: skip


async def battery(storage: RedisStorage, mark: Any) -> None:
    """Every storage operation, each branch of the scripts that reaches a derived key."""
    a = secrets.token_hex(32)
    r = storage._r

    async def op(name: str, aw: Any) -> Any:
        await mark(name)
        return await aw

    await op("count_registration", storage.count_registration("127.0.0.1", window=60))
    await op("create_account", storage.create_account(a, b"record", ADMIN, b"cert"))
    await op("create_account retry", storage.create_account(a, b"record", ADMIN, b"cert"))
    await op("auth_state", storage.auth_state(a, ADMIN))
    await op("claim_nonce", storage.claim_nonce(a, ADMIN, "n1", 60))
    await op("count_request", storage.count_request(a, ADMIN, window=60, now=0))
    await op("put_device", storage.put_device(a, MEMBER, b"cert-m", 10))
    await op("list_devices", storage.list_devices(a))
    for label, epoch in (("account", 0), ("l2", 0), ("l2", 1)):
        await op(f"put_capsule {label}#{epoch}", storage.put_capsule(a, label, epoch, b"c", 10))
        await op(f"put_grant {label}#{epoch}", storage.put_grant(
            a, MEMBER, label, epoch, share=b"share", ttl=3600
        ))  # fmt: skip
    await op("list_grants", storage.list_grants(a, MEMBER))
    asked = [("account", 0), ("l2", 1), ("l2", 0), ("none", 0)]
    capsules = await op("get_capsules", storage.get_capsules(a, asked))
    assert capsules == {("account", 0): b"c", ("l2", 1): b"c", ("l2", 0): b"c", ("none", 0): None}
    await op("get_capsule", storage.get_capsule(a, "l2", 1))
    await op("list_capsules", storage.list_capsules(a))
    _, refs = await op("revoke_device", storage.revoke_device(a, MEMBER, b"revocation"))
    assert refs == [("account", 0), ("l2", 0), ("l2", 1)]
    await op("revoke_device again", storage.revoke_device(a, MEMBER, b"other"))

    g1, tree = b"g1", b"tree"
    for epoch in (1, 2, 3):  # retention 1: each replaces the last
        await op(f"publish state {epoch}", storage.publish(a, write(g1, STATE, epoch)))
    dup = await op("publish duplicate", storage.publish(a, write(g1, STATE, 3)))
    assert dup.status is WriteOutcome.DUPLICATE
    clash = await op("publish conflict", storage.publish(a, write(g1, STATE, 3, tag=b"x")))
    assert clash.status is WriteOutcome.CONFLICT
    for epoch, kind in ((1, BASE), (2, PATCH), (3, PATCH), (4, BASE), (5, PATCH), (6, PATCH),
                        (7, BASE), (8, PATCH), (10, BASE)):  # fmt: skip
        item = write(tree, kind, epoch, retain=2 if kind == BASE else 100,
                     prunes=PATCH if kind == BASE else None)  # fmt: skip
        out = await op(f"publish {kind} {epoch}", storage.publish(a, item))
        assert out.status is WriteOutcome.STORED, out
    # an account stored before quotas: counted again at its next publish
    await op("forget usage", r.delete(storage._k(a, "usage")))
    await op("publish recount", storage.publish(a, write(g1, STATE, 4)))
    assert await op("usage", storage.usage(a)) is not None
    over = replace(write(b"g2", STATE, 1), quota_groups=1)
    quota = await op("publish quota", storage.publish(a, over))
    assert quota.status is WriteOutcome.QUOTA_GROUPS
    stored = write(g1, STATE, 4)
    for name, receipts, epoch in (("stored", b"r" * 40, 4), ("kept", b"r", 4), ("none", b"r", 9)):
        await op(f"put_receipts {name}", storage.put_receipts(
            a, group_id=g1, kind=STATE, mls_epoch=epoch, digest=stored.digest, receipts=receipts
        ))  # fmt: skip
    rows, _, _ = await op("list_snapshots", storage.list_snapshots(
        a, descending=False, start=None, limit=100, group_id=None
    ))  # fmt: skip
    await op("set_receipt", storage.set_receipt(a, rows[0].seq, 1, b"rc"))
    await op("forget usage again", r.delete(storage._k(a, "usage")))
    doomed = [row.seq for row in rows if row.group_id == tree] + [10_000]
    await op("delete_snapshots", storage.delete_snapshots(a, tree, doomed))
    await op("put_manifest", storage.put_manifest(a, StoredManifest(b"m", 1, b"d"), b""))
    await op("get_manifest", storage.get_manifest(a))
    await op("mark_deleted", storage.mark_deleted(a, b"deletion"))
    with pytest.raises(ServiceError) as refused:
        await op("publish deleted", storage.publish(a, write(g1, STATE, 5)))
    assert refused.value.code is Code.ACCOUNT_DELETED
    await op("sweep_account", storage.sweep_account(a))
    await op("finish_deletion", storage.finish_deletion(a, b"receipt"))


@pytest.fixture(scope="module")
def recording() -> Iterator[Recording]:
    """The battery, run once against a redis-server of its own under MONITOR."""
    directory = short_tempdir("sc-keys-")
    server = EmbeddedRedis(directory, appendfsync="everysec")

    async def run() -> Recording:
        await server.start()
        storage = RedisStorage(aioredis.Redis(unix_socket_path=server.socket))
        try:
            monitor = RedisMonitor(server.socket)
            await monitor.start()
            await battery(storage, lambda name: monitor.mark(storage._r, name))
            operations = await monitor.stop(storage._r)
            scripts = {
                s.sha: name for name, s in vars(storage).items() if isinstance(s, AsyncScript)
            }
            return Recording(operations, scripts)
        finally:
            await storage.close()
            await server.stop()

    try:
        yield asyncio.run(run())
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_scripts_touch_only_the_keys_they_declare(recording: Recording) -> None:
    calls = script_calls(recording.operations)
    undeclared = sorted(
        f"{call.operation}: {recording.scripts.get(call.sha, call.sha)} {command.name} {key!r}"
        for call in calls
        for command in call.issued
        for key in command.keys
        if key not in call.keys
    )
    assert not undeclared, "keys a script touched without declaring them:\n" + "\n".join(
        dict.fromkeys(undeclared)
    )
    ran = {call.sha for call in calls if call.issued}
    assert ran >= set(recording.scripts), [
        name for sha, name in recording.scripts.items() if sha not in ran
    ]  # every script of the storage was run by the battery


def test_each_operation_keeps_to_one_slot(recording: Recording) -> None:
    multi_key = 0
    for op in recording.operations:
        keys = {key for command in op.commands for key in command.keys}
        assert all(key.startswith(b"sc:") and b"{" in key for key in keys), (op.name, keys)
        slots = {key_slot(key) for key in keys}
        assert len(slots) <= 1, f"{op.name}: keys in slots {slots}: {sorted(keys)}"
        multi_key += sum(len(command.keys) > 1 for command in op.commands)
    assert multi_key > 20  # scripts, pipelines' multi-key commands (MGET, UNLINK)
    for call in script_calls(recording.operations):
        assert len({key_slot(key) for key in call.keys}) == 1, (call.operation, call.keys)


# A write whose keys move between the forecast and the script's run


def _storage(server: EmbeddedRedis) -> RedisStorage:
    """A storage of its own: another process of the node, its own forecast."""
    return RedisStorage(aioredis.Redis(unix_socket_path=server.socket))


async def _account(storage: RedisStorage) -> str:
    account = secrets.token_hex(32)
    await storage.create_account(account, b"record", ADMIN, b"cert")
    await storage.put_capsule(account, "account", 0, b"capsule", 10)
    return account


async def _script_runs(r: aioredis.Redis) -> int:
    return int((await r.info("commandstats"))["cmdstat_evalsha"]["calls"])


async def assert_consistent(r: aioredis.Redis, account: str, retain: dict[str, int]) -> None:
    """No snapshot outside the feed nor the reverse, each index naming exactly its
    snapshots, retention held, and the quota counters equal to a recount."""

    def k(*parts: str) -> str:
        return RedisStorage._k(account, *parts)

    feed = {int(seq) for seq in await r.zrange(k("feed"), 0, -1)}
    held = {int(key.rsplit(b":", 1)[1]) async for key in r.scan_iter(match=k("snap") + ":*")}
    assert held == feed, f"orphans {held - feed}, dangling {feed - held}"
    rows = {seq: await r.hmget(k("snap", str(seq)), ["group", "kind", "mls_epoch"]) for seq in feed}
    groups = {bytes(row[0]).decode() for row in rows.values()}
    addresses = {(bytes(g).decode(), bytes(kind).decode()) for g, kind, _ in rows.values()}
    indexes = {key async for key in r.scan_iter(match=k("group") + ":*")}
    assert indexes == {k("group", g).encode() for g in groups}
    for g in groups:
        members = {int(seq) for seq in await r.zrange(k("group", g), 0, -1)}
        assert members == {seq for seq, row in rows.items() if row[0] == g.encode()}
    indexes = {key async for key in r.scan_iter(match=k("gk") + ":*")}
    assert indexes == {k("gk", g, kind).encode() for g, kind in addresses}
    for g, kind in addresses:
        index = {
            int(s): int(e) for s, e in await r.zrange(k("gk", g, kind), 0, -1, withscores=True)
        }
        assert index == {
            seq: int(row[2]) for seq, row in rows.items() if row[:2] == [g.encode(), kind.encode()]
        }
        assert len(index) <= retain[kind]
    size = 0
    for seq in feed:
        for field in ("data", "cert"):
            size += await r.hstrlen(k("snap", str(seq)), field)
    usage = await r.hmget(k("usage"), ["bytes", "groups", "v"])
    assert usage == [b"%d" % (size + SNAPSHOT_OVERHEAD * len(feed)), b"%d" % len(groups), b"2"]


async def test_a_publish_whose_keys_moved_runs_again_and_stores(own_redis: OwnRedis) -> None:
    server = await own_redis("everysec")
    one, two = _storage(server), _storage(server)
    try:
        account = await _account(one)
        assert (await one.publish(account, write(b"g", STATE, 1))).status is WriteOutcome.STORED
        for epoch in range(2, 3 + SEQ_WINDOW):  # another process stores past one's forecast
            assert (await two.publish(account, write(b"g", STATE, epoch))).seq == epoch
        runs = await _script_runs(one._r)
        out = await one.publish(account, write(b"g", STATE, 10))
        assert out.status is WriteOutcome.STORED and out.seq == 3 + SEQ_WINDOW
        assert await _script_runs(one._r) - runs == 2  # asked for the keys, then stored
        runs = await _script_runs(one._r)
        assert (await one.publish(account, write(b"g", STATE, 11))).status is WriteOutcome.STORED
        assert await _script_runs(one._r) - runs == 1  # its forecast held
        await assert_consistent(one._r, account, {STATE: 1})
    finally:
        await one.close()
        await two.close()


async def test_a_publish_raced_every_time_is_a_503_to_retry(own_redis: OwnRedis) -> None:
    server = await own_redis("everysec")
    storage = _storage(server)
    account = await _account(storage)
    script, reaches = storage._publish, []

    async def raced(*, keys: list[Any], args: list[Any]) -> Any:
        # before each run, more publishes than its reach store elsewhere (as far as the
        # sequence counter tells)
        reaches.append(args[-1])
        await storage._r.incrby(RedisStorage._k(account, "seq"), args[-1] + 1)
        return await script(keys=keys, args=args)

    storage._publish = raced
    try:
        with pytest.raises(ServiceError) as refused:
            await storage.publish(account, write(b"g", STATE, 1))
        assert refused.value.code is Code.UNAVAILABLE and refused.value.status == 503
        response = problem_response(refused.value)
        assert (response.status, response.headers["Retry-After"]) == (503, "1")
        assert reaches == [min(SEQ_WINDOW * REACH_GROWTH**n, REACH_MAX) for n in (1, 2, 3, 4)]
        assert len(reaches) == ATTEMPTS
        assert await storage._r.zcard(RedisStorage._k(account, "feed")) == 0  # nothing stored
        storage._publish = script  # and once they stop, it stores
        assert (await storage.publish(account, write(b"g", STATE, 1))).status is WriteOutcome.STORED
        await assert_consistent(storage._r, account, {STATE: 1})
    finally:
        await storage.close()


async def test_concurrent_publishes_end_stored_and_consistent(own_redis: OwnRedis) -> None:
    """Three processes publish to one group at once, each of its own forecast: retention
    1 on one kind, tree bases pruning patches on the others."""
    server = await own_redis("everysec")
    storages = [_storage(server) for _ in range(3)]
    account = await _account(storages[0])
    retain = {STATE: 1, BASE: 2, PATCH: 6}
    epochs = iter(range(1, 10_000))  # one sequence: each publisher's epochs go up
    outcomes: Counter[str] = Counter()

    async def publisher(storage: RedisStorage, kind: str, tag: bytes) -> None:
        for _ in range(30):
            item = write(b"g", kind, next(epochs), retain=retain[kind], tag=tag,
                         prunes=PATCH if kind == BASE else None)  # fmt: skip
            try:
                outcomes[(await storage.publish(account, item)).status] += 1
            except ServiceError as exc:
                assert exc.code is Code.UNAVAILABLE
                outcomes[exc.code] += 1

    try:
        await asyncio.gather(*(
            publisher(storage, kind, b"%d" % i)
            for i, storage in enumerate(storages)
            for kind in (STATE, BASE, PATCH)
        ))  # fmt: skip
        assert outcomes[WriteOutcome.STORED] > 30, outcomes
        await assert_consistent(storages[0]._r, account, retain)
    finally:
        for storage in storages:
            await storage.close()

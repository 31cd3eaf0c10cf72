"""Acknowledged writes survive redis-server crashes (kill -9 at random moments).

The node's storage (`cache_service.storage.RedisStorage`) is driven directly by concurrent
writers: snapshot publications, grant writes and revocations, against an embedded
redis-server with AOF. Its redis-py client never retries, so an acknowledgement is
Redis's own reply to that exact command. At random moments redis-server is killed
(SIGKILL), the writers park, Redis restarts on the same data directory (loading the AOF),
and every write acknowledged before the kill is checked before anyone writes again (a
later write must not hide a lost one):

- a publication: its (group, kind) holds that MLS epoch or a newer one;
- a grant: its share is stored byte for byte, unless its device's revocation was
  acknowledged, in which case it is gone;
- a revocation: recorded, every share of the device deleted, and a new grant refused.

Two crashes for each `appendfsync` mode:

- process crash: only redis-server dies. What it has written survives in the kernel's
  page cache, synced or not, so this shows what a crash of Redis or the node loses;
- power cut: the same kill with an LD_PRELOAD shim (`unsynced_writes.c`) that holds AOF
  writes in memory until Redis fsyncs them, so the kill loses exactly what an operating-
  system crash or power cut would.

Figure: acknowledged writes lost (goal 0 with `always`); for `everysec`, the loss observed
(how many, and how long before the kill they were acknowledged).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import secrets
import shutil
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from cache_service.embedded_redis import EmbeddedRedis
from cache_service.errors import Code, ServiceError
from cache_service.storage import RedisStorage, SnapshotWrite, WriteOutcome
from tests.client_sdk.conftest import short_tempdir
from tests.reliability.figures import record
from tests.reliability.sizes import SIZES

SHIM_SOURCE = Path(__file__).with_name("unsynced_writes.c")
AOF = "statecache.aof"
ACCOUNTS = 3
GROUPS_PER_WRITER = 4
KINDS = ("group_state", "group_info")
EVERYSEC_STRETCH = 1.5  # seconds between kills, at least
MODES = [
    ("always", "process"),
    ("always", "power"),
    ("everysec", "process"),
    ("everysec", "power"),
]


@pytest.fixture(scope="module")
def shim() -> Iterator[Path | None]:
    """The shim, built with the system C compiler (None without one: power cuts skipped)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        yield None
        return
    directory = short_tempdir("sc-shim-")
    library = directory / "unsynced_writes.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(SHIM_SOURCE), "-ldl",
         "-lpthread"],
        check=True,
    )  # fmt: skip
    yield library
    shutil.rmtree(directory, ignore_errors=True)


class CrashableRedis(EmbeddedRedis):
    """The embedded redis-server, optionally under the unsynced-writes shim."""

    def __init__(self, data_dir: Path, *, appendfsync: str, shim: Path | None) -> None:
        super().__init__(data_dir, appendfsync=appendfsync)
        self.shim = shim

    def command(self) -> list[str]:
        # No background rewrite: the check is about the append path.
        argv = [*super().command(), "--auto-aof-rewrite-percentage", "0"]
        if self.shim is None:
            return argv
        return ["env", f"LD_PRELOAD={self.shim}", f"UNSYNCED_FILE={AOF}", *argv]


@dataclass
class Ack:
    """One write Redis acknowledged."""

    kind: str  # publish | grant | revoke
    account: str
    device: str = ""
    group: bytes = b""
    snapshot_kind: str = ""
    mls_epoch: int = 0
    ref: str = ""  # grant: "<label>#<epoch>"
    value: bytes = b""
    at: float = 0.0  # time.monotonic() when acknowledged


@dataclass
class Round:
    """What one kill lost."""

    acknowledged: int = 0
    lost: list[Ack] = field(default_factory=list)
    killed_at: float = 0.0
    revocations_lost: int = 0
    shares_back: int = 0  # shares of a device whose revocation was acknowledged
    grants_refused_after_revocation: int = 0


class Workload:
    def __init__(
        self, redis: CrashableRedis, writers: int, writes: int, seed: int, pace: float = 0.0
    ) -> None:
        self.redis = redis
        self.pace = pace  # seconds each writer waits between writes
        self.writes = writes
        self.writers = writers
        self.rng = random.Random(seed)
        self.accounts = [secrets.token_hex(32) for _ in range(ACCOUNTS)]
        self.acks: list[Ack] = []
        self.up = asyncio.Event()
        self.up.set()
        self.parked = 0
        self.unacknowledged = 0
        self.unexpected: list[str] = []  # answers that are neither an ack nor a lost call
        self.tasks: list[asyncio.Future[None]] = []
        # per device: grant refs written (acknowledged or not), revocation attempted/acked
        self.refs: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.revoke_tried: set[tuple[str, str]] = set()
        self.revoked: set[tuple[str, str]] = set()
        self.storage = self._connect()

    def _connect(self) -> RedisStorage:
        # retries off: an acknowledgement is the reply to that very command
        return RedisStorage(
            aioredis.Redis(unix_socket_path=self.redis.socket, retry=Retry(NoBackoff(), 0))
        )

    async def setup(self) -> None:
        for account in self.accounts:
            await self.storage.create_account(account, b"record", "00" * 16, b"admin")
            await self.storage.put_capsule(account, "account", 0, b"capsule", 10)
        # a clean restart: Redis syncs the AOF as it stops, so the setup itself is durable
        await self.storage.close()
        await self.redis.stop()
        await self.redis.start()
        self.storage = self._connect()

    # writers

    async def writer(self, index: int) -> None:
        rng = random.Random(self.rng.random())
        account = self.accounts[index % ACCOUNTS]
        groups = [f"w{index}g{g}".encode() for g in range(GROUPS_PER_WRITER)]
        epochs: dict[tuple[bytes, str], int] = defaultdict(int)  # attempted
        devices: list[str] = []
        while len(self.acks) < self.writes:
            if not self.up.is_set():
                self.parked += 1
                await self.up.wait()
                self.parked -= 1
                continue
            roll = rng.random()
            try:
                if roll < 0.7:
                    key = (rng.choice(groups), rng.choice(KINDS))
                    epochs[key] += 1
                    await self.publish(account, *key, epochs[key], rng)
                elif roll < 0.92 or len(devices) < 2:
                    if not devices or rng.random() < 0.3:
                        device = secrets.token_hex(16)
                        await self.storage.put_device(account, device, b"cert", 10_000)
                        devices.append(device)
                    else:
                        await self.grant(account, rng.choice(devices), rng)
                else:
                    device = devices.pop(rng.randrange(len(devices)))
                    await self.revoke(account, device)
            except (RedisError, OSError):
                self.unacknowledged += 1
            await asyncio.sleep(rng.uniform(0, 2 * self.pace))
        self.parked += 1  # done: counts as parked for the controller

    async def publish(
        self, account: str, group: bytes, kind: str, epoch: int, rng: random.Random
    ) -> None:
        data = rng.randbytes(rng.randint(100, 1200))
        digest = hashlib.sha256(data).digest()
        write = SnapshotWrite("account", 0, group, kind, epoch, "00" * 16, digest, data, 1)
        outcome = await self.storage.publish(account, write)
        if outcome.status is not WriteOutcome.STORED:  # every epoch is a new one
            self.unexpected.append(f"publish {group!r} {kind} {epoch}: {outcome}")
            return
        self.acks.append(
            Ack("publish", account, group=group, snapshot_kind=kind, mls_epoch=epoch,
                value=digest, at=time.monotonic())
        )  # fmt: skip

    async def grant(self, account: str, device: str, rng: random.Random) -> None:
        label = f"group:{secrets.token_urlsafe(8)}"
        share = rng.randbytes(480)
        self.refs[(account, device)].add(f"{label}#0")
        await self.storage.put_grant(account, device, label, 0, share=share, ttl=86_400)
        self.acks.append(
            Ack("grant", account, device=device, ref=f"{label}#0", value=share,
                at=time.monotonic())
        )  # fmt: skip

    async def revoke(self, account: str, device: str) -> None:
        self.revoke_tried.add((account, device))
        await self.storage.revoke_device(account, device, b"revocation:" + device.encode())
        self.revoked.add((account, device))
        self.acks.append(Ack("revoke", account, device=device, at=time.monotonic()))

    # the controller

    async def crash(self, acks_before: int) -> Round:
        """Kill redis-server (writers park), restart it, check what was acknowledged."""
        self.up.clear()
        self.redis.kill()
        killed_at = time.monotonic()
        while self.parked < self.writers:  # nobody can write now: Redis is down
            for task in self.tasks:
                if task.done() and task.exception() is not None:
                    raise AssertionError("a writer failed") from task.exception()
            await asyncio.sleep(0.002)
        await self.storage.close()
        await self.redis.start()
        self.storage = self._connect()
        acked = self.acks[acks_before:]
        result = await self.check(acked)
        result.killed_at = killed_at
        self.up.set()
        return result

    async def check(self, acked: list[Ack]) -> Round:
        result = Round(acknowledged=len(acked))
        newest: dict[tuple[str, bytes, str], tuple[int, bytes]] = {}
        for ack in acked:
            if ack.kind == "publish":
                key = (ack.account, ack.group, ack.snapshot_kind)
                if key not in newest:
                    newest[key] = await self.stored_epoch(*key)
                epoch, digest = newest[key]
                if epoch < ack.mls_epoch or (epoch == ack.mls_epoch and digest != ack.value):
                    result.lost.append(ack)
            elif ack.kind == "grant":
                device = (ack.account, ack.device)
                stored = await self.share(ack.account, ack.device, ack.ref)
                if device in self.revoked:
                    continue  # checked with its revocation below
                if device not in self.revoke_tried and stored != ack.value:
                    result.lost.append(ack)
            else:
                state = await self.storage.auth_state(ack.account, ack.device)
                if state.device is None or state.device.revocation is None:
                    result.lost.append(ack)
                    result.revocations_lost += 1
        # no revocation acknowledged since the last check lets a share of its device back,
        # and none takes a new one
        for account, device in sorted({(a.account, a.device) for a in acked if a.kind == "revoke"}):
            result.shares_back += await self.shares_back(account, device)
            state = await self.storage.auth_state(account, device)
            if state.device is not None and state.device.revocation is not None:
                try:
                    await self.storage.put_grant(
                        account, device, "account", 0, share=b"late", ttl=60
                    )
                except ServiceError as exc:
                    assert exc.code is Code.DEVICE_REVOKED
                    result.grants_refused_after_revocation += 1
                else:
                    raise AssertionError("a grant for a revoked device was stored")
        return result

    async def shares_back(self, account: str, device: str) -> int:
        """Shares of a revoked device that are stored (or listed) again."""
        back = [r for r in self.refs[(account, device)] if await self.share(account, device, r)]
        listed = await self.storage.list_grants(account, device)
        return max(len(back), len(listed))

    async def stored_epoch(self, account: str, group: bytes, kind: str) -> tuple[int, bytes]:
        rows, _, _ = await self.storage.list_snapshots(
            account, descending=True, start=None, limit=50, group_id=group
        )
        mine = [r for r in rows if r.kind == kind]
        if not mine:
            return -1, b""
        top = max(mine, key=lambda r: r.mls_epoch)
        return top.mls_epoch, top.digest

    async def share(self, account: str, device: str, ref: str) -> bytes | None:
        key = RedisStorage._k(account, "grant", device, ref)
        value = await self.storage._r.get(key)
        return None if value is None else bytes(value)


async def run_mode(appendfsync: str, crash: str, shim: Path | None) -> dict[str, Any]:
    directory = short_tempdir(f"sc-crash-{appendfsync}-")
    redis = CrashableRedis(
        directory, appendfsync=appendfsync, shim=shim if crash == "power" else None
    )
    await redis.start()
    # everysec syncs once a second: its runs are paced so that each stretch between kills
    # lasts longer than that, and the loss measured is the mode's, not the test's length
    stretches = SIZES.crash_kills + 1
    pace = 0.0
    if appendfsync == "everysec":
        pace = SIZES.crash_writers * EVERYSEC_STRETCH * stretches / SIZES.crash_writes
    work = Workload(
        redis, SIZES.crash_writers, SIZES.crash_writes, seed=hash((appendfsync, crash)), pace=pace
    )
    try:
        await work.setup()
        writers = [asyncio.ensure_future(work.writer(i)) for i in range(work.writers)]
        work.tasks = writers
        started = time.monotonic()
        rounds: list[Round] = []
        checked = 0
        # kills spread over the run, each at a random point of its stretch
        stretch = SIZES.crash_writes / (SIZES.crash_kills + 1)
        for k in range(SIZES.crash_kills):
            target = int(stretch * (k + 0.5 + work.rng.random()))
            while len(work.acks) < target and not all(w.done() for w in writers):
                await asyncio.sleep(0.001)
            await asyncio.sleep(work.rng.random() * 0.02)  # a random moment, writes in flight
            acks = len(work.acks)
            rounds.append(await work.crash(checked))
            checked = acks
        await asyncio.gather(*writers)
        elapsed = time.monotonic() - started
        final = await work.check(work.acks[checked:])  # the tail, without a kill
        back_at_end = sum([await work.shares_back(*device) for device in sorted(work.revoked)])
    finally:
        await work.storage.close()
        await redis.stop()
        shutil.rmtree(directory, ignore_errors=True)

    lost = [a for r in rounds for a in r.lost] + final.lost
    windows = [r.killed_at - min(a.at for a in r.lost) for r in rounds if r.lost]
    spans = [max(a.at for a in r.lost) - min(a.at for a in r.lost) for r in rounds if r.lost]
    return {
        "appendfsync": appendfsync,
        "crash": crash,
        "kills": len(rounds),
        "writes_acknowledged": len(work.acks),
        "writes_unacknowledged": work.unacknowledged,
        "by_kind": {k: sum(a.kind == k for a in work.acks) for k in ("publish", "grant", "revoke")},
        "seconds": round(elapsed, 2),
        "pace_seconds_per_writer_write": round(pace, 4),
        "acknowledged_lost": len(lost),
        "lost_by_kind": {k: sum(a.kind == k for a in lost) for k in ("publish", "grant", "revoke")},
        "lost_per_kill": [len(r.lost) for r in rounds],
        "loss_window_seconds_max": round(max(windows, default=0.0), 3),
        "lost_span_seconds_max": round(max(spans, default=0.0), 3),
        "unexpected_answers": work.unexpected,
        "revocations_lost": sum(r.revocations_lost for r in rounds),
        "revoked_shares_back": sum(r.shares_back for r in rounds) + final.shares_back,
        "revoked_shares_present_at_end": back_at_end,
        "grants_refused_after_revocation": sum(
            r.grants_refused_after_revocation for r in [*rounds, final]
        ),
    }


RESULTS: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module", autouse=True)
def write_figures() -> Iterator[None]:
    yield
    if not RESULTS:
        return
    always = [r for r in RESULTS.values() if r["appendfsync"] == "always"]
    everysec = {r["crash"]: r for r in RESULTS.values() if r["appendfsync"] == "everysec"}
    power = everysec.get("power")
    summary = (
        f"always: {sum(r['acknowledged_lost'] for r in always)} of "
        f"{sum(r['writes_acknowledged'] for r in always)} acknowledged writes lost over "
        f"{sum(r['kills'] for r in always)} kills, "
        f"{sum(r['revoked_shares_back'] for r in always)} revoked shares back"
    )
    if "process" in everysec:
        summary += f"; everysec, Redis killed: {everysec['process']['acknowledged_lost']} lost"
    if power is not None:
        summary += (
            f"; everysec, power cut: {power['acknowledged_lost']} lost "
            f"({power['revocations_lost']} revocations) in windows up to "
            f"{power['loss_window_seconds_max']} s before the kill"
        )
    record("crash_durability", summary, {"modes": list(RESULTS.values())})


@pytest.mark.slow
@pytest.mark.timeout(SIZES.timeout)
@pytest.mark.parametrize(("appendfsync", "crash"), MODES, ids=[f"{a}-{c}" for a, c in MODES])
async def test_acknowledged_writes_survive_kill_9(
    appendfsync: str, crash: str, shim: Path | None
) -> None:
    if crash == "power" and shim is None:
        pytest.skip("no C compiler for the unsynced-writes shim")
    figures = await run_mode(appendfsync, crash, shim)
    RESULTS[f"{appendfsync}-{crash}"] = figures
    assert figures["kills"] == SIZES.crash_kills
    assert figures["unexpected_answers"] == []
    assert figures["writes_acknowledged"] >= SIZES.crash_writes
    if appendfsync == "always":
        # the promise: nothing acknowledged is lost, no revocation undone
        assert figures["acknowledged_lost"] == 0, figures
        assert figures["revoked_shares_back"] == 0, figures
        assert figures["revoked_shares_present_at_end"] == 0, figures
    else:
        # everysec syncs each second, and Redis postpones a write for up to two more while
        # a sync is slow: a loss window of a few seconds, bounded
        assert figures["loss_window_seconds_max"] < 10, figures

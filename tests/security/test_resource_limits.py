"""Resource limits of a real node process (`python -m cache_service`, its own Redis).

Oversize bodies (declared and chunked), huge batches, deeply nested JSON, very long
strings, URLs and headers, slow-loris clients that trickle a request head and stall,
clients that stall mid-body, idle connections, and a request flood from one device. A
thread samples the node's resident memory from /proc throughout.

Figures: 413 and 429 answers and the longest any took, the longest a stalled or
trickling connection was held, 5xx answers (goal 0), and the node's peak RSS against the
stated cap (goal: under it).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest

from cache_service.protocol.b64 import encode_b64url
from client_sdk.local_nodes import LocalNode
from tests.cache_service.conftest import Tenant, make_tenant, short_tempdir, signed_headers
from tests.security.battery import FIGURES, SIZE
from tests.security.nodes import RemoteNode, descendants, rss_kib

CHECK = "resource_limits"
MiB = 1024 * 1024
MAX_BODY = 16 * MiB  # the node's default STATECACHE_MAX_BODY_BYTES, left as shipped
# The node process's peak RSS must stay under this (its Redis and workers are reported
# beside it). At rest the node holds about 70 MiB; bodies in flight are bounded by its
# budget (STATECACHE_MAX_INFLIGHT_BODY_BYTES), each costing its bytes plus their parse:
# the cap is the baseline with room, plus three times the budget.
RSS_CAP_MIB = 160 + 3 * SIZE.inflight_body_mib
SLACK = 2.0  # seconds on top of a configured timeout before we call it "held too long"

FIGURES.goal(CHECK, "server_errors_5xx", "==", 0)
FIGURES.goal(CHECK, "held_beyond_timeout", "==", 0)
FIGURES.goal(CHECK, "rss_peak_mib", "<=", RSS_CAP_MIB)


class MemorySampler(threading.Thread):
    """Peak RSS of the node process (and of its process tree) every 10 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.peak_tree_kib = 0
        self.baseline_kib = rss_kib(pid)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.01):
            own = rss_kib(self.pid)
            tree = own + sum(rss_kib(p) for p in descendants(self.pid))
            self.peak_kib = max(self.peak_kib, own)
            self.peak_tree_kib = max(self.peak_tree_kib, tree)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


@dataclass
class Target:
    local: LocalNode
    memory: MemorySampler

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.local.url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    local = LocalNode(
        1,
        short_tempdir("sc-res-") / "node",
        workers=1,
        extra_env={
            "STATECACHE_IDLE_TIMEOUT_SECONDS": str(SIZE.idle_timeout),
            "STATECACHE_BODY_TIMEOUT_SECONDS": str(SIZE.body_timeout),
            "STATECACHE_RATE_LIMIT_PER_MINUTE": str(SIZE.flood_rate_limit),
            "STATECACHE_MAX_INFLIGHT_BODY_BYTES": str(SIZE.inflight_body_mib * MiB),
        },
    )
    asyncio.run(local.start())
    assert local.process is not None
    memory = MemorySampler(local.process.pid)
    memory.start()
    try:
        yield Target(local, memory)
    finally:
        memory.stop()
        alive = local.process is not None and local.process.poll() is None
        FIGURES.set(CHECK, "node_survived", alive)
        asyncio.run(local.stop())
        shutil.rmtree(local.data_dir.parent, ignore_errors=True)


@pytest.fixture
async def remote(target: Target) -> AsyncIterator[RemoteNode]:
    async with aiohttp.ClientSession() as session:
        yield RemoteNode(target.local, session)


def account_path(tenant: Tenant, suffix: str) -> str:
    return f"/v1/accounts/{tenant.account.id_hex}{suffix}"


def record_answer(status: int, seconds: float) -> None:
    FIGURES.add(CHECK, "requests")
    if status >= 500:
        FIGURES.add(CHECK, "server_errors_5xx")
    if status in (408, 413, 429):
        FIGURES.add(CHECK, f"answers_{status}")
        FIGURES.maximum(CHECK, f"max_seconds_to_{status}", round(seconds, 3))


# raw HTTP/1.1 over a socket: what misbehaving clients send


@dataclass
class RawAnswer:
    status: int  # 0: the connection closed without an answer
    seconds: float  # from the first byte sent to the answer (or the close)
    head: bytes


async def raw_exchange(
    target: Target,
    head: bytes,
    body: bytes = b"",
    *,
    chunk: int = 256 * 1024,
    trickle: float = 0.0,
    trickle_from: int = 0,
    stall_after: int | None = None,
    limit: float = 30.0,
) -> RawAnswer:
    """Send `head` then `body` (in chunks, or from byte `trickle_from` on one byte per
    `trickle` seconds; stopping for good after `stall_after` bytes) while reading the
    answer; stop sending once it comes."""
    reader, writer = await asyncio.open_connection(*target.host_port)
    started = time.monotonic()
    data = head + body
    end = len(data) if stall_after is None else min(stall_after, len(data))

    async def send() -> None:
        with contextlib.suppress(ConnectionError, OSError):
            start = min(trickle_from, end) if trickle else 0
            writer.write(data[:start])
            step = 1 if trickle else chunk
            for i in range(start, end, step):
                writer.write(data[i : min(i + step, end)])
                await writer.drain()
                if trickle:
                    await asyncio.sleep(trickle)
            await asyncio.sleep(limit)  # stall (or simply wait for the answer)

    sender = asyncio.create_task(send())
    try:
        first = await asyncio.wait_for(reader.readline(), limit)
        seconds = time.monotonic() - started
        status = int(first.split()[1]) if first.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")) else 0
        rest = b""
        if status:
            with contextlib.suppress(TimeoutError, ConnectionError):
                rest = await asyncio.wait_for(reader.read(4096), 2)
        return RawAnswer(status, seconds, first + rest)
    finally:
        sender.cancel()
        # The node may close while the rest is still being sent (it refused the head):
        # the sender's broken pipe is the node's answer, not the test's failure.
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
            await sender
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


def request_head(method: str, path: str, headers: dict[str, str], length: int | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


JSON = {"Content-Type": "application/json"}


async def test_oversize_bodies(target: Target, remote: RemoteNode) -> None:
    tenant = await make_tenant(remote)

    over = b"x" * (MAX_BODY + 1)
    cases: list[tuple[str, bytes, bytes]] = [
        ("declared", request_head("POST", "/v1/accounts", JSON, len(over)), over),
        ("declared 1 GiB, sent 17 MiB",
         request_head("POST", "/v1/accounts", JSON, 1 << 30), b"y" * (17 * MiB)),
    ]  # fmt: skip
    chunked = b"".join(b"%x\r\n%s\r\n" % (MiB, b"z" * MiB) for _ in range(17)) + b"0\r\n\r\n"
    cases.append(
        ("chunked", request_head("POST", "/v1/accounts", {**JSON, "Transfer-Encoding": "chunked"},
                                 None), chunked)
    )  # fmt: skip
    path = account_path(tenant, "/snapshots")
    signed = signed_headers(
        tenant.member.secrets, "POST", path, body=over, created=time.time(),
        node_id=await remote.node_id(),
    )  # fmt: skip
    cases.append(("signed", request_head("POST", path, {**JSON, **signed}, len(over)), over))
    cases.append(("unsigned, authenticated route", request_head("POST", path, JSON, len(over)),
                  over))  # fmt: skip
    for _name, head, body in cases:
        answer = await raw_exchange(target, head, body)
        record_answer(answer.status, answer.seconds)
        assert answer.status == 413, (_name, answer.head[:300])
        assert b"application/problem+json" in answer.head

    # many maximum-size bodies at once, each just under the limit: parsed and refused
    # (400), or refused unread (429) once the node's body budget is taken
    huge = b'{"account": "' + b"A" * (MAX_BODY - 64) + b'", "admin_certificate": "AA"}'
    head = request_head("POST", "/v1/accounts", JSON, len(huge))
    answers = await asyncio.gather(
        *(raw_exchange(target, head, huge) for _ in range(SIZE.big_body_concurrency))
    )
    for answer in answers:
        record_answer(answer.status, answer.seconds)
        FIGURES.maximum(CHECK, "max_seconds_for_a_16_mib_body", round(answer.seconds, 3))
        assert answer.status in (400, 429), answer.head[:300]
    FIGURES.add(CHECK, "big_bodies_sent", len(answers))
    FIGURES.add(CHECK, "big_bodies_refused_unread", sum(a.status == 429 for a in answers))


async def test_bodies_in_flight_are_bounded(target: Target, remote: RemoteNode) -> None:
    """Clients that take the whole body budget (declaring 4 MiB bodies and stalling)
    make further bodies wait their turn (429, Retry-After: 1, unread), not memory grow;
    requests without a body go on; once the stalled ones time out the budget is back."""
    declared = 4 * MiB
    head = request_head("POST", "/v1/accounts", JSON, declared)
    holders = [
        asyncio.create_task(
            raw_exchange(target, head, b"x" * declared, stall_after=len(head) + 10,
                         limit=SIZE.body_timeout + 10)
        )
        for _ in range(SIZE.inflight_body_mib * MiB // declared)
    ]  # fmt: skip
    small = b'{"account": "AA", "admin_certificate": "AA"}'
    small_head = request_head("POST", "/v1/accounts", JSON, len(small))
    deadline = time.monotonic() + SIZE.body_timeout * 0.8  # before the holders time out
    while True:  # until the node has read every holder's head (and taken the budget)
        refused = await raw_exchange(target, small_head, small)
        if refused.status != 400 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    record_answer(refused.status, refused.seconds)
    assert refused.status == 429, refused.head[:300]
    assert b"Retry-After: 1" in refused.head
    FIGURES.add(CHECK, "body_budget_refusals")
    assert (await remote.send("GET", "/healthz")).status == 200
    for answer in await asyncio.gather(*holders):
        record_answer(answer.status, answer.seconds)
        assert answer.status == 408, answer.head[:200]
    accepted = await raw_exchange(target, small_head, small)
    assert accepted.status == 400, accepted.head[:300]  # parsed: not records, but read


async def test_huge_batches_deep_nesting_and_long_strings(
    target: Target, remote: RemoteNode
) -> None:
    tenant = await make_tenant(remote, grant=True)
    snapshots, reencrypt = account_path(tenant, "/snapshots"), account_path(tenant, "/reencrypt")
    one = encode_b64url(tenant.seal().to_bytes())
    item = b'{"label":"account","key_epoch":0}'
    bodies: list[tuple[str, str, bytes, set[int]]] = [
        ("257 snapshots", snapshots,
         ('{"snapshots":[' + ",".join([f'"{one}"'] * 257) + "]}").encode(), {400, 413}),
        ("100k tiny snapshots", snapshots,
         b'{"snapshots":[' + b",".join([b'"AA"'] * 100_000) + b"]}", {400, 413}),
        ("256 snapshots (the most allowed)", snapshots,
         ('{"snapshots":[' + ",".join([f'"{one}"'] * 256) + "]}").encode(), {200}),
        ("100k re-encryption items", reencrypt,
         b'{"items":[' + b",".join([item] * 100_000) + b"]}", {400, 413}),
        ("256 re-encryption items (the most allowed)", reencrypt,
         b'{"items":[' + b",".join([item] * 256) + b"]}", {200}),
        ("100k nested arrays", snapshots, b"[" * 100_000 + b"]" * 100_000, {400}),
        ("1M nested arrays", snapshots, b"[" * 1_000_000 + b"]" * 1_000_000, {400}),
        ("100k nested objects", reencrypt, b'{"a":' * 100_000 + b"1" + b"}" * 100_000, {400}),
        ("nested in a field", reencrypt, b'{"items":' + b"[" * 200_000 + b"]" * 200_000 + b"}",
         {400}),
        # a snapshot may be 32 MiB: a long item is parsed, then refused on its own
        ("15 MiB item", snapshots, b'{"snapshots":["' + b"A" * (15 * MiB) + b'"]}', {200}),
        ("12 MiB of escapes", snapshots, b'{"snapshots":["' + b"\\u0041" * (2 * MiB) + b'"]}',
         {200}),
        ("15 MiB label", reencrypt,
         b'{"items":[{"label":"' + b"a" * (15 * MiB) + b'","key_epoch":0}]}', {400}),
        ("a 1e6-digit number", reencrypt,
         b'{"items":[{"label":"account","key_epoch":1' + b"0" * 1_000_000 + b"}]}", {400}),
    ]  # fmt: skip
    register = b'{"account":"' + b"A" * (15 * MiB) + b'","admin_certificate":"AA"}'
    for name, path, body, expected in [
        *bodies,
        ("15 MiB account record, unauthenticated", "/v1/accounts", register, {400}),
    ]:
        started = time.monotonic()
        device = None if path == "/v1/accounts" else tenant.member
        resp = await remote.send("POST", path, body=body, device=device)
        seconds = time.monotonic() - started
        record_answer(resp.status, seconds)
        FIGURES.maximum(CHECK, "max_seconds_for_a_hostile_body", round(seconds, 3))
        assert resp.status in expected, (name, resp.status, resp.body[:200])
        if resp.status == 200 and path == snapshots and name.startswith("1"):
            assert {r["code"] for r in resp.json()["results"]} == {"malformed"}

    # request lines and header fields beyond the HTTP parser's limits (8190 bytes, 128
    # fields): aiohttp refuses them itself, in plain text, as the OpenAPI document says
    for name, head in (
        ("100 KiB URL", f"GET /healthz?{'a' * 100_000} HTTP/1.1\r\nHost: x\r\n\r\n".encode()),
        ("1 MiB header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * MiB + b"\r\n\r\n"),
        ("1000 headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
         + b"".join(b"X-%d: 1\r\n" % i for i in range(1000)) + b"\r\n"),
    ):  # fmt: skip
        answer = await raw_exchange(target, head)
        record_answer(answer.status, answer.seconds)
        assert answer.status in (400, 413, 414, 431), (name, answer.head[:200])
        assert b"text/plain" in answer.head or b"problem+json" in answer.head


async def test_slow_loris_and_idle_connections_are_closed(
    target: Target, remote: RemoteNode
) -> None:
    """Connections that trickle a request head (one byte every 50 ms, never finishing it)
    or send nothing at all are closed once the idle timeout has passed since they opened;
    meanwhile the node keeps answering everyone else."""
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 10_000
    count = SIZE.slowloris_connections
    limit = SIZE.idle_timeout + 10
    trickling = [
        raw_exchange(target, head, trickle=0.05, limit=limit) for _ in range(count - count // 5)
    ]
    silent = [raw_exchange(target, b"", limit=limit) for _ in range(count // 5)]
    attack = asyncio.gather(*trickling, *silent)

    # the node still answers others while the connections are held
    worst = 0.0
    for _ in range(10):
        await asyncio.sleep(SIZE.idle_timeout / 10)
        started = time.monotonic()
        resp = await remote.send("GET", "/healthz")
        worst = max(worst, time.monotonic() - started)
        assert resp.status == 200
    FIGURES.maximum(CHECK, "max_seconds_healthz_under_slowloris", round(worst, 3))

    answers = await attack
    held = max(a.seconds for a in answers)
    FIGURES.set(CHECK, "slowloris_connections", count)
    FIGURES.set(CHECK, "idle_timeout_seconds", SIZE.idle_timeout)
    FIGURES.maximum(CHECK, "max_seconds_slowloris_held", round(held, 3))
    closed = sum(1 for a in answers if a.seconds < SIZE.idle_timeout + SLACK)
    FIGURES.add(CHECK, "held_beyond_timeout", len(answers) - closed)
    assert closed == len(answers), sorted(a.seconds for a in answers)[-5:]
    assert all(a.status in (0, 400, 408) for a in answers), {a.status for a in answers}


async def test_stalled_and_trickled_bodies_get_408(target: Target, remote: RemoteNode) -> None:
    tenant = await make_tenant(remote)
    path = account_path(tenant, "/reencrypt")
    body = b'{"items": []}' + b" " * 1000
    node_id = await remote.node_id()

    def head() -> bytes:  # signed for this node (a fresh nonce each), over the whole body
        signed = signed_headers(
            tenant.member.secrets, "POST", path, body=body, created=time.time(), node_id=node_id
        )
        return request_head("POST", path, {**JSON, **signed}, len(body))

    public = request_head("POST", "/v1/accounts", JSON, len(body))
    limit = SIZE.body_timeout + 10
    heads = [head() for _ in range(10)]
    answers = await asyncio.gather(
        *(raw_exchange(target, h, body, stall_after=len(h) + 20, limit=limit) for h in heads[:5]),
        *(raw_exchange(target, public, body, stall_after=len(public), limit=limit)
          for _ in range(5)),
        *(raw_exchange(target, h, body, trickle=0.01, trickle_from=len(h), limit=limit)
          for h in heads[5:]),
    )  # fmt: skip
    for answer in answers:
        record_answer(answer.status, answer.seconds)
        FIGURES.maximum(CHECK, "max_seconds_stalled_body_held", round(answer.seconds, 3))
        assert answer.status == 408, answer.head[:300]
        assert b"Connection: close" in answer.head
        if answer.seconds > SIZE.body_timeout + SLACK + 1:
            FIGURES.add(CHECK, "held_beyond_timeout")
    FIGURES.set(CHECK, "body_timeout_seconds", SIZE.body_timeout)


async def test_flood_from_one_device(target: Target, remote: RemoteNode) -> None:
    """One device sends as fast as it can: beyond its per-minute budget every answer is a
    quick 429 with Retry-After, and other devices are not affected."""
    tenant = await make_tenant(remote)
    path = account_path(tenant, "/capsules")
    statuses: dict[int, int] = {}
    retry_after: set[str] = set()
    pending = iter(range(SIZE.flood_requests))

    async def worker() -> None:
        for _ in pending:
            started = time.monotonic()
            resp = await remote.send("GET", path, device=tenant.member)
            record_answer(resp.status, time.monotonic() - started)
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            if resp.status == 429:
                retry_after.add(resp.headers.get("Retry-After", ""))

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(16)))
    elapsed = time.monotonic() - started
    FIGURES.set(CHECK, "flood_requests", SIZE.flood_requests)
    FIGURES.set(CHECK, "flood_rate_limit_per_minute", SIZE.flood_rate_limit)
    FIGURES.set(CHECK, "flood_requests_per_second", round(SIZE.flood_requests / elapsed, 1))
    FIGURES.set(CHECK, "flood_statuses", {str(k): v for k, v in sorted(statuses.items())})
    # the budget is per clock minute: a flood may straddle two
    assert statuses.get(200, 0) <= 2 * SIZE.flood_rate_limit
    assert statuses.get(429, 0) >= SIZE.flood_requests - 2 * SIZE.flood_rate_limit
    assert statuses.get(429, 0) > 0 and retry_after == {"60"}
    assert set(statuses) <= {200, 429}
    # another device of the same account is served as usual
    resp = await remote.send("GET", path, device=tenant.account.admin)
    assert resp.status == 200


def test_memory_stayed_under_the_cap(target: Target) -> None:
    """Last: the node's peak RSS over everything above."""
    memory = target.memory
    FIGURES.set(CHECK, "rss_baseline_mib", round(memory.baseline_kib / 1024, 1))
    FIGURES.maximum(CHECK, "rss_peak_mib", round(memory.peak_kib / 1024, 1))
    FIGURES.maximum(CHECK, "rss_peak_with_redis_and_workers_mib",
                    round(memory.peak_tree_kib / 1024, 1))  # fmt: skip
    FIGURES.set(CHECK, "rss_cap_mib", RSS_CAP_MIB)
    FIGURES.set(CHECK, "rss_now_mib", round(rss_kib(memory.pid) / 1024, 1))
    assert target.local.process is not None and target.local.process.poll() is None
    assert memory.peak_kib / 1024 <= RSS_CAP_MIB

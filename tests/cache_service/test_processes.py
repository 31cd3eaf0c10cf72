"""`statecache serve --processes N`: worker processes sharing one port, one node key and an
external Redis; their parent starts, watches and stops them.

Real processes throughout: a redis-server of the module's own, a node of two worker
processes, real HTTP. Which worker answered a request is read from /proc: the worker
process holding the server end of the client's connection. A client session is pinned to
one worker by keeping its one connection open (a connector of limit 1, keep-alive), and the
test checks at the end that the connection was never replaced."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

import pre
from cache_service.embedded_redis import EmbeddedRedis
from cache_service.settings import Settings
from client_sdk.node_client import NodeClient
from tests.cache_service.conftest import new_account, short_tempdir, signed_headers
from tests.cache_service.node_process import (
    NODE,
    NodeProcess,
    alive,
    assert_one_line_failure,
    children,
    clean_env,
    run,
    scratch,
    wait_ready,
)
from tests.conftest import TEST_REGISTER_PER_HOUR

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """An external Redis (a node of several processes needs one) on a unix socket."""
    directory = short_tempdir("sc-procs-redis-")
    server = EmbeddedRedis(directory, appendfsync="everysec")
    asyncio.run(server.start())
    try:
        yield f"unix://{server.socket}"
    finally:
        asyncio.run(server.stop())
        shutil.rmtree(directory, ignore_errors=True)


def spawn_node(base: Path, redis_url: str, *args: str, processes: int = 2) -> NodeProcess:
    """A node of `processes` workers, the re-encryption pools at their default size."""
    log = base / "node.log"
    argv = [*NODE, "--host", "127.0.0.1", "--port", "0", "--processes", str(processes)]
    argv += ["--redis-url", redis_url, "--data-dir", str(base / "node")]
    argv += ["--ready-file", str(log.with_suffix(".ready")), *args]
    env = clean_env(
        STATECACHE_REGISTER_PER_HOUR=str(TEST_REGISTER_PER_HOUR),
        TMPDIR=str(base),  # where the parent makes its metrics directory
    )
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
        )
    return NodeProcess(proc, base / "node", log)


def workers_of(node: NodeProcess, count: int = 2) -> list[int]:
    deadline = time.monotonic() + 10
    while len(found := children(node.pid)) != count:
        assert time.monotonic() < deadline, (found, node.stderr())
        time.sleep(0.05)
    return sorted(found)


def descendants(pid: int) -> set[int]:
    out: set[int] = set()
    todo = [pid]
    while todo:
        kids = children(todo.pop())
        out.update(kids)
        todo.extend(kids)
    return out


def wait_gone(pids: set[int], seconds: float = 10) -> dict[int, bytes]:
    """Whichever of `pids` still live after `seconds`, with their command lines."""
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = {}
    for pid in pids:
        if alive(pid):
            try:
                left[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
    return left


def metrics_dirs(base: Path) -> set[str]:
    """The parent's private Prometheus directories (its temp dir is `base`)."""
    return {p.name for p in base.glob("statecache-metrics-*")}


# which worker answered: /proc


def _established(server_port: int) -> Iterator[tuple[str, str, str]]:
    """(local, remote, inode) of established TCP connections from or to 127.0.0.1:port."""
    ours = f"0100007F:{server_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01" and ours in (fields[1], fields[2]):
            yield fields[1], fields[2], fields[9]


def _sockets(pid: int | str) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            found.add(os.readlink(fd))
        except OSError:
            continue
    return found


def client_ports(server_port: int) -> set[int]:
    """This test process's connections to the node: their local ports."""
    mine = _sockets("self")
    return {
        int(local.split(":")[1], 16)
        for local, remote, inode in _established(server_port)
        if remote.endswith(f":{server_port:04X}") and f"socket:[{inode}]" in mine
    }


def worker_holding(server_port: int, client_port: int, workers: list[int]) -> int:
    """The worker holding the server end of the connection from `client_port`."""
    remote = f"0100007F:{client_port:04X}"
    inodes = [inode for local, peer, inode in _established(server_port) if peer == remote]
    assert len(inodes) == 1, inodes
    holders = [pid for pid in workers if f"socket:[{inodes[0]}]" in _sockets(pid)]
    assert len(holders) == 1, holders
    return holders[0]


class Pinned:
    """One client session per worker, each on one kept-alive connection to that worker
    (the kernel picks a worker by a hash of the connection's addresses and ports)."""

    def __init__(self, url: str, workers: list[int]) -> None:
        self.url, self.workers = url, workers
        self.port = int(url.rsplit(":", 1)[1])
        self.sessions: dict[int, aiohttp.ClientSession] = {}
        self.ports: dict[int, int] = {}

    async def open(self) -> None:
        spare: list[aiohttp.ClientSession] = []
        try:
            for _ in range(200):
                session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
                before = client_ports(self.port)
                await self._ask(session)
                (port,) = client_ports(self.port) - before
                pid = worker_holding(self.port, port, self.workers)
                if pid in self.sessions:
                    spare.append(session)
                    continue
                self.sessions[pid], self.ports[pid] = session, port
                if len(self.sessions) == len(self.workers):
                    return
            pytest.fail("connections never reached every worker")
        finally:
            for session in spare:
                await session.close()

    async def _ask(self, session: aiohttp.ClientSession) -> None:
        async with session.get(self.url + "/healthz") as resp:
            assert resp.status == 200

    def __getitem__(self, index: int) -> aiohttp.ClientSession:
        return self.sessions[self.workers[index]]

    async def check_unchanged(self) -> None:
        """No session ever opened another connection: each is still on its first one, held
        by its worker (so every request it made went there)."""
        for session in self.sessions.values():
            await self._ask(session)
        assert client_ports(self.port) == set(self.ports.values())
        for pid, port in self.ports.items():
            assert worker_holding(self.port, port, self.workers) == pid

    async def close(self) -> None:
        for session in self.sessions.values():
            await session.close()


@pytest.fixture(scope="module")
def node(redis_url: str) -> Iterator[tuple[NodeProcess, list[int]]]:
    """One node of two processes for the tests that only talk to it."""
    with scratch("sc-procs-") as base:
        started = wait_ready(spawn_node(base, redis_url))
        try:
            yield started, workers_of(started)
        finally:
            started.stop()


@pytest.fixture
async def pinned(node: tuple[NodeProcess, list[int]]) -> AsyncIterator[Pinned]:
    process, workers = node
    sessions = Pinned(process.url, workers)
    await sessions.open()
    yield sessions
    await sessions.close()


# one node


async def test_both_processes_answer_with_one_node_id(
    node: tuple[NodeProcess, list[int]], pinned: Pinned
) -> None:
    process, _ = node
    key = pre.NodeSecrets.from_bytes((process.data_dir / "node.key").read_bytes())
    ids = {(await NodeClient(pinned[i], process.url).node_info()).node_id for i in (0, 1)}
    assert ids == {key.node_id.hex()}
    await pinned.check_unchanged()


async def test_a_grant_stored_through_one_process_is_used_by_the_other(
    node: tuple[NodeProcess, list[int]], pinned: Pinned
) -> None:
    process, _ = node
    now = time.time()
    account = new_account(now)
    member = account.device(now, name="member")
    first, second = (
        NodeClient(pinned[i], process.url, account_id=account.account_id, device=d.secrets)
        for i, d in ((0, account.admin), (1, member))
    )
    await NodeClient(pinned[0], process.url).register_account(account.record, account.admin.cert)
    await first.put_device(member.cert)
    capsule, kek = pre.create_key_capsule(account.secrets, "account", 0, now=int(now))
    await first.put_capsule(capsule)
    (share,) = pre.make_grant(
        account.secrets, capsule, member.cert, threshold=1, shares=1, expires_at=int(now) + 3600
    )
    await first.put_grant(share)

    answer = await second.reencrypt()
    (result,) = answer.results
    assert result.fragment is not None, result
    fragment = pre.verify_capsule_fragment(
        pre.CapsuleFragment.from_bytes(result.fragment),
        capsule=capsule,
        account=account.record,
        receiver=member.secrets,
    )
    assert pre.open_key_capsule(member.secrets, capsule, [fragment]) == kek
    await pinned.check_unchanged()


async def test_a_nonce_replayed_on_the_other_process_is_refused(
    node: tuple[NodeProcess, list[int]], pinned: Pinned
) -> None:
    process, _ = node
    now = time.time()
    account = new_account(now)
    await NodeClient(pinned[0], process.url).register_account(account.record, account.admin.cert)
    node_id = (await NodeClient(pinned[0], process.url).node_info()).node_id
    path = f"/v1/accounts/{account.account_id.hex()}"
    headers = signed_headers(
        account.admin.secrets, "GET", path, created=now, node_id=node_id,
        nonce=secrets.token_urlsafe(18),
    )  # fmt: skip
    statuses = []
    for i in (0, 1, 0):
        async with pinned[i].get(process.url + path, headers=headers) as resp:
            statuses.append(
                (resp.status, (await resp.json())["code"] if resp.status != 200 else "")
            )
    assert statuses == [(200, ""), (401, "replayed"), (401, "replayed")]
    await pinned.check_unchanged()


def counted(text: str, route: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("statecache_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_metrics_cover_both_processes(
    node: tuple[NodeProcess, list[int]], pinned: Pinned
) -> None:
    process, _ = node

    async def scrape(i: int) -> str:
        async with pinned[i].get(process.url + "/metrics") as resp:
            assert resp.status == 200
            return await resp.text()

    before = counted(await scrape(0), "healthz")
    for i, times in ((0, 3), (1, 5)):
        for _ in range(times):
            async with pinned[i].get(process.url + "/healthz") as resp:
                assert resp.status == 200
    after = [counted(await scrape(i), "healthz") for i in (0, 1)]
    assert after == [before + 8, before + 8]  # 3 served by one, 5 by the other
    await pinned.check_unchanged()


def test_each_process_has_its_share_of_re_encryption_workers(
    node: tuple[NodeProcess, list[int]],
) -> None:
    _, workers = node
    per_process = max(1, (os.cpu_count() or 1) // 2)
    for pid in workers:
        pool = [
            p for p in children(pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()
        ]
        assert len(pool) == per_process, (pid, pool)


# starting, failing and stopping


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--processes", "2"], {}), ([], {"STATECACHE_PROCESSES": "2"})],
    ids=["option", "variable"],
)
def test_several_processes_need_an_external_redis(
    args: list[str], env: dict[str, str], tmp_path: Path
) -> None:
    result = run([*NODE, "--data-dir", str(tmp_path / "node"), *args], env=clean_env(**env))
    assert_one_line_failure(
        result, "--processes 2 (STATECACHE_PROCESSES) needs an external Redis (--redis-url)",
        status=2,
    )  # fmt: skip
    assert not (tmp_path / "node").exists()  # refused before anything touched the disk


def test_sigterm_stops_every_process(redis_url: str) -> None:
    with scratch("sc-procs-") as base:
        node = wait_ready(spawn_node(base, redis_url))
        workers_of(node)
        tree = descendants(node.pid)
        (shared,) = metrics_dirs(base)  # the parent's, while it runs: private
        assert (base / shared).stat().st_mode & 0o777 == 0o700
        node.proc.send_signal(signal.SIGTERM)
        assert node.wait() == 0, node.stderr()
        assert wait_gone(tree) == {}
        assert metrics_dirs(base) == set()
        events = [line for line in node.stderr().splitlines() if '"event": "stopping"' in line]
        assert len(events) == 3, node.stderr()  # the parent's and each worker's
        assert "Traceback" not in node.stderr()
        # and it let go of the data dir: a one-process node may have it now
        again = run([*NODE, "--data-dir", str(node.data_dir), "--redis-url", "unix:///nonexistent",
                     "--redis-wait", "0"])  # fmt: skip
        assert_one_line_failure(again, "unreachable (waited 0 s, --redis-wait)")


def test_a_worker_killed_stops_the_node_in_one_line(redis_url: str) -> None:
    with scratch("sc-procs-") as base:
        node = wait_ready(spawn_node(base, redis_url))
        victim, other = workers_of(node)
        tree = descendants(node.pid)
        os.kill(victim, signal.SIGKILL)
        assert node.wait() == 1
        lines = [line for line in node.stderr().splitlines() if not line.startswith("{")]
        assert lines == [
            f"statecache: worker process {1 if victim < other else 2} of 2 (pid {victim}) "
            "was killed by SIGKILL"
        ], node.stderr()
        assert "Traceback" not in node.stderr()
        assert wait_gone(tree) == {}  # the other worker, both pools, the killed one's too
        assert metrics_dirs(base) == set()


def test_a_killed_parent_takes_its_workers_with_it(redis_url: str) -> None:
    with scratch("sc-procs-") as base:
        node = wait_ready(spawn_node(base, redis_url))
        workers_of(node)
        tree = descendants(node.pid)
        node.proc.kill()
        node.wait()
        assert wait_gone(tree) == {}


def test_a_failure_while_starting_is_one_line_and_leaves_nothing(redis_url: str) -> None:
    with scratch("sc-procs-") as base:
        gone = f"unix://{base}/no-redis.sock"
        node = spawn_node(base, gone, "--redis-wait", "1")
        code = node.wait(30)
        result = subprocess.CompletedProcess(node.proc.args, code, "", node.stderr())
        assert_one_line_failure(result, f"Redis at {gone} unreachable (waited 1 s, --redis-wait)")
        assert metrics_dirs(base) == set()
        assert children(node.pid) == []


def test_a_port_in_use_is_one_line(redis_url: str) -> None:
    with socket.socket() as taken, scratch("sc-procs-") as base:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [*NODE, "--port", str(port), "--processes", "2", "--redis-url", redis_url]
        result = run([*argv, "--data-dir", str(base / "node")])
        assert_one_line_failure(result, f"cannot listen on 127.0.0.1 port {port}: Address")


def test_two_nodes_never_share_a_data_dir_or_a_port(redis_url: str) -> None:
    with scratch("sc-procs-") as base:
        first = wait_ready(spawn_node(base, redis_url))
        try:
            port = first.url.rsplit(":", 1)[1]
            argv = [*NODE, "--processes", "2", "--redis-url", redis_url]
            same_dir = run([*argv, "--port", "0", "--data-dir", str(first.data_dir)])
            assert_one_line_failure(
                same_dir, f"data dir {first.data_dir} in use by pid {first.pid}"
            )
            same_port = run([*argv, "--port", port, "--data-dir", str(base / "other")])
            assert_one_line_failure(same_port, f"cannot listen on 127.0.0.1 port {port}: Address")
        finally:
            first.stop()


@pytest.mark.parametrize(
    ("cores", "processes", "workers", "expected"),
    [(8, 1, None, 8), (8, 3, None, 2), (8, 16, None, 1), (1, 2, None, 1), (8, 4, 5, 5)],
)
def test_re_encryption_workers_are_the_cores_shared_among_the_processes(
    monkeypatch: pytest.MonkeyPatch, cores: int, processes: int, workers: int | None, expected: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    settings = Settings(processes=processes, workers=workers, redis_url="redis://127.0.0.1")
    assert settings.workers == expected  # a value given is per process too

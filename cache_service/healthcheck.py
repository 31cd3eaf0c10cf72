"""`python -m cache_service.healthcheck`: is the node on this host ready? For container and
Compose health checks, where the slim image has no curl.

Exit 0 when `/readyz` answers 200 (the node serves and its Redis takes writes), else 1 with
one line saying why. `--live` asks `/healthz` instead (the process answers at all: what a
liveness probe may restart on; readiness must never restart a node). The address comes from
the node's own settings (`STATECACHE_HOST`, `STATECACHE_PORT`, and https when
`STATECACHE_TLS_CERT` is set), or `--url`. Only the standard library: a check runs every few
seconds and must start fast."""

from __future__ import annotations

import argparse
import http.client
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

__all__ = ["default_url", "main"]

_ANY = ("", "0.0.0.0", "::", "[::]")  # noqa: S104 - listen-everywhere forms, not a bind


def default_url(environ: Mapping[str, str], *, live: bool = False) -> str:
    """The node's own address as its settings give it: loopback when it listens everywhere."""
    host = environ.get("STATECACHE_HOST", "")
    host = "127.0.0.1" if host in _ANY else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = environ.get("STATECACHE_PORT") or "8700"
    scheme = "https" if environ.get("STATECACHE_TLS_CERT") else "http"
    return f"{scheme}://{host}:{port}/{'healthz' if live else 'readyz'}"


def _check(url: str, timeout: float) -> str | None:
    """None when `url` answers 200, else why not."""
    context = None
    if url.startswith("https:"):
        # The node's own certificate names its public name, not this loopback address, and
        # the check proves only that this node answers: no verification to do here.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:  # noqa: S310 - http(s) only, checked by main
            status = int(answer.status)
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code}"
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{url} did not answer: {reason}"
    return None if status == 200 else f"{url} answered {status}"


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cache_service.healthcheck",
        description="Exit 0 when the node on this host is ready (/readyz), else 1.",
    )
    parser.add_argument("--url", help="ask this URL instead of the node's own address")
    parser.add_argument("--live", action="store_true", help="ask /healthz (liveness only)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    args = parser.parse_args(argv)
    url = args.url or default_url(os.environ if environ is None else environ, live=args.live)
    if not url.startswith(("http://", "https://")):
        print(f"statecache healthcheck: {url}: expected an http:// or https:// URL")
        return 2
    problem = _check(url, args.timeout)
    if problem is not None:
        print(f"statecache healthcheck: {problem}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

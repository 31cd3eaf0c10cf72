"""`python -m cache_service.healthcheck` against a real node process: 0 when ready, 1 with
one line when not, the node's address taken from its own settings."""

from __future__ import annotations

import http.server
import ssl
import subprocess
import sys
import threading
from pathlib import Path

from cache_service.healthcheck import client_context, default_url, main
from tests.cache_service.node_process import clean_env, scratch, start


def test_the_address_comes_from_the_nodes_settings() -> None:
    assert default_url({}) == "http://127.0.0.1:8700/readyz"
    assert default_url({"STATECACHE_HOST": "0.0.0.0", "STATECACHE_PORT": "9000"}, live=True) == (
        "http://127.0.0.1:9000/healthz"
    )
    assert default_url({"STATECACHE_HOST": "::1", "STATECACHE_TLS_CERT": "/c.pem"}) == (
        "https://[::1]:8700/readyz"
    )


def test_a_node_listening_on_ipv6_everywhere_is_asked_on_ipv6() -> None:
    """`::` listens on IPv6 only (asyncio sets IPV6_V6ONLY): 127.0.0.1 would never answer."""
    assert default_url({"STATECACHE_HOST": "::"}) == "http://[::1]:8700/readyz"
    assert default_url({"STATECACHE_HOST": "[::]"}) == "http://[::1]:8700/readyz"
    assert default_url({"STATECACHE_HOST": ""}) == "http://127.0.0.1:8700/readyz"


def test_only_the_nodes_own_or_a_loopback_address_goes_unverified() -> None:
    unverified = [
        client_context("https://node1.example.org:8700/readyz", own_address=True),
        client_context("https://127.0.0.1:8700/readyz"),
        client_context("https://127.1.2.3:8700/readyz"),
        client_context("https://[::1]:8700/readyz"),
        client_context("https://localhost:8700/readyz"),
    ]
    for context in unverified:
        assert (context.verify_mode, context.check_hostname) == (ssl.CERT_NONE, False)
    # `--url` naming another host: verified, as a device would (an unverified answer from
    # elsewhere could come from anyone)
    for url in ("https://node1.example.org:8700/readyz", "https://10.0.0.5:8700/readyz"):
        context = client_context(url)
        assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)


def test_ready_live_and_gone(capsys) -> None:
    with scratch("sc-hc-") as base:
        node = start(base / "node", log=base / "node.log")
        port = node.url.rsplit(":", 1)[1]
        env = {"STATECACHE_HOST": "0.0.0.0", "STATECACHE_PORT": port}
        try:
            assert main([], env) == 0
            assert main(["--live"], env) == 0
            assert capsys.readouterr().out == ""
            # as a container runs it: a process of its own, the settings in its environment
            ran = subprocess.run(
                [sys.executable, "-m", "cache_service.healthcheck"],
                env=clean_env(**env), capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            assert (ran.returncode, ran.stdout, ran.stderr) == (0, "", "")
        finally:
            node.stop()
        assert main([], env) == 1
        [line] = capsys.readouterr().out.splitlines()
        assert line.startswith(
            f"statecache healthcheck: http://127.0.0.1:{port}/readyz did not answer"
        )
    assert main(["--url", "ftp://x"], {}) == 2


def test_a_node_that_is_not_ready_fails_the_check(tmp_path: Path, capsys) -> None:
    """A server answering 503 on /readyz (as a node whose Redis is down does)."""

    class NotReady(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503 if self.path == "/readyz" else 200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotReady)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {"STATECACHE_PORT": str(server.server_address[1])}
        assert main([], env) == 1
        assert capsys.readouterr().out.strip().endswith("/readyz answered 503")
        assert main(["--live"], env) == 0  # alive: liveness must not restart it
    finally:
        server.shutdown()

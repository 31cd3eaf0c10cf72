"""`statecache account delete`, run in-process against three real node processes: every
node deletes (a verified receipt each), a node that was down deletes on the re-run, and
the account's devices are refused afterwards."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import pre
from client_sdk import load_profile
from client_sdk.local_nodes import LocalNode, start_nodes, stop_nodes
from tests.client_sdk.malicious_proxy import MaliciousProxy
from tests.client_sdk.test_cli import cli, node_args, text_field  # noqa: F401 - fixture

EXIT_INCOMPLETE = 3


@pytest.fixture
def nodes() -> Iterator[list[LocalNode]]:
    base = Path(tempfile.mkdtemp(prefix="sc-del-", dir="/tmp"))
    started = asyncio.run(start_nodes(base, 3))
    try:
        yield started
    finally:
        asyncio.run(stop_nodes(started))
        shutil.rmtree(base, ignore_errors=True)


def _account_keys(node: LocalNode, account_id: str) -> list[bytes]:
    """The account's keys but replay nonces and rate counters (they expire on their own:
    tests/cache_service/test_account_deletion.py checks their TTL)."""
    client = redis.Redis(unix_socket_path=str(node.data_dir / "redis.sock"))
    prefix = ("sc:{" + account_id + "}:").encode()
    try:
        found = client.scan_iter(match="sc:{" + account_id + "}:*", count=1000)
        return sorted(
            k for k in found if k.removeprefix(prefix).split(b":")[0] not in (b"nonce", b"rl")
        )
    finally:
        client.close()


def test_delete_everywhere_then_devices_are_refused(cli, nodes, tmp_path: Path) -> None:  # noqa: F811
    urls = [n.url for n in nodes]
    phone, laptop = tmp_path / "phone", tmp_path / "laptop"
    made = cli(phone, "--json account init --threshold 2 --name phone", *node_args(urls)).json
    account_id = str(made["account_id"])
    enrolled = cli(
        laptop, f"--json device enroll --account {account_id} --threshold 2 --name laptop",
        *node_args(urls),
    ).json  # fmt: skip
    assert cli(phone, "--json device approve", enrolled["enrolment"]).json["device_id"]
    (tmp_path / "state").write_bytes(b"x" * 3000)
    published = cli(phone, "--json publish --group aa01 --kind group_state --epoch 1 --file",
                    tmp_path / "state")  # fmt: skip
    assert published.json["stored"], published.out
    assert all(len(_account_keys(n, account_id)) > 5 for n in nodes)

    # refused without --yes; only an admin may
    cli(phone, "account delete").failed_cleanly()
    refused = cli(laptop, "--json account delete --yes").failed_cleanly()
    assert refused is not None and "admin" in str(refused["message"])

    # one node is down: two delete, the command says it is not complete (exit 3)
    asyncio.run(nodes[2].stop())
    partial = cli(phone, "--json account delete --yes")
    assert partial.code == EXIT_INCOMPLETE, partial.err
    doc = json.loads(partial.out)
    assert doc["complete"] is False and doc["deleted_on"] == 2
    assert {r["node"] for r in doc["receipts"]} == set(urls[:2])
    assert doc["nodes"][urls[2]]["state"] == "unavailable"
    for node in nodes[:2]:
        assert _account_keys(node, account_id) == [f"sc:{{{account_id}}}:deleted".encode()]

    # back up: the re-run deletes there too; the first two answer their stored receipts
    asyncio.run(nodes[2].start())
    done = cli(phone, "--json account delete --yes")
    assert done.code == 0, done.err
    doc = json.loads(done.out)
    assert doc["complete"] is True and doc["deleted_on"] == 3
    assert [r for r in doc["receipts"] if r["node"] in urls[:2]] == [
        r for r in json.loads(partial.out)["receipts"]
    ]
    assert _account_keys(nodes[2], account_id) == [f"sc:{{{account_id}}}:deleted".encode()]

    # the account's devices are refused, in one line that says why
    gone = cli(laptop, "sync")
    assert gone.code == 1 and "Traceback" not in gone.err
    assert gone.err.startswith("statecache: this account was deleted by its admin"), gone.err
    refused = cli(laptop, "--json sync").failed_cleanly()
    assert refused is not None and refused["code"] == "account_deleted"
    text = cli(phone, "account delete --yes")
    assert text.code == 0 and "complete" in text.out and "remove it" in text.out


def test_a_receipt_the_node_did_not_sign_is_not_a_deletion(cli, nodes, tmp_path: Path) -> None:  # noqa: F811
    """A node that claims the deletion with a receipt its pinned key did not sign is a
    suspect, and the deletion is not complete until it proves it."""
    liar = MaliciousProxy(nodes[2].url)
    loop = asyncio.new_event_loop()  # the proxy's own, in a thread: each command runs its own
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(liar.start(), loop).result(10)
    try:
        urls = [nodes[0].url, nodes[1].url, liar.url]
        home = tmp_path / "phone"
        assert cli(home, "--json account init --threshold 2", *node_args(urls)).json
        liar.fake_deletion = True
        lied = cli(home, "--json account delete --yes")
        assert lied.code == EXIT_INCOMPLETE and liar.tampered == 1, lied.err
        doc = json.loads(lied.out)
        assert doc["complete"] is False
        assert {r["node"] for r in doc["receipts"]} == set(urls[:2])
        assert doc["nodes"][liar.url]["state"] == "suspect"
        liar.honest()
        assert cli(home, "--json account delete --yes").json["complete"] is True
    finally:
        asyncio.run_coroutine_threadsafe(liar.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_a_node_saying_deleted_without_the_order_is_a_liar(cli, nodes, tmp_path: Path) -> None:  # noqa: F811
    """Only the admin's signed order for this account makes a device believe its account
    was deleted: a node claiming it without one, or with another account's, is a suspect,
    even when it is the only node that answers."""
    liar = MaliciousProxy(nodes[2].url)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(liar.start(), loop).result(10)
    try:
        urls = [nodes[0].url, nodes[1].url, liar.url]
        home, other = tmp_path / "phone", tmp_path / "other"
        assert cli(home, "--json account init --threshold 2", *node_args(urls)).json
        assert cli(other, "--json account init --threshold 2", *node_args(urls)).json
        foreign = _order_of(other)
        for claim in (b"", foreign):
            liar.claim_deleted = claim
            done = cli(home, "--json sync")  # the honest two answer
            assert done.code == 0, done.err
            assert json.loads(done.out)["nodes"][liar.url]["state"] == "suspect"
        asyncio.run(nodes[0].stop())
        asyncio.run(nodes[1].stop())
        alone = cli(home, "--json sync").failed_cleanly()
        assert alone is not None and alone["code"] != "account_deleted", alone
        assert "deleted by its admin" not in str(alone["message"])
    finally:
        asyncio.run_coroutine_threadsafe(liar.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def _order_of(home: Path) -> bytes:
    """A valid deletion order of the account in `home` (signed, never sent)."""
    profile = load_profile(home / "keystore.json")
    assert profile.account is not None
    record = pre.register_account(profile.account, now=1)
    return pre.delete_account(profile.account, record, now=1).to_bytes()

"""The `statecache` command line, run in-process (`client_sdk.cli.main`) against three
real local nodes (child processes, each with its own embedded Redis), threshold 2-of-3."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from client_sdk.cli import main
from client_sdk.local_nodes import start_nodes, stop_nodes
from client_sdk.outcomes import LocalCode, NodeOutcome, NodeState
from client_sdk.output import Progress, Result, Table, to_json, to_text
from tests.client_sdk.malicious_proxy import MaliciousProxy


@pytest.fixture(scope="module")
def node_urls() -> Iterator[list[str]]:
    base = Path(tempfile.mkdtemp(prefix="sc-cli-", dir="/tmp"))  # short unix socket paths
    nodes = asyncio.run(start_nodes(base, 3))
    try:
        yield [n.url for n in nodes]
    finally:
        asyncio.run(stop_nodes(nodes))
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class Ran:
    code: int
    out: str
    err: str

    @property
    def json(self) -> dict[str, object]:
        assert self.code == 0, self.err
        doc = json.loads(self.out)
        assert isinstance(doc, dict)
        return doc

    def failed_cleanly(self) -> dict[str, object] | None:
        """Exit status 1, no traceback, and either one line on stderr and nothing on
        stdout, or (--json) nothing on stderr and one JSON error object on stdout, with
        each node's outcome in the shared schema."""
        assert self.code == 1
        assert "Traceback" not in self.err + self.out
        if not self.out:
            assert self.err.startswith("statecache: ")
            assert self.err.count("\n") == 1
            return None
        assert self.err == ""
        doc = json.loads(self.out)
        assert set(doc) == {"error"} and set(doc["error"]) == {"code", "message", "nodes"}
        assert "\n" not in doc["error"]["message"]
        for outcome in doc["error"]["nodes"].values():
            assert set(outcome) == {"state", "code", "message"}
            assert outcome["state"] in {"ok", "behind", "unavailable", "suspect"}
        error: dict[str, object] = doc["error"]
        return error


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """`cli(home, "device list --json")`: the words of `command` (split on spaces, so
    paths and node lists come as `*extra`), run with `--home home` unless home is None."""

    def run(home: Path | None, command: str, *extra: object) -> Ran:
        argv = ([] if home is None else ["--home", str(home)]) + command.split()
        code = main(argv + [str(e) for e in extra])
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


def text_field(out: str, label: str) -> str:
    [value] = [line[len(label) :].strip() for line in out.splitlines() if line.startswith(label)]
    return value


def node_args(urls: list[str]) -> list[str]:
    return [arg for url in urls for arg in ("--node", url)]


def test_the_whole_story(cli, node_urls: list[str], tmp_path: Path) -> None:
    admin, laptop = tmp_path / "phone", tmp_path / "laptop"
    nodes = node_args(node_urls)

    # account init: the admin device; its keystore is private, its nodes pinned
    made = cli(admin, "--json account init --threshold 2 --name phone", *nodes).json
    account_id, admin_id = str(made["account_id"]), str(made["device_id"])
    assert len(bytes.fromhex(account_id)) == 32 and made["role"] == "admin"
    assert (admin / "keystore.json").stat().st_mode & 0o777 == 0o600
    pinned = json.loads((admin / "keystore.json").read_text())["node_keys"]
    assert sorted(pinned) == sorted(node_urls)
    cli(admin, "account init --threshold 2", *nodes).failed_cleanly()  # never overwrites

    # device enroll (a second home), in text mode: prints the request and the device id
    enroll = f"device enroll --account {account_id} --threshold 2 --name laptop"
    enrolled = cli(laptop, enroll, *nodes)
    assert enrolled.code == 0, enrolled.err
    blob, laptop_id = text_field(enrolled.out, "enrolment"), text_field(enrolled.out, "device id")
    assert blob.startswith("sc2.") and len(bytes.fromhex(laptop_id)) == 16

    # device approve: only an admin may, only a well-formed request, only held labels
    cli(laptop, "device approve", blob).failed_cleanly()
    cli(admin, "device approve sc1.damaged").failed_cleanly()
    cli(admin, "device approve --label group:bm9zdWNo", blob).failed_cleanly()  # no capsule
    approved = cli(admin, "device approve --json", blob).json
    assert approved["device_id"] == laptop_id and approved["role"] == "member"
    assert isinstance(approved["upload_bytes"], int) and approved["upload_bytes"] > 0

    # device list: --json before or after the subcommand; text as a table
    for command in ("--json device list", "device list --json"):
        devices = {d["device_id"]: d for d in cli(laptop, command).json["devices"]}
        assert {d: v["role"] for d, v in devices.items()} == {
            admin_id: "admin",
            laptop_id: "member",
        }
        assert devices[laptop_id]["name"] == "laptop" and devices[laptop_id]["revoked"] is None
        assert devices[laptop_id]["this_device"] is True
    table = cli(admin, "device list")
    assert table.code == 0 and "DEVICE ID" in table.out and "laptop" in table.out

    # publish a couple of snapshots, from a file and from stdin
    first, second = os.urandom(3000), os.urandom(5000)
    (tmp_path / "g1").write_bytes(first)
    publish = "--json publish --group {} --kind {} --epoch {} --file"
    done = cli(admin, publish.format("aa01", "group_state", 3), tmp_path / "g1").json
    assert (done["stored"], done["bytes"]) == (1, 3000)
    assert {n["state"] for n in done["nodes"].values()} == {"ok"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(second)))
        done = cli(admin, publish.format("aa02", "ratchet_tree", 7), "-").json
    assert done["stored"] == 1
    # an older epoch is refused by every node: one line, exit 1
    error = cli(admin, publish.format("aa01", "group_state", 2), tmp_path / "g1").failed_cleanly()
    assert error is not None and error["code"] == "threshold_not_met"
    nodes = error["nodes"]
    assert isinstance(nodes, dict) and set(nodes) == set(node_urls)
    assert {n["code"] for n in nodes.values()} == {"stale_epoch"}
    cli(
        admin, "publish --group aa01 --kind group_state --epoch 2 --file", tmp_path / "g1"
    ).failed_cleanly()

    # onboard --out: every snapshot, written as published
    out = tmp_path / "out"
    onboarded = cli(laptop, "--json onboard --out", out).json
    assert (onboarded["opened"], onboarded["bytes"]) == (2, 8000)
    assert {n["state"] for n in onboarded["nodes"].values()} == {"ok"}
    assert (out / "aa01" / "group_state.3.bin").read_bytes() == first
    assert (out / "aa02" / "ratchet_tree.7.bin").read_bytes() == second
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == [
        "group_state.3.bin",
        "ratchet_tree.7.bin",
    ]
    assert json.loads((laptop / "state.json").read_text())["onboarded"] is True

    # publish an update; sync returns only that, from the saved cursor
    update = os.urandom(1234)
    (tmp_path / "g1b").write_bytes(update)
    assert cli(admin, publish.format("aa01", "group_state", 4), tmp_path / "g1b").json["stored"]
    synced = cli(laptop, "sync --json --out", out).json
    assert synced["opened"] == 1
    assert {n["state"] for n in synced["nodes"].values()} == {"ok"}
    assert [(s["group_id"], s["kind"], s["mls_epoch"]) for s in synced["snapshots"]] == [
        ("aa01", "group_state", 4)
    ]
    assert (out / "aa01" / "group_state.4.bin").read_bytes() == update
    again = cli(laptop, "sync")  # text mode; nothing new
    assert again.code == 0 and "opened" in again.out and "(none)" in again.out

    # device revoke: not an unknown device, not itself; receipts from every node
    cli(admin, "device revoke", "00" * 16).failed_cleanly()
    cli(admin, "device revoke", admin_id).failed_cleanly()
    revoked = cli(admin, "--json device revoke", laptop_id).json
    receipts = revoked["receipts"]
    assert isinstance(receipts, list) and len(receipts) == 3
    assert {r["node"] for r in receipts} == set(node_urls)
    assert all(r["shares_deleted"] == ["account@0"] for r in receipts)
    assert all(len(bytes.fromhex(r["node_id"])) == 16 for r in receipts)
    assert revoked["rotated"] == [{"label": "account", "key_epoch": 1}]
    assert revoked["regranted"] == []
    assert {n["state"] for n in revoked["nodes"].values()} == {"ok"}
    # the admin's records survive between commands: a repair finds every node in step
    repaired = cli(admin, "--json account repair").json
    versions = repaired["versions"]
    assert isinstance(versions, list) and len(versions) == 3
    assert {v["manifest_version"] for v in versions} == {repaired["manifest_version"]}
    assert {n["state"] for n in repaired["nodes"].values()} == {"ok"}
    assert (admin / "admin.json").stat().st_mode & 0o777 == 0o600
    purged = cli(admin, "--json group purge --group aa02 --author", laptop_id).json
    purge_receipts = purged["receipts"]
    assert isinstance(purge_receipts, list) and len(purge_receipts) == 3
    cli(admin, "group purge --group aa02 --author", admin_id).failed_cleanly()  # not revoked
    # replace-node refuses a share index the account lacks, and a node it already has
    cli(admin, "account replace-node --index 9 --node http://127.0.0.1:9").failed_cleanly()
    cli(admin, "account replace-node --index 1 --node", node_urls[1]).failed_cleanly()
    listed = cli(admin, "device list --json").json["devices"]
    assert [d["revoked"] is not None for d in listed if d["device_id"] == laptop_id] == [True]

    # the revoked laptop reads nothing any more
    cli(laptop, "sync").failed_cleanly()
    cli(laptop, "onboard --out", tmp_path / "after").failed_cleanly()
    assert not (tmp_path / "after").exists()


def test_locked_keystore(cli, node_urls: list[str], tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "locked"
    monkeypatch.setenv("SC_TEST_PASS", "correct horse battery staple")
    monkeypatch.setenv("SC_TEST_WRONG", "incorrect")
    init = "--passphrase-env SC_TEST_PASS --json account init --threshold 2"
    made = cli(home, init, *node_args(node_urls)).json
    assert "sealed_secrets" in json.loads((home / "keystore.json").read_text())

    locked = cli(home, "device list")
    locked.failed_cleanly()
    assert "locked" in locked.err and "--passphrase-env" in locked.err
    cli(home, "--passphrase-env SC_TEST_WRONG device list").failed_cleanly()
    cli(home, "--passphrase-env SC_TEST_UNSET device list").failed_cleanly()
    opened = cli(home, "device list --passphrase-env SC_TEST_PASS --json").json
    assert [d["device_id"] for d in opened["devices"]] == [made["device_id"]]


def test_timeout_bounds_a_command_with_a_hung_node(
    cli, node_urls: list[str], tmp_path: Path
) -> None:
    """`--timeout` is each command's deadline. With one node hanging, a publish (which
    waits for every node, for half the time left once M answered, and then confirms) ends
    within the deadline, well before the 3 s idle timeout, stored
    on the other two and naming the hung node; a deadline too short to do anything ends
    the command in one line naming the nodes."""
    home = tmp_path / "admin"
    hung = MaliciousProxy(node_urls[2])
    loop = asyncio.new_event_loop()  # the proxy's own, in a thread: each command runs its own
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(hung.start(), loop).result(10)
    (tmp_path / "state").write_bytes(b"state")
    publish = "--json publish --group aa01 --kind group_state --file"
    try:
        cli(home, "--json account init --threshold 2", *node_args([*node_urls[:2], hung.url]))
        hung.hang = True
        started = time.monotonic()
        done = cli(home, f"--timeout 0.5 {publish}", tmp_path / "state", "--epoch", 1).json
        assert time.monotonic() - started < 2.5
        assert done["stored"] == 1
        nodes = done["nodes"]
        assert isinstance(nodes, dict) and nodes[hung.url]["state"] == "unavailable"
        assert nodes[hung.url]["code"] in ("timeout", "slow")

        error = cli(home, "--timeout 0.001 --json sync").failed_cleanly()
        assert error is not None and error["code"] == "threshold_not_met"
        text = cli(home, "sync --timeout 0.001")
        text.failed_cleanly()
        assert "deadline" in text.err
    finally:
        asyncio.run_coroutine_threadsafe(hung.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_home_from_environment(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STATECACHE_HOME", str(tmp_path / "nowhere"))
    missing = cli(None, "sync")
    missing.failed_cleanly()
    assert str(tmp_path / "nowhere" / "keystore.json") in missing.err


@pytest.mark.parametrize(
    "argv",
    [
        ["device", "revoke", "not-hex"],
        ["device", "revoke", "abcd"],  # not 16 bytes
        ["publish", "--group", "aa", "--kind", "Bad-Kind", "--epoch", "1", "--file", "x"],
        ["publish", "--group", "aa", "--kind", "group_state", "--epoch", "-1", "--file", "x"],
        ["account", "init", "--node", "http://a:1", "--threshold", "2"],  # M > N
        ["account", "init", "--node", "http://a:1", "--node", "http://a:1", "--threshold", "1"],
        ["account", "init", "--node", "ftp://a", "--threshold", "1"],
        ["device", "approve"],
        ["sync", "--nonsense"],
        ["--timeout", "0", "sync"],
        ["sync", "--timeout", "soon"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


# output: tables, JSON, progress bar


def test_text_and_json_show_the_same_result() -> None:
    result = Result(
        fields={"account_id": "ab", "count": 12345, "ok": True, "node_list": ["n1", "n2"]},
        tables={
            "rows": Table(
                ("name", "size"), [{"name": "x", "size": 5}, {"name": "yy", "size": 1000}]
            ),
            "empty": Table(("node",), []),
            "hidden": Table(("node",), [], empty=None),
            "long": Table(("n",), [{"n": i} for i in range(5)], text_rows=2),
        },
        notes=["a hint"],
        nodes={
            "http://a": NodeOutcome(NodeState.OK),
            "http://b": NodeOutcome(NodeState.UNAVAILABLE, LocalCode.TIMEOUT, "no answer in 3 s"),
        },
    )
    assert json.loads(to_json(result)) == {
        "account_id": "ab",
        "count": 12345,
        "ok": True,
        "node_list": ["n1", "n2"],
        "rows": [{"name": "x", "size": 5}, {"name": "yy", "size": 1000}],
        "empty": [],
        "hidden": [],
        "long": [{"n": i} for i in range(5)],
        "nodes": {
            "http://a": {"state": "ok", "code": None, "message": None},
            "http://b": {"state": "unavailable", "code": "timeout", "message": "no answer in 3 s"},
        },
    }
    assert to_text(result) == (
        "account id  ab\n"
        "count       12,345\n"
        "ok          yes\n"
        "node list   n1, n2\n"
        "\n"
        "rows:\n"
        "  NAME   SIZE\n"
        "  x         5\n"
        "  yy    1,000\n"
        "\n"
        "empty:\n"
        "  (none)\n"
        "\n"
        "long:\n"
        "  N\n"
        "  0\n"
        "  1\n"
        "  ... and 3 more (--json lists all)\n"
        "\n"
        "unavailable nodes:\n"
        "  NODE      CODE     MESSAGE\n"
        "  http://b  timeout  no answer in 3 s\n"
        "\n"
        "a hint\n"
    )


def test_names_from_certificates_cannot_disguise_themselves_on_screen() -> None:
    """Bidi overrides and invisible characters in a stored name (certified before names
    were checked) are shown escaped; joiners real names need are kept."""
    shown = to_text(Result(fields={"name": "evil\u202egpj.exe\u2066x\u200b", "ok": "👩\u200d💻"}))
    assert "\\u{202E}" in shown and "\\u{2066}" in shown and "\\u{200B}" in shown
    assert "\u202e" not in shown and "\u2066" not in shown and "\u200b" not in shown
    assert "👩\u200d💻" in shown


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_on_a_terminal_only() -> None:
    now = [0.0]
    term = FakeTerminal()
    with Progress("onboard", total=4, stream=term, clock=lambda: now[0]) as bar:
        now[0] = 0.5
        bar.update(2, 2048)
        now[0] = 0.55  # within the redraw interval: not drawn
        bar.update(3, 3072)
    drawn = term.getvalue()
    assert "onboard  [------------------------]   0%  0/4  0 B  0.0 s" in drawn
    assert "onboard  [############------------]  50%  2/4  2.0 KiB  0.5 s" in drawn
    assert "3/4" not in drawn
    assert drawn.endswith("\r\x1b[K")  # erased at the end

    counting = FakeTerminal()
    now[0] = 0.0
    with Progress("sync", stream=counting, clock=lambda: now[0]) as bar:
        now[0] = 1.0
        bar.update(7, 10)
    assert "sync  7 snapshots  10 B" in counting.getvalue()

    pipe = io.StringIO()  # not a terminal: silent
    with Progress("sync", total=3, stream=pipe) as bar:
        bar.update(3)
    assert pipe.getvalue() == ""

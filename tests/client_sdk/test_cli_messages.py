"""Messages that say what to do: failures named in words (not aiohttp's class names), each
node's URL once; suspect and unavailable nodes reported apart; read counts that add up;
`--json` errors as one object; labels made from the command line and checked as syntax;
`--version`; help on every option; `mls tree-info --json`.

In-process `main([...])` against three real local nodes, and real sockets for the
failures (a closed port, a node spoken to over TLS, a proxy that lies or hangs)."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from client_sdk.cli import build_parser, main
from client_sdk.outcomes import LocalCode, NodeOutcome, NodeState
from client_sdk.output import Result, to_text
from tests.client_sdk.malicious_proxy import MaliciousProxy
from tests.client_sdk.test_cli import cli, node_args, node_urls

__all__ = ["cli", "node_urls"]  # fixtures, used by name

ACCOUNT = "ab" * 32


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def proxies() -> Iterator[list[MaliciousProxy]]:
    """`proxies.append(MaliciousProxy(url))`, started in a loop of their own."""
    made: list[MaliciousProxy] = []
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    class Started(list[MaliciousProxy]):
        def append(self, proxy: MaliciousProxy) -> None:
            asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(10)
            super().append(proxy)

        def close(self, proxy: MaliciousProxy) -> None:
            asyncio.run_coroutine_threadsafe(proxy.close(), loop).result(10)

    started = Started()
    try:
        yield started
    finally:
        for proxy in started:
            started.close(proxy)
        loop.call_soon_threadsafe(loop.stop)
        del made


# failures in words


def test_connection_failures_are_named_once_per_node(cli, node_urls, tmp_path: Path) -> None:
    refused = closed_port()
    tls = node_urls[0].replace("http://", "https://")  # a plain-HTTP node spoken to over TLS
    nodes = [refused, tls, node_urls[1]]
    error = cli(tmp_path / "a", "--json account init --threshold 2", *node_args(nodes))
    doc = error.failed_cleanly()
    assert doc is not None
    outcomes = doc["nodes"]
    assert outcomes[refused] == {
        "state": "unavailable",
        "code": "unreachable",
        "message": "connection refused",
    }
    assert outcomes[tls]["message"] == "TLS handshake failed"

    text = cli(tmp_path / "b", "account init --threshold 2", *node_args(nodes))
    text.failed_cleanly()
    line = text.err
    assert f"{refused}: unavailable: connection refused" in line
    assert f"{tls}: unavailable: TLS handshake failed" in line
    for url in (refused, tls):
        assert line.count(url) == 1  # each URL once
    for jargon in ("aiohttp", "Client", "Errno", "Cannot connect", "ssl:"):
        assert jargon not in line


def test_a_hung_node_is_said_to_have_timed_out(cli, node_urls, proxies, tmp_path) -> None:
    hung = MaliciousProxy(node_urls[2])
    proxies.append(hung)
    home = tmp_path / "admin"
    made = cli(home, "--json account init --threshold 2", *node_args([*node_urls[:2], hung.url]))
    assert made.code == 0, made.err
    hung.hang = True
    listed = cli(home, "--json --timeout 1 device list").json
    assert listed["nodes"][hung.url]["state"] == "unavailable"
    assert listed["nodes"][hung.url]["code"] in ("timeout", "slow")
    assert (
        "timed out" in listed["nodes"][hung.url]["message"]
        or listed["nodes"][hung.url]["code"] == "slow"
    )


def test_a_stale_epoch_says_which_epochs(cli, node_urls, tmp_path: Path) -> None:
    home = tmp_path / "admin"
    assert cli(home, "account init --threshold 2", *node_args(node_urls)).code == 0
    (tmp_path / "s").write_bytes(b"state")
    publish = "publish --group 0c --kind group_state --file"
    assert cli(home, f"{publish} {tmp_path / 's'} --epoch 3").code == 0
    (tmp_path / "s").write_bytes(b"an older state")
    stale = cli(home, f"{publish} {tmp_path / 's'} --epoch 2")
    stale.failed_cleanly()
    assert "MLS epoch 2 is older than the stored epoch 3" in stale.err
    assert "all 3 nodes" in stale.err and stale.err.count("older than") == 1
    doc = cli(home, f"--json {publish} {tmp_path / 's'} --epoch 2").failed_cleanly()
    assert doc is not None
    for outcome in doc["nodes"].values():
        assert outcome["code"] == "stale_epoch"
        assert outcome["message"] == "MLS epoch 2 is older than the stored epoch 3"


# suspects apart from unavailable nodes, and counts that add up


def test_suspect_and_unavailable_nodes_are_reported_apart(
    cli, node_urls, proxies, tmp_path: Path
) -> None:
    liar, down = MaliciousProxy(node_urls[1]), MaliciousProxy(node_urls[2])
    proxies.append(liar)
    proxies.append(down)
    admin, laptop = tmp_path / "admin", tmp_path / "laptop"
    nodes = node_args([node_urls[0], liar.url, down.url])
    account = cli(admin, "--json account init --threshold 2", *nodes).json["account_id"]
    blob = cli(laptop, f"--json device enroll --account {account} --threshold 2", *nodes).json
    assert cli(admin, "device approve", blob["enrolment"]).code == 0
    (tmp_path / "s").write_bytes(b"state")
    for group in ("01", "02"):
        publish = f"publish --group {group} --kind group_state --epoch 1 --file"
        assert cli(admin, publish, tmp_path / "s").code == 0

    liar.fake_digests = True
    proxies.close(down)  # refused from now on
    read = cli(laptop, "--json onboard")
    doc = json.loads(read.out)
    states = {url: o["state"] for url, o in doc["nodes"].items()}
    assert states[down.url] == "unavailable" and states[liar.url] == "suspect", states
    assert doc["delivered"] == len(doc["snapshots"]) == 2
    assert doc["not_delivered"] == len(doc["incomplete"])
    assert read.code == (0 if doc["complete"] else 3)

    text = cli(tmp_path / "laptop", "sync").out
    blocks = {block.split("\n", 1)[0]: block for block in text.split("\n\n")}
    assert "suspect nodes:" in blocks and liar.url in blocks["suspect nodes:"]
    assert "unavailable nodes:" in blocks and down.url in blocks["unavailable nodes:"]
    assert down.url not in blocks["suspect nodes:"]


def test_text_output_names_each_state_in_its_own_table() -> None:
    shown = to_text(
        Result(
            nodes={
                "http://a": NodeOutcome(NodeState.OK),
                "http://b": NodeOutcome(NodeState.SUSPECT, LocalCode.FORK, "two states"),
                "http://c": NodeOutcome(
                    NodeState.UNAVAILABLE, LocalCode.UNREACHABLE, "connection refused"
                ),
                "http://d": NodeOutcome(NodeState.BEHIND, LocalCode.ROLLBACK, "epoch 1 < 2"),
            }
        )
    )
    assert shown == (
        "suspect nodes:\n"
        "  NODE      CODE  MESSAGE\n"
        "  http://b  fork  two states\n"
        "\n"
        "unavailable nodes:\n"
        "  NODE      CODE         MESSAGE\n"
        "  http://c  unreachable  connection refused\n"
        "\n"
        "nodes behind:\n"
        "  NODE      CODE      MESSAGE\n"
        "  http://d  rollback  epoch 1 < 2\n"
    )


# --json errors


def test_json_errors_are_one_object_on_stdout(cli, tmp_path: Path) -> None:
    missing = cli(tmp_path / "nowhere", "--json device list").failed_cleanly()
    assert missing is not None and missing["code"] == "keystore"
    assert "no keystore" in str(missing["message"])
    not_admin = tmp_path / "laptop"
    enrolled = cli(
        not_admin, f"device enroll --account {ACCOUNT} --threshold 1 --node", "http://127.0.0.1:9"
    )
    assert enrolled.code == 0
    refused = cli(not_admin, "label create group:x --json").failed_cleanly()
    assert refused is not None and refused["code"] == "refused"


def test_usage_errors_stay_text_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--json", "device", "list", "--no-such-option"])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "unrecognized arguments" in captured.err


# labels


@pytest.mark.parametrize(
    "argv",
    [
        ["publish", "--group", "0a", "--kind", "k", "--epoch", "1", "--file", "f", "--label", "x"],
        ["device", "approve", "sc1.x", "--label", "group:"],
        ["device", "approve", "sc1.x", "--label", "group:has space"],
        ["label", "create", "group:" + "a" * 172],
        ["label", "create", "Account"],
    ],
)
def test_a_malformed_label_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "not a label" in capsys.readouterr().err


def test_label_create_then_publish_and_approve_with_it(cli, node_urls, tmp_path: Path) -> None:
    admin, laptop = tmp_path / "admin", tmp_path / "laptop"
    nodes = node_args(node_urls)
    account = cli(admin, "--json account init --threshold 2", *nodes).json["account_id"]
    made = cli(admin, "--json label create --group 0d").json
    assert made["label"] == "group:DQ" and made["key_epoch"] == 0  # base64url of the id
    assert all(o["state"] == "ok" for o in made["nodes"].values())
    again = cli(admin, "--json label create group:DQ").failed_cleanly()
    assert again is not None and "exists already" in str(again["message"])
    listed = cli(admin, "--json label list").json["labels"]
    assert [row["label"] for row in listed] == ["account", "group:DQ"]

    (tmp_path / "s").write_bytes(b"team state")
    publish = "--json publish --kind group_state --epoch 1 --label group:DQ --file"
    with pytest.raises(SystemExit) as exited:  # another group's label: a usage error
        cli(admin, f"{publish} {tmp_path / 's'} --group 0e")
    assert exited.value.code == 2
    published = cli(admin, f"{publish} {tmp_path / 's'} --group 0d").json
    assert published["label"] == "group:DQ" and published["stored"] == 1

    blob = cli(laptop, f"--json device enroll --account {account} --threshold 2", *nodes).json
    approved = cli(admin, "--json device approve --label group:DQ", blob["enrolment"]).json
    assert approved["labels"] == ["group:DQ"]
    read = cli(laptop, "--json onboard").json
    assert [(r["group_id"], r["label"]) for r in read["snapshots"]] == [("0d", "group:DQ")]


# --version, help, tree-info


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("statecache ") and out.split()[1][0].isdigit()


def _options(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f"{path} {name}")
        else:
            yield path, action


def test_every_option_and_argument_has_help() -> None:
    seen = list(_options(build_parser(), "statecache"))
    assert len({path for path, _ in seen}) > 15  # every command was walked
    missing = [
        f"{path} {'/'.join(action.option_strings) or action.dest}"
        for path, action in seen
        if not action.help or action.help == argparse.SUPPRESS
    ]
    assert missing == []


def test_tree_info_json_errors(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["mls", "tree-info", "--suite", "1", "--group-id", "0a", "--tree-hex", "zz"]
    assert main([*args, "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.err == ""
    assert json.loads(captured.out) == {
        "error": {"code": "invalid_input", "message": "--tree-hex is not valid hex", "nodes": {}}
    }
    assert main(["--json", *args]) == 1  # --json before the command too
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "invalid_input"
    assert main(args) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1

"""Secrets on disk: the keystore's passphrase (warned about when missing, asked for on a
terminal, added or changed by `statecache keystore passphrase`) and the snapshot files
`--out` writes (0600 in 0700 directories, older epochs replaced unless --keep-epochs).

In-process `main([...])` against three real local nodes, and the prompts through a real
pseudo-terminal (`pty.fork`: the command's controlling terminal, as `getpass` needs)."""

from __future__ import annotations

import json
import os
import pty
import select
import sys
import time
from pathlib import Path

import pytest

from client_sdk.home import Home
from client_sdk.keystore import load_profile
from tests.client_sdk.test_cli import Ran, cli, node_args, node_urls, text_field

__all__ = ["cli", "node_urls"]  # fixtures, used by name

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "ab" * 32


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def enroll(cli, home: Path, *flags: str) -> Ran:
    return cli(
        home,
        f"device enroll --account {ACCOUNT} --threshold 1 --node http://127.0.0.1:9",
        *flags,
    )


def test_no_passphrase_is_said_loudly(cli, tmp_path: Path) -> None:
    home = tmp_path / "laptop"
    ran = enroll(cli, home, "--json")
    assert ran.json["keystore"] == "unencrypted"
    [warning] = ran.err.splitlines()
    assert warning.startswith("statecache: warning: ") and "unencrypted" in warning
    assert "statecache keystore passphrase" in warning
    assert "secrets" in json.loads((home / "keystore.json").read_text())

    text = enroll(cli, tmp_path / "other")
    assert text.code == 0 and text_field(text.out, "keystore") == "unencrypted"
    assert text.err.startswith("statecache: warning: ") and text.err.count("\n") == 1


def test_a_passphrase_from_the_environment(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SC_PASS", "correct horse")
    home = tmp_path / "laptop"
    ran = enroll(cli, home, "--json", "--passphrase-env", "SC_PASS")
    assert ran.json["keystore"] == "passphrase" and ran.err == ""
    doc = json.loads((home / "keystore.json").read_text())
    assert "sealed_secrets" in doc and "secrets" not in doc
    load_profile(home / "keystore.json", "correct horse")


def test_keystore_passphrase_adds_changes_and_removes(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "laptop"
    assert enroll(cli, home).code == 0
    keystore = home / "keystore.json"
    before = json.loads(keystore.read_text())
    device = load_profile(keystore).device.device_id

    # not a terminal and no --new-passphrase-env: refused, nothing written
    cli(home, "keystore passphrase").failed_cleanly()
    assert json.loads(keystore.read_text()) == before

    monkeypatch.setenv("FIRST", "first passphrase")
    added = cli(home, "keystore passphrase --json --new-passphrase-env FIRST").json
    assert added["keystore"] == "passphrase"
    doc = json.loads(keystore.read_text())
    assert "sealed_secrets" in doc and "secrets" not in doc and mode(keystore) == 0o600
    assert {k: v for k, v in doc.items() if k != "sealed_secrets"} == {
        k: v for k, v in before.items() if k != "secrets"
    }
    assert load_profile(keystore, "first passphrase").device.device_id == device

    # changing it needs the old one
    monkeypatch.setenv("SECOND", "second passphrase")
    monkeypatch.setenv("WRONG", "not it")
    cli(home, "keystore passphrase --new-passphrase-env SECOND").failed_cleanly()
    error = cli(
        home, "keystore passphrase --json --passphrase-env WRONG --new-passphrase-env SECOND"
    ).failed_cleanly()
    assert error is not None and "wrong passphrase" in str(error["message"])
    changed = cli(home, "keystore passphrase --passphrase-env FIRST --new-passphrase-env SECOND")
    assert changed.code == 0 and changed.err == ""
    assert load_profile(keystore, "second passphrase").device.device_id == device

    removed = cli(home, "keystore passphrase --json --remove --passphrase-env SECOND")
    assert removed.json["keystore"] == "unencrypted" and "unencrypted" in removed.err
    assert load_profile(keystore).device.device_id == device
    assert not list(home.glob("*.tmp"))


def test_keystore_passphrase_without_a_keystore(cli, tmp_path: Path) -> None:
    error = cli(tmp_path / "nothing", "keystore passphrase --json --remove").failed_cleanly()
    assert error is not None and "no keystore" in str(error["message"])


# through a terminal


def run_on_terminal(args: list[str], answers: list[str], timeout: float = 60) -> tuple[int, str]:
    """Run `statecache *args` with a pseudo-terminal as its controlling terminal, typing
    each answer after the next prompt (a line ending in ': '); its exit status and output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once
        os.execve(sys.executable, [sys.executable, "-m", "client_sdk.cli", *args], env)
    output = b""
    pending = list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if pending and output.rstrip(b" ").endswith(b":"):
                os.write(fd, pending.pop(0).encode() + b"\n")
                output += b"\n"
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_enroll_on_a_terminal_asks_twice(tmp_path: Path) -> None:
    home = tmp_path / "laptop"
    args = ["--home", str(home), "device", "enroll", "--account", ACCOUNT]
    args += ["--threshold", "1", "--node", "http://127.0.0.1:9", "--json"]
    code, out = run_on_terminal(args, ["tr0ub4dor", "tr0ub4dor"])
    assert code == 0, out
    assert out.count("passphrase") >= 2 and "tr0ub4dor" not in out  # never echoed
    assert '"keystore": "passphrase"' in out and "warning" not in out
    load_profile(home / "keystore.json", "tr0ub4dor")

    # typed differently: nothing is written
    code, out = run_on_terminal(
        ["--home", str(tmp_path / "typo"), *args[2:]], ["tr0ub4dor", "tr0ub4d0r"]
    )
    assert code == 1 and "the two passphrases differ" in out
    assert not (tmp_path / "typo" / "keystore.json").exists()

    # an empty answer: no passphrase, and the warning
    code, out = run_on_terminal(["--home", str(tmp_path / "plain"), *args[2:]], [""])
    assert code == 0 and "statecache: warning:" in out and '"keystore": "unencrypted"' in out


def test_keystore_passphrase_on_a_terminal(tmp_path: Path) -> None:
    home = tmp_path / "laptop"
    code, out = run_on_terminal(
        ["--home", str(home), "device", "enroll", "--account", ACCOUNT, "--threshold", "1",
         "--node", "http://127.0.0.1:9"],
        [""],
    )  # fmt: skip
    assert code == 0, out
    change = ["--home", str(home), "keystore", "passphrase"]
    code, out = run_on_terminal(change, ["one", "one"])
    assert code == 0 and "keystore  passphrase" in out, out
    code, out = run_on_terminal(change, ["bad guess"])  # the old one, checked first
    assert code == 1 and "wrong passphrase" in out
    code, out = run_on_terminal(change, ["one", "two", "two"])
    assert code == 0, out
    assert Home(home, "two").load().threshold == 1


# snapshot files


def test_out_files_are_private_and_the_newest_epoch_replaces_older(
    cli, node_urls: list[str], tmp_path: Path
) -> None:
    admin, laptop, out = tmp_path / "admin", tmp_path / "laptop", tmp_path / "out"
    made = cli(admin, "--json account init --threshold 2", *node_args(node_urls))
    assert made.json["keystore"] == "unencrypted" and "account seed" in made.err
    account_id = made.json["account_id"]
    enroll = f"device enroll --json --account {account_id} --threshold 2"
    blob = cli(laptop, enroll, *node_args(node_urls)).json["enrolment"]
    assert cli(admin, "device approve", blob).code == 0
    group = "0a1b"
    (out / group).mkdir(parents=True, mode=0o755)  # a loose directory left from before
    os.chmod(out / group, 0o755)
    state = tmp_path / "state.bin"

    def publish(epoch: int) -> None:
        state.write_bytes(f"state at epoch {epoch}".encode())
        publish = f"publish --group {group} --kind group_state --epoch {epoch} --file"
        ran = cli(admin, publish, state)
        assert ran.code == 0, ran.err

    publish(1)
    publish(2)
    onboard = cli(laptop, "--json onboard --out", out).json
    assert onboard["complete"] is True
    files = sorted(p.name for p in (out / group).iterdir())
    assert files == ["group_state.2.bin"]
    assert (out / group / "group_state.2.bin").read_bytes() == b"state at epoch 2"
    assert mode(out / group) == 0o700 and mode(out / group / "group_state.2.bin") == 0o600

    publish(3)
    assert cli(laptop, "--json sync --keep-epochs --out", out).json["complete"] is True
    assert sorted(p.name for p in (out / group).iterdir()) == [
        "group_state.2.bin",
        "group_state.3.bin",
    ]
    publish(4)
    assert cli(laptop, "--json sync --out", out).json["complete"] is True
    assert sorted(p.name for p in (out / group).iterdir()) == ["group_state.4.bin"]

    # without --out: kept in the home (0700, 0600), then moved, replacing older epochs
    publish(5)
    assert cli(laptop, "--json sync").json["complete"] is True
    [kept] = (laptop / "inbox" / group).iterdir()
    assert mode(kept.parent) == 0o700 and mode(kept) == 0o600
    moved = cli(laptop, "--json sync --out", out).json
    assert moved["from_inbox"] == 1
    assert sorted(p.name for p in (out / group).iterdir()) == ["group_state.5.bin"]
    assert not list(out.rglob("*.tmp"))

"""Enrolment and the device lifecycle from the command line, run in-process
(`client_sdk.cli.main`) against three real local nodes (child processes, each with its own
embedded Redis), threshold 2-of-3: the `sc2.` request's checksum, self-signature and
binding to the account, fingerprints and `--expect`, an unapproved device's message,
renewal and grant expiry, and revoking a revoked device."""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path

import pytest

import pre
from cache_service.protocol.b64 import encode_b64url
from client_sdk.cli import main
from client_sdk.enrolment import encode_enrollment, enrollment_request, parse_enrollment
from client_sdk.errors import EnrolmentRefused
from tests.client_sdk.test_cli import node_urls

__all__ = ["node_urls"]  # a fixture, used by name (three node processes per module)

DAMAGED = "damaged enrolment request: check it was copied whole"
NOT_APPROVED = "this device is not approved yet: ask an admin to run `statecache device approve"


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

    def refused(self, code: str | None = None) -> str:
        """Exit 1, no traceback, one line: the message (text mode), or the JSON error's
        message after checking its code."""
        assert self.code == 1, (self.out, self.err)
        assert "Traceback" not in self.out + self.err
        if code is None:
            assert self.out == "" and self.err.startswith("statecache: ")
            assert self.err.count("\n") == 1
            return self.err
        assert self.err == ""
        error = json.loads(self.out)["error"]
        assert error["code"] == code, error
        assert "\n" not in error["message"]
        message: str = error["message"]
        return message


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    def run(home: Path, command: str, *extra: object) -> Ran:
        code = main(["--home", str(home), *command.split(), *(str(e) for e in extra)])
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


def node_args(urls: list[str]) -> list[str]:
    return [arg for url in urls for arg in ("--node", url)]


def text_field(out: str, label: str) -> str:
    [value] = [line[len(label) :].strip() for line in out.splitlines() if line.startswith(label)]
    return value


def admin_home(cli, urls: list[str], home: Path) -> str:
    made = cli(home, "--json account init --threshold 2 --name phone", *node_args(urls)).json
    return str(made["account_id"])


def enrol(cli, home: Path, account_id: str, urls: list[str], threshold: int = 2) -> dict:
    command = f"--json device enroll --account {account_id} --threshold {threshold} --name lap"
    return cli(home, command, *node_args(urls)).json


# the text form, without nodes


def _set_up() -> tuple[pre.DeviceSecrets, str]:
    return enrollment_request(
        "laptop",
        account_id=bytes(range(32)),
        nodes=["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"],
        threshold=2,
    )


def test_every_changed_cut_or_extra_character_is_refused() -> None:
    device, blob = _set_up()
    request = parse_enrollment(blob)
    assert request.keys == device.public_keys and request.name == "laptop"
    assert parse_enrollment(f"  {blob[:40]}\n{blob[40:]}\n") == request  # a wrapped paste
    alphabet = string.ascii_letters + string.digits + "-_."
    variants = set()
    for i in range(len(blob)):
        other = alphabet[(alphabet.index(blob[i]) + 1 + i) % len(alphabet)]
        variants.add(blob[:i] + other + blob[i + 1 :])  # changed
        variants.add(blob[:i] + blob[i + 1 :])  # one character missing
        variants.add(blob[:i] + other + blob[i:])  # one extra
        variants.add(blob[:i])  # cut
    variants.discard(blob)
    assert len(variants) > 3 * len(blob)
    for variant in variants:
        with pytest.raises(EnrolmentRefused) as info:
            parse_enrollment(variant)
        assert info.value.code == "damaged_enrolment", variant
        assert str(info.value) in (DAMAGED, "not a statecache enrolment request (one starts sc2.)")


def test_old_and_forged_requests() -> None:
    device, blob = _set_up()
    old = "sc1." + encode_b64url(device.public_keys.to_bytes())
    with pytest.raises(EnrolmentRefused, match=r"an old enrolment request: run `device enroll`"):
        parse_enrollment(old)
    # Another device's keys in a request signed by the first one, checksum made afresh.
    forged = parse_enrollment(blob).replace(keys=pre.DeviceSecrets.generate().public_keys)
    with pytest.raises(EnrolmentRefused) as info:
        parse_enrollment(encode_enrollment(forged))
    assert info.value.code == "invalid_enrolment"
    with pytest.raises(EnrolmentRefused) as info:
        parse_enrollment("x" * 100_000)
    assert info.value.code == "damaged_enrolment"


# against real nodes


def test_enrol_compare_fingerprints_approve_and_renew(
    cli, node_urls: list[str], tmp_path: Path
) -> None:
    admin, laptop = tmp_path / "phone", tmp_path / "laptop"
    account_id = admin_home(cli, node_urls, admin)

    # text mode: the request, and the fingerprint to read aloud
    command = f"device enroll --account {account_id} --threshold 2 --name laptop"
    enrolled = cli(laptop, command, *node_args(node_urls))
    assert enrolled.code == 0, enrolled.err
    blob, fingerprint = (
        text_field(enrolled.out, "enrolment"),
        text_field(enrolled.out, "fingerprint"),
    )
    assert blob.startswith("sc2.")
    assert len(fingerprint.split()) == 6 and all(len(g) == 5 for g in fingerprint.split())
    laptop_id = text_field(enrolled.out, "device id")

    # a damaged copy, an old request, a wrong fingerprint: one line each, nothing sent
    middle = len(blob) // 2
    typo = blob[:middle] + ("A" if blob[middle] != "A" else "B") + blob[middle + 1 :]
    assert DAMAGED in cli(admin, "device approve", typo).refused()
    assert DAMAGED in cli(admin, "device approve", blob[:-3]).refused()
    assert cli(admin, "--json device approve", blob + "x").refused("damaged_enrolment") == DAMAGED
    old = cli(admin, "device approve", "sc1." + blob.split(".")[1][:40]).refused()
    assert "an old enrolment request: run `device enroll` again" in old
    wrong = "12345 67890 12345 67890 12345 67890"
    mismatch = cli(admin, "device approve --expect", wrong, blob).refused()
    assert "fingerprint mismatch" in mismatch and fingerprint in mismatch
    assert cli(admin, "--json device approve --expect", wrong, blob).refused("fingerprint_mismatch")
    listed = cli(admin, "device list --json").json["devices"]
    assert laptop_id not in [d["device_id"] for d in listed]  # nothing was approved

    # the right fingerprint, typed with dashes: approved, both sides show the same number
    typed = fingerprint.replace(" ", "-")
    approved = cli(admin, "--json device approve --expect", typed, blob).json
    assert approved["fingerprint"] == fingerprint and approved["device_id"] == laptop_id
    assert approved["renewed"] is False and isinstance(approved["grants_until"], str)
    # the laptop reads now
    assert cli(laptop, "--json sync").json["complete"] is True

    # approving again renews, and says so; the grant expiry moves with --grant-days
    again = cli(admin, "device approve --grant-days 60", blob)
    assert again.code == 0, again.err
    assert "Renewed" in again.out and text_field(again.out, "renewed") == "yes"
    renewed = text_field(again.out, "grants until")
    assert renewed > str(approved["grants_until"])
    devices = {d["device_id"]: d for d in cli(admin, "device list --json").json["devices"]}
    assert devices[laptop_id]["grants_until"] == renewed
    assert "GRANTS UNTIL" in cli(admin, "device list").out


def test_approve_refuses_a_request_for_another_set_up(
    cli, node_urls: list[str], tmp_path: Path
) -> None:
    admin = tmp_path / "phone"
    account_id = admin_home(cli, node_urls, admin)
    other_account = "ab" * 32
    cases = [
        (enrol(cli, tmp_path / "t1", account_id, node_urls, threshold=1), "its threshold is 1"),
        (enrol(cli, tmp_path / "t2", account_id, node_urls[::-1]), "its node list is"),
        (enrol(cli, tmp_path / "t3", account_id, node_urls[:2], threshold=2), "its node list is"),
        (enrol(cli, tmp_path / "t4", other_account, node_urls), f"for account {other_account}"),
    ]
    for enrolled, difference in cases:
        message = cli(admin, "device approve", enrolled["enrolment"]).refused()
        assert "does not match this account" in message and difference in message, message
        assert cli(admin, "--json device approve", enrolled["enrolment"]).refused(
            "enrolment_mismatch"
        )
    assert "this account's is 2" in cli(admin, "device approve", cases[0][0]["enrolment"]).err
    devices = cli(admin, "device list --json").json["devices"]
    assert len(devices) == 1  # only the admin


def test_an_unapproved_device_is_told_to_ask_an_admin(
    cli, node_urls: list[str], tmp_path: Path
) -> None:
    admin, laptop = tmp_path / "phone", tmp_path / "laptop"
    account_id = admin_home(cli, node_urls, admin)
    enrolled = enrol(cli, laptop, account_id, node_urls)
    (tmp_path / "state").write_bytes(b"state")
    for command in ("sync", "onboard", "publish --group aa --kind group_state --epoch 1 --file"):
        extra = [tmp_path / "state"] if command.startswith("publish") else []
        assert NOT_APPROVED in cli(laptop, command, *extra).refused(), command
        message = cli(laptop, "--json " + command, *extra).refused("not_approved")
        assert message.startswith(NOT_APPROVED)
    # the JSON error still says what each node answered
    error = json.loads(cli(laptop, "--json sync").out)["error"]
    assert {n["code"] for n in error["nodes"].values()} == {"unauthenticated"}
    # once approved, the same device reads
    assert cli(admin, "device approve", enrolled["enrolment"]).code == 0
    assert cli(laptop, "--json sync").json["complete"] is True


def test_revoking_a_revoked_device(cli, node_urls: list[str], tmp_path: Path) -> None:
    admin, laptop = tmp_path / "phone", tmp_path / "laptop"
    account_id = admin_home(cli, node_urls, admin)
    enrolled = enrol(cli, laptop, account_id, node_urls)
    assert cli(admin, "device approve", enrolled["enrolment"]).code == 0
    device_id = str(enrolled["device_id"])

    first = cli(admin, "--json device revoke", device_id).json
    assert first["already_revoked"] is False
    assert first["rotated"] == [{"label": "account", "key_epoch": 1}]

    # again: says so, rotates nothing, exit 0
    again = cli(admin, "device revoke", device_id)
    assert again.code == 0, again.err
    assert "Already revoked" in again.out and "--force" in again.out
    again_json = cli(admin, "--json device revoke", device_id).json
    assert again_json["already_revoked"] is True and again_json["rotated"] == []

    # --force rotates again
    forced = cli(admin, "--json device revoke --force", device_id).json
    assert forced["already_revoked"] is True
    assert forced["rotated"] == [{"label": "account", "key_epoch": 2}]
    devices = {d["device_id"]: d for d in cli(admin, "device list --json").json["devices"]}
    assert devices[device_id]["revoked"] is not None
    assert devices[device_id]["grants_until"] is None


@pytest.mark.parametrize("expect", ["1-2-3", "12345 67890 12345 67890 12345 6789x", ""])
def test_a_malformed_expected_fingerprint_is_a_usage_error(
    expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--home", str(tmp_path), "device", "approve", "--expect", expect, "sc2.x.y"])
    assert info.value.code == 2
    assert "a fingerprint is 30 digits" in capsys.readouterr().err

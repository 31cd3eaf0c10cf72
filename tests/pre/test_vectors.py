"""Known-answer vectors: today's code must reproduce and open what vectors/kat.json holds.

A failure here means an encoding, a derivation or a domain-separation string changed.
If that was intended, regenerate with `python tests/pre/make_vectors.py` and say why in
the commit: every stored account, certificate and snapshot stops verifying or opening.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pre import (
    AccountRecord,
    AccountSecrets,
    DeviceCertificate,
    DeviceKeys,
    KeyCapsule,
    Revocation,
    SealedSnapshot,
    open_key_capsule_as_owner,
    open_snapshot,
)
from tests.pre import make_vectors

KAT = json.loads((Path(__file__).parent / "vectors" / "kat.json").read_text())
INPUTS: dict[str, Any] = KAT["inputs"]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


STORED = flatten(KAT["deterministic"])


@pytest.fixture(scope="module")
def recomputed() -> dict[str, str]:
    return flatten(make_vectors.build(INPUTS)["deterministic"])


def test_generator_inputs_are_the_stored_ones() -> None:
    assert make_vectors.INPUTS == INPUTS


def test_every_value_is_checked(recomputed: dict[str, str]) -> None:
    assert sorted(recomputed) == sorted(STORED)
    assert len(STORED) >= 15


@pytest.mark.parametrize("name", sorted(STORED))
def test_deterministic_value(name: str, recomputed: dict[str, str]) -> None:
    assert recomputed[name] == STORED[name]


def test_account_values_by_hand() -> None:
    """The first few values again without the generator, as a reader would compute them."""
    account = AccountSecrets(bytes(range(32)))
    assert account.root_public.hex() == STORED["root_public_key"]
    assert account.account_id.hex() == STORED["account_id"]
    assert account.kfrag_verifying_key.hex() == STORED["kfrag_verifying_key"]
    assert account.label_public_key("account", 0).hex() == STORED["label_public_keys.account#0"]
    assert account.label_public_key("group:Zzk", 1).hex() == STORED["label_public_keys.group:Zzk#1"]


@pytest.fixture(scope="module")
def stored_records() -> dict[str, Any]:
    det = KAT["deterministic"]
    return {
        "account_record": AccountRecord.from_bytes(bytes.fromhex(det["account_record"])),
        "certificate": DeviceCertificate.from_bytes(bytes.fromhex(det["device_certificate"])),
        "revocation": Revocation.from_bytes(bytes.fromhex(det["revocation"])),
        "snapshot": SealedSnapshot.from_bytes(bytes.fromhex(det["sealed_snapshot"])),
        "capsules": [
            KeyCapsule.from_bytes(bytes.fromhex(c)) for c in KAT["randomized"]["key_capsules"]
        ],
    }


def test_stored_encodings_are_canonical(stored_records: dict[str, Any]) -> None:
    det = KAT["deterministic"]
    assert stored_records["account_record"].to_bytes().hex() == det["account_record"]
    assert stored_records["certificate"].to_bytes().hex() == det["device_certificate"]
    assert stored_records["snapshot"].to_bytes().hex() == det["sealed_snapshot"]
    for capsule, stored in zip(
        stored_records["capsules"], KAT["randomized"]["key_capsules"], strict=True
    ):
        assert capsule.to_bytes().hex() == stored
    for device in det["devices"].values():
        keys = DeviceKeys.from_bytes(bytes.fromhex(device["device_keys"]))
        assert keys.device_id.hex() == device["device_id"]


def test_stored_records_verify(stored_records: dict[str, Any]) -> None:
    record = stored_records["account_record"].verify()
    assert record.account_id.hex() == STORED["account_id"]
    cert = stored_records["certificate"].verify(record, now=INPUTS["now"])
    assert cert.device_id.hex() == STORED["devices.member.device_id"]
    assert stored_records["revocation"].verify(record).device_id == cert.device_id
    for capsule in stored_records["capsules"]:
        capsule.verify(record)


def test_stored_capsules_and_snapshot_open(stored_records: dict[str, Any]) -> None:
    account = AccountSecrets(bytes.fromhex(INPUTS["account_seed"]))
    capsule0, capsule1 = stored_records["capsules"]
    kek0_secret, kek1_secret = (bytes.fromhex(s) for s in INPUTS["key_capsules"]["kek_secrets"])

    kek1 = open_key_capsule_as_owner(account, capsule1)
    assert kek1.secret == kek1_secret
    kek0 = kek1.open_previous(capsule1)
    assert kek0.secret == kek0_secret
    assert open_key_capsule_as_owner(account, capsule0) == kek0

    snap = INPUTS["snapshot"]
    snapshot = stored_records["snapshot"]
    assert snapshot.digest.hex() == STORED["snapshot_digest"]
    plaintext = open_snapshot(
        snapshot,
        kek0,
        stored_records["certificate"],
        expect_prev_hash=None,
        tree_hash=bytes.fromhex(snap["tree_hash"]),
        epoch_authenticator=bytes.fromhex(snap["epoch_authenticator"]),
    )
    assert plaintext == bytes.fromhex(snap["plaintext"]) == b"known-answer MLS group state"

"""The local keystore: 0600, refused when others can read it, optionally sealed under a
passphrase; round trips keep every secret (the account seed on admin devices)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

import pre
from client_sdk.errors import KeystoreError
from client_sdk.keystore import Profile, load_profile, save_profile

NODES = ["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"]


def admin_profile() -> Profile:
    account = pre.AccountSecrets.generate()
    return Profile(
        account.account_id,
        pre.DeviceSecrets.generate(),
        list(NODES),
        2,
        account=account,
        node_keys={NODES[0]: os.urandom(32), NODES[2]: os.urandom(32)},
    )


def member_profile() -> Profile:
    return Profile(os.urandom(32), pre.DeviceSecrets.generate(), list(NODES), 2)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_same(a: Profile, b: Profile) -> None:
    assert (a.account_id, a.nodes, a.threshold, a.node_keys) == (
        b.account_id,
        b.nodes,
        b.threshold,
        b.node_keys,
    )
    assert a.device.to_bytes() == b.device.to_bytes()
    assert a.device.device_id == b.device.device_id
    if a.account is None:
        assert b.account is None and not b.is_admin
    else:
        assert b.account is not None and b.is_admin
        assert a.account.to_bytes() == b.account.to_bytes()


@pytest.mark.parametrize("make", [admin_profile, member_profile])
@pytest.mark.parametrize("passphrase", [None, "correct horse battery staple"])
def test_round_trip(tmp_path: Path, make: object, passphrase: str | None) -> None:
    profile = make()  # type: ignore[operator]
    path = tmp_path / "deep" / "keystore.json"
    save_profile(path, profile, passphrase)
    assert mode(path) == 0o600
    assert_same(profile, load_profile(path, passphrase))
    text = path.read_text()
    if passphrase is not None:  # nothing secret in the clear
        doc = json.loads(text)
        assert "secrets" not in doc and "sealed_secrets" in doc


def test_created_0600_whatever_the_umask_or_a_stale_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    old = os.umask(0)
    try:
        save_profile(path, member_profile())
    finally:
        os.umask(old)
    assert mode(path) == 0o600

    # a leftover world-readable temporary file must not become the keystore's mode
    stale = path.with_name(path.name + ".tmp")
    stale.write_text("junk")
    stale.chmod(0o644)
    save_profile(path, member_profile())
    assert mode(path) == 0o600
    load_profile(path)

    # overwriting a keystore somebody loosened makes it private again
    path.chmod(0o644)
    save_profile(path, member_profile())
    assert mode(path) == 0o600


@pytest.mark.parametrize("loose", [0o640, 0o604, 0o660, 0o644, 0o610])
def test_load_refuses_a_file_others_can_read(tmp_path: Path, loose: int) -> None:
    path = tmp_path / "keystore.json"
    save_profile(path, admin_profile())
    path.chmod(loose)
    with pytest.raises(KeystoreError, match="readable by others"):
        load_profile(path)


def test_passphrase_errors(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    profile = admin_profile()
    save_profile(path, profile, "right")
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        load_profile(path, "wrong")
    with pytest.raises(KeystoreError, match="locked"):
        load_profile(path)
    with pytest.raises(KeystoreError):
        load_profile(path, "")
    assert_same(profile, load_profile(path, "right"))


def test_missing_or_damaged_keystore(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    with pytest.raises(KeystoreError, match="no keystore"):
        load_profile(path)
    save_profile(path, admin_profile())
    good = json.loads(path.read_text())
    damaged: list[object] = [
        "not json",
        {**good, "format": "something-else"},
        {k: v for k, v in good.items() if k != "secrets"},
        {**good, "secrets": "!!"},
        {**good, "account_id": "zz"},
        {**good, "threshold": 7},  # more than the number of nodes
        {**good, "nodes": "http://one"},
    ]
    for doc in damaged:
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        with pytest.raises(KeystoreError):
            load_profile(path)

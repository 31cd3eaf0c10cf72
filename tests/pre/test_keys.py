"""Account and device secrets and what derives from them."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from pre import (
    ACCOUNT_ID_SIZE,
    DEVICE_ID_SIZE,
    LABEL_PATTERN,
    AccountSecrets,
    DecodeError,
    DeviceSecrets,
    account_id_for,
    device_id_for,
    label_for_group,
)

SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def test_account_derivations_are_deterministic_and_sized(account: AccountSecrets) -> None:
    again = AccountSecrets(account.seed)
    assert again.root_public == account.root_public
    assert again.account_id == account.account_id
    assert again.kfrag_verifying_key == account.kfrag_verifying_key
    assert len(account.root_public) == 32
    assert len(account.account_id) == ACCOUNT_ID_SIZE
    assert account.account_id == account_id_for(account.root_public)
    assert len(account.kfrag_verifying_key) == 33
    assert account.kfrag_verifying_key[0] in (2, 3)


def test_different_seeds_give_different_accounts(
    account: AccountSecrets, other_account: AccountSecrets
) -> None:
    assert account.root_public != other_account.root_public
    assert account.account_id != other_account.account_id
    assert account.kfrag_verifying_key != other_account.kfrag_verifying_key
    assert account.label_public_key("account", 0) != other_account.label_public_key("account", 0)


def test_label_keys_are_independent_per_label_and_epoch(account: AccountSecrets) -> None:
    keys = {
        account.label_public_key(label, epoch)
        for label in ("account", "group:AA", "group:AQ", "group:" + "A" * 171)
        for epoch in (0, 1, 2**32 - 1)
    }
    assert len(keys) == 12
    assert account.label_public_key("group:AA", 1) == account.label_public_key("group:AA", 1)
    # Separated from the other derived keys too.
    assert account.kfrag_verifying_key not in keys


@pytest.mark.parametrize(
    "label", ["", "Account", "group:", "group:a=", "group:a b", "group:" + "A" * 172, "account#0"]
)
def test_label_key_rejects_malformed_labels(account: AccountSecrets, label: str) -> None:
    assert not re.fullmatch(LABEL_PATTERN, label)
    with pytest.raises(ValueError):
        account.label_public_key(label, 0)


@pytest.mark.parametrize("epoch", [-1, 2**32])
def test_label_key_rejects_out_of_range_epochs(account: AccountSecrets, epoch: int) -> None:
    with pytest.raises(ValueError):
        account.label_public_key("account", epoch)


def test_label_for_group() -> None:
    assert label_for_group(b"\x00") == "group:AA"
    assert label_for_group(b"\xff\xfe") == "group:__4"
    longest = label_for_group(bytes(range(128)))
    assert len(longest) == len("group:") + 171
    assert re.fullmatch(LABEL_PATTERN, longest)
    for size in (0, 129):
        with pytest.raises(ValueError):
            label_for_group(bytes(size))


def test_device_keys_and_id(
    member_device: DeviceSecrets, make_device: Callable[[str], DeviceSecrets]
) -> None:
    keys = member_device.public_keys
    assert len(keys.signing_key) == 32
    assert len(keys.pre_key) == 33
    assert member_device.device_id == keys.device_id == device_id_for(keys.signing_key)
    assert len(member_device.device_id) == DEVICE_ID_SIZE
    again = make_device("member")
    assert again.public_keys == keys
    assert make_device("another").device_id != member_device.device_id


@pytest.mark.parametrize(
    "scalar",
    [bytes(32), SECP256K1_ORDER.to_bytes(32, "big"), b"\xff" * 32],
    ids=["zero", "order", "all-ones"],
)
def test_device_secrets_refuse_invalid_pre_scalars(scalar: bytes) -> None:
    with pytest.raises(ValueError):
        DeviceSecrets(bytes(32), scalar)
    encoding = bytes([0x02, 1]) + bytes(32) + scalar
    with pytest.raises(DecodeError):
        DeviceSecrets.from_bytes(encoding)


def test_device_secrets_accept_the_largest_scalar() -> None:
    largest = (SECP256K1_ORDER - 1).to_bytes(32, "big")
    assert DeviceSecrets(bytes(32), largest).public_keys.pre_key


@pytest.mark.parametrize("size", [31, 33])
def test_secrets_of_the_wrong_size_are_caller_errors(size: int) -> None:
    with pytest.raises(ValueError):
        AccountSecrets(bytes(size))
    with pytest.raises(ValueError):
        DeviceSecrets(bytes(size), bytes([7]) * 32)


def test_secrets_of_the_wrong_type_are_caller_errors() -> None:
    with pytest.raises(TypeError):
        AccountSecrets("0" * 32)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        AccountSecrets(bytearray(32))  # type: ignore[arg-type]


def test_generated_secrets_are_fresh() -> None:
    assert AccountSecrets.generate().seed != AccountSecrets.generate().seed
    a, b = DeviceSecrets.generate(), DeviceSecrets.generate()
    assert a.public_keys != b.public_keys

"""Secrets never reach logs: repr and str show public identifiers only."""

from __future__ import annotations

import pytest

from pre import AccountSecrets, DeviceSecrets, Kek, NodeSecrets, create_key_capsule


def renderings(obj: object) -> str:
    """Every way a secret holder commonly ends up in a log line or traceback."""
    return "\n".join([repr(obj), str(obj), f"{obj}", f"{obj!r}", repr([obj]), repr({"k": obj})])


def secret_forms(secret: bytes) -> list[str]:
    return [secret.hex(), secret.hex().upper(), repr(secret)[2:-1], secret[:8].hex()]


def assert_hidden(obj: object, *secrets: bytes) -> None:
    shown = renderings(obj)
    for secret in secrets:
        for form in secret_forms(secret):
            assert form not in shown, f"{type(obj).__name__} shows its secret as {form!r}"


def test_account_secrets(account: AccountSecrets) -> None:
    assert_hidden(account, account.seed)
    assert account.account_id.hex() in repr(account)


def test_device_secrets(member_device: DeviceSecrets) -> None:
    assert_hidden(member_device, member_device.signing_seed, member_device.pre_secret)
    assert member_device.device_id.hex() in repr(member_device)


def test_node_secrets(node: NodeSecrets) -> None:
    assert_hidden(node, node.seed)


def test_kek(kek1: Kek) -> None:
    assert_hidden(kek1, kek1.secret)
    assert repr(kek1) == "Kek(label='account', key_epoch=1)"


@pytest.mark.parametrize("secret", [bytes(range(32)), b"A" * 32, b"\x00" * 32])
def test_printable_and_zero_secrets_are_hidden_too(secret: bytes, account: AccountSecrets) -> None:
    """Byte strings that repr() would print as text, or as a run of one value."""
    assert_hidden(AccountSecrets(secret), secret)
    assert_hidden(DeviceSecrets(secret, b"\x07" * 32), secret, b"\x07" * 32)
    _, kek = create_key_capsule(account, "account", 9, now=0, kek_secret=secret)
    assert_hidden(kek, secret)

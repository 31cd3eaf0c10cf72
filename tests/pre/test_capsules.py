"""Key capsules: creation, node-side verification, owner opening and the KEK chain."""

from __future__ import annotations

import pytest

from pre import (
    KEK_SIZE,
    AccountRecord,
    AccountSecrets,
    BindingError,
    DecryptionError,
    Kek,
    KeyCapsule,
    SignatureError,
    create_key_capsule,
    open_key_capsule_as_owner,
)


def resigned(account: AccountSecrets, capsule: KeyCapsule) -> KeyCapsule:
    """`capsule` signed by `account`'s root as it stands: reaches the checks past the
    signature. Uses the private signing helper with the context `create_key_capsule` uses."""
    return capsule.replace(signature=account._sign_root("key-capsule", capsule.tbs()))


def test_capsule_fields(
    account: AccountSecrets, capsule0: KeyCapsule, capsule1: KeyCapsule, kek0: Kek, kek1: Kek
) -> None:
    assert (capsule1.account_id, capsule1.label, capsule1.key_epoch) == (
        account.account_id,
        "account",
        1,
    )
    assert capsule1.label_key == account.label_public_key("account", 1)
    assert capsule0.previous_kek is None
    assert capsule1.previous_kek is not None
    assert (kek1.account_id, kek1.label, kek1.key_epoch) == (account.account_id, "account", 1)
    assert len(kek1.secret) == KEK_SIZE
    assert kek0.secret != kek1.secret


def test_node_verifies_capsule_against_the_account(
    capsule1: KeyCapsule, account_record: AccountRecord
) -> None:
    assert capsule1.verify(account_record) is capsule1


def test_owner_opens_every_epoch(
    account: AccountSecrets, capsule0: KeyCapsule, capsule1: KeyCapsule, kek0: Kek, kek1: Kek
) -> None:
    assert open_key_capsule_as_owner(account, capsule0) == kek0
    assert open_key_capsule_as_owner(account, capsule1) == kek1


def test_kek_chain_walks_back_one_epoch(
    kek0: Kek, kek1: Kek, capsule0: KeyCapsule, capsule1: KeyCapsule
) -> None:
    assert kek1.open_previous(capsule1) == kek0
    with pytest.raises(BindingError):
        kek0.open_previous(capsule0)  # epoch 0 carries no previous KEK


def test_kek_opens_only_its_own_capsules_previous(
    account: AccountSecrets, kek0: Kek, kek1: Kek, capsule1: KeyCapsule
) -> None:
    with pytest.raises(BindingError):
        kek0.open_previous(capsule1)  # capsule of another epoch
    other_label, _ = create_key_capsule(account, "group:AA", 1, now=0, previous=None)
    with pytest.raises(BindingError):
        kek1.open_previous(other_label)
    impostor = Kek(kek1.account_id, kek1.label, kek1.key_epoch, bytes(KEK_SIZE))
    with pytest.raises(DecryptionError):
        impostor.open_previous(capsule1)


def test_chained_kek_is_bound_to_the_capsule_that_carries_it(
    account: AccountSecrets, kek0: Kek, capsule1: KeyCapsule
) -> None:
    """The previous KEK is sealed with this capsule's (account, label, epoch) as AD: the
    same box moved into a same-KEK capsule of another epoch does not open."""
    epoch2, kek2 = create_key_capsule(account, "account", 2, now=0, kek_secret=b"\x02" * 32)
    _, kek1_again = create_key_capsule(account, "account", 1, now=0, kek_secret=b"\x02" * 32)
    carrier, _ = create_key_capsule(
        account, "account", 1, now=0, previous=kek0, kek_secret=b"\x02" * 32
    )
    assert kek1_again.open_previous(carrier) == kek0
    moved = resigned(account, epoch2.replace(previous_kek=carrier.previous_kek))
    with pytest.raises(DecryptionError):
        kek2.open_previous(moved)


def test_kek_secret_can_be_fixed(account: AccountSecrets) -> None:
    capsule, kek = create_key_capsule(account, "account", 5, now=0, kek_secret=b"\x42" * 32)
    assert kek.secret == b"\x42" * 32
    assert open_key_capsule_as_owner(account, capsule).secret == b"\x42" * 32
    again, _ = create_key_capsule(account, "account", 5, now=0, kek_secret=b"\x42" * 32)
    assert again.capsule != capsule.capsule  # the encapsulation stays randomised


def test_previous_kek_must_be_the_preceding_epoch(
    account: AccountSecrets, other_account: AccountSecrets, kek0: Kek
) -> None:
    with pytest.raises(ValueError):
        create_key_capsule(account, "account", 2, now=0, previous=kek0)
    with pytest.raises(ValueError):
        create_key_capsule(account, "group:AA", 1, now=0, previous=kek0)
    with pytest.raises(ValueError):
        create_key_capsule(other_account, "account", 1, now=0, previous=kek0)


def test_kek_must_be_32_bytes(account: AccountSecrets) -> None:
    with pytest.raises(ValueError):
        Kek(account.account_id, "account", 0, bytes(31))
    with pytest.raises(ValueError):
        create_key_capsule(account, "account", 0, now=0, kek_secret=bytes(33))


def test_capsule_of_another_account_is_refused(
    account: AccountSecrets,
    other_account: AccountSecrets,
    account_record: AccountRecord,
    capsule1: KeyCapsule,
) -> None:
    foreign, _ = create_key_capsule(other_account, "account", 1, now=0)
    with pytest.raises(BindingError):
        foreign.verify(account_record)
    with pytest.raises(BindingError):
        open_key_capsule_as_owner(account, foreign)
    with pytest.raises(BindingError):
        open_key_capsule_as_owner(other_account, capsule1)


def test_capsule_naming_this_account_signed_by_another_is_refused(
    account: AccountSecrets,
    other_account: AccountSecrets,
    account_record: AccountRecord,
) -> None:
    foreign, _ = create_key_capsule(other_account, "account", 1, now=0)
    claimed = resigned(other_account, foreign.replace(account_id=account.account_id))
    with pytest.raises(SignatureError):
        claimed.verify(account_record)
    with pytest.raises(SignatureError):
        open_key_capsule_as_owner(account, claimed)


def test_owner_refuses_a_signed_capsule_under_a_foreign_label_key(
    account: AccountSecrets, other_account: AccountSecrets, capsule1: KeyCapsule
) -> None:
    foreign_key = other_account.label_public_key("account", 1)
    with pytest.raises(BindingError):
        open_key_capsule_as_owner(
            account, resigned(account, capsule1.replace(label_key=foreign_key))
        )
    # Relabelled to another epoch of this account: the label key no longer matches either.
    with pytest.raises(BindingError):
        open_key_capsule_as_owner(account, resigned(account, capsule1.replace(key_epoch=2)))


def test_owner_refuses_a_signed_capsule_with_a_damaged_kek(
    account: AccountSecrets, capsule1: KeyCapsule
) -> None:
    damaged = bytearray(capsule1.encrypted_kek)
    damaged[-1] ^= 1
    with pytest.raises(DecryptionError):
        open_key_capsule_as_owner(
            account, resigned(account, capsule1.replace(encrypted_kek=bytes(damaged)))
        )


def test_altered_capsule_fails_its_signature(
    capsule1: KeyCapsule, capsule0: KeyCapsule, account_record: AccountRecord
) -> None:
    for changed in (
        capsule1.replace(created_at=capsule1.created_at + 1),
        capsule1.replace(previous_kek=None),
        capsule1.replace(capsule=capsule0.capsule),
        capsule1.replace(encrypted_kek=capsule0.encrypted_kek),
    ):
        with pytest.raises(SignatureError):
            changed.verify(account_record)

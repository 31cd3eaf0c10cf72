"""Capsule fragments: what a device accepts from nodes, and what opens a key capsule."""

from __future__ import annotations

import itertools

import pytest

from pre import (
    AccountRecord,
    AccountSecrets,
    BindingError,
    CapsuleFragment,
    DecodeError,
    DeviceCertificate,
    DeviceSecrets,
    FragmentError,
    Kek,
    KeyCapsule,
    Role,
    VerifiedCapsuleFragment,
    VerifiedGrantShare,
    certify_device,
    create_key_capsule,
    make_grant,
    open_key_capsule,
    reencrypt,
    register_account,
    verify_capsule_fragment,
    verify_grant_share,
)


def test_any_two_of_three_fragments_open_the_capsule(
    member_device: DeviceSecrets,
    capsule1: KeyCapsule,
    verified_cfrags: tuple[VerifiedCapsuleFragment, ...],
    kek1: Kek,
) -> None:
    for pair in itertools.permutations(verified_cfrags, 2):
        assert open_key_capsule(member_device, capsule1, pair) == kek1
    assert open_key_capsule(member_device, capsule1, verified_cfrags) == kek1


def test_fragment_fields(
    cfrags: tuple[CapsuleFragment, ...], capsule1: KeyCapsule, member_device: DeviceSecrets
) -> None:
    for fragment in cfrags:
        assert (fragment.label, fragment.key_epoch) == (capsule1.label, capsule1.key_epoch)
    assert len({f.cfrag for f in cfrags}) == 3


@pytest.mark.parametrize("count", [0, 1])
def test_fewer_than_threshold_fragments_do_not_open(
    member_device: DeviceSecrets,
    capsule1: KeyCapsule,
    verified_cfrags: tuple[VerifiedCapsuleFragment, ...],
    count: int,
) -> None:
    for chosen in itertools.combinations(verified_cfrags, count):
        with pytest.raises(FragmentError):
            open_key_capsule(member_device, capsule1, chosen)


def test_one_fragment_twice_is_not_two(
    member_device: DeviceSecrets,
    capsule1: KeyCapsule,
    verified_cfrags: tuple[VerifiedCapsuleFragment, ...],
) -> None:
    with pytest.raises(FragmentError):
        open_key_capsule(member_device, capsule1, [verified_cfrags[0]] * 2)


def test_another_device_cannot_verify_the_fragments(
    cfrags: tuple[CapsuleFragment, ...],
    capsule1: KeyCapsule,
    account_record: AccountRecord,
    stranger_device: DeviceSecrets,
    admin_device: DeviceSecrets,
) -> None:
    for receiver in (stranger_device, admin_device):
        for fragment in cfrags:
            with pytest.raises(FragmentError):
                verify_capsule_fragment(
                    fragment, capsule=capsule1, account=account_record, receiver=receiver
                )


def test_another_device_cannot_open_with_verified_fragments(
    stranger_device: DeviceSecrets,
    capsule1: KeyCapsule,
    verified_cfrags: tuple[VerifiedCapsuleFragment, ...],
) -> None:
    with pytest.raises(BindingError):
        open_key_capsule(stranger_device, capsule1, verified_cfrags)


def test_fragment_for_another_epoch_is_refused(
    cfrags: tuple[CapsuleFragment, ...],
    capsule0: KeyCapsule,
    capsule1: KeyCapsule,
    account_record: AccountRecord,
    member_device: DeviceSecrets,
) -> None:
    with pytest.raises(BindingError):
        verify_capsule_fragment(
            cfrags[0], capsule=capsule0, account=account_record, receiver=member_device
        )
    # Relabelled to match: the proof is over capsule1's points and the epoch-1 key.
    relabelled = cfrags[0].replace(key_epoch=0)
    with pytest.raises(FragmentError):
        verify_capsule_fragment(
            relabelled, capsule=capsule0, account=account_record, receiver=member_device
        )


@pytest.fixture(scope="module")
def reissued(account: AccountSecrets) -> tuple[KeyCapsule, Kek]:
    """A second capsule for ("account", 1): same label key, another encapsulation."""
    return create_key_capsule(account, "account", 1, now=0)


def test_fragment_from_another_capsule_of_the_same_epoch_fails_its_proof(
    cfrags: tuple[CapsuleFragment, ...],
    reissued: tuple[KeyCapsule, Kek],
    account_record: AccountRecord,
    member_device: DeviceSecrets,
) -> None:
    capsule, _ = reissued
    with pytest.raises(FragmentError):
        verify_capsule_fragment(
            cfrags[0], capsule=capsule, account=account_record, receiver=member_device
        )


def test_fragments_verified_for_another_capsule_do_not_open_this_one(
    member_device: DeviceSecrets,
    reissued: tuple[KeyCapsule, Kek],
    capsule1: KeyCapsule,
    verified_cfrags: tuple[VerifiedCapsuleFragment, ...],
    verified_shares: tuple[VerifiedGrantShare, ...],
    account_record: AccountRecord,
) -> None:
    capsule, kek = reissued
    # The member's shares cover the label-epoch key, so they re-encrypt the reissued capsule.
    theirs = [
        verify_capsule_fragment(
            reencrypt(capsule, share),
            capsule=capsule,
            account=account_record,
            receiver=member_device,
        )
        for share in verified_shares[:2]
    ]
    assert open_key_capsule(member_device, capsule, theirs) == kek
    with pytest.raises(BindingError):
        open_key_capsule(member_device, capsule1, theirs)
    with pytest.raises(BindingError):
        open_key_capsule(member_device, capsule, verified_cfrags[:2])
    with pytest.raises(BindingError):  # one of each
        open_key_capsule(member_device, capsule1, [verified_cfrags[0], theirs[1]])


def test_fragment_checked_against_another_account_is_refused(
    cfrags: tuple[CapsuleFragment, ...],
    capsule1: KeyCapsule,
    other_account_record: AccountRecord,
    account_record: AccountRecord,
    member_device: DeviceSecrets,
) -> None:
    with pytest.raises(BindingError):
        verify_capsule_fragment(
            cfrags[0], capsule=capsule1, account=other_account_record, receiver=member_device
        )
    # The right account id with another kfrag verifying key: the proof fails.
    swapped = account_record.replace(kfrag_verifying_key=other_account_record.kfrag_verifying_key)
    with pytest.raises(FragmentError):
        verify_capsule_fragment(
            cfrags[0], capsule=capsule1, account=swapped, receiver=member_device
        )


def test_fragment_made_with_another_accounts_kfrags_fails_its_proof(
    other_account: AccountSecrets,
    member_device: DeviceSecrets,
    capsule1: KeyCapsule,
    account_record: AccountRecord,
    now: int,
) -> None:
    """Another account's key fragments for the same label-epoch and device, re-encrypting
    this account's capsule: the kfrag signer and delegating key do not match."""
    other_record = register_account(other_account, now=now)
    other_cert = certify_device(
        other_account, member_device.public_keys, role=Role.MEMBER, not_before=0, not_after=now + 1
    )
    other_capsule, _ = create_key_capsule(other_account, "account", 1, now=now)
    (share,) = make_grant(
        other_account, other_capsule, other_cert, threshold=1, shares=1, expires_at=now + 1
    )
    verified = verify_grant_share(
        share,
        account=other_record,
        capsule=other_capsule,
        device=other_cert,
        share_index=1,
        now=now,
    )
    # reencrypt checks account, label and epoch; present this capsule under their id.
    disguised = capsule1.replace(account_id=other_capsule.account_id)
    fragment = reencrypt(disguised, verified)
    with pytest.raises(FragmentError):
        verify_capsule_fragment(
            fragment, capsule=capsule1, account=account_record, receiver=member_device
        )


def test_malformed_fragment_bytes_are_a_decode_error(
    capsule1: KeyCapsule, account_record: AccountRecord, member_device: DeviceSecrets
) -> None:
    for junk in (b"\x00", b"\x95" + bytes(40), bytes(381)):
        fragment = CapsuleFragment(label="account", key_epoch=1, cfrag=junk)
        with pytest.raises(DecodeError):
            verify_capsule_fragment(
                fragment, capsule=capsule1, account=account_record, receiver=member_device
            )


def test_reencryption_is_randomised_but_verifies(
    capsule1: KeyCapsule,
    verified_shares: tuple[VerifiedGrantShare, ...],
    account_record: AccountRecord,
    member_device: DeviceSecrets,
    member_cert: DeviceCertificate,
) -> None:
    first = reencrypt(capsule1, verified_shares[0])
    second = reencrypt(capsule1, verified_shares[0])
    assert first.cfrag != second.cfrag
    for fragment in (first, second):
        verify_capsule_fragment(
            fragment, capsule=capsule1, account=account_record, receiver=member_device
        )

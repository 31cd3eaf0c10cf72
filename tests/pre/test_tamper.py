"""Changing any single byte of a signed or sealed object's encoding is caught.

Each check is what the receiving party runs (decode, then verify or open). For every byte
position and three masks (lowest bit, highest bit, whole byte) the check must raise a
`PreError`: never succeed, never raise anything else.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pre import (
    AccountRecord,
    AccountSecrets,
    CapsuleFragment,
    DeviceCertificate,
    DeviceSecrets,
    GrantShare,
    Kek,
    KeyCapsule,
    NodeSecrets,
    PreError,
    Revocation,
    RevocationReceipt,
    SealedSnapshot,
    VerifiedCapsuleFragment,
    open_key_capsule,
    open_key_capsule_as_owner,
    open_snapshot,
    open_with_passphrase,
    seal_snapshot,
    verify_capsule_fragment,
    verify_grant_share,
)

MASKS = (0x01, 0x80, 0xFF)


def flipped(data: bytes, position: int, mask: int) -> bytes:
    out = bytearray(data)
    out[position] ^= mask
    return bytes(out)


def assert_every_flip_rejected(data: bytes, check: Callable[[bytes], object]) -> None:
    check(data)  # the untouched encoding passes, so a rejection below is the flip's doing
    accepted = []
    for position in range(len(data)):
        for mask in MASKS:
            try:
                check(flipped(data, position, mask))
            except PreError:
                continue
            except Exception as exc:
                raise AssertionError(
                    f"byte {position} ^ {mask:#04x} raised {type(exc).__name__}, not a PreError"
                ) from exc
            accepted.append((position, mask))
    assert not accepted, f"tampered encodings accepted at (byte, mask): {accepted}"


def test_account_record(account_record: AccountRecord) -> None:
    assert_every_flip_rejected(
        account_record.to_bytes(), lambda b: AccountRecord.from_bytes(b).verify()
    )


def test_device_certificate(
    member_cert: DeviceCertificate, account_record: AccountRecord, now: int
) -> None:
    assert_every_flip_rejected(
        member_cert.to_bytes(),
        lambda b: DeviceCertificate.from_bytes(b).verify(account_record, now=now),
    )


def test_revocation(revocation: Revocation, account_record: AccountRecord) -> None:
    assert_every_flip_rejected(
        revocation.to_bytes(), lambda b: Revocation.from_bytes(b).verify(account_record)
    )


@pytest.mark.parametrize("epoch", [0, 1], ids=["without-previous", "with-previous"])
def test_key_capsule_node_verify(
    epoch: int,
    capsule0: KeyCapsule,
    capsule1: KeyCapsule,
    account_record: AccountRecord,
) -> None:
    capsule = (capsule0, capsule1)[epoch]
    assert_every_flip_rejected(
        capsule.to_bytes(), lambda b: KeyCapsule.from_bytes(b).verify(account_record)
    )


def test_key_capsule_owner_open(account: AccountSecrets, capsule1: KeyCapsule) -> None:
    assert_every_flip_rejected(
        capsule1.to_bytes(),
        lambda b: open_key_capsule_as_owner(account, KeyCapsule.from_bytes(b)),
    )


def test_grant_share(
    grant: tuple[GrantShare, ...],
    account_record: AccountRecord,
    capsule1: KeyCapsule,
    member_cert: DeviceCertificate,
    now: int,
) -> None:
    def check(data: bytes) -> object:
        return verify_grant_share(
            GrantShare.from_bytes(data),
            account=account_record,
            capsule=capsule1,
            device=member_cert,
            share_index=2,
            now=now,
        )

    assert_every_flip_rejected(grant[1].to_bytes(), check)


def test_capsule_fragment(
    cfrags: tuple[CapsuleFragment, ...],
    verified_cfrags: tuple[VerifiedCapsuleFragment, ...],
    capsule1: KeyCapsule,
    account_record: AccountRecord,
    member_device: DeviceSecrets,
) -> None:
    """A cfrag carries no signature of its own: its proof, checked by the device, and
    the decryption with a second, good fragment must catch the change."""

    def check(data: bytes) -> object:
        fragment = verify_capsule_fragment(
            CapsuleFragment.from_bytes(data),
            capsule=capsule1,
            account=account_record,
            receiver=member_device,
        )
        return open_key_capsule(member_device, capsule1, [fragment, verified_cfrags[1]])

    assert_every_flip_rejected(cfrags[0].to_bytes(), check)


@pytest.fixture(scope="module")
def small_snapshots(
    kek1: Kek, admin_device: DeviceSecrets, snapshot0: SealedSnapshot
) -> tuple[SealedSnapshot, SealedSnapshot]:
    """One snapshot with every optional header field present, one with none; tiny
    plaintexts, so every ciphertext byte is covered too."""
    full = seal_snapshot(
        kek1,
        admin_device,
        group_id=b"g",
        kind="state",
        mls_epoch=2,
        plaintext=b"x",
        now=1,
        prev=snapshot0,
        tree_hash=b"t",
        epoch_authenticator=b"a",
    )
    bare = seal_snapshot(
        kek1, admin_device, group_id=b"g", kind="k", mls_epoch=0, plaintext=b"", now=0
    )
    return full, bare


@pytest.mark.parametrize("which", [0, 1], ids=["optional-fields", "no-optional-fields"])
def test_sealed_snapshot_open(
    which: int,
    small_snapshots: tuple[SealedSnapshot, SealedSnapshot],
    kek1: Kek,
    admin_cert: DeviceCertificate,
) -> None:
    assert_every_flip_rejected(
        small_snapshots[which].to_bytes(),
        lambda b: open_snapshot(SealedSnapshot.from_bytes(b), kek1, admin_cert),
    )


@pytest.mark.parametrize("which", [0, 1], ids=["optional-fields", "no-optional-fields"])
def test_sealed_snapshot_node_verify(
    which: int,
    small_snapshots: tuple[SealedSnapshot, SealedSnapshot],
    admin_cert: DeviceCertificate,
) -> None:
    """A node holds no key: authorship alone must catch every change."""
    assert_every_flip_rejected(
        small_snapshots[which].to_bytes(),
        lambda b: SealedSnapshot.from_bytes(b).verify(admin_cert),
    )


def test_passphrase_box(passphrase_box: bytes) -> None:
    assert_every_flip_rejected(passphrase_box, lambda b: open_with_passphrase(b, "correct horse"))


def test_revocation_receipt(receipt: RevocationReceipt, node: NodeSecrets) -> None:
    assert_every_flip_rejected(
        receipt.to_bytes(), lambda b: RevocationReceipt.from_bytes(b).verify(node.public_key)
    )

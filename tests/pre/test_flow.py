"""The whole path a snapshot key takes, with every object crossing the wire as bytes."""

from __future__ import annotations

import itertools
from typing import TypeVar

from pre import (
    AccountSecrets,
    CapsuleFragment,
    DeviceCertificate,
    DeviceSecrets,
    GrantShare,
    KeyCapsule,
    Role,
    SealedSnapshot,
    VerifiedCapsuleFragment,
    certify_device,
    create_key_capsule,
    make_grant,
    open_key_capsule,
    open_key_capsule_as_owner,
    open_snapshot,
    reencrypt,
    register_account,
    seal_snapshot,
    verify_capsule_fragment,
    verify_grant_share,
)
from pre._codec import Record

R = TypeVar("R", bound=Record)


def over_wire(record: R) -> R:
    """What the other party sees: a fresh decode of the encoding."""
    return type(record).from_bytes(record.to_bytes())


def test_admin_seals_member_opens_through_two_of_three_nodes(
    account: AccountSecrets,
    admin_device: DeviceSecrets,
    member_device: DeviceSecrets,
    now: int,
) -> None:
    # Admin: register the account, certify both devices.
    record = over_wire(register_account(account, now=now)).verify()
    admin_cert = over_wire(
        certify_device(
            account, admin_device.public_keys, role=Role.ADMIN, not_before=now, not_after=now + 10
        )
    ).verify(record, now=now)
    member_keys = over_wire(member_device.public_keys)
    member_cert = over_wire(
        certify_device(account, member_keys, role=Role.MEMBER, not_before=now, not_after=now + 10)
    ).verify(record, now=now)

    # Admin: key capsules for "account" at epochs 0 and 1 (1 carries 0's KEK), and two
    # chained snapshots, the first under epoch 0.
    capsule0, kek0 = create_key_capsule(account, "account", 0, now=now)
    capsule1, kek1 = create_key_capsule(account, "account", 1, now=now, previous=kek0)
    first = seal_snapshot(
        kek0, admin_device, group_id=b"g", kind="state", mls_epoch=1, plaintext=b"one", now=now
    )
    second = seal_snapshot(
        kek1,
        admin_device,
        group_id=b"g",
        kind="state",
        mls_epoch=2,
        plaintext=b"two",
        now=now,
        prev=first,
    )

    # Admin: grant epoch 1 to the member, 2-of-3; share i goes to node i.
    shares = make_grant(account, capsule1, member_cert, threshold=2, shares=3, expires_at=now + 5)
    assert [s.share_index for s in shares] == [1, 2, 3]

    # Node i: verify its share, re-encrypt the capsule for the member.
    node_capsule = over_wire(capsule1).verify(record)
    fragments = []
    for index, share in enumerate(shares, start=1):
        verified = verify_grant_share(
            over_wire(share),
            account=record,
            capsule=node_capsule,
            device=member_cert,
            share_index=index,
            now=now,
        )
        fragments.append(over_wire(reencrypt(node_capsule, verified)))

    # Member: verify each cfrag, open the KEK from any two, walk back to epoch 0.
    device_capsule = over_wire(capsule1).verify(record)
    checked = [
        verify_capsule_fragment(f, capsule=device_capsule, account=record, receiver=member_device)
        for f in fragments
    ]
    for pair in itertools.combinations(checked, 2):
        kek = open_key_capsule(member_device, device_capsule, pair)
        assert kek == kek1
    assert open_key_capsule(member_device, device_capsule, checked) == kek1
    previous = kek1.open_previous(device_capsule)
    assert previous == kek0
    assert previous.key_epoch == 0

    assert open_snapshot(over_wire(first), previous, admin_cert, expect_prev_hash=None) == b"one"
    assert (
        open_snapshot(over_wire(second), kek1, admin_cert, expect_prev_hash=first.digest) == b"two"
    )

    # Owner path: the admin opens both capsules with the seed alone.
    assert open_key_capsule_as_owner(account, over_wire(capsule1)) == kek1
    assert open_key_capsule_as_owner(account, over_wire(capsule0)) == kek0


def test_fixture_flow_is_consistent(
    account: AccountSecrets,
    member_device: DeviceSecrets,
    member_cert: DeviceCertificate,
    capsule1: KeyCapsule,
    grant: tuple[GrantShare, ...],
    cfrags: tuple[CapsuleFragment, ...],
    verified_cfrags: tuple[VerifiedCapsuleFragment, ...],
    snapshot0: SealedSnapshot,
    snapshot1: SealedSnapshot,
    plaintext0: bytes,
    plaintext1: bytes,
) -> None:
    """The conftest objects are the happy path the negative tests start from."""
    assert len(grant) == len(cfrags) == 3
    kek1 = open_key_capsule(member_device, capsule1, verified_cfrags[1:])
    assert kek1 == open_key_capsule_as_owner(account, capsule1)
    kek0 = kek1.open_previous(capsule1)
    assert open_snapshot(snapshot0, kek0, member_cert, expect_prev_hash=None) == plaintext0
    assert (
        open_snapshot(snapshot1, kek1, member_cert, expect_prev_hash=snapshot0.digest) == plaintext1
    )

"""Shared, immutable fixtures for the `pre` tests.

Everything is session-scoped: `pre` records are frozen, and hypothesis tests may only use
fixtures that are not reset between examples. Seeds are fixed so a failure reproduces;
Umbral encapsulation, key fragments, re-encryption and snapshot salts stay random.
Time is never read from the clock: every call takes `now=` from the `now` fixture.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import NamedTuple

import pytest

from pre import (
    AccountDeletion,
    AccountManifest,
    AccountRecord,
    AccountSecrets,
    CapsuleFragment,
    DeletionReceipt,
    DeviceCertificate,
    DeviceKeys,
    DeviceSecrets,
    EnrollmentRequest,
    GrantEntry,
    GrantKey,
    GrantShare,
    Kek,
    KeyCapsule,
    LabelEntry,
    ManifestDevice,
    ManifestNode,
    ManifestUpdate,
    NodeSecrets,
    Purge,
    PurgeEntry,
    PurgeReceipt,
    Revocation,
    RevocationReceipt,
    Role,
    SealedSnapshot,
    ShareRef,
    SnapshotHeader,
    SnapshotReceipt,
    VerifiedCapsuleFragment,
    VerifiedGrantShare,
    capsule_hash,
    certificate_hash,
    certify_device,
    create_key_capsule,
    delete_account,
    label_for_group,
    make_enrollment_request,
    make_grant,
    manifest_update,
    purge_group,
    reencrypt,
    register_account,
    revoke_device,
    seal_snapshot,
    seal_with_passphrase,
    sign_manifest,
    verify_capsule_fragment,
    verify_grant_share,
)
from pre._codec import Record
from pre.keystore import _PassphraseBox

NOW = 1_700_000_000
DAY = 86_400
GROUP_ID = b"mls group \x00\x01\x02"
PLAINTEXT0 = b"serialized MLS group state at epoch 7"
PLAINTEXT1 = b"serialized MLS group state at epoch 8"


def seed(name: str) -> bytes:
    return hashlib.sha256(b"statecache tests/" + name.encode()).digest()


def device_secrets(name: str) -> DeviceSecrets:
    return DeviceSecrets(seed(f"{name}/signing"), seed(f"{name}/pre"))


@pytest.fixture(scope="session")
def make_device() -> Callable[[str], DeviceSecrets]:
    """Fixed-seed device secrets by name, for tests that need one more device."""
    return device_secrets


class KeyChain(NamedTuple):
    """Key capsules of label "account" at key epochs 0 and 1, epoch 1 chained to 0."""

    capsule0: KeyCapsule
    kek0: Kek
    capsule1: KeyCapsule
    kek1: Kek


@pytest.fixture(scope="session")
def now() -> int:
    return NOW


@pytest.fixture(scope="session")
def group_id() -> bytes:
    """The MLS group id of the fixture snapshots (label "account" covers any group)."""
    return GROUP_ID


@pytest.fixture(scope="session")
def plaintext0() -> bytes:
    return PLAINTEXT0


@pytest.fixture(scope="session")
def plaintext1() -> bytes:
    return PLAINTEXT1


@pytest.fixture(scope="session")
def account() -> AccountSecrets:
    return AccountSecrets(seed("account"))


@pytest.fixture(scope="session")
def other_account() -> AccountSecrets:
    return AccountSecrets(seed("other account"))


@pytest.fixture(scope="session")
def account_record(account: AccountSecrets) -> AccountRecord:
    return register_account(account, now=NOW - DAY)


@pytest.fixture(scope="session")
def other_account_record(other_account: AccountSecrets) -> AccountRecord:
    return register_account(other_account, now=NOW - DAY)


@pytest.fixture(scope="session")
def admin_device() -> DeviceSecrets:
    return device_secrets("admin")


@pytest.fixture(scope="session")
def member_device() -> DeviceSecrets:
    return device_secrets("member")


@pytest.fixture(scope="session")
def stranger_device() -> DeviceSecrets:
    """Another certified member of the same account, never granted anything."""
    return device_secrets("stranger")


def _certify(account: AccountSecrets, device: DeviceSecrets, role: Role) -> DeviceCertificate:
    return certify_device(
        account,
        device.public_keys,
        role=role,
        not_before=NOW - DAY,
        not_after=NOW + DAY,
        name=f"{role.name.lower()} device",
    )


@pytest.fixture(scope="session")
def admin_cert(account: AccountSecrets, admin_device: DeviceSecrets) -> DeviceCertificate:
    return _certify(account, admin_device, Role.ADMIN)


@pytest.fixture(scope="session")
def member_cert(account: AccountSecrets, member_device: DeviceSecrets) -> DeviceCertificate:
    return _certify(account, member_device, Role.MEMBER)


@pytest.fixture(scope="session")
def stranger_cert(account: AccountSecrets, stranger_device: DeviceSecrets) -> DeviceCertificate:
    return _certify(account, stranger_device, Role.MEMBER)


@pytest.fixture(scope="session")
def key_chain(account: AccountSecrets) -> KeyChain:
    capsule0, kek0 = create_key_capsule(account, "account", 0, now=NOW)
    capsule1, kek1 = create_key_capsule(account, "account", 1, now=NOW, previous=kek0)
    return KeyChain(capsule0, kek0, capsule1, kek1)


@pytest.fixture(scope="session")
def capsule0(key_chain: KeyChain) -> KeyCapsule:
    return key_chain.capsule0


@pytest.fixture(scope="session")
def kek0(key_chain: KeyChain) -> Kek:
    return key_chain.kek0


@pytest.fixture(scope="session")
def capsule1(key_chain: KeyChain) -> KeyCapsule:
    return key_chain.capsule1


@pytest.fixture(scope="session")
def kek1(key_chain: KeyChain) -> Kek:
    return key_chain.kek1


@pytest.fixture(scope="session")
def grant(
    account: AccountSecrets, capsule1: KeyCapsule, member_cert: DeviceCertificate
) -> tuple[GrantShare, ...]:
    """A 2-of-3 grant of capsule1's label-epoch key to the member device."""
    return make_grant(account, capsule1, member_cert, threshold=2, shares=3, expires_at=NOW + DAY)


@pytest.fixture(scope="session")
def verified_shares(
    grant: tuple[GrantShare, ...],
    account_record: AccountRecord,
    capsule1: KeyCapsule,
    member_cert: DeviceCertificate,
) -> tuple[VerifiedGrantShare, ...]:
    return tuple(
        verify_grant_share(
            share,
            account=account_record,
            capsule=capsule1,
            device=member_cert,
            share_index=index,
            now=NOW,
        )
        for index, share in enumerate(grant, start=1)
    )


@pytest.fixture(scope="session")
def cfrags(
    capsule1: KeyCapsule, verified_shares: tuple[VerifiedGrantShare, ...]
) -> tuple[CapsuleFragment, ...]:
    """What nodes 1, 2 and 3 return to the member device for capsule1."""
    return tuple(reencrypt(capsule1, share) for share in verified_shares)


@pytest.fixture(scope="session")
def verified_cfrags(
    cfrags: tuple[CapsuleFragment, ...],
    capsule1: KeyCapsule,
    account_record: AccountRecord,
    member_device: DeviceSecrets,
) -> tuple[VerifiedCapsuleFragment, ...]:
    return tuple(
        verify_capsule_fragment(f, capsule=capsule1, account=account_record, receiver=member_device)
        for f in cfrags
    )


@pytest.fixture(scope="session")
def snapshot0(kek0: Kek, member_device: DeviceSecrets) -> SealedSnapshot:
    """The first snapshot of (GROUP_ID, "state"), sealed under the epoch-0 KEK."""
    return seal_snapshot(
        kek0,
        member_device,
        group_id=GROUP_ID,
        kind="state",
        mls_epoch=7,
        plaintext=PLAINTEXT0,
        now=NOW,
        tree_hash=b"tree hash 7",
        epoch_authenticator=b"epoch authenticator 7",
    )


@pytest.fixture(scope="session")
def snapshot1(kek1: Kek, member_device: DeviceSecrets, snapshot0: SealedSnapshot) -> SealedSnapshot:
    """The next snapshot of the same (group, kind), under the epoch-1 KEK, chained."""
    return seal_snapshot(
        kek1,
        member_device,
        group_id=GROUP_ID,
        kind="state",
        mls_epoch=8,
        plaintext=PLAINTEXT1,
        now=NOW + 1,
        prev=snapshot0,
    )


@pytest.fixture(scope="session")
def node() -> NodeSecrets:
    return NodeSecrets(seed("node 1"))


@pytest.fixture(scope="session")
def revocation(account: AccountSecrets, stranger_device: DeviceSecrets) -> Revocation:
    return revoke_device(account, stranger_device.device_id, now=NOW)


@pytest.fixture(scope="session")
def receipt(node: NodeSecrets, revocation: Revocation) -> RevocationReceipt:
    return node.sign_receipt(
        account_id=revocation.account_id,
        device_id=revocation.device_id,
        revoked_at=revocation.revoked_at,
        deleted=(ShareRef("account", 0), ShareRef(label_for_group(GROUP_ID), 3)),
        now=NOW + 5,
    )


@pytest.fixture(scope="session")
def passphrase_box() -> bytes:
    """A keystore box at the cheapest scrypt cost the format allows (2**10)."""
    return seal_with_passphrase(b"device secrets", "correct horse", log2_n=10)


@pytest.fixture(scope="session")
def manifest_v1(
    account: AccountSecrets,
    member_cert: DeviceCertificate,
    admin_cert: DeviceCertificate,
    key_chain: KeyChain,
    node: NodeSecrets,
) -> AccountManifest:
    """Version 1 of the account's manifest: three nodes, one label, the admin and the
    member, the member's grant."""
    nodes = tuple(
        ManifestNode(
            node_key=NodeSecrets(seed(f"node {i}")).public_key,
            share_index=i,
            url=f"https://node{i}.example",
            operator="" if i > 1 else "operator one",
        )
        for i in (1, 2, 3)
    )
    devices = sorted(
        (ManifestDevice(device_id=c.device_id, certificate_hash=certificate_hash(c), revoked_at=0)
         for c in (member_cert, admin_cert)),
        key=lambda d: d.device_id,
    )  # fmt: skip
    unsigned = AccountManifest(
        account_id=account.account_id,
        version=1,
        previous=bytes(32),
        issued_at=NOW,
        threshold=2,
        grant_generation=0,
        nodes=nodes,
        labels=(
            LabelEntry(label="account", key_epoch=1, capsule_hash=capsule_hash(key_chain.capsule1)),
        ),
        devices=tuple(devices),
        grants=(
            GrantEntry(
                device_id=member_cert.device_id,
                label="account",
                key_epoch=1,
                expires_at=NOW + 86_400,
                generation=0,
            ),
        ),
        purges=(),
        signature=bytes(64),
    )
    return sign_manifest(account, unsigned)


@pytest.fixture(scope="session")
def manifest_v2(
    account: AccountSecrets, manifest_v1: AccountManifest, stranger_device: DeviceSecrets
) -> AccountManifest:
    """Version 2: the member's grant withdrawn, a revoked device listed, a purge."""
    revoked = ManifestDevice(
        device_id=stranger_device.device_id, certificate_hash=bytes(range(32)), revoked_at=NOW
    )
    return sign_manifest(
        account,
        manifest_v1.replace(
            version=2,
            previous=manifest_v1.digest,
            issued_at=NOW + 10,
            devices=tuple(sorted((*manifest_v1.devices, revoked), key=lambda d: d.device_id)),
            grants=(),
            purges=(PurgeEntry(group_id=GROUP_ID, author=stranger_device.device_id, from_epoch=9),),
        ),
    )


def all_record_types() -> list[type[Record]]:
    """Every Record subclass `import pre` defines, found by walking the class tree."""
    found: list[type[Record]] = []
    pending = list(Record.__subclasses__())
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted(found, key=lambda cls: cls.__name__)


@pytest.fixture(scope="session")
def record_types() -> list[type[Record]]:
    return all_record_types()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test taking `record_type` runs once per Record subclass, so a new record type
    gets round-trip and fuzz coverage (or a loud KeyError for its missing samples)."""
    if "record_type" in metafunc.fixturenames:
        types = all_record_types()
        metafunc.parametrize("record_type", types, ids=[cls.__name__ for cls in types])


@pytest.fixture(scope="session")
def sample_records(
    account: AccountSecrets,
    member_device: DeviceSecrets,
    account_record: AccountRecord,
    member_cert: DeviceCertificate,
    admin_cert: DeviceCertificate,
    revocation: Revocation,
    key_chain: KeyChain,
    grant: tuple[GrantShare, ...],
    cfrags: tuple[CapsuleFragment, ...],
    snapshot0: SealedSnapshot,
    snapshot1: SealedSnapshot,
    passphrase_box: bytes,
    node: NodeSecrets,
    receipt: RevocationReceipt,
    manifest_v1: AccountManifest,
    manifest_v2: AccountManifest,
    stranger_device: DeviceSecrets,
) -> dict[type[Record], tuple[Record, ...]]:
    """Valid instances of every record type, built by the real API where there is one."""
    samples: dict[type[Record], tuple[Record, ...]] = {
        AccountSecrets: (account,),
        DeviceSecrets: (member_device,),
        DeviceKeys: (member_device.public_keys,),
        AccountRecord: (account_record,),
        DeviceCertificate: (member_cert, admin_cert),
        Revocation: (revocation,),
        KeyCapsule: (key_chain.capsule0, key_chain.capsule1),
        GrantShare: grant,
        CapsuleFragment: cfrags,
        SnapshotHeader: (snapshot0.header, snapshot1.header),
        SealedSnapshot: (snapshot0, snapshot1),
        _PassphraseBox: (_PassphraseBox.from_bytes(passphrase_box),),
        NodeSecrets: (node,),
        ShareRef: receipt.deleted,
        AccountManifest: (manifest_v1, manifest_v2),
        ManifestUpdate: (manifest_update(manifest_v1, manifest_v2),),
        ManifestNode: manifest_v1.nodes,
        LabelEntry: manifest_v1.labels,
        ManifestDevice: manifest_v2.devices,
        GrantEntry: manifest_v1.grants,
        GrantKey: manifest_update(manifest_v1, manifest_v2).grants_removed,
        PurgeEntry: manifest_v2.purges,
        Purge: (purge_group(account, GROUP_ID, stranger_device.device_id, from_epoch=9, now=NOW),),
        PurgeReceipt: (
            node.sign_purge_receipt(
                account_id=account.account_id, purge=b"a purge record", deleted=3, now=NOW
            ),
        ),
        SnapshotReceipt: (
            node.sign_snapshot_receipt(
                account_id=account.account_id, digest=bytes(range(32)), stored_at=NOW
            ),
        ),
        RevocationReceipt: (
            receipt,
            node.sign_receipt(
                account_id=receipt.account_id,
                device_id=receipt.device_id,
                revoked_at=receipt.revoked_at,
                deleted=(),
                now=NOW,
            ),
        ),
        AccountDeletion: (delete_account(account, account_record, now=NOW),),
        DeletionReceipt: (
            node.sign_deletion_receipt(
                account_id=account.account_id, deletion=b"an order", deleted=7, now=NOW
            ),
        ),
        EnrollmentRequest: (
            make_enrollment_request(
                member_device,
                account_id=account.account_id,
                nodes=("http://127.0.0.1:8701", "https://node2.example:443/sc"),
                threshold=2,
                name="laptop",
            ),
        ),
    }
    return samples

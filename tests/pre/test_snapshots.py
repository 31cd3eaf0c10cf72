"""Sealed snapshots: authorship, chaining, MLS commitments and the KEK they need."""

from __future__ import annotations

import pytest

from pre import (
    MAX_SNAPSHOT_PLAINTEXT,
    UNCHECKED,
    AccountSecrets,
    BindingError,
    DecryptionError,
    DeviceCertificate,
    DeviceSecrets,
    Kek,
    Role,
    SealedSnapshot,
    SignatureError,
    certify_device,
    create_key_capsule,
    epoch_authenticator_hash,
    label_for_group,
    open_snapshot,
    seal_snapshot,
)

SALT = bytes(range(16))


def test_snapshot_opens_with_its_kek_and_author(
    snapshot0: SealedSnapshot,
    kek0: Kek,
    member_cert: DeviceCertificate,
    member_device: DeviceSecrets,
    group_id: bytes,
    plaintext0: bytes,
    now: int,
) -> None:
    header = snapshot0.header
    assert (header.account_id, header.label, header.key_epoch) == (
        kek0.account_id,
        kek0.label,
        kek0.key_epoch,
    )
    assert header.group_id == group_id
    assert (header.kind, header.mls_epoch, header.created_at) == ("state", 7, now)
    assert header.author == member_device.device_id
    assert header.prev_hash is None
    assert plaintext0 not in snapshot0.to_bytes()
    assert snapshot0.verify(member_cert) is snapshot0
    assert open_snapshot(snapshot0, kek0, member_cert) == plaintext0


def test_chain_is_checked_when_asked(
    snapshot0: SealedSnapshot,
    snapshot1: SealedSnapshot,
    kek0: Kek,
    kek1: Kek,
    member_cert: DeviceCertificate,
    plaintext0: bytes,
    plaintext1: bytes,
) -> None:
    assert snapshot1.header.prev_hash == snapshot0.digest
    assert open_snapshot(snapshot0, kek0, member_cert, expect_prev_hash=None) == plaintext0
    assert (
        open_snapshot(snapshot1, kek1, member_cert, expect_prev_hash=snapshot0.digest) == plaintext1
    )
    assert open_snapshot(snapshot1, kek1, member_cert, expect_prev_hash=UNCHECKED) == plaintext1
    with pytest.raises(BindingError):
        open_snapshot(snapshot1, kek1, member_cert, expect_prev_hash=None)
    with pytest.raises(BindingError):
        open_snapshot(snapshot1, kek1, member_cert, expect_prev_hash=snapshot1.digest)
    with pytest.raises(BindingError):
        open_snapshot(snapshot0, kek0, member_cert, expect_prev_hash=snapshot1.digest)


def test_digest_names_the_whole_snapshot(
    snapshot0: SealedSnapshot, snapshot1: SealedSnapshot
) -> None:
    assert len(snapshot0.digest) == 32
    assert snapshot0.digest != snapshot1.digest
    assert SealedSnapshot.from_bytes(snapshot0.to_bytes()).digest == snapshot0.digest


def test_tree_hash_and_epoch_authenticator_must_match_when_given(
    snapshot0: SealedSnapshot, kek0: Kek, member_cert: DeviceCertificate, plaintext0: bytes
) -> None:
    assert snapshot0.header.tree_hash == b"tree hash 7"
    assert snapshot0.header.epoch_authenticator_hash == epoch_authenticator_hash(
        b"epoch authenticator 7"
    )
    opened = open_snapshot(
        snapshot0,
        kek0,
        member_cert,
        tree_hash=b"tree hash 7",
        epoch_authenticator=b"epoch authenticator 7",
    )
    assert opened == plaintext0
    with pytest.raises(BindingError):
        open_snapshot(snapshot0, kek0, member_cert, tree_hash=b"tree hash 8")
    with pytest.raises(BindingError):
        open_snapshot(snapshot0, kek0, member_cert, epoch_authenticator=b"epoch authenticator 8")
    with pytest.raises(BindingError):  # the hash itself is not the authenticator
        open_snapshot(
            snapshot0,
            kek0,
            member_cert,
            epoch_authenticator=snapshot0.header.epoch_authenticator_hash,
        )


def test_expected_commitments_missing_from_the_header_are_a_mismatch(
    snapshot1: SealedSnapshot, kek1: Kek, member_cert: DeviceCertificate
) -> None:
    assert snapshot1.header.tree_hash is None
    assert snapshot1.header.epoch_authenticator_hash is None
    with pytest.raises(BindingError):
        open_snapshot(snapshot1, kek1, member_cert, tree_hash=b"t")
    with pytest.raises(BindingError):
        open_snapshot(snapshot1, kek1, member_cert, epoch_authenticator=b"a")


def test_kek_of_another_epoch_label_or_account_is_a_binding_error(
    snapshot0: SealedSnapshot,
    kek0: Kek,
    kek1: Kek,
    member_cert: DeviceCertificate,
    account: AccountSecrets,
) -> None:
    with pytest.raises(BindingError):
        open_snapshot(snapshot0, kek1, member_cert)
    _, group_kek = create_key_capsule(account, "group:AA", 0, now=0)
    with pytest.raises(BindingError):
        open_snapshot(snapshot0, group_kek, member_cert)
    foreign = Kek(bytes(32), kek0.label, kek0.key_epoch, kek0.secret)
    with pytest.raises(BindingError):
        open_snapshot(snapshot0, foreign, member_cert)


def test_kek_with_the_right_binding_but_wrong_secret_does_not_decrypt(
    snapshot0: SealedSnapshot, kek0: Kek, kek1: Kek, member_cert: DeviceCertificate
) -> None:
    impostor = Kek(kek0.account_id, kek0.label, kek0.key_epoch, kek1.secret)
    with pytest.raises(DecryptionError):
        open_snapshot(snapshot0, impostor, member_cert)


def test_author_must_be_the_certified_device(
    snapshot0: SealedSnapshot,
    kek0: Kek,
    admin_cert: DeviceCertificate,
    member_cert: DeviceCertificate,
    member_device: DeviceSecrets,
    other_account: AccountSecrets,
) -> None:
    with pytest.raises(BindingError):
        snapshot0.verify(admin_cert)
    with pytest.raises(BindingError):
        open_snapshot(snapshot0, kek0, admin_cert)
    # The same device certified by another account is not this snapshot's author.
    foreign = certify_device(
        other_account,
        member_device.public_keys,
        role=Role.ADMIN,
        not_before=member_cert.not_before,
        not_after=member_cert.not_after,
    )
    with pytest.raises(BindingError):
        open_snapshot(snapshot0, kek0, foreign)


def test_signature_must_be_the_authors(
    snapshot0: SealedSnapshot,
    snapshot1: SealedSnapshot,
    kek0: Kek,
    member_cert: DeviceCertificate,
    admin_device: DeviceSecrets,
    admin_cert: DeviceCertificate,
) -> None:
    with pytest.raises(SignatureError):
        open_snapshot(snapshot0.replace(signature=snapshot1.signature), kek0, member_cert)
    # The admin re-signs the member's snapshot under its own name: the header names the
    # member, and the signature is not the member's.
    by_admin = seal_snapshot(
        kek0, admin_device, group_id=b"g", kind="state", mls_epoch=1, plaintext=b"", now=0
    )
    with pytest.raises(SignatureError):
        open_snapshot(snapshot0.replace(signature=by_admin.signature), kek0, member_cert)
    with pytest.raises(BindingError):
        open_snapshot(by_admin, kek0, member_cert)
    assert open_snapshot(by_admin, kek0, admin_cert) == b""


def test_swapped_header_or_ciphertext_is_refused(
    snapshot0: SealedSnapshot,
    kek0: Kek,
    member_cert: DeviceCertificate,
    member_device: DeviceSecrets,
) -> None:
    other = seal_snapshot(
        kek0,
        member_device,
        group_id=snapshot0.header.group_id,
        kind="state",
        mls_epoch=7,
        plaintext=b"another state",
        now=0,
    )
    with pytest.raises(SignatureError):
        open_snapshot(snapshot0.replace(ciphertext=other.ciphertext), kek0, member_cert)
    with pytest.raises(SignatureError):
        open_snapshot(snapshot0.replace(header=other.header), kek0, member_cert)


def test_group_label_covers_only_its_own_group(
    account: AccountSecrets, member_device: DeviceSecrets, member_cert: DeviceCertificate
) -> None:
    group = b"\x01\x02\x03"
    _, kek = create_key_capsule(account, label_for_group(group), 0, now=0)
    sealed = seal_snapshot(
        kek, member_device, group_id=group, kind="state", mls_epoch=0, plaintext=b"s", now=0
    )
    assert sealed.header.label == "group:AQID"
    assert open_snapshot(sealed, kek, member_cert) == b"s"
    with pytest.raises(ValueError):
        seal_snapshot(
            kek,
            member_device,
            group_id=b"\x01\x02",
            kind="state",
            mls_epoch=0,
            plaintext=b"",
            now=0,
        )


def test_fixed_salt_makes_sealing_deterministic(kek0: Kek, member_device: DeviceSecrets) -> None:
    def seal(salt: bytes | None) -> SealedSnapshot:
        return seal_snapshot(
            kek0,
            member_device,
            group_id=b"g",
            kind="state",
            mls_epoch=1,
            plaintext=b"p",
            now=0,
            salt=salt,
        )

    assert seal(SALT).to_bytes() == seal(SALT).to_bytes()
    assert seal(SALT).header.salt == SALT
    assert seal(None).header.salt != seal(None).header.salt
    assert seal(None).ciphertext != seal(None).ciphertext


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "State"},
        {"kind": "a" * 33},
        {"kind": ""},
        {"group_id": b""},
        {"group_id": bytes(129)},
        {"mls_epoch": -1},
        {"mls_epoch": 2**64},
        {"tree_hash": b""},
        {"tree_hash": bytes(65)},
        {"salt": bytes(15)},
    ],
    ids=repr,
)
def test_seal_rejects_malformed_arguments(
    kek0: Kek, member_device: DeviceSecrets, bad: dict[str, object]
) -> None:
    arguments: dict[str, object] = {
        "group_id": b"g",
        "kind": "state",
        "mls_epoch": 1,
        "plaintext": b"",
        "now": 0,
    }
    with pytest.raises(ValueError):
        seal_snapshot(kek0, member_device, **{**arguments, **bad})  # type: ignore[arg-type]


def test_seal_rejects_oversized_plaintext(kek0: Kek, member_device: DeviceSecrets) -> None:
    with pytest.raises(ValueError):
        seal_snapshot(
            kek0,
            member_device,
            group_id=b"g",
            kind="state",
            mls_epoch=1,
            plaintext=bytes(MAX_SNAPSHOT_PLAINTEXT + 1),
            now=0,
        )


def test_epoch_authenticator_hash() -> None:
    assert len(epoch_authenticator_hash(b"a")) == 32
    assert epoch_authenticator_hash(b"a") == epoch_authenticator_hash(b"a")
    assert epoch_authenticator_hash(b"a") != epoch_authenticator_hash(b"b")
    assert epoch_authenticator_hash(b"a") != b"a".ljust(32, b"\x00")


def test_member_reads_what_admin_wrote(
    kek1: Kek,
    admin_device: DeviceSecrets,
    admin_cert: DeviceCertificate,
) -> None:
    sealed = seal_snapshot(
        kek1, admin_device, group_id=b"g", kind="welcome", mls_epoch=0, plaintext=b"w", now=0
    )
    decoded = SealedSnapshot.from_bytes(sealed.to_bytes())
    assert open_snapshot(decoded, kek1, admin_cert, expect_prev_hash=None) == b"w"
    assert decoded.header.author == admin_cert.device_id


def test_expected_group_and_kind_must_match_when_given(
    snapshot0: SealedSnapshot,
    kek0: Kek,
    member_cert: DeviceCertificate,
    group_id: bytes,
    plaintext0: bytes,
) -> None:
    opened = open_snapshot(snapshot0, kek0, member_cert, group_id=group_id, kind="state")
    assert opened == plaintext0
    with pytest.raises(BindingError):
        open_snapshot(snapshot0, kek0, member_cert, group_id=group_id + b"x")
    with pytest.raises(BindingError):
        open_snapshot(snapshot0, kek0, member_cert, kind="ratchet_tree")


def test_prev_hash_chains_like_prev(
    snapshot0: SealedSnapshot,
    kek0: Kek,
    member_device: DeviceSecrets,
    member_cert: DeviceCertificate,
) -> None:
    chained = seal_snapshot(
        kek0,
        member_device,
        group_id=snapshot0.header.group_id,
        kind="state",
        mls_epoch=9,
        plaintext=b"x",
        now=1,
        prev_hash=snapshot0.digest,
    )
    assert chained.header.prev_hash == snapshot0.digest
    assert open_snapshot(chained, kek0, member_cert, expect_prev_hash=snapshot0.digest) == b"x"
    with pytest.raises(ValueError):
        seal_snapshot(
            kek0,
            member_device,
            group_id=b"g",
            kind="state",
            mls_epoch=1,
            plaintext=b"",
            now=1,
            prev=snapshot0,
            prev_hash=snapshot0.digest,
        )

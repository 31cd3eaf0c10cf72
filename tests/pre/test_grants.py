"""Grant shares: what binds a share to one device, one label-epoch and one node."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from pre import (
    MAX_SHARES,
    AccountRecord,
    AccountSecrets,
    BindingError,
    DecodeError,
    DeviceCertificate,
    DeviceKeys,
    DeviceSecrets,
    FragmentError,
    GrantShare,
    KeyCapsule,
    NodeSecrets,
    Role,
    SignatureError,
    VerifiedGrantShare,
    attest_grant_share,
    certify_device,
    create_key_capsule,
    make_grant,
    reencrypt,
    restore_grant_share,
    verify_capsule_fragment,
    verify_grant_share,
)

SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def resigned(account: AccountSecrets, share: GrantShare) -> GrantShare:
    """`share` signed by `account`'s kfrag signer as it stands: reaches the key fragment
    checks past the signature. Uses the private helper with `make_grant`'s context."""
    return share.replace(signature=account._sign_kfrag_context("grant-share", share.tbs()))


@pytest.fixture(scope="module")
def check(
    account_record: AccountRecord, capsule1: KeyCapsule, member_cert: DeviceCertificate, now: int
) -> Callable[..., VerifiedGrantShare]:
    """`verify_grant_share` with the happy-path arguments, any of them overridable."""

    def run(share: GrantShare, **overrides: object) -> VerifiedGrantShare:
        kwargs: dict[str, object] = {
            "account": account_record,
            "capsule": capsule1,
            "device": member_cert,
            "share_index": share.share_index,
            "now": now,
        }
        kwargs.update(overrides)
        return verify_grant_share(share, **kwargs)  # type: ignore[arg-type]

    return run


def test_shares_are_bound_to_everything_they_cover(
    grant: tuple[GrantShare, ...],
    account: AccountSecrets,
    capsule1: KeyCapsule,
    member_cert: DeviceCertificate,
    now: int,
    check: Callable[..., VerifiedGrantShare],
) -> None:
    assert len({s.kfrag for s in grant}) == 3
    for index, share in enumerate(grant, start=1):
        assert share.account_id == account.account_id
        assert (share.label, share.key_epoch) == (capsule1.label, capsule1.key_epoch)
        assert share.device_id == member_cert.device_id
        assert (share.share_index, share.threshold, share.shares) == (index, 2, 3)
        assert share.expires_at > now
        verified = check(share)
        assert verified.share is share


def test_share_presented_as_another_nodes_is_refused(
    grant: tuple[GrantShare, ...], check: Callable[..., VerifiedGrantShare]
) -> None:
    for share, index in itertools.product(grant, (1, 2, 3)):
        if index != share.share_index:
            with pytest.raises(BindingError):
                check(share, share_index=index)


def test_share_replayed_for_another_device_is_refused(
    grant: tuple[GrantShare, ...],
    member_cert: DeviceCertificate,
    stranger_cert: DeviceCertificate,
    stranger_device: DeviceSecrets,
    check: Callable[..., VerifiedGrantShare],
) -> None:
    with pytest.raises(BindingError):
        check(grant[0], device=stranger_cert)
    # Same device id, another PRE key (a certificate the account root re-issued): the
    # kfrag was made for the old key, so its proof fails.
    rekeyed = member_cert.replace(
        keys=DeviceKeys(member_cert.keys.signing_key, stranger_device.public_keys.pre_key)
    )
    with pytest.raises(FragmentError):
        check(grant[0], device=rekeyed)


def test_share_for_another_label_or_epoch_is_refused(
    grant: tuple[GrantShare, ...],
    account: AccountSecrets,
    capsule0: KeyCapsule,
    check: Callable[..., VerifiedGrantShare],
) -> None:
    with pytest.raises(BindingError):
        check(grant[0], capsule=capsule0)
    group_capsule, _ = create_key_capsule(account, "group:AA", 1, now=0)
    with pytest.raises(BindingError):
        check(grant[0], capsule=group_capsule)


def test_share_checked_against_another_account_is_refused(
    grant: tuple[GrantShare, ...],
    other_account: AccountSecrets,
    other_account_record: AccountRecord,
    member_device: DeviceSecrets,
    now: int,
    check: Callable[..., VerifiedGrantShare],
) -> None:
    with pytest.raises(BindingError):
        check(grant[0], account=other_account_record)
    foreign_capsule, _ = create_key_capsule(other_account, "account", 1, now=0)
    with pytest.raises(BindingError):
        check(grant[0], capsule=foreign_capsule)
    # The same device (same id and keys) certified by another account.
    foreign_cert = certify_device(
        other_account, member_device.public_keys, role=Role.MEMBER, not_before=0, not_after=now + 1
    )
    with pytest.raises(BindingError):
        check(grant[0], device=foreign_cert)


def test_share_expires_at_expires_at(
    grant: tuple[GrantShare, ...], check: Callable[..., VerifiedGrantShare]
) -> None:
    expires_at = grant[0].expires_at
    check(grant[0], now=expires_at - 1)
    for now in (expires_at, expires_at + 1):
        with pytest.raises(BindingError):
            check(grant[0], now=now)


def test_share_signed_by_another_accounts_kfrag_signer_is_refused(
    grant: tuple[GrantShare, ...],
    other_account: AccountSecrets,
    check: Callable[..., VerifiedGrantShare],
) -> None:
    with pytest.raises(SignatureError):
        check(resigned(other_account, grant[0]))


def test_altered_share_fails_its_signature(
    grant: tuple[GrantShare, ...], check: Callable[..., VerifiedGrantShare]
) -> None:
    share = grant[0]
    for changed in (
        share.replace(expires_at=share.expires_at + 1),
        share.replace(threshold=1),
        share.replace(kfrag=grant[1].kfrag),
        share.replace(signature=grant[1].signature),
    ):
        with pytest.raises(SignatureError):
            check(changed)


def test_signed_share_with_a_kfrag_for_another_device_is_refused(
    grant: tuple[GrantShare, ...],
    account: AccountSecrets,
    capsule1: KeyCapsule,
    stranger_cert: DeviceCertificate,
    check: Callable[..., VerifiedGrantShare],
) -> None:
    """Past the signature, the key fragment itself is bound to the receiving PRE key."""
    theirs = make_grant(account, capsule1, stranger_cert, threshold=2, shares=3, expires_at=10**10)
    with pytest.raises(FragmentError):
        check(resigned(account, grant[0].replace(kfrag=theirs[0].kfrag)))


def test_signed_share_with_a_kfrag_for_another_epoch_is_refused(
    grant: tuple[GrantShare, ...],
    account: AccountSecrets,
    capsule0: KeyCapsule,
    member_cert: DeviceCertificate,
    check: Callable[..., VerifiedGrantShare],
) -> None:
    """...and to the delegating label-epoch key."""
    epoch0 = make_grant(account, capsule0, member_cert, threshold=2, shares=3, expires_at=10**10)
    with pytest.raises(FragmentError):
        check(resigned(account, grant[0].replace(kfrag=epoch0[0].kfrag)))


def test_signed_share_with_a_malformed_kfrag_is_refused(
    grant: tuple[GrantShare, ...],
    account: AccountSecrets,
    check: Callable[..., VerifiedGrantShare],
) -> None:
    with pytest.raises(DecodeError):
        check(resigned(account, grant[0].replace(kfrag=b"\x00" * 40)))


def test_grant_share_signature_is_not_malleable(
    grant: tuple[GrantShare, ...], check: Callable[..., VerifiedGrantShare]
) -> None:
    share = grant[0]
    r, s = share.signature[:32], int.from_bytes(share.signature[32:], "big")
    malleated = share.replace(signature=r + (SECP256K1_ORDER - s).to_bytes(32, "big"))
    assert malleated.to_bytes() != share.to_bytes()
    with pytest.raises(SignatureError):
        check(malleated)


@pytest.mark.parametrize(("threshold", "shares"), [(0, 1), (2, 1), (1, 0), (1, MAX_SHARES + 1)])
def test_make_grant_rejects_bad_thresholds(
    account: AccountSecrets,
    capsule1: KeyCapsule,
    member_cert: DeviceCertificate,
    threshold: int,
    shares: int,
) -> None:
    with pytest.raises(ValueError):
        make_grant(account, capsule1, member_cert, threshold=threshold, shares=shares, expires_at=1)


def test_make_grant_one_of_one(
    account: AccountSecrets,
    capsule1: KeyCapsule,
    member_cert: DeviceCertificate,
    check: Callable[..., VerifiedGrantShare],
    now: int,
) -> None:
    (only,) = make_grant(account, capsule1, member_cert, threshold=1, shares=1, expires_at=now + 1)
    check(only)


def test_make_grant_refuses_objects_of_another_account(
    account: AccountSecrets,
    other_account: AccountSecrets,
    capsule1: KeyCapsule,
    member_cert: DeviceCertificate,
    member_device: DeviceSecrets,
) -> None:
    foreign_cert = certify_device(
        other_account, member_device.public_keys, role=Role.MEMBER, not_before=0, not_after=1
    )
    with pytest.raises(ValueError):
        make_grant(account, capsule1, foreign_cert, threshold=1, shares=1, expires_at=1)
    foreign_capsule, _ = create_key_capsule(other_account, "account", 1, now=0)
    with pytest.raises(ValueError):
        make_grant(account, foreign_capsule, member_cert, threshold=1, shares=1, expires_at=1)


@pytest.mark.parametrize(
    ("index", "threshold", "shares"), [(0, 1, 1), (2, 1, 1), (1, 2, 1), (1, 0, 1)]
)
def test_grant_share_record_checks_its_counts(
    grant: tuple[GrantShare, ...], index: int, threshold: int, shares: int
) -> None:
    with pytest.raises(ValueError):
        grant[0].replace(share_index=index, threshold=threshold, shares=shares)


def test_reencrypt_refuses_a_share_for_another_capsule(
    verified_shares: tuple[VerifiedGrantShare, ...], capsule0: KeyCapsule
) -> None:
    with pytest.raises(BindingError):
        reencrypt(capsule0, verified_shares[0])


class TestNodeAttestation:
    """A node MACs the shares it verified, to restore them later without the proofs."""

    def test_restored_share_reencrypts_like_the_verified_one(
        self,
        node: NodeSecrets,
        grant: tuple[GrantShare, ...],
        verified_shares: tuple[VerifiedGrantShare, ...],
        capsule1: KeyCapsule,
        member_cert: DeviceCertificate,
        member_device: DeviceSecrets,
        account_record: AccountRecord,
        now: int,
    ) -> None:
        attestation = attest_grant_share(node, verified_shares[0])
        restored = restore_grant_share(
            node,
            GrantShare.from_bytes(grant[0].to_bytes()),
            attestation,
            capsule=capsule1,
            device=member_cert,
            share_index=1,
            now=now,
        )
        assert restored.share == grant[0]
        fragment = reencrypt(capsule1, restored)
        verify_capsule_fragment(
            fragment, capsule=capsule1, account=account_record, receiver=member_device
        )

    def test_attestation_is_per_node_and_per_share(
        self,
        node: NodeSecrets,
        make_device: Callable[[str], DeviceSecrets],
        grant: tuple[GrantShare, ...],
        verified_shares: tuple[VerifiedGrantShare, ...],
        capsule1: KeyCapsule,
        member_cert: DeviceCertificate,
        now: int,
    ) -> None:
        other_node = NodeSecrets(make_device("node 2").signing_seed)
        attestation = attest_grant_share(node, verified_shares[0])
        assert attestation != attest_grant_share(other_node, verified_shares[0])
        assert attestation != attest_grant_share(node, verified_shares[1])
        cases = [
            (other_node, grant[0], attestation),
            (node, grant[1], attestation),
            (node, grant[0].replace(expires_at=grant[0].expires_at + 1), attestation),
            (node, grant[0], attestation[:-1] + bytes([attestation[-1] ^ 1])),
            (node, grant[0], b""),
        ]
        for who, share, mac in cases:
            with pytest.raises(SignatureError):
                restore_grant_share(
                    who,
                    share,
                    mac,
                    capsule=capsule1,
                    device=member_cert,
                    share_index=share.share_index,
                    now=now,
                )
        # The attestation also binds the PRE key it was verified for: a re-issued
        # certificate with the same device id but another PRE key does not restore.
        rekeyed = member_cert.replace(
            keys=DeviceKeys(member_cert.keys.signing_key, make_device("other").public_keys.pre_key)
        )
        with pytest.raises(SignatureError):
            restore_grant_share(
                node,
                grant[0],
                attestation,
                capsule=capsule1,
                device=rekeyed,
                share_index=1,
                now=now,
            )

    def test_restore_still_checks_the_binding(
        self,
        node: NodeSecrets,
        grant: tuple[GrantShare, ...],
        verified_shares: tuple[VerifiedGrantShare, ...],
        capsule0: KeyCapsule,
        capsule1: KeyCapsule,
        member_cert: DeviceCertificate,
        stranger_cert: DeviceCertificate,
        now: int,
    ) -> None:
        attestation = attest_grant_share(node, verified_shares[0])
        good = {"capsule": capsule1, "device": member_cert, "share_index": 1, "now": now}
        for change in (
            {"capsule": capsule0},
            {"device": stranger_cert},
            {"share_index": 2},
            {"now": grant[0].expires_at},
        ):
            with pytest.raises(BindingError):
                restore_grant_share(node, grant[0], attestation, **{**good, **change})  # type: ignore[arg-type]

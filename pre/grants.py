"""Grant shares: M-of-N Umbral key fragments from a label-epoch key to one device.

Share *i* goes to node *i* only. Each share is signed by the account's kfrag signer over
everything it is bound to (account, label, key epoch, device, share index,
threshold, expiry), so a node can check it was made for exactly that device and
label-epoch and cannot be replayed for another. The device's PRE key is not repeated in
the share: the kfrag signature already covers it (`sign_receiving_key`), and a node checks
the kfrag against the PRE key in the device's certificate.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from functools import cached_property

import umbral_pre

from . import _primitives as prim
from ._codec import Fixed, Opaque, Record, Tag, UInt, wire
from .capsules import KeyCapsule
from .certificates import AccountRecord, DeviceCertificate
from .errors import BindingError, DecodeError, FragmentError, SignatureError, translate
from .keys import (
    ACCOUNT_ID_SIZE,
    DEVICE_ID_SIZE,
    LABEL,
    SIGNATURE_SIZE,
    AccountSecrets,
)
from .nodes import NodeSecrets

__all__ = [
    "MAX_SHARES",
    "GrantShare",
    "VerifiedGrantShare",
    "attest_grant_share",
    "make_grant",
    "restore_grant_share",
    "verify_grant_share",
]

MAX_SHARES = 255
_U8 = UInt(1)


@dataclass(frozen=True)
class GrantShare(Record):
    TAG = Tag.GRANT_SHARE
    account_id: bytes = wire(Fixed(ACCOUNT_ID_SIZE))
    label: str = wire(LABEL)
    key_epoch: int = wire(UInt(4))
    device_id: bytes = wire(Fixed(DEVICE_ID_SIZE))
    share_index: int = wire(_U8)  # 1-based: node i holds share i
    threshold: int = wire(_U8)
    shares: int = wire(_U8)
    expires_at: int = wire(UInt(8))
    kfrag: bytes = wire(Opaque(1024, 1))
    signature: bytes = wire(Fixed(SIGNATURE_SIZE), signature=True)

    @cached_property
    def _parsed_kfrag(self) -> umbral_pre.KeyFrag:
        with translate(DecodeError, "invalid key fragment encoding"):
            return umbral_pre.KeyFrag.from_bytes(self.kfrag)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.threshold <= self.shares or not 1 <= self.share_index <= self.shares:
            raise ValueError("need 1 <= threshold <= shares and 1 <= share_index <= shares")


@dataclass(frozen=True)
class VerifiedGrantShare:
    """A share whose signature and key fragment were checked. Only `verify_grant_share`
    makes one, and only a verified share reaches re-encryption."""

    share: GrantShare
    receiver: bytes  # the PRE key the kfrag was verified for
    _kfrag: umbral_pre.VerifiedKeyFrag = field(repr=False, compare=False)


def make_grant(
    account: AccountSecrets,
    capsule: KeyCapsule,
    device: DeviceCertificate,
    *,
    threshold: int,
    shares: int,
    expires_at: int,
) -> tuple[GrantShare, ...]:
    """Split the label-epoch key of `capsule` into `shares` fragments for `device`."""
    if not 1 <= threshold <= shares <= MAX_SHARES:
        raise ValueError("need 1 <= threshold <= shares <= 255")
    if device.account_id != account.account_id or capsule.account_id != account.account_id:
        raise ValueError("device and capsule must belong to this account")
    delegating = account._label_secret(capsule.label, capsule.key_epoch)
    receiving = prim.umbral_public(device.keys.pre_key)
    kfrags = umbral_pre.generate_kfrags(
        delegating_sk=delegating,
        receiving_pk=receiving,
        signer=account._kfrag_signer,
        threshold=threshold,
        shares=shares,
        sign_delegating_key=True,
        sign_receiving_key=True,
    )
    out = []
    for index, kfrag in enumerate(kfrags, start=1):
        unsigned = GrantShare(
            account_id=account.account_id,
            label=capsule.label,
            key_epoch=capsule.key_epoch,
            device_id=device.device_id,
            share_index=index,
            threshold=threshold,
            shares=shares,
            expires_at=expires_at,
            kfrag=bytes(kfrag),
            signature=bytes(SIGNATURE_SIZE),
        )
        signature = account._sign_kfrag_context("grant-share", unsigned.tbs())
        out.append(unsigned.replace(signature=signature))
    return tuple(out)


def verify_grant_share(
    share: GrantShare,
    *,
    account: AccountRecord,
    capsule: KeyCapsule,
    device: DeviceCertificate,
    share_index: int,
    now: int,
) -> VerifiedGrantShare:
    """Server-side check that `share` is this node's share (`share_index`), unexpired, for
    exactly `device` and the label-epoch of `capsule`. The caller has verified `capsule`
    and `device` against `account` already."""
    _check_binding(
        share,
        account_id=account.account_id,
        capsule=capsule,
        device=device,
        share_index=share_index,
        now=now,
    )
    prim.umbral_verify(account.kfrag_verifying_key, "grant-share", share.tbs(), share.signature)
    verifying = prim.umbral_public(account.kfrag_verifying_key)
    delegating = prim.umbral_public(capsule.label_key)
    receiving = prim.umbral_public(device.keys.pre_key)
    kfrag = share._parsed_kfrag
    with translate(FragmentError, "key fragment does not verify"):
        verified = kfrag.verify(verifying, delegating, receiving)
    return VerifiedGrantShare(share, device.keys.pre_key, verified)


def _check_binding(
    share: GrantShare,
    *,
    account_id: bytes,
    capsule: KeyCapsule,
    device: DeviceCertificate,
    share_index: int,
    now: int,
) -> None:
    if (
        share.account_id != account_id
        or capsule.account_id != account_id
        or device.account_id != account_id
    ):
        raise BindingError("grant share is for another account")
    if (share.label, share.key_epoch) != (capsule.label, capsule.key_epoch):
        raise BindingError("grant share is for another label or key epoch")
    if share.device_id != device.device_id:
        raise BindingError("grant share is for another device")
    if share.share_index != share_index:
        raise BindingError("grant share is for another node")
    if now >= share.expires_at:
        raise BindingError("grant share has expired")


def attest_grant_share(node: NodeSecrets, share: VerifiedGrantShare) -> bytes:
    """A node's MAC over a share it has verified, stored beside it, so re-encryption can
    later skip the costly signature and kfrag proofs without trusting storage blindly."""
    return node._mac("grant-share", share.share.to_bytes() + share.receiver)


def restore_grant_share(
    node: NodeSecrets,
    share: GrantShare,
    attestation: bytes,
    *,
    capsule: KeyCapsule,
    device: DeviceCertificate,
    share_index: int,
    now: int,
) -> VerifiedGrantShare:
    """The verified share again, from storage: checks this node's attestation and the
    share's binding to `capsule`, `device`, node and time (all cheap)."""
    _check_binding(
        share,
        account_id=share.account_id,
        capsule=capsule,
        device=device,
        share_index=share_index,
        now=now,
    )
    expected = node._mac("grant-share", share.to_bytes() + device.keys.pre_key)
    if not hmac.compare_digest(expected, attestation):
        raise SignatureError("grant share attestation does not verify")
    return VerifiedGrantShare(share, device.keys.pre_key, share._parsed_kfrag.skip_verification())

"""Re-encryption of key capsules by nodes, and opening them on the receiving device.

A node turns a key capsule and its verified grant share into a capsule fragment (cfrag);
the device checks each cfrag's proof of correct re-encryption, and opens the KEK from any
`threshold` verified cfrags. Only verified fragments reach either step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import umbral_pre

from . import _primitives as prim
from ._codec import Opaque, Record, Tag, UInt, wire
from .capsules import KEK_SIZE, Kek, KeyCapsule
from .certificates import AccountRecord
from .errors import BindingError, DecodeError, DecryptionError, FragmentError, translate
from .grants import VerifiedGrantShare
from .keys import LABEL, DeviceSecrets

__all__ = [
    "CapsuleFragment",
    "VerifiedCapsuleFragment",
    "open_key_capsule",
    "reencrypt",
    "verify_capsule_fragment",
]


@dataclass(frozen=True)
class CapsuleFragment(Record):
    """What a node returns: its re-encryption of one key capsule for the calling device."""

    TAG = Tag.CAPSULE_FRAGMENT
    label: str = wire(LABEL)
    key_epoch: int = wire(UInt(4))
    cfrag: bytes = wire(Opaque(1024, 1))


@dataclass(frozen=True)
class VerifiedCapsuleFragment:
    """A cfrag whose proof was checked against one capsule and one receiving device."""

    fragment: CapsuleFragment
    capsule_digest: bytes
    receiver: bytes
    _cfrag: umbral_pre.VerifiedCapsuleFrag = field(repr=False, compare=False)


def _capsule_digest(capsule: KeyCapsule) -> bytes:
    return prim.digest("key-capsule", capsule.to_bytes())


def reencrypt(capsule: KeyCapsule, share: VerifiedGrantShare) -> CapsuleFragment:
    granted = share.share
    if (granted.account_id, granted.label, granted.key_epoch) != (
        capsule.account_id,
        capsule.label,
        capsule.key_epoch,
    ):
        raise BindingError("grant share does not cover this key capsule")
    cfrag = umbral_pre.reencrypt(capsule._umbral_capsule(), share._kfrag)
    return CapsuleFragment(label=capsule.label, key_epoch=capsule.key_epoch, cfrag=bytes(cfrag))


def verify_capsule_fragment(
    fragment: CapsuleFragment,
    *,
    capsule: KeyCapsule,
    account: AccountRecord,
    receiver: DeviceSecrets,
) -> VerifiedCapsuleFragment:
    """Device-side check of a node's cfrag: correct re-encryption of `capsule` under a key
    fragment the account's kfrag signer made for this device. `capsule` must already be
    verified against `account`."""
    if capsule.account_id != account.account_id:
        raise BindingError("key capsule is for another account")
    if (fragment.label, fragment.key_epoch) != (capsule.label, capsule.key_epoch):
        raise BindingError("capsule fragment is for another label or key epoch")
    with translate(DecodeError, "invalid capsule fragment encoding"):
        cfrag = umbral_pre.CapsuleFrag.from_bytes(fragment.cfrag)
    receiving = receiver.public_keys.pre_key
    with translate(FragmentError, "capsule fragment does not verify"):
        verified = cfrag.verify(
            capsule._umbral_capsule(),
            prim.umbral_public(account.kfrag_verifying_key),
            prim.umbral_public(capsule.label_key),
            prim.umbral_public(receiving),
        )
    return VerifiedCapsuleFragment(fragment, _capsule_digest(capsule), receiving, verified)


def open_key_capsule(
    receiver: DeviceSecrets,
    capsule: KeyCapsule,
    fragments: Sequence[VerifiedCapsuleFragment],
) -> Kek:
    """Open the KEK of `capsule` on the receiving device from at least threshold cfrags."""
    digest = _capsule_digest(capsule)
    receiving = receiver.public_keys.pre_key
    if any(f.capsule_digest != digest or f.receiver != receiving for f in fragments):
        raise BindingError("capsule fragment was verified for another capsule or device")
    if not fragments:
        raise FragmentError("no capsule fragments")
    with translate(FragmentError, "capsule fragments do not open the capsule (too few?)"):
        secret = umbral_pre.decrypt_reencrypted(
            receiver._pre,
            prim.umbral_public(capsule.label_key),
            capsule._umbral_capsule(),
            [f._cfrag for f in fragments],
            capsule.encrypted_kek,
        )
    if secret is None or len(secret) != KEK_SIZE:
        raise DecryptionError("key capsule does not hold a KEK")
    return Kek(capsule.account_id, capsule.label, capsule.key_epoch, bytes(secret))

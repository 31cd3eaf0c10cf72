"""Key capsules: one random key-encryption key (KEK) per (label, key epoch), encapsulated
with Umbral to that label-epoch's public key.

Each record also carries the previous epoch's KEK sealed under this one, so the newest KEK
a device can open unlocks the whole chain of older epochs that still have snapshots, and a
device needs one re-encryption per label, not per epoch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

import umbral_pre
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import _primitives as prim
from ._codec import Fixed, Maybe, Opaque, Record, Tag, UInt, hidden_repr, wire
from .certificates import AccountRecord
from .errors import BindingError, DecodeError, DecryptionError, translate
from .keys import (
    ACCOUNT_ID_SIZE,
    LABEL,
    SIGNATURE_SIZE,
    UMBRAL_PUBLIC_SIZE,
    AccountSecrets,
)

__all__ = ["KEK_SIZE", "Kek", "KeyCapsule", "create_key_capsule", "open_key_capsule_as_owner"]

KEK_SIZE = 32
_NONCE_SIZE = 12


@dataclass(frozen=True, repr=False)
class Kek:
    """A key-encryption key, bound to the (account, label, key epoch) it belongs to."""

    account_id: bytes
    label: str
    key_epoch: int
    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) != KEK_SIZE:
            raise ValueError("a KEK is 32 bytes")

    def __repr__(self) -> str:
        return hidden_repr("Kek", ("label", self.label), ("key_epoch", self.key_epoch))

    def open_previous(self, capsule: KeyCapsule) -> Kek:
        """The KEK of epoch `key_epoch - 1`, from this epoch's (verified) capsule."""
        if (capsule.account_id, capsule.label, capsule.key_epoch) != (
            self.account_id,
            self.label,
            self.key_epoch,
        ):
            raise BindingError("key capsule is for another label or key epoch")
        if capsule.previous_kek is None:
            raise BindingError("key capsule carries no previous KEK")
        box = capsule.previous_kek
        with translate(DecryptionError, "previous KEK does not open"):
            secret = AESGCM(_chain_key(self)).decrypt(
                box[:_NONCE_SIZE], box[_NONCE_SIZE:], _chain_ad(self)
            )
        return Kek(self.account_id, self.label, self.key_epoch - 1, secret)


def _chain_key(kek: Kek) -> bytes:
    return prim.hkdf(kek.secret, salt=None, info="kek-chain")


def _chain_ad(kek: Kek) -> bytes:
    return prim.digest("kek-chain", kek.account_id, kek.label.encode(), kek.key_epoch.to_bytes(4))


@dataclass(frozen=True)
class KeyCapsule(Record):
    TAG = Tag.KEY_CAPSULE
    account_id: bytes = wire(Fixed(ACCOUNT_ID_SIZE))
    label: str = wire(LABEL)
    key_epoch: int = wire(UInt(4))
    label_key: bytes = wire(Fixed(UMBRAL_PUBLIC_SIZE))
    capsule: bytes = wire(Opaque(256, 1))
    encrypted_kek: bytes = wire(Opaque(256, 1))
    previous_kek: bytes | None = wire(Maybe(Opaque(_NONCE_SIZE + KEK_SIZE + 16)))
    created_at: int = wire(UInt(8))
    signature: bytes = wire(Fixed(SIGNATURE_SIZE), signature=True)

    def verify(self, account: AccountRecord) -> KeyCapsule:
        """Check the account root signed this capsule; a node can then trust `label_key`."""
        if self.account_id != account.account_id:
            raise BindingError("key capsule is for another account")
        prim.ed25519_verify(account.root_key, "key-capsule", self.tbs(), self.signature)
        return self

    @cached_property
    def _parsed_capsule(self) -> umbral_pre.Capsule:
        # Parsed once per record: nodes re-encrypt one label's capsule for many devices.
        with translate(DecodeError, "invalid Umbral capsule"):
            return umbral_pre.Capsule.from_bytes(self.capsule)

    def _umbral_capsule(self) -> umbral_pre.Capsule:
        return self._parsed_capsule


def create_key_capsule(
    account: AccountSecrets,
    label: str,
    key_epoch: int,
    *,
    now: int,
    previous: Kek | None = None,
    kek_secret: bytes | None = None,
) -> tuple[KeyCapsule, Kek]:
    """A fresh KEK for (label, key epoch) and the signed capsule that carries it.

    `previous` is the KEK of `key_epoch - 1`, chained into the new record; `kek_secret`
    fixes the KEK (known-answer tests); otherwise it is random.
    """
    secret = os.urandom(KEK_SIZE) if kek_secret is None else kek_secret
    kek = Kek(account.account_id, label, key_epoch, secret)
    public = account._label_secret(label, key_epoch).public_key()
    capsule, encrypted = umbral_pre.encrypt(public, secret)
    chained = None
    if previous is not None:
        if (previous.account_id, previous.label, previous.key_epoch) != (
            account.account_id,
            label,
            key_epoch - 1,
        ):
            raise ValueError("previous KEK must be this label's key epoch - 1")
        nonce = os.urandom(_NONCE_SIZE)
        chained = nonce + AESGCM(_chain_key(kek)).encrypt(nonce, previous.secret, _chain_ad(kek))
    unsigned = KeyCapsule(
        account_id=account.account_id,
        label=label,
        key_epoch=key_epoch,
        label_key=bytes(public.to_compressed_bytes()),
        capsule=bytes(capsule),
        encrypted_kek=bytes(encrypted),
        previous_kek=chained,
        created_at=now,
        signature=bytes(SIGNATURE_SIZE),
    )
    signed = unsigned.replace(signature=account._sign_root("key-capsule", unsigned.tbs()))
    return signed, kek


def open_key_capsule_as_owner(account: AccountSecrets, capsule: KeyCapsule) -> Kek:
    """Open a capsule with the account seed (an admin device), no node involved."""
    if capsule.account_id != account.account_id:
        raise BindingError("key capsule is for another account")
    prim.ed25519_verify(account.root_public, "key-capsule", capsule.tbs(), capsule.signature)
    secret_key = account._label_secret(capsule.label, capsule.key_epoch)
    if bytes(secret_key.public_key().to_compressed_bytes()) != capsule.label_key:
        raise BindingError("key capsule's label key is not this account's")
    with translate(DecryptionError, "key capsule does not open"):
        secret = bytes(
            umbral_pre.decrypt_original(
                secret_key, capsule._umbral_capsule(), capsule.encrypted_kek
            )
        )
    if len(secret) != KEK_SIZE:
        raise DecryptionError("key capsule does not hold a KEK")
    return Kek(capsule.account_id, capsule.label, capsule.key_epoch, secret)

"""Account and device secrets, what derives from them, and their storable encodings."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from functools import cached_property

import umbral_pre
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import _primitives as prim
from ._codec import Fixed, Record, Tag, Text, hidden_repr, wire

__all__ = [
    "ACCOUNT_ID_SIZE",
    "DEVICE_ID_SIZE",
    "LABEL_PATTERN",
    "AccountSecrets",
    "DeviceKeys",
    "DeviceSecrets",
    "account_id_for",
    "device_id_for",
    "label_for_group",
]

ACCOUNT_ID_SIZE = 32
DEVICE_ID_SIZE = 16
ED25519_PUBLIC_SIZE = 32
UMBRAL_PUBLIC_SIZE = 33
SIGNATURE_SIZE = 64
SEED_SIZE = 32

# `account` covers everything the account stores; `group:<id>` one group, the id written as
# unpadded base64url of the MLS group id (at most 128 bytes, so at most 171 characters).
LABEL_PATTERN = r"account|group:[A-Za-z0-9_-]{1,171}"
LABEL = Text(180, LABEL_PATTERN)


def account_id_for(root_public: bytes) -> bytes:
    """Self-certifying account id: a hash of the account root signing key."""
    return prim.digest("account-id", root_public)


def device_id_for(signing_public: bytes) -> bytes:
    return prim.digest("device-id", signing_public)[:DEVICE_ID_SIZE]


def label_for_group(group_id: bytes) -> str:
    if not 1 <= len(group_id) <= 128:
        raise ValueError("an MLS group id here is 1 to 128 bytes")
    return "group:" + base64.urlsafe_b64encode(group_id).rstrip(b"=").decode()


@dataclass(frozen=True, repr=False, eq=False)
class AccountSecrets(Record):
    """The 32-byte account seed, held only by admin devices, and everything derived from it.

    - the account root Ed25519 key (certifies devices, signs key capsules and revocations);
    - an Umbral `SecretKeyFactory` making one independent delegating key per
      (label, key epoch): M key fragments plus a device key reveal only that key;
    - the Umbral signer of key fragments and grant shares.
    """

    TAG = Tag.ACCOUNT_SECRETS
    seed: bytes = wire(Fixed(SEED_SIZE))

    @classmethod
    def generate(cls) -> AccountSecrets:
        return cls(os.urandom(SEED_SIZE))

    def __repr__(self) -> str:
        return hidden_repr("AccountSecrets", ("account_id", self.account_id.hex()))

    @cached_property
    def _root(self) -> Ed25519PrivateKey:
        return prim.ed25519_from_seed(prim.hkdf(self.seed, salt=None, info="account-root"))

    @cached_property
    def _factory(self) -> umbral_pre.SecretKeyFactory:
        return umbral_pre.SecretKeyFactory.from_secure_randomness(
            prim.hkdf(self.seed, salt=None, info="label-key-factory")
        )

    @cached_property
    def _kfrag_signer(self) -> umbral_pre.Signer:
        factory = umbral_pre.SecretKeyFactory.from_secure_randomness(
            prim.hkdf(self.seed, salt=None, info="kfrag-signer")
        )
        return umbral_pre.Signer(factory.make_key(b"kfrag-signer"))

    @cached_property
    def root_public(self) -> bytes:
        return prim.ed25519_public_bytes(self._root)

    @cached_property
    def account_id(self) -> bytes:
        return account_id_for(self.root_public)

    @cached_property
    def kfrag_verifying_key(self) -> bytes:
        return bytes(self._kfrag_signer.verifying_key().to_compressed_bytes())

    def _label_secret(self, label: str, key_epoch: int) -> umbral_pre.SecretKey:
        LABEL.check(label)
        if not 0 <= key_epoch < 1 << 32:
            raise ValueError("key epoch out of range")
        return self._factory.make_key(f"{label}#{key_epoch}".encode())

    def label_public_key(self, label: str, key_epoch: int) -> bytes:
        return bytes(self._label_secret(label, key_epoch).public_key().to_compressed_bytes())

    def _sign_root(self, context: str, message: bytes) -> bytes:
        return prim.ed25519_sign(self._root, context, message)

    def _sign_kfrag_context(self, context: str, message: bytes) -> bytes:
        return prim.umbral_sign(self._kfrag_signer, context, message)


@dataclass(frozen=True)
class DeviceKeys(Record):
    """A device's public keys: what it shows an admin to be enrolled."""

    TAG = Tag.DEVICE_KEYS
    signing_key: bytes = wire(Fixed(ED25519_PUBLIC_SIZE))
    pre_key: bytes = wire(Fixed(UMBRAL_PUBLIC_SIZE))

    def __post_init__(self) -> None:
        super().__post_init__()
        # A pre_key that is not a curve point would be certified, then fail every grant
        # made for it: refused wherever the keys are decoded or made.
        prim.umbral_public(self.pre_key)

    @property
    def device_id(self) -> bytes:
        return device_id_for(self.signing_key)


@dataclass(frozen=True, repr=False, eq=False)
class DeviceSecrets(Record):
    """A device's Ed25519 signing seed and Umbral PRE secret key; never leave the device."""

    TAG = Tag.DEVICE_SECRETS
    signing_seed: bytes = wire(Fixed(SEED_SIZE))
    pre_secret: bytes = wire(Fixed(SEED_SIZE))

    def __post_init__(self) -> None:
        super().__post_init__()
        # Not every 32-byte string is a secp256k1 scalar; refuse bad ones at construction.
        umbral_pre.SecretKey.from_be_bytes(self.pre_secret)

    @classmethod
    def generate(cls) -> DeviceSecrets:
        return cls(os.urandom(SEED_SIZE), bytes(umbral_pre.SecretKey.random().to_be_bytes()))

    def __repr__(self) -> str:
        return hidden_repr("DeviceSecrets", ("device_id", self.device_id.hex()))

    @cached_property
    def _signing(self) -> Ed25519PrivateKey:
        return prim.ed25519_from_seed(self.signing_seed)

    @cached_property
    def _pre(self) -> umbral_pre.SecretKey:
        return umbral_pre.SecretKey.from_be_bytes(self.pre_secret)

    @cached_property
    def public_keys(self) -> DeviceKeys:
        return DeviceKeys(
            signing_key=prim.ed25519_public_bytes(self._signing),
            pre_key=bytes(self._pre.public_key().to_compressed_bytes()),
        )

    @property
    def device_id(self) -> bytes:
        return self.public_keys.device_id

    def sign(self, context: str, message: bytes) -> bytes:
        """Sign `message` under a domain-separation `context` (e.g. "http-request")."""
        return prim.ed25519_sign(self._signing, context, message)

    def sign_request(self, signature_base: bytes) -> bytes:
        """Ed25519 over an RFC 9421 signature base, as that RFC specifies (no context).

        Cannot collide with the domain-separated signatures: a signature base starts with
        `"@method"`, never with `statecache/v1/`."""
        return prim.ed25519_sign_raw(self._signing, signature_base)

"""Account records, device certificates, revocations and account deletions, all signed by
the account root."""

from __future__ import annotations

import enum
import unicodedata
from dataclasses import dataclass

from . import _primitives as prim
from ._codec import Enum8, Fixed, Nested, Record, Tag, Text, UInt, wire
from .errors import BindingError, CertificateError
from .keys import (
    ACCOUNT_ID_SIZE,
    DEVICE_ID_SIZE,
    ED25519_PUBLIC_SIZE,
    SIGNATURE_SIZE,
    UMBRAL_PUBLIC_SIZE,
    AccountSecrets,
    DeviceKeys,
    account_id_for,
    device_id_for,
)

__all__ = [
    "AccountDeletion",
    "AccountRecord",
    "DeviceCertificate",
    "Revocation",
    "Role",
    "certify_device",
    "delete_account",
    "register_account",
    "revoke_device",
]

U64 = UInt(8)
# A display name: no control characters (C0, C1) and no line or bidi-override marks that
# could disguise it in an admin's device list. This is what a stored certificate must
# match to decode; `certify_device` is stricter (`_check_device_name`).
DEVICE_NAME = Text(64, "[^\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]{0,64}")
# Format characters a name may keep: the joiners that emoji sequences (ZWJ) and Persian,
# Arabic and Indic scripts (ZWNJ) need to be written correctly.
_NAME_JOINERS = frozenset("\u200c\u200d")


def _check_device_name(name: str) -> None:
    """Refuse, for new certificates, every invisible formatting character (Unicode
    category Cf: bidi marks, embeddings, overrides and isolates, word joiners, the BOM,
    soft hyphens, tags, ...) but ZWNJ and ZWJ, and line and paragraph separators: each
    can make one name look like another in an admin's device list. Certificates already
    issued still decode under `DEVICE_NAME`."""
    if not isinstance(name, str):
        return  # the record refuses it (TypeError)
    for i, char in enumerate(name):
        category = unicodedata.category(char)
        if (category == "Cf" and char not in _NAME_JOINERS) or category in ("Zl", "Zp"):
            raise ValueError(
                f"device name has an invisible formatting or line-break character "
                f"U+{ord(char):04X} at position {i}"
            )


class Role(enum.IntEnum):
    MEMBER = 1  # reads and publishes snapshots
    ADMIN = 2  # also holds the account seed: certifies, grants, revokes, rotates


@dataclass(frozen=True)
class AccountRecord(Record):
    """What a node stores to know an account: its root key and kfrag verifying key.

    Self-signed by the root key; the account id is the hash of the root key, so whoever
    registers an id first must hold its root key.
    """

    TAG = Tag.ACCOUNT_RECORD
    root_key: bytes = wire(Fixed(ED25519_PUBLIC_SIZE))
    kfrag_verifying_key: bytes = wire(Fixed(UMBRAL_PUBLIC_SIZE))
    created_at: int = wire(U64)
    signature: bytes = wire(Fixed(SIGNATURE_SIZE), signature=True)

    @property
    def account_id(self) -> bytes:
        return account_id_for(self.root_key)

    def verify(self) -> AccountRecord:
        prim.ed25519_verify(self.root_key, "account-record", self.tbs(), self.signature)
        return self


def register_account(account: AccountSecrets, *, now: int) -> AccountRecord:
    unsigned = AccountRecord(
        root_key=account.root_public,
        kfrag_verifying_key=account.kfrag_verifying_key,
        created_at=now,
        signature=bytes(SIGNATURE_SIZE),
    )
    return unsigned.replace(signature=account._sign_root("account-record", unsigned.tbs()))


@dataclass(frozen=True)
class DeviceCertificate(Record):
    """Binds a device id to its two public keys, a role and a validity window."""

    TAG = Tag.DEVICE_CERTIFICATE
    account_id: bytes = wire(Fixed(ACCOUNT_ID_SIZE))
    device_id: bytes = wire(Fixed(DEVICE_ID_SIZE))
    keys: DeviceKeys = wire(Nested(DeviceKeys, 128))
    role: Role = wire(Enum8(Role))
    not_before: int = wire(U64)
    not_after: int = wire(U64)
    name: str = wire(DEVICE_NAME)
    signature: bytes = wire(Fixed(SIGNATURE_SIZE), signature=True)

    def verify(
        self,
        account: AccountRecord,
        *,
        now: int,
        revoked_at: int | None = None,
    ) -> DeviceCertificate:
        """Check the certificate chains to `account` and is valid at `now`.

        `revoked_at` is the time of a verified revocation of this device, if any; the
        certificate is invalid from that moment on.
        """
        if self.account_id != account.account_id:
            raise CertificateError("certificate is for another account")
        if self.device_id != device_id_for(self.keys.signing_key):
            raise CertificateError("device id does not match its signing key")
        prim.ed25519_verify(account.root_key, "device-certificate", self.tbs(), self.signature)
        if not self.not_before <= now < self.not_after:
            raise CertificateError("certificate is outside its validity window")
        if revoked_at is not None and now >= revoked_at:
            raise CertificateError("device is revoked")
        return self

    def verify_signature(self, context: str, message: bytes, signature: bytes) -> None:
        """Check a signature the device made with `DeviceSecrets.sign(context, message)`."""
        prim.ed25519_verify(self.keys.signing_key, context, message, signature)

    def verify_request(self, signature_base: bytes, signature: bytes) -> None:
        """Check an RFC 9421 request signature made with `DeviceSecrets.sign_request`."""
        prim.ed25519_verify_raw(self.keys.signing_key, signature_base, signature)


def certify_device(
    account: AccountSecrets,
    keys: DeviceKeys,
    *,
    role: Role,
    not_before: int,
    not_after: int,
    name: str = "",
) -> DeviceCertificate:
    if not_after <= not_before:
        raise ValueError("not_after must be later than not_before")
    _check_device_name(name)
    unsigned = DeviceCertificate(
        account_id=account.account_id,
        device_id=keys.device_id,
        keys=keys,
        role=role,
        not_before=not_before,
        not_after=not_after,
        name=name,
        signature=bytes(SIGNATURE_SIZE),
    )
    return unsigned.replace(signature=account._sign_root("device-certificate", unsigned.tbs()))


@dataclass(frozen=True)
class Revocation(Record):
    """Ends a device's certificate from `revoked_at` on."""

    TAG = Tag.REVOCATION
    account_id: bytes = wire(Fixed(ACCOUNT_ID_SIZE))
    device_id: bytes = wire(Fixed(DEVICE_ID_SIZE))
    revoked_at: int = wire(U64)
    signature: bytes = wire(Fixed(SIGNATURE_SIZE), signature=True)

    def verify(self, account: AccountRecord) -> Revocation:
        if self.account_id != account.account_id:
            raise BindingError("revocation is for another account")
        prim.ed25519_verify(account.root_key, "revocation", self.tbs(), self.signature)
        return self


def revoke_device(account: AccountSecrets, device_id: bytes, *, now: int) -> Revocation:
    unsigned = Revocation(
        account_id=account.account_id,
        device_id=device_id,
        revoked_at=now,
        signature=bytes(SIGNATURE_SIZE),
    )
    return unsigned.replace(signature=account._sign_root("revocation", unsigned.tbs()))


@dataclass(frozen=True)
class AccountDeletion(Record):
    """The admin's order to delete the account from every node.

    It carries the account record, so a node checks it on its own: the account id is the
    hash of the record's root key, and the root key signs the order. A node that never
    held the account, or deleted it already, can still verify it (and so answers the same
    either way: no oracle on whether an account exists)."""

    TAG = Tag.ACCOUNT_DELETION
    account: AccountRecord = wire(Nested(AccountRecord, 512))
    deleted_at: int = wire(U64)
    signature: bytes = wire(Fixed(SIGNATURE_SIZE), signature=True)

    @property
    def account_id(self) -> bytes:
        return self.account.account_id

    def verify(self) -> AccountDeletion:
        self.account.verify()
        prim.ed25519_verify(self.account.root_key, "account-deletion", self.tbs(), self.signature)
        return self


def delete_account(account: AccountSecrets, record: AccountRecord, *, now: int) -> AccountDeletion:
    if record.root_key != account.root_public:
        raise BindingError("the account record is another account's")
    unsigned = AccountDeletion(account=record, deleted_at=now, signature=bytes(SIGNATURE_SIZE))
    return unsigned.replace(signature=account._sign_root("account-deletion", unsigned.tbs()))

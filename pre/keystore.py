"""Passphrase protection for secrets kept in a device's local keystore file.

scrypt (RFC 7914) stretches the passphrase; AES-256-GCM seals the secret. The parameters
travel in the box, bounded on decode so a hostile file cannot make opening cost more than
about 1 GiB of memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ._codec import Fixed, Opaque, Record, Tag, UInt, wire
from .errors import DecodeError, DecryptionError, translate

__all__ = ["DEFAULT_SCRYPT_LOG2_N", "open_with_passphrase", "seal_with_passphrase"]

DEFAULT_SCRYPT_LOG2_N = 15  # 32 MiB, ~0.1 s: interactive unlock of a device keystore
_MAX_LOG2_N = 20
_AD = b"statecache/v1/keystore"


@dataclass(frozen=True)
class _PassphraseBox(Record):
    TAG = Tag.PASSPHRASE_BOX
    salt: bytes = wire(Fixed(16))
    log2_n: int = wire(UInt(1))
    r: int = wire(UInt(1))
    p: int = wire(UInt(1))
    nonce: bytes = wire(Fixed(12))
    ciphertext: bytes = wire(Opaque(64 * 1024, 16))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (10 <= self.log2_n <= _MAX_LOG2_N and 1 <= self.r <= 8 and 1 <= self.p <= 4):
            raise ValueError("scrypt parameters out of bounds")


def _key(passphrase: str, box: _PassphraseBox) -> bytes:
    kdf = Scrypt(salt=box.salt, length=32, n=1 << box.log2_n, r=box.r, p=box.p)
    return kdf.derive(passphrase.encode())


def seal_with_passphrase(
    secret: bytes, passphrase: str, *, log2_n: int = DEFAULT_SCRYPT_LOG2_N
) -> bytes:
    if not passphrase:
        raise ValueError("empty passphrase")
    box = _PassphraseBox(os.urandom(16), log2_n, 8, 1, os.urandom(12), bytes(16))
    sealed = AESGCM(_key(passphrase, box)).encrypt(box.nonce, secret, _AD)
    return box.replace(ciphertext=sealed).to_bytes()


def open_with_passphrase(data: bytes, passphrase: str) -> bytes:
    """The sealed secret; `DecryptionError` for a wrong passphrase or altered box."""
    box = _PassphraseBox.from_bytes(data)
    with translate(DecodeError, "keystore parameters rejected"):
        key = _key(passphrase, box)
    with translate(DecryptionError, "wrong passphrase or damaged keystore"):
        return AESGCM(key).decrypt(box.nonce, box.ciphertext, _AD)

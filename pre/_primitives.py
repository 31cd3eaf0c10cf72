"""Small wrappers over `cryptography` and umbral-pre shared by the record modules."""

from __future__ import annotations

import hashlib

import umbral_pre
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import DecodeError, SignatureError, translate

DOMAIN = b"statecache/v1/"


def digest(context: str, *parts: bytes) -> bytes:
    """SHA-256 over a domain-separated, length-prefixed list of parts."""
    h = hashlib.sha256(DOMAIN + context.encode() + b"\x00")
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


def hkdf(
    ikm: bytes, *, salt: bytes | None, info: str, extra: bytes = b"", length: int = 32
) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=salt, info=DOMAIN + info.encode() + extra
    ).derive(ikm)


def ed25519_from_seed(seed: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


def ed25519_public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def ed25519_sign(key: Ed25519PrivateKey, context: str, message: bytes) -> bytes:
    return key.sign(DOMAIN + context.encode() + b"\x00" + message)


# Ed25519 public keys of small order, by y-coordinate with the sign bit ignored (libsodium's
# blocklist: the identity, the points of order 2, 4 and 8, and the non-canonical p and p + 1).
# OpenSSL verifies a signature (R = identity, S = 0) under such a key for any message, so a
# record naming one would be "signed" by nobody: refused before verifying.
_P25519 = 2**255 - 19
_ORDER_8_Y = int.from_bytes(
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"), "little"
)
_SMALL_ORDER_Y = frozenset(
    {0, 1, _P25519 - 1, _P25519, _P25519 + 1, _ORDER_8_Y, _P25519 - _ORDER_8_Y}
)


def _check_ed25519_key(public: bytes) -> None:
    if int.from_bytes(public, "little") & ((1 << 255) - 1) in _SMALL_ORDER_Y:
        raise SignatureError("Ed25519 key of small order")


def ed25519_verify(public: bytes, context: str, message: bytes, signature: bytes) -> None:
    _check_ed25519_key(public)
    with translate(SignatureError, f"{context} signature does not verify"):
        Ed25519PublicKey.from_public_bytes(public).verify(
            signature, DOMAIN + context.encode() + b"\x00" + message
        )


def ed25519_sign_raw(key: Ed25519PrivateKey, message: bytes) -> bytes:
    """Plain Ed25519, for formats that fix their own signed bytes (RFC 9421 signature base)."""
    return key.sign(message)


def ed25519_verify_raw(public: bytes, message: bytes, signature: bytes) -> None:
    _check_ed25519_key(public)
    with translate(SignatureError, "signature does not verify"):
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)


def umbral_public(data: bytes) -> umbral_pre.PublicKey:
    with translate(DecodeError, "invalid Umbral public key"):
        return umbral_pre.PublicKey.from_compressed_bytes(data)


def umbral_sign(signer: umbral_pre.Signer, context: str, message: bytes) -> bytes:
    return bytes(signer.sign(DOMAIN + context.encode() + b"\x00" + message).to_be_bytes())


# secp256k1 group order. umbral-pre accepts both (r, s) and (r, n - s); only the low-S form
# is accepted here so that every signed record has exactly one valid encoding.
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def umbral_verify(public: bytes, context: str, message: bytes, signature: bytes) -> None:
    if len(signature) != 64 or int.from_bytes(signature[32:], "big") > _SECP256K1_N // 2:
        raise SignatureError(f"{context} signature is not in low-S form")
    pk = umbral_public(public)
    with translate(SignatureError, f"{context} signature does not verify"):
        sig = umbral_pre.Signature.from_be_bytes(signature)
        ok = sig.verify(pk, DOMAIN + context.encode() + b"\x00" + message)
    if not ok:
        raise SignatureError(f"{context} signature does not verify")

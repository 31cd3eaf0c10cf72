"""RFC 9420 cipher suites 1-7 (§17.1): their hash and signature scheme, via `cryptography`.

Only this module touches `cryptography`; everything else sees bytes. Public keys are in the
suite's wire format (§5.1.1): raw RFC 8032 keys for EdDSA, uncompressed points for ECDSA;
ECDSA signatures are DER (§5.1.2). Verification answers `True` or `False` and never
raises on malformed keys or signatures.
"""

from __future__ import annotations

import hashlib
import random
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, x448, x25519

from .codec import Writer
from .errors import UnsupportedCipherSuite

__all__ = ["CIPHER_SUITES", "CipherSuite", "SigningKey", "cipher_suite", "sign_content"]

_HASHES: Mapping[str, Callable[[bytes], hashlib._Hash]] = {
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
    "sha512": hashlib.sha512,
}

# scheme -> (curve, ECDSA hash) for the ECDSA schemes of RFC 8446 §4.2.3.
_ECDSA: Mapping[str, tuple[ec.EllipticCurve, hashes.HashAlgorithm]] = {
    "ecdsa_secp256r1_sha256": (ec.SECP256R1(), hashes.SHA256()),
    "ecdsa_secp384r1_sha384": (ec.SECP384R1(), hashes.SHA384()),
    "ecdsa_secp521r1_sha512": (ec.SECP521R1(), hashes.SHA512()),
}
_EDDSA_SIZES = {"ed25519": 32, "ed448": 57}
_DH_SIZES = {"x25519": 32, "x448": 56}
_KEM_CURVES: Mapping[str, ec.EllipticCurve] = {
    "p256": ec.SECP256R1(),
    "p384": ec.SECP384R1(),
    "p521": ec.SECP521R1(),
}

_SignatureKey = ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey | ec.EllipticCurvePrivateKey


def _coordinate_size(curve: ec.EllipticCurve) -> int:
    return (curve.key_size + 7) // 8


def sign_content(label: str, content: bytes) -> bytes:
    """The `SignContent` that `SignWithLabel` signs (§5.1.2): "MLS 1.0 " + label, content."""
    w = Writer()
    w.opaque(b"MLS 1.0 " + label.encode())
    w.opaque(content)
    return w.getvalue()


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A signature key pair of one scheme: the RFC 8032 seed or the ECDSA scalar, big-endian."""

    scheme: str
    private: bytes = field(repr=False)
    public: bytes


# What `cryptography` raises for a foreign key or signature that does not verify.
_REJECTED = (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError, OverflowError)


def _verify(scheme: str, public_key: bytes, message: bytes, signature: bytes) -> None:
    """Return if `signature` verifies; raise one of `_REJECTED` otherwise."""
    if scheme in _EDDSA_SIZES:
        if len(public_key) != _EDDSA_SIZES[scheme]:
            raise ValueError("wrong public key size")
        if scheme == "ed25519":
            ed25519.Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
        else:
            ed448.Ed448PublicKey.from_public_bytes(public_key).verify(signature, message)
        return
    curve, digest = _ECDSA[scheme]
    # §5.1.1: UncompressedPointRepresentation only (from_encoded_point also takes compressed).
    if len(public_key) != 1 + 2 * _coordinate_size(curve) or public_key[0] != 4:
        raise ValueError("not an uncompressed point")
    ec.EllipticCurvePublicKey.from_encoded_point(curve, public_key).verify(
        signature, message, ec.ECDSA(digest)
    )


@dataclass(frozen=True, slots=True)
class CipherSuite:
    """One RFC 9420 cipher suite; only its KEM's key format, hash and signature are used."""

    suite_id: int
    name: str
    kem: str
    hash_name: str
    signature_scheme: str

    @property
    def hash_size(self) -> int:
        return _HASHES[self.hash_name](b"").digest_size

    def hash(self, data: bytes) -> bytes:
        """The suite's `Hash` (§5.1)."""
        return _HASHES[self.hash_name](data).digest()

    def verify_with_label(
        self, public_key: bytes, label: str, content: bytes, signature: bytes
    ) -> bool:
        """`VerifyWithLabel` (§5.1.2); `False` for any bad key, signature or mismatch."""
        try:
            _verify(self.signature_scheme, public_key, sign_content(label, content), signature)
        except _REJECTED:
            return False
        return True

    def sign_with_label(self, key: SigningKey, label: str, content: bytes) -> bytes:
        """`SignWithLabel` (§5.1.2) with a key of this suite's scheme."""
        if key.scheme != self.signature_scheme:
            raise ValueError(f"a {key.scheme} key cannot sign for {self.name}")
        private = _load_signing_key(key.scheme, key.private)
        message = sign_content(label, content)
        if isinstance(private, ec.EllipticCurvePrivateKey):
            return private.sign(message, ec.ECDSA(_ECDSA[key.scheme][1]))
        return private.sign(message)

    def generate_signing_key(self, rng: random.Random | None = None) -> SigningKey:
        """A fresh key pair; from `rng` when given (reproducible test data), else the OS."""
        scheme = self.signature_scheme
        if scheme in _EDDSA_SIZES:
            size = _EDDSA_SIZES[scheme]
            seed = rng.randbytes(size) if rng is not None else secrets.token_bytes(size)
            private = _load_signing_key(scheme, seed)
            assert not isinstance(private, ec.EllipticCurvePrivateKey)
            public = private.public_key().public_bytes_raw()
            return SigningKey(scheme, seed, public)
        curve = _ECDSA[scheme][0]
        ec_key = _ec_private_key(curve, rng)
        scalar = ec_key.private_numbers().private_value.to_bytes(_coordinate_size(curve), "big")
        return SigningKey(scheme, scalar, _point(ec_key.public_key()))

    def random_hpke_public_key(self, rng: random.Random | None = None) -> bytes:
        """A real public key of the suite's KEM (§5.1.1), private half discarded: test data."""
        if self.kem in _DH_SIZES:
            seed = rng.randbytes(_DH_SIZES[self.kem]) if rng is not None else None
            if self.kem == "x25519":
                xk = (
                    x25519.X25519PrivateKey.from_private_bytes(seed)
                    if seed is not None
                    else x25519.X25519PrivateKey.generate()
                )
                return xk.public_key().public_bytes_raw()
            x4 = (
                x448.X448PrivateKey.from_private_bytes(seed)
                if seed is not None
                else x448.X448PrivateKey.generate()
            )
            return x4.public_key().public_bytes_raw()
        return _point(_ec_private_key(_KEM_CURVES[self.kem], rng).public_key())


def _ec_private_key(
    curve: ec.EllipticCurve, rng: random.Random | None
) -> ec.EllipticCurvePrivateKey:
    if rng is None:
        return ec.generate_private_key(curve)
    # Below 2^(bits-1) is always below the group order of P-256/384/521.
    return ec.derive_private_key(rng.randrange(1, 1 << (curve.key_size - 1)), curve)


def _point(public: ec.EllipticCurvePublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


@lru_cache(maxsize=4096)
def _load_signing_key(scheme: str, private: bytes) -> _SignatureKey:
    if scheme == "ed25519":
        return ed25519.Ed25519PrivateKey.from_private_bytes(private)
    if scheme == "ed448":
        return ed448.Ed448PrivateKey.from_private_bytes(private)
    curve = _ECDSA[scheme][0]
    return ec.derive_private_key(int.from_bytes(private, "big"), curve)


CIPHER_SUITES: Mapping[int, CipherSuite] = MappingProxyType(
    {
        s.suite_id: s
        for s in (
            CipherSuite(
                1,
                "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519",
                "x25519",
                "sha256",
                "ed25519",
            ),
            CipherSuite(
                2,
                "MLS_128_DHKEMP256_AES128GCM_SHA256_P256",
                "p256",
                "sha256",
                "ecdsa_secp256r1_sha256",
            ),
            CipherSuite(
                3,
                "MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519",
                "x25519",
                "sha256",
                "ed25519",
            ),
            CipherSuite(4, "MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448", "x448", "sha512", "ed448"),
            CipherSuite(
                5,
                "MLS_256_DHKEMP521_AES256GCM_SHA512_P521",
                "p521",
                "sha512",
                "ecdsa_secp521r1_sha512",
            ),
            CipherSuite(
                6,
                "MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448",
                "x448",
                "sha512",
                "ed448",
            ),
            CipherSuite(
                7,
                "MLS_256_DHKEMP384_AES256GCM_SHA384_P384",
                "p384",
                "sha384",
                "ecdsa_secp384r1_sha384",
            ),
        )
    }
)
"""RFC 9420 §17.1's cipher suites by identifier."""


def cipher_suite(suite_id: int) -> CipherSuite:
    """The suite with this identifier, or `UnsupportedCipherSuite`."""
    suite = CIPHER_SUITES.get(suite_id) if type(suite_id) is int else None
    if suite is None:
        raise UnsupportedCipherSuite(f"unsupported cipher suite {suite_id!r}")
    return suite

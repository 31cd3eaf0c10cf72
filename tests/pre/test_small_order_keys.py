"""Ed25519 keys of small order are refused: under one, OpenSSL accepts the signature
(R = identity, S = 0) for any message, so an account "signed" by nobody could be
registered, certify devices, and order its own deletion."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

import pre
from pre import _primitives as prim

P = 2**255 - 19
ORDER_8 = int.from_bytes(
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"), "little"
)
SMALL = [0, 1, P - 1, P, P + 1, ORDER_8, P - ORDER_8]
IDENTITY_SIGNATURE = (1).to_bytes(32, "little") + bytes(32)  # R = identity, S = 0


def encodings() -> list[bytes]:
    out = []
    for y in SMALL:
        for sign in (0, 1 << 255):
            out.append((y | sign).to_bytes(32, "little"))
    return out


def test_openssl_alone_accepts_a_forgery_under_the_identity_key() -> None:
    """Why the check exists (if this ever fails, OpenSSL started refusing these itself)."""
    Ed25519PublicKey.from_public_bytes((1).to_bytes(32, "little")).verify(
        IDENTITY_SIGNATURE, b"any message at all"
    )


@pytest.mark.parametrize("key", encodings(), ids=lambda k: k.hex()[:8] + k.hex()[-2:])
def test_every_small_order_key_is_refused(key: bytes) -> None:
    with pytest.raises(pre.SignatureError):
        prim.ed25519_verify(key, "account-record", b"message", IDENTITY_SIGNATURE)
    with pytest.raises(pre.SignatureError):
        prim.ed25519_verify_raw(key, b"message", IDENTITY_SIGNATURE)


def test_an_account_record_under_the_identity_key_does_not_verify() -> None:
    record = pre.AccountRecord(
        root_key=(1).to_bytes(32, "little"),
        kfrag_verifying_key=pre.AccountSecrets.generate().kfrag_verifying_key,
        created_at=0,
        signature=IDENTITY_SIGNATURE,
    )
    with pytest.raises(pre.PreError):
        record.verify()


def test_ordinary_keys_still_verify() -> None:
    account = pre.AccountSecrets.generate()
    pre.register_account(account, now=1).verify()

"""The one error family of `pre`, and the single place foreign errors are translated.

    PreError
    ├── DecodeError        bytes that are not a well-formed encoding of the expected object
    ├── SignatureError     a signature does not verify
    ├── CertificateError   a certificate is for another account, expired, not yet valid or revoked
    ├── BindingError       an object is bound to another account, label, epoch, device or chain
    ├── FragmentError      a key fragment or capsule fragment fails its proof, or too few arrived
    └── DecryptionError    authenticated decryption failed

Caller mistakes (wrong types, wrong lengths of arguments the caller built) stay
`TypeError` / `ValueError`; anything that depends on bytes from elsewhere raises `PreError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import umbral_pre
from cryptography.exceptions import InvalidSignature, InvalidTag

__all__ = [
    "BindingError",
    "CertificateError",
    "DecodeError",
    "DecryptionError",
    "FragmentError",
    "PreError",
    "SignatureError",
]


class PreError(Exception):
    """Base of every failure to decode, verify or open. The message is safe to log."""


class DecodeError(PreError):
    """Malformed, truncated, oversize or wrongly versioned bytes."""


class SignatureError(PreError):
    """A signature does not verify under the expected key."""


class CertificateError(PreError):
    """A certificate is not valid for this account at this time."""


class BindingError(PreError):
    """An object is bound to a different account, label, key epoch, device or chain."""


class FragmentError(PreError):
    """A key or capsule fragment failed verification, or fewer than the threshold arrived."""


class DecryptionError(PreError):
    """Authenticated decryption failed."""


# Missing from umbral-pre's type stubs, present at run time.
_UmbralVerificationError: type[Exception] = umbral_pre.VerificationError  # type: ignore[attr-defined]


@contextmanager
def translate(leaf: type[PreError], what: str) -> Iterator[None]:
    """Turn the bare errors of umbral-pre and `cryptography` into `leaf`.

    umbral-pre raises `ValueError` for malformed input and its own `VerificationError`
    for failed proofs; `cryptography` raises `InvalidSignature` / `InvalidTag`. None of
    their messages reach the caller: they can describe internals.
    """
    try:
        yield
    except PreError:
        raise
    except (
        ValueError,
        TypeError,
        OverflowError,
        _UmbralVerificationError,
        InvalidSignature,
        InvalidTag,
    ) as exc:
        raise leaf(what) from exc

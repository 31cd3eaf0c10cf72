"""The one error family of `client_sdk.mls`.

    MlsError
    ├── MlsDecodeError           bytes that are not a well-formed RFC 9420 encoding
    ├── MlsTreeError             an operation that does not fit the tree (removing a blank leaf)
    └── UnsupportedCipherSuite   a cipher suite other than RFC 9420's 1-7 (also a ValueError)

Failed verification (a signature, a parent hash) is an answer, not an error: the
`verify_*` functions return `False`. Caller mistakes (wrong types, a node index outside
the tree) stay `TypeError` / `ValueError`.
"""

from __future__ import annotations

__all__ = ["MlsDecodeError", "MlsError", "MlsTreeError", "UnsupportedCipherSuite"]


class MlsError(Exception):
    """Base of everything this package raises on purpose. The message is safe to log."""


class MlsDecodeError(MlsError):
    """Malformed, truncated, non-minimal or trailing bytes, or a structurally invalid tree."""


class MlsTreeError(MlsError):
    """A proposal or operation that cannot be applied to this tree."""


class UnsupportedCipherSuite(MlsError, ValueError):
    """A cipher suite identifier this package does not implement (RFC 9420 §17.1)."""

"""statecache's profile of HTTP Message Signatures (RFC 9421) with Ed25519.

Every authenticated request carries

    Content-Digest:  sha-256=:<base64 of SHA-256(body)>:          (RFC 9530; empty body too)
    Signature-Input: sig1=("@method" "@path" "@query" "content-digest");created=<unix s>;\
keyid="<device id hex>";nonce="<16-64 base64url chars>";alg="ed25519"
    Signature:       sig1=:<base64 Ed25519 signature of the signature base>:

The profile is strict: exactly that label, component list and parameter order, so the
server parses it with one pattern instead of a general structured-field parser, and there
is only one signature base per request. This module only formats and parses text; the
signing and verifying live in `pre`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "COMPONENTS",
    "ParsedSignature",
    "SignatureFormatError",
    "parse_signature_headers",
    "sign_request_headers",
    "signature_base",
]

COMPONENTS = ('"@method"', '"@path"', '"@query"', '"content-digest"')
_INNER = "(" + " ".join(COMPONENTS) + ")"
_INPUT = re.compile(
    r'sig1=\("@method" "@path" "@query" "content-digest"\)'
    r";created=(?P<created>[0-9]{1,12})"
    r';keyid="(?P<keyid>[0-9a-f]{32})"'
    r';nonce="(?P<nonce>[A-Za-z0-9_-]{16,64})"'
    r';alg="ed25519"'
)
_SIGNATURE = re.compile(r"sig1=:(?P<sig>[A-Za-z0-9+/]{86}==):")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DIGEST = re.compile(r"sha-256=:[A-Za-z0-9+/]{43}=:")


class SignatureFormatError(ValueError):
    """The signature fields are missing or do not follow the profile."""


@dataclass(frozen=True)
class ParsedSignature:
    created: int
    keyid: str
    nonce: str
    params: str  # the Signature-Input member value, as signed
    signature: bytes


def _params(created: int, keyid: str, nonce: str) -> str:
    return f'{_INNER};created={created};keyid="{keyid}";nonce="{nonce}";alg="ed25519"'


def signature_base(method: str, path: str, query: str, content_digest: str, params: str) -> bytes:
    """RFC 9421 §2.5 signature base. `query` excludes the leading '?' (RFC 9421 §2.2.7
    puts it back: an absent query is signed as a lone '?')."""
    lines = [
        f'"@method": {method.upper()}',
        f'"@path": {path}',
        f'"@query": ?{query}',
        f'"content-digest": {content_digest}',
        f'"@signature-params": {params}',
    ]
    text = "\n".join(lines)
    if not text.isascii() or _CONTROL.search(text.replace("\n", "")):
        raise SignatureFormatError("signature base components must be printable ASCII")
    return text.encode("ascii")


def sign_request_headers(
    *,
    method: str,
    path: str,
    query: str,
    content_digest: str,
    keyid: str,
    created: int,
    nonce: str,
    sign: Callable[[bytes], bytes],
) -> dict[str, str]:
    """The three header fields for a request; `sign` is the device's Ed25519 signer."""
    params = _params(created, keyid, nonce)
    signature = sign(signature_base(method, path, query, content_digest, params))
    return {
        "Content-Digest": content_digest,
        "Signature-Input": "sig1=" + params,
        "Signature": "sig1=:" + base64.b64encode(signature).decode() + ":",
    }


def parse_signature_headers(
    signature_input: str | None, signature: str | None, content_digest: str | None
) -> ParsedSignature:
    if not signature_input or not signature or not content_digest:
        raise SignatureFormatError("Signature, Signature-Input and Content-Digest are required")
    m = _INPUT.fullmatch(signature_input.strip())
    s = _SIGNATURE.fullmatch(signature.strip())
    if m is None or s is None or _DIGEST.fullmatch(content_digest.strip()) is None:
        raise SignatureFormatError("signature fields do not follow the statecache profile")
    try:
        raw = base64.b64decode(s["sig"], validate=True)
    except binascii.Error as exc:
        raise SignatureFormatError("signature is not base64") from exc
    return ParsedSignature(
        created=int(m["created"]),
        keyid=m["keyid"],
        nonce=m["nonce"],
        params=signature_input.strip()[len("sig1=") :],
        signature=raw,
    )

"""statecache's profiles of HTTP Message Signatures (RFC 9421) with Ed25519.

Every authenticated request carries (profile 2, the current one)

    Content-Digest:  sha-256=:<base64 of SHA-256(body)>:          (RFC 9530; empty body too)
    Signature-Input: sig1=("@method" "@path" "@query" "content-digest");created=<unix s>;\
keyid="<device id hex>";nonce="<16-64 base64url chars>";alg="ed25519";\
tag="statecache/2;node=<node id hex>"
    Signature:       sig1=:<base64 Ed25519 signature of the signature base>:

The registered `tag` parameter names the profile version and the node the request is
for (its id, derived from its identity key and pinned by the device), so a request one
node received cannot be replayed at another: every node refuses a request bound to
another node. The node is named by id, not by `@authority`, so nodes keep working behind
proxies and path-prefixed ingresses.

A profile fixes the label, the component list and the parameter order, so there is one
signature base per request and the node parses it with one pattern instead of a general
structured-field parser. A later profile may cover more components (e.g. a delivery
service's token header): add it to `PROFILES`. Profile 1 (no `tag`, no node) is refused
with a message saying so. This module only formats and parses text; signing and
verifying live in `pre`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = [
    "CURRENT",
    "PROFILES",
    "ParsedSignature",
    "SignatureFormatError",
    "SignatureProfile",
    "parse_signature_headers",
    "sign_request_headers",
    "signature_base",
]


@dataclass(frozen=True)
class SignatureProfile:
    version: int
    # Covered components in signing order: derived ones ("@...") and header field names.
    components: tuple[str, ...]

    @property
    def tag_prefix(self) -> str:
        return f"statecache/{self.version};node="


PROFILES: dict[int, SignatureProfile] = {
    2: SignatureProfile(2, ("@method", "@path", "@query", "content-digest")),
}
CURRENT = PROFILES[2]

_INPUT = re.compile(
    r"sig1=\((?P<components>[^()]{0,400})\)"
    r";created=(?P<created>[0-9]{1,12})"
    r';keyid="(?P<keyid>[0-9a-f]{32})"'
    r';nonce="(?P<nonce>[A-Za-z0-9_-]{16,64})"'
    r';alg="ed25519"'
    r';tag="statecache/(?P<version>[0-9]{1,3});node=(?P<node>[0-9a-f]{32})"'
)
_V1 = re.compile(r'sig1=\("@method" "@path" "@query" "content-digest"\);created=[^;]*;[^()]*')
_SIGNATURE = re.compile(r"sig1=:(?P<sig>[A-Za-z0-9+/]{86}==):")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DIGEST = re.compile(r"sha-256=:[A-Za-z0-9+/]{43}=:")


class SignatureFormatError(ValueError):
    """The signature fields are missing or do not follow a profile."""


@dataclass(frozen=True)
class ParsedSignature:
    profile: SignatureProfile
    node_id: str  # hex: the node this request is for
    created: int
    keyid: str
    nonce: str
    params: str  # the Signature-Input member value, as signed
    signature: bytes


def _params(profile: SignatureProfile, created: int, keyid: str, nonce: str, node_id: str) -> str:
    inner = "(" + " ".join(f'"{c}"' for c in profile.components) + ")"
    return (
        f'{inner};created={created};keyid="{keyid}";nonce="{nonce}";alg="ed25519"'
        f';tag="{profile.tag_prefix}{node_id}"'
    )


def signature_base(profile: SignatureProfile, values: Mapping[str, str], params: str) -> bytes:
    """RFC 9421 §2.5 signature base. `values` maps each covered component to its value;
    "@query" excludes the leading '?' (RFC 9421 §2.2.7 puts it back: an absent query is
    signed as a lone '?')."""
    lines = []
    for component in profile.components:
        value = values[component]
        if component == "@method":
            value = value.upper()
        elif component == "@query":
            value = "?" + value
        lines.append(f'"{component}": {value}')
    lines.append(f'"@signature-params": {params}')
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
    node_id: str,
    sign: Callable[[bytes], bytes],
    profile: SignatureProfile = CURRENT,
) -> dict[str, str]:
    """The three header fields for a request to the node `node_id` (hex); `sign` is the
    device's Ed25519 signer."""
    params = _params(profile, created, keyid, nonce, node_id)
    values = {"@method": method, "@path": path, "@query": query, "content-digest": content_digest}
    signature = sign(signature_base(profile, values, params))
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
    text = signature_input.strip()
    m = _INPUT.fullmatch(text)
    if m is None and _V1.fullmatch(text) and "tag=" not in text:
        raise SignatureFormatError(
            "signature profile 1 binds no node and is no longer accepted; "
            "upgrade the client to sign with profile 2"
        )
    s = _SIGNATURE.fullmatch(signature.strip())
    if m is None or s is None or _DIGEST.fullmatch(content_digest.strip()) is None:
        raise SignatureFormatError("signature fields do not follow the statecache profile")
    profile = PROFILES.get(int(m["version"]))
    if profile is None:
        raise SignatureFormatError(f"unknown signature profile {m['version']}")
    expected = " ".join(f'"{c}"' for c in profile.components)
    if m["components"] != expected:
        raise SignatureFormatError(
            f"signature profile {profile.version} covers ({expected}), in that order"
        )
    try:
        raw = base64.b64decode(s["sig"], validate=True)
    except binascii.Error as exc:
        raise SignatureFormatError("signature is not base64") from exc
    return ParsedSignature(
        profile=profile,
        node_id=m["node"],
        created=int(m["created"]),
        keyid=m["keyid"],
        nonce=m["nonce"],
        params=text[len("sig1=") :],
        signature=raw,
    )

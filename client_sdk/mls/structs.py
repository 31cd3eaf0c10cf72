"""The ratchet tree's wire structures (RFC 9420 §5.3, §7.1, §7.2, §12.4.3.3).

Frozen dataclasses with exactly one encoding each: `to_bytes()` writes it, `from_bytes()`
reads it strictly (`MlsDecodeError`). Constructing a value with a field that cannot be
encoded (an integer out of range, a `lifetime` on a non-key-package leaf) is a
`ValueError`. Select-on-type enums with unknown values cannot be parsed past, so they are
decode errors; plain `uint16` code points (extension, proposal, credential types listed in
capabilities) are kept as integers, unknown or not.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self, TypeAlias

from .codec import Reader, Writer, decode
from .errors import MlsDecodeError

__all__ = [
    "Capabilities",
    "Credential",
    "CredentialType",
    "Extension",
    "HPKEPublicKey",
    "LeafNode",
    "LeafNodeSource",
    "Lifetime",
    "Node",
    "NodeType",
    "ParentNode",
    "SignaturePublicKey",
    "decode_node",
    "encode_node",
]

HPKEPublicKey: TypeAlias = bytes
"""`opaque HPKEPublicKey<V>` (§5.1.1)."""
SignaturePublicKey: TypeAlias = bytes
"""`opaque SignaturePublicKey<V>` (§5.1.1)."""


class CredentialType(enum.IntEnum):
    """§5.3, §17.5."""

    BASIC = 1
    X509 = 2


class LeafNodeSource(enum.IntEnum):
    """§7.2."""

    KEY_PACKAGE = 1
    UPDATE = 2
    COMMIT = 3


class NodeType(enum.IntEnum):
    """§7.8, §12.4.3.3."""

    LEAF = 1
    PARENT = 2


def _check_uint(value: int, bits: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int")
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{name}={value} does not fit in uint{bits}")


def _check_bytes(value: object, name: str) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}")


def _read_enum(r: Reader, kind: type[enum.IntEnum], width: int) -> int:
    value = r.u8() if width == 1 else r.u16()
    try:
        return kind(value)
    except ValueError:
        raise MlsDecodeError(f"unknown {kind.__name__} {value}") from None


class _Struct:
    """`to_bytes` / `from_bytes` over a struct's `_write` / `_read`."""

    __slots__ = ()

    def _write(self, w: Writer) -> None:
        raise NotImplementedError

    @classmethod
    def _read(cls, r: Reader) -> Self:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        w = Writer()
        self._write(w)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        return decode(data, cls._read)


@dataclass(frozen=True, slots=True)
class Credential(_Struct):
    """`Credential` (§5.3): a basic `identity`, or a chain of DER X.509 `certificates`."""

    credential_type: CredentialType
    identity: bytes = b""
    certificates: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "credential_type", CredentialType(self.credential_type))
        object.__setattr__(self, "certificates", tuple(self.certificates))
        _check_bytes(self.identity, "identity")
        for cert in self.certificates:
            _check_bytes(cert, "certificate")
        if self.credential_type is CredentialType.BASIC and self.certificates:
            raise ValueError("a basic credential has no certificates")
        if self.credential_type is CredentialType.X509 and self.identity:
            raise ValueError("an x509 credential has no identity field")

    @classmethod
    def basic(cls, identity: bytes) -> Credential:
        return cls(CredentialType.BASIC, identity=identity)

    @classmethod
    def x509(cls, certificates: tuple[bytes, ...]) -> Credential:
        return cls(CredentialType.X509, certificates=tuple(certificates))

    def _write(self, w: Writer) -> None:
        w.u16(self.credential_type)
        if self.credential_type is CredentialType.BASIC:
            w.opaque(self.identity)
        else:
            w.vector(self.certificates, Writer.opaque)  # struct { opaque cert_data<V>; }

    @classmethod
    def _read(cls, r: Reader) -> Self:
        kind = _read_enum(r, CredentialType, 2)
        if kind == CredentialType.BASIC:
            return cls(CredentialType.BASIC, identity=r.opaque())
        return cls(CredentialType.X509, certificates=tuple(r.vector(Reader.opaque)))


def _write_u16s(w: Writer, values: tuple[int, ...]) -> None:
    w.vector(values, Writer.u16)


def _read_u16s(r: Reader) -> tuple[int, ...]:
    return tuple(r.uints(2))


@dataclass(frozen=True, slots=True)
class Capabilities(_Struct):
    """`Capabilities` (§7.2): supported versions, suites and non-default types (uint16 each)."""

    versions: tuple[int, ...] = (1,)
    cipher_suites: tuple[int, ...] = ()
    extensions: tuple[int, ...] = ()
    proposals: tuple[int, ...] = ()
    credentials: tuple[int, ...] = (CredentialType.BASIC,)

    def __post_init__(self) -> None:
        for name in ("versions", "cipher_suites", "extensions", "proposals", "credentials"):
            values = tuple(getattr(self, name))
            for v in values:
                _check_uint(v, 16, name)
            object.__setattr__(self, name, values)

    def _write(self, w: Writer) -> None:
        for values in (
            self.versions,
            self.cipher_suites,
            self.extensions,
            self.proposals,
            self.credentials,
        ):
            _write_u16s(w, values)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        # Most leaves of a tree carry the very same capabilities: decode each distinct
        # encoding once and share the (frozen) value.
        start = r.tell()
        for _ in range(5):
            r.take(r.varint())
        encoding = r.since(start)
        cached = _CAPABILITIES.get(encoding)
        if isinstance(cached, cls):
            return cached
        inner = Reader(encoding)
        value = cls(*(_read_u16s(inner) for _ in range(5)))
        if len(_CAPABILITIES) >= 256:
            _CAPABILITIES.clear()
        _CAPABILITIES[encoding] = value
        return value


_CAPABILITIES: dict[bytes, Capabilities] = {}


@dataclass(frozen=True, slots=True)
class Lifetime(_Struct):
    """`Lifetime` (§7.2): seconds since the Unix epoch."""

    not_before: int
    not_after: int

    def __post_init__(self) -> None:
        _check_uint(self.not_before, 64, "not_before")
        _check_uint(self.not_after, 64, "not_after")

    def _write(self, w: Writer) -> None:
        w.u64(self.not_before)
        w.u64(self.not_after)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.u64(), r.u64())


@dataclass(frozen=True, slots=True)
class Extension(_Struct):
    """`Extension` (§7.2): a type code point and opaque data."""

    extension_type: int
    extension_data: bytes = b""

    def __post_init__(self) -> None:
        _check_uint(self.extension_type, 16, "extension_type")
        _check_bytes(self.extension_data, "extension_data")

    def _write(self, w: Writer) -> None:
        w.u16(self.extension_type)
        w.opaque(self.extension_data)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.u16(), r.opaque())


def _write_extensions(w: Writer, extensions: tuple[Extension, ...]) -> None:
    w.vector(extensions, lambda iw, e: e._write(iw))


def _read_extensions(r: Reader) -> tuple[Extension, ...]:
    return tuple(r.vector(Extension._read))


def _cached_encoding(node: LeafNode | ParentNode, write: Callable[[Writer], None]) -> bytes:
    """A node's encoding, made once: a tree hashes and encodes its nodes again and again,
    and they never change (frozen). Decoding records the bytes it read instead."""
    encoding = node._encoding
    if encoding is None:
        w = Writer()
        write(w)
        encoding = w.getvalue()
        object.__setattr__(node, "_encoding", encoding)
    return encoding


@dataclass(frozen=True, slots=True)
class LeafNode(_Struct):
    """`LeafNode` (§7.2). `lifetime` is set iff the source is `key_package`; `parent_hash`
    is only carried by `commit` leaves."""

    encryption_key: HPKEPublicKey
    signature_key: SignaturePublicKey
    credential: Credential
    capabilities: Capabilities
    leaf_node_source: LeafNodeSource
    lifetime: Lifetime | None = None
    parent_hash: bytes = b""
    extensions: tuple[Extension, ...] = ()
    signature: bytes = b""
    _encoding: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        source = LeafNodeSource(self.leaf_node_source)
        object.__setattr__(self, "leaf_node_source", source)
        object.__setattr__(self, "extensions", tuple(self.extensions))
        for name in ("encryption_key", "signature_key", "parent_hash", "signature"):
            _check_bytes(getattr(self, name), name)
        if (self.lifetime is not None) != (source is LeafNodeSource.KEY_PACKAGE):
            raise ValueError("a lifetime is carried exactly by key_package leaves")
        if self.parent_hash and source is not LeafNodeSource.COMMIT:
            raise ValueError("only commit leaves carry a parent_hash")

    def _write_content(self, w: Writer) -> None:
        w.opaque(self.encryption_key)
        w.opaque(self.signature_key)
        self.credential._write(w)
        self.capabilities._write(w)
        w.u8(self.leaf_node_source)
        if self.lifetime is not None:
            self.lifetime._write(w)
        elif self.leaf_node_source is LeafNodeSource.COMMIT:
            w.opaque(self.parent_hash)
        _write_extensions(w, self.extensions)

    def _write(self, w: Writer) -> None:
        w.raw(_cached_encoding(self, self._write_uncached))

    def _write_uncached(self, w: Writer) -> None:
        self._write_content(w)
        w.opaque(self.signature)

    def tbs(self, group_id: bytes, leaf_index: int) -> bytes:
        """`LeafNodeTBS` (§7.2): group id and leaf index are only bound for update/commit."""
        w = Writer()
        self._write_content(w)
        if self.leaf_node_source is not LeafNodeSource.KEY_PACKAGE:
            w.opaque(group_id)
            w.u32(leaf_index)
        return w.getvalue()

    @classmethod
    def _read(cls, r: Reader) -> Self:
        start = r.tell()
        encryption_key = r.opaque()
        signature_key = r.opaque()
        credential = Credential._read(r)
        capabilities = Capabilities._read(r)
        source = LeafNodeSource(_read_enum(r, LeafNodeSource, 1))
        lifetime = Lifetime._read(r) if source is LeafNodeSource.KEY_PACKAGE else None
        parent_hash = r.opaque() if source is LeafNodeSource.COMMIT else b""
        node = cls(
            encryption_key,
            signature_key,
            credential,
            capabilities,
            source,
            lifetime,
            parent_hash,
            _read_extensions(r),
            r.opaque(),
        )
        object.__setattr__(node, "_encoding", r.since(start))
        return node


@dataclass(frozen=True, slots=True)
class ParentNode(_Struct):
    """`ParentNode` (§7.1); `unmerged_leaves` are leaf indices in strictly increasing order."""

    encryption_key: HPKEPublicKey
    parent_hash: bytes = b""
    unmerged_leaves: tuple[int, ...] = ()
    _encoding: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_bytes(self.encryption_key, "encryption_key")
        _check_bytes(self.parent_hash, "parent_hash")
        leaves = tuple(self.unmerged_leaves)
        for leaf in leaves:
            _check_uint(leaf, 32, "unmerged leaf")
        if any(a >= b for a, b in itertools.pairwise(leaves)):
            raise ValueError("unmerged_leaves must be strictly increasing")
        object.__setattr__(self, "unmerged_leaves", leaves)

    def _write(self, w: Writer) -> None:
        w.raw(_cached_encoding(self, self._write_uncached))

    def _write_uncached(self, w: Writer) -> None:
        w.opaque(self.encryption_key)
        w.opaque(self.parent_hash)
        w.vector(self.unmerged_leaves, Writer.u32)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        start = r.tell()
        encryption_key = r.opaque()
        parent_hash = r.opaque()
        leaves = tuple(r.uints(4))
        if any(a >= b for a, b in itertools.pairwise(leaves)):
            raise MlsDecodeError("unmerged_leaves not strictly increasing")
        node = cls(encryption_key, parent_hash, leaves)
        object.__setattr__(node, "_encoding", r.since(start))
        return node


Node: TypeAlias = LeafNode | ParentNode
"""`Node` (§12.4.3.3): a leaf or a parent, tagged by `NodeType` on the wire."""


def write_node(w: Writer, node: Node) -> None:
    w.u8(NodeType.LEAF if isinstance(node, LeafNode) else NodeType.PARENT)
    node._write(w)


def read_node(r: Reader) -> Node:
    if _read_enum(r, NodeType, 1) == NodeType.LEAF:
        return LeafNode._read(r)
    return ParentNode._read(r)


def encode_node(node: Node) -> bytes:
    w = Writer()
    write_node(w, node)
    return w.getvalue()


def decode_node(data: bytes) -> Node:
    return decode(data, read_node)

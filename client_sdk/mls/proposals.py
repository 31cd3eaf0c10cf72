"""Key packages and the proposals that change a ratchet tree (RFC 9420 §10, §12.1.1-§12.1.3).

Only `add`, `update` and `remove` are modelled; any other proposal type is a
`MlsDecodeError` ("unsupported"), since its body cannot be skipped without parsing it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Self, TypeAlias

from .codec import Reader, Writer, decode
from .errors import MlsDecodeError
from .structs import (
    Extension,
    HPKEPublicKey,
    LeafNode,
    _check_uint,
    _read_extensions,
    _Struct,
    _write_extensions,
)

__all__ = [
    "Add",
    "KeyPackage",
    "Proposal",
    "ProposalType",
    "Remove",
    "Update",
    "decode_proposal",
    "encode_proposal",
]


class ProposalType(enum.IntEnum):
    """§12.1, §17.4 (the tree-changing subset)."""

    ADD = 1
    UPDATE = 2
    REMOVE = 3


@dataclass(frozen=True, slots=True)
class KeyPackage(_Struct):
    """`KeyPackage` (§10). Its `KeyPackageTBS` signature is not checked here."""

    version: int
    cipher_suite: int
    init_key: HPKEPublicKey
    leaf_node: LeafNode
    extensions: tuple[Extension, ...] = ()
    signature: bytes = b""

    def __post_init__(self) -> None:
        _check_uint(self.version, 16, "version")
        _check_uint(self.cipher_suite, 16, "cipher_suite")
        object.__setattr__(self, "extensions", tuple(self.extensions))

    def tbs(self) -> bytes:
        """`KeyPackageTBS`: every field but the signature."""
        w = Writer()
        self._write_content(w)
        return w.getvalue()

    def _write_content(self, w: Writer) -> None:
        w.u16(self.version)
        w.u16(self.cipher_suite)
        w.opaque(self.init_key)
        self.leaf_node._write(w)
        _write_extensions(w, self.extensions)

    def _write(self, w: Writer) -> None:
        self._write_content(w)
        w.opaque(self.signature)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.u16(), r.u16(), r.opaque(), LeafNode._read(r), _read_extensions(r), r.opaque())


@dataclass(frozen=True, slots=True)
class Add:
    """`Add` (§12.1.1)."""

    key_package: KeyPackage


@dataclass(frozen=True, slots=True)
class Update:
    """`Update` (§12.1.2): the sender's new leaf."""

    leaf_node: LeafNode


@dataclass(frozen=True, slots=True)
class Remove:
    """`Remove` (§12.1.3): the leaf index to blank."""

    removed: int

    def __post_init__(self) -> None:
        _check_uint(self.removed, 32, "removed")


Proposal: TypeAlias = Add | Update | Remove


def _write_proposal(w: Writer, proposal: Proposal) -> None:
    if isinstance(proposal, Add):
        w.u16(ProposalType.ADD)
        proposal.key_package._write(w)
    elif isinstance(proposal, Update):
        w.u16(ProposalType.UPDATE)
        proposal.leaf_node._write(w)
    else:
        w.u16(ProposalType.REMOVE)
        w.u32(proposal.removed)


def _read_proposal(r: Reader) -> Proposal:
    kind = r.u16()
    if kind == ProposalType.ADD:
        return Add(KeyPackage._read(r))
    if kind == ProposalType.UPDATE:
        return Update(LeafNode._read(r))
    if kind == ProposalType.REMOVE:
        return Remove(r.u32())
    raise MlsDecodeError(f"unsupported proposal type {kind}")


def encode_proposal(proposal: Proposal) -> bytes:
    """`Proposal` (§12.1): `proposal_type` then the body."""
    w = Writer()
    _write_proposal(w, proposal)
    return w.getvalue()


def decode_proposal(data: bytes) -> Proposal:
    return decode(data, _read_proposal)

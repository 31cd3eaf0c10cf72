"""What the store reads of mls-rs's opaque group state: its MLS group id and epoch.

The bindings expose neither a group id nor an epoch getter, and `write()` is told only the
group id, so the epoch is parsed from the state bytes. The layout is that of the pinned
binding, agentvault-mls-rs-uniffi 0.1.1 (`pip install statecache[mls-rs]` pins it):

    u16 snapshot version (1) | GroupContext: u16 protocol version (1, mls10),
    u16 cipher suite (1) | group id: MLS varint length, bytes | u64 epoch | ...

Anything else is refused (`StateFormatError`) rather than guessed: a store that misread the
epoch would publish at the wrong epoch or never.
"""

from __future__ import annotations

from typing import NamedTuple

from .errors import StateFormatError

__all__ = ["PINNED_BINDING", "StateHead", "parse_state"]

PINNED_BINDING = "agentvault-mls-rs-uniffi 0.1.1"
_PREFIX = bytes.fromhex("000100010001")  # snapshot v1, mls10, suite 1
_MAX_GROUP_ID = 1024


class StateHead(NamedTuple):
    mls_group_id: bytes
    epoch: int


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """An RFC 9420 §2.1.2 variable-length integer at `at`, in its shortest form."""
    if at >= len(data):
        raise StateFormatError(_refusal("ends before the group id"))
    prefix = data[at] >> 6
    if prefix == 3:
        raise StateFormatError(_refusal("has an invalid group id length"))
    size = 1 << prefix
    if at + size > len(data):
        raise StateFormatError(_refusal("ends inside the group id length"))
    value = int.from_bytes(data[at : at + size], "big") & ((1 << (8 * size - 2)) - 1)
    if size > 1 and value < 1 << (8 * (size >> 1) - 2):
        raise StateFormatError(_refusal("has a non-minimal group id length"))
    return value, at + size


def _refusal(what: str) -> str:
    return f"mls-rs group state {what}: this store reads the layout of {PINNED_BINDING}"


def parse_state(state: bytes, expect_group_id: bytes | None = None) -> StateHead:
    """The MLS group id and epoch of `state`; when `expect_group_id` is given (the id
    mls-rs passed to `write()`), the parsed id must be it."""
    if state[: len(_PREFIX)] != _PREFIX:
        raise StateFormatError(_refusal("does not start with snapshot v1, mls10, suite 1"))
    length, at = _varint(state, len(_PREFIX))
    if not 1 <= length <= _MAX_GROUP_ID:
        raise StateFormatError(_refusal(f"has a group id of {length} bytes"))
    if at + length + 8 > len(state):
        raise StateFormatError(_refusal("ends before the epoch"))
    group_id = state[at : at + length]
    epoch = int.from_bytes(state[at + length : at + length + 8], "big")
    if expect_group_id is not None and group_id != expect_group_id:
        raise StateFormatError(_refusal("names another group than mls-rs wrote it for"))
    return StateHead(group_id, epoch)

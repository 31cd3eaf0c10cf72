"""What one sealed own-state holds: the MLS group id, its epoch, mls-rs's state and the
newest epoch records, in a small strict encoding (big-endian, no trailing bytes, counts and
sizes bounded before anything is allocated)::

    u8 version (1) | u16 len, group id | u64 epoch | u32 len, state
    | u16 count | count x (u64 record id, u32 len, data), ids increasing
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pre

from .errors import StoreError

__all__ = ["MAX_RECORDS", "OwnState"]

VERSION = 1
MAX_RECORDS = 64
_MAX_GROUP_ID = 1024


@dataclass(frozen=True)
class OwnState:
    mls_group_id: bytes
    epoch: int
    state: bytes
    records: tuple[tuple[int, bytes], ...]  # (epoch id, mls-rs epoch record), oldest first

    def __post_init__(self) -> None:
        if not 1 <= len(self.mls_group_id) <= _MAX_GROUP_ID:
            raise ValueError("an MLS group id here is 1 to 1024 bytes")
        if not 0 <= self.epoch < 1 << 64 or len(self.records) > MAX_RECORDS:
            raise ValueError("epoch or record count out of range")
        ids = [i for i, _ in self.records]
        # mls-rs's ids are the epochs left (below the current one); not required here, so
        # the store does not refuse a write over a detail it does not depend on.
        if ids != sorted(set(ids)) or any(not 0 <= i < 1 << 64 for i in ids):
            raise ValueError("record ids must increase")

    def to_bytes(self) -> bytes:
        parts = [
            struct.pack(">BH", VERSION, len(self.mls_group_id)),
            self.mls_group_id,
            struct.pack(">QI", self.epoch, len(self.state)),
            self.state,
            struct.pack(">H", len(self.records)),
        ]
        for record_id, data in self.records:
            parts += [struct.pack(">QI", record_id, len(data)), data]
        out = b"".join(parts)
        if len(out) > pre.MAX_OWN_STATE_PLAINTEXT:
            raise ValueError("own state too large for one snapshot")
        return out

    @classmethod
    def from_bytes(cls, data: bytes) -> OwnState:
        reader = _Reader(data)
        if reader.take(">B")[0] != VERSION:
            raise StoreError("own state of an unknown version")
        group_id = reader.bytes(reader.take(">H")[0])
        epoch, size = reader.take(">QI")
        state = reader.bytes(size)
        (count,) = reader.take(">H")
        if count > MAX_RECORDS:
            raise StoreError(f"own state holds {count} epoch records, more than {MAX_RECORDS}")
        records = []
        for _ in range(count):
            record_id, size = reader.take(">QI")
            records.append((record_id, reader.bytes(size)))
        if reader.at != len(data):
            raise StoreError("own state has trailing bytes")
        try:
            return cls(group_id, epoch, state, tuple(records))
        except ValueError as exc:
            raise StoreError(f"own state malformed: {exc}") from exc


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, fmt: str) -> tuple[int, ...]:
        size = struct.calcsize(fmt)
        self._need(size)
        values: tuple[int, ...] = struct.unpack_from(fmt, self.data, self.at)
        self.at += size
        return values

    def bytes(self, size: int) -> bytes:
        self._need(size)
        self.at += size
        return self.data[self.at - size : self.at]

    def _need(self, size: int) -> None:
        if self.at + size > len(self.data):
            raise StoreError("own state truncated")

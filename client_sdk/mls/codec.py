"""The TLS presentation language as RFC 9420 §2.1 uses it.

Big-endian `uint8/16/32/64`; variable-length vectors whose byte length is a QUIC-style
varint (RFC 9000 §16) that MUST use its shortest form (§2.1.2); `optional<T>` behind a
presence octet that MUST be 0 or 1 (§2.1.1). Decoding is strict: a non-minimal or `11`
length prefix, a length past the end, an item overrunning its vector, an unknown enum
value or trailing bytes all raise `MlsDecodeError`, so `encode(decode(b)) == b` whenever
decoding succeeds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from .errors import MlsDecodeError

__all__ = ["MAX_VECTOR_LENGTH", "Reader", "Writer", "decode"]

T = TypeVar("T")

MAX_VECTOR_LENGTH = (1 << 30) - 1
"""The largest length a variable-size vector header can carry (§2.1.2)."""

# The smallest value each longer form may carry: anything below fits the shorter form.
_VARINT_MINIMUM = {1: 1 << 6, 2: 1 << 14}


class Writer:
    """Accumulates one encoding. Out-of-range values are the caller's mistake: ValueError."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def _uint(self, value: int, width: int) -> None:
        if not 0 <= value < 1 << (8 * width):
            raise ValueError(f"{value} does not fit in uint{8 * width}")
        self._parts.append(value.to_bytes(width, "big"))

    def u8(self, value: int) -> None:
        self._uint(value, 1)

    def u16(self, value: int) -> None:
        self._uint(value, 2)

    def u32(self, value: int) -> None:
        self._uint(value, 4)

    def u64(self, value: int) -> None:
        self._uint(value, 8)

    def varint(self, value: int) -> None:
        """The shortest of the 1-, 2- or 4-byte forms (§2.1.2)."""
        if 0 <= value < 1 << 6:
            self._parts.append(value.to_bytes(1, "big"))
        elif 0 <= value < 1 << 14:
            self._parts.append((value | 0x4000).to_bytes(2, "big"))
        elif 0 <= value <= MAX_VECTOR_LENGTH:
            self._parts.append((value | 0x8000_0000).to_bytes(4, "big"))
        else:
            raise ValueError(f"vector length {value} cannot be encoded")

    def raw(self, data: bytes) -> None:
        self._parts.append(bytes(data))

    def opaque(self, data: bytes) -> None:
        """`opaque field<V>`."""
        self.varint(len(data))
        self._parts.append(bytes(data))

    def vector(self, items: Iterable[T], write_item: Callable[[Writer, T], None]) -> None:
        """`T field<V>`: the length prefix counts bytes, not items."""
        inner = Writer()
        for item in items:
            write_item(inner, item)
        self.opaque(inner.getvalue())

    def optional(self, value: T | None, write_value: Callable[[Writer, T], None]) -> None:
        """`optional<T>`."""
        if value is None:
            self._parts.append(b"\x00")
        else:
            self._parts.append(b"\x01")
            write_value(self, value)

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads one encoding; every failure is an `MlsDecodeError`."""

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes | memoryview, start: int = 0, end: int | None = None) -> None:
        self._data = memoryview(data)
        self._pos = start
        self._end = len(self._data) if end is None else end

    def _advance(self, n: int) -> int:
        start = self._pos
        if n > self._end - start:
            raise MlsDecodeError("truncated encoding")
        self._pos = start + n
        return start

    def take(self, n: int) -> bytes:
        start = self._advance(n)
        return bytes(self._data[start : start + n])

    def _uint(self, width: int) -> int:
        start = self._advance(width)
        return int.from_bytes(self._data[start : start + width], "big")

    def u8(self) -> int:
        pos = self._pos  # inlined: the hottest call when decoding a tree
        if pos >= self._end:
            raise MlsDecodeError("truncated encoding")
        self._pos = pos + 1
        return self._data[pos]

    def u16(self) -> int:
        return self._uint(2)

    def u32(self) -> int:
        return self._uint(4)

    def u64(self) -> int:
        return self._uint(8)

    def tell(self) -> int:
        """The read position: with `since`, the exact bytes a value was decoded from."""
        return self._pos

    def since(self, start: int) -> bytes:
        return bytes(self._data[start : self._pos])

    def varint(self) -> int:
        first = self.u8()
        if first < 0x40:  # the 1-byte form
            return first
        prefix = first >> 6
        if prefix == 3:
            raise MlsDecodeError("invalid variable-length integer prefix")
        value = first & 0x3F
        for _ in range((1 << prefix) - 1):
            value = (value << 8) | self.u8()
        if prefix >= 1 and value < _VARINT_MINIMUM[prefix]:
            raise MlsDecodeError("variable-length integer not minimally encoded")
        return value

    def opaque(self) -> bytes:
        pos, end = self._pos, self._end
        if pos < end and self._data[pos] < 0x40:  # a 1-byte length: keys, names, hashes
            start = pos + 1
            stop = start + self._data[pos]
            if stop > end:
                raise MlsDecodeError("truncated encoding")
            self._pos = stop
            return bytes(self._data[start:stop])
        return self.take(self.varint())

    def uints(self, width: int) -> list[int]:
        """`uintN field<V>` (N = 8 x `width`): what `vector` of `u16`/`u32` reads, faster."""
        n = self.varint()
        start = self._advance(n)
        if n % width:
            raise MlsDecodeError("truncated encoding")
        data = self._data
        return [int.from_bytes(data[i : i + width], "big") for i in range(start, start + n, width)]

    def vector(self, read_item: Callable[[Reader], T]) -> list[T]:
        n = self.varint()
        if n == 0:
            return []
        start = self._advance(n)
        inner = Reader(self._data, start, start + n)
        items: list[T] = []
        while not inner.at_end():
            before = inner._pos
            items.append(read_item(inner))
            if inner._pos == before:  # pragma: no cover - no zero-size item type exists
                raise MlsDecodeError("empty vector item")
        return items

    def optional(self, read_value: Callable[[Reader], T]) -> T | None:
        present = self.u8()
        if present == 0:
            return None
        if present == 1:
            return read_value(self)
        raise MlsDecodeError("optional presence octet is neither 0 nor 1")

    def at_end(self) -> bool:
        return self._pos == self._end

    def finish(self) -> None:
        if self._pos != self._end:
            raise MlsDecodeError("trailing bytes after encoding")


def decode(data: bytes, read: Callable[[Reader], T]) -> T:
    """Decode exactly one value from `data`, rejecting trailing bytes."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    reader = Reader(data)
    value = read(reader)
    reader.finish()
    return value

"""Canonical, versioned, deterministic binary encoding of every record `pre` signs or stores.

The style is RFC 9420's (TLS presentation language): fields in declaration order,
big-endian fixed-width integers, variable-length vectors prefixed by a QUIC variable-length
integer (RFC 9000 §16) in its shortest form, optional values behind a presence octet.
Each record starts with a type tag and a format version. A record has exactly one encoding:
decoding rejects non-minimal lengths, unknown tags and versions, and trailing bytes, so
`encode(decode(b)) == b` whenever decoding succeeds, and signatures cover exactly the
bytes that were checked.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from typing import Any, ClassVar, Generic, Self, TypeVar

from .errors import DecodeError

FORMAT_VERSION = 1
_MAX_VARINT = (1 << 30) - 1

T = TypeVar("T")


@enum.unique
class Tag(enum.IntEnum):
    """Type tags. Never reuse a value: old encodings must keep failing as the wrong type."""

    ACCOUNT_SECRETS = 0x01
    DEVICE_SECRETS = 0x02
    ACCOUNT_RECORD = 0x10
    DEVICE_KEYS = 0x11
    DEVICE_CERTIFICATE = 0x12
    REVOCATION = 0x13
    ACCOUNT_MANIFEST = 0x14
    MANIFEST_UPDATE = 0x15
    MANIFEST_NODE = 0x16
    MANIFEST_LABEL = 0x17
    MANIFEST_DEVICE = 0x18
    MANIFEST_GRANT = 0x19
    MANIFEST_PURGE = 0x1A
    GRANT_KEY = 0x1B
    PURGE = 0x1C
    ACCOUNT_DELETION = 0x1D
    KEY_CAPSULE = 0x20
    GRANT_SHARE = 0x21
    CAPSULE_FRAGMENT = 0x22
    SNAPSHOT_HEADER = 0x30
    SEALED_SNAPSHOT = 0x31
    PASSPHRASE_BOX = 0x40
    NODE_SECRETS = 0x50
    REVOCATION_RECEIPT = 0x51
    SHARE_REF = 0x52
    PURGE_RECEIPT = 0x53
    SNAPSHOT_RECEIPT = 0x54
    DELETION_RECEIPT = 0x55
    ENROLLMENT_REQUEST = 0x60


class Writer:
    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def raw(self, data: bytes) -> None:
        self._parts.append(data)

    def uint(self, value: int, width: int) -> None:
        self._parts.append(value.to_bytes(width, "big"))

    def varint(self, value: int) -> None:
        if value < 1 << 6:
            self._parts.append(value.to_bytes(1, "big"))
        elif value < 1 << 14:
            self._parts.append((value | 0x4000).to_bytes(2, "big"))
        elif value <= _MAX_VARINT:
            self._parts.append((value | 0x8000_0000).to_bytes(4, "big"))
        else:
            raise ValueError("vector too long to encode")

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def take(self, n: int) -> bytes:
        end = self._pos + n
        if n < 0 or end > len(self._data):
            raise DecodeError("truncated encoding")
        out = bytes(self._data[self._pos : end])
        self._pos = end
        return out

    def uint(self, width: int) -> int:
        return int.from_bytes(self.take(width), "big")

    def varint(self) -> int:
        first = self.uint(1)
        prefix = first >> 6
        if prefix == 0:
            return first
        if prefix == 1:
            value = ((first & 0x3F) << 8) | self.uint(1)
            minimum = 1 << 6
        elif prefix == 2:
            value = ((first & 0x3F) << 24) | self.uint(3)
            minimum = 1 << 14
        else:
            raise DecodeError("invalid length prefix")
        if value < minimum:
            raise DecodeError("non-minimal length prefix")
        return value

    def at_end(self) -> bool:
        return self._pos == len(self._data)

    def finish(self) -> None:
        if self._pos != len(self._data):
            raise DecodeError("trailing bytes after encoding")


class Spec(Generic[T]):
    """How one field is written, read and checked."""

    def write(self, w: Writer, value: T) -> None:
        raise NotImplementedError

    def read(self, r: Reader) -> T:
        raise NotImplementedError

    def check(self, value: object) -> None:
        """Raise TypeError/ValueError when a caller builds a record with a bad value."""


class UInt(Spec[int]):
    def __init__(self, width: int) -> None:
        self.width = width
        self.limit = 1 << (8 * width)

    def write(self, w: Writer, value: int) -> None:
        w.uint(value, self.width)

    def read(self, r: Reader) -> int:
        return r.uint(self.width)

    def check(self, value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"expected int, got {type(value).__name__}")
        if not 0 <= value < self.limit:
            raise ValueError(f"integer out of range for {self.width} bytes")


class Fixed(Spec[bytes]):
    def __init__(self, size: int) -> None:
        self.size = size

    def write(self, w: Writer, value: bytes) -> None:
        w.raw(value)

    def read(self, r: Reader) -> bytes:
        return r.take(self.size)

    def check(self, value: object) -> None:
        if not isinstance(value, bytes):
            raise TypeError(f"expected bytes, got {type(value).__name__}")
        if len(value) != self.size:
            raise ValueError(f"expected {self.size} bytes, got {len(value)}")


class Opaque(Spec[bytes]):
    def __init__(self, max_size: int, min_size: int = 0) -> None:
        self.max_size = max_size
        self.min_size = min_size

    def write(self, w: Writer, value: bytes) -> None:
        w.varint(len(value))
        w.raw(value)

    def read(self, r: Reader) -> bytes:
        n = r.varint()
        if not self.min_size <= n <= self.max_size:
            raise DecodeError("vector length out of bounds")
        return r.take(n)

    def check(self, value: object) -> None:
        if not isinstance(value, bytes):
            raise TypeError(f"expected bytes, got {type(value).__name__}")
        if not self.min_size <= len(value) <= self.max_size:
            raise ValueError(f"length {len(value)} outside [{self.min_size}, {self.max_size}]")


class Text(Spec[str]):
    """UTF-8 text, bounded in bytes and matched against a full-string pattern."""

    def __init__(self, max_bytes: int, pattern: str) -> None:
        self.max_bytes = max_bytes
        self.pattern = re.compile(pattern)

    def write(self, w: Writer, value: str) -> None:
        data = value.encode()
        w.varint(len(data))
        w.raw(data)

    def read(self, r: Reader) -> str:
        n = r.varint()
        if n > self.max_bytes:
            raise DecodeError("text too long")
        try:
            value = r.take(n).decode("utf-8", errors="strict")
        except UnicodeDecodeError as exc:
            raise DecodeError("text is not UTF-8") from exc
        if not self.pattern.fullmatch(value):
            raise DecodeError("text has a disallowed form")
        return value

    def check(self, value: object) -> None:
        if not isinstance(value, str):
            raise TypeError(f"expected str, got {type(value).__name__}")
        if len(value.encode()) > self.max_bytes or not self.pattern.fullmatch(value):
            raise ValueError(f"text {value[:40]!r} has a disallowed form or length")


E = TypeVar("E", bound=enum.IntEnum)


class Enum8(Spec[E]):
    def __init__(self, cls: type[E]) -> None:
        self.cls = cls

    def write(self, w: Writer, value: E) -> None:
        w.uint(int(value), 1)

    def read(self, r: Reader) -> E:
        raw = r.uint(1)
        try:
            return self.cls(raw)
        except ValueError as exc:
            raise DecodeError("unknown enumeration value") from exc

    def check(self, value: object) -> None:
        if not isinstance(value, self.cls):
            raise TypeError(f"expected {self.cls.__name__}")


class Maybe(Spec[T | None]):
    def __init__(self, inner: Spec[T]) -> None:
        self.inner = inner

    def write(self, w: Writer, value: T | None) -> None:
        if value is None:
            w.uint(0, 1)
        else:
            w.uint(1, 1)
            self.inner.write(w, value)

    def read(self, r: Reader) -> T | None:
        flag = r.uint(1)
        if flag == 0:
            return None
        if flag != 1:
            raise DecodeError("invalid presence octet")
        return self.inner.read(r)

    def check(self, value: object) -> None:
        if value is not None:
            self.inner.check(value)


class Seq(Spec[tuple[T, ...]]):
    """A vector of items, its length in octets prefixed, bounded in item count."""

    def __init__(self, inner: Spec[T], max_items: int) -> None:
        self.inner = inner
        self.max_items = max_items

    def write(self, w: Writer, value: tuple[T, ...]) -> None:
        inner = Writer()
        for item in value:
            self.inner.write(inner, item)
        body = inner.getvalue()
        w.varint(len(body))
        w.raw(body)

    def read(self, r: Reader) -> tuple[T, ...]:
        body = Reader(r.take(r.varint()))
        items: list[T] = []
        while not body.at_end():
            if len(items) == self.max_items:
                raise DecodeError("too many items")
            items.append(self.inner.read(body))
        return tuple(items)

    def check(self, value: object) -> None:
        if not isinstance(value, tuple):
            raise TypeError("expected a tuple")
        if len(value) > self.max_items:
            raise ValueError("too many items")
        for item in value:
            self.inner.check(item)


R = TypeVar("R", bound="Record")


class Nested(Spec[R]):
    """Another record, carried as its complete encoding (tag and version included)."""

    def __init__(self, cls: type[R], max_size: int) -> None:
        self.cls = cls
        self.opaque = Opaque(max_size)

    def write(self, w: Writer, value: R) -> None:
        self.opaque.write(w, value.to_bytes())

    def read(self, r: Reader) -> R:
        return self.cls.from_bytes(self.opaque.read(r))

    def check(self, value: object) -> None:
        if not isinstance(value, self.cls):
            raise TypeError(f"expected {self.cls.__name__}")


def wire(spec: Spec[Any], *, signature: bool = False) -> Any:
    """Declare a record field with its encoding. A `signature` field is left out of `tbs()`."""
    return dataclasses.field(metadata={"spec": spec, "signature": signature})


class Record:
    """Base of frozen dataclasses with one canonical encoding.

    Subclasses set `TAG` and declare every field with `wire(...)`; values are checked on
    construction, so a record that exists can always be encoded.
    """

    TAG: ClassVar[Tag]
    _fields: ClassVar[tuple[tuple[str, Spec[Any], bool], ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Filled lazily: dataclass() runs after __init_subclass__.
        cls._fields = ()

    @classmethod
    def _specs(cls) -> tuple[tuple[str, Spec[Any], bool], ...]:
        if not cls._fields:
            cls._fields = tuple(
                (f.name, f.metadata["spec"], bool(f.metadata["signature"]))
                for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            )
        return cls._fields

    def __post_init__(self) -> None:
        for name, spec, _ in self._specs():
            spec.check(getattr(self, name))

    def _encode(self, *, with_signature: bool) -> bytes:
        w = Writer()
        w.uint(self.TAG, 1)
        w.uint(FORMAT_VERSION, 1)
        for name, spec, is_sig in self._specs():
            if is_sig and not with_signature:
                continue
            spec.write(w, getattr(self, name))
        return w.getvalue()

    def to_bytes(self) -> bytes:
        # Records are immutable, so the encoding is computed once (headers are hashed,
        # signed and stored several times on the hot path).
        cached: bytes | None = self.__dict__.get("_encoded")
        if cached is None:
            cached = self._encode(with_signature=True)
            object.__setattr__(self, "_encoded", cached)
        return cached

    def tbs(self) -> bytes:
        """The bytes a signature over this record covers: the encoding minus signatures."""
        return self._encode(with_signature=False)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("expected bytes")
        r = Reader(bytes(data))
        if r.uint(1) != cls.TAG:
            raise DecodeError(f"not a {cls.__name__} encoding")
        if r.uint(1) != FORMAT_VERSION:
            raise DecodeError("unsupported format version")
        values = {name: spec.read(r) for name, spec, _ in cls._specs()}
        r.finish()
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"invalid {cls.__name__} field") from exc

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def hidden_repr(cls_name: str, *shown: tuple[str, object]) -> str:
    """A repr that names public parts only: secrets never reach logs or tracebacks."""
    inner = ", ".join(f"{k}={v!r}" for k, v in shown)
    return f"{cls_name}({inner})"

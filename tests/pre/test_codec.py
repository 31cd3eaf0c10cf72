"""The canonical encoding: varints, framing, and the one-encoding-per-record rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pre import (
    CapsuleFragment,
    DecodeError,
    DeviceCertificate,
    DeviceKeys,
    DeviceSecrets,
    KeyCapsule,
    Role,
    SnapshotHeader,
)
from pre._codec import Reader, Record, Writer

MAX_VARINT = (1 << 30) - 1
PROPERTY = settings(max_examples=250, deadline=None)


def encode_varint(value: int) -> bytes:
    w = Writer()
    w.varint(value)
    return w.getvalue()


def decode_varint(data: bytes) -> int:
    r = Reader(data)
    value = r.varint()
    r.finish()
    return value


@pytest.mark.parametrize(
    ("value", "encoding"),
    [
        (0, "00"),
        (37, "25"),
        (63, "3f"),
        (64, "4040"),
        (15293, "7bbd"),
        (16383, "7fff"),
        (16384, "80004000"),
        (494878333, "9d7f3e7d"),
        (MAX_VARINT, "bfffffff"),
    ],
)
def test_varint_known_encodings(value: int, encoding: str) -> None:
    """RFC 9000 §16 (the 8-byte form is not used: lengths stay below 2**30)."""
    assert encode_varint(value).hex() == encoding
    assert decode_varint(bytes.fromhex(encoding)) == value


@PROPERTY
@given(st.integers(0, MAX_VARINT))
def test_varint_round_trip_in_shortest_form(value: int) -> None:
    data = encode_varint(value)
    assert decode_varint(data) == value
    assert len(data) == (1 if value < 1 << 6 else 2 if value < 1 << 14 else 4)


@PROPERTY
@given(st.integers(0, (1 << 6) - 1))
def test_two_byte_form_of_a_small_value_is_rejected(value: int) -> None:
    with pytest.raises(DecodeError, match="non-minimal"):
        decode_varint((0x4000 | value).to_bytes(2, "big"))


@PROPERTY
@given(st.integers(0, (1 << 14) - 1))
def test_four_byte_form_of_a_smaller_value_is_rejected(value: int) -> None:
    with pytest.raises(DecodeError, match="non-minimal"):
        decode_varint((0x8000_0000 | value).to_bytes(4, "big"))


@PROPERTY
@given(st.binary(min_size=7, max_size=7))
def test_eight_byte_form_is_rejected(rest: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_varint(b"\xc0" + rest)


def test_varint_too_large_to_encode() -> None:
    with pytest.raises(ValueError):
        encode_varint(MAX_VARINT + 1)


@pytest.mark.parametrize("data", ["", "40", "8000", "800040"])
def test_truncated_varint_is_rejected(data: str) -> None:
    with pytest.raises(DecodeError):
        decode_varint(bytes.fromhex(data))


def test_non_minimal_length_prefix_inside_a_record_is_rejected() -> None:
    fragment = CapsuleFragment(label="account", key_epoch=1, cfrag=b"\x01\x02")
    data = fragment.to_bytes()
    assert (
        data == bytes.fromhex("2201") + b"\x07account" + bytes.fromhex("00000001") + b"\x02\x01\x02"
    )
    for label_prefix, cfrag_prefix in ((b"\x40\x07", b"\x02"), (b"\x07", b"\x40\x02")):
        stretched = (
            bytes.fromhex("2201")
            + label_prefix
            + b"account"
            + bytes.fromhex("00000001")
            + cfrag_prefix
            + b"\x01\x02"
        )
        with pytest.raises(DecodeError, match="non-minimal"):
            CapsuleFragment.from_bytes(stretched)


def test_every_truncation_is_rejected(
    record_type: type[Record], sample_records: dict[type[Record], tuple[Record, ...]]
) -> None:
    data = sample_records[record_type][0].to_bytes()
    for end in range(len(data)):
        with pytest.raises(DecodeError):
            record_type.from_bytes(data[:end])


def test_trailing_bytes_are_rejected(
    record_type: type[Record], sample_records: dict[type[Record], tuple[Record, ...]]
) -> None:
    data = sample_records[record_type][0].to_bytes()
    for extra in (b"\x00", b"\x01", data):
        with pytest.raises(DecodeError, match="trailing"):
            record_type.from_bytes(data + extra)


def test_unknown_version_is_rejected(
    record_type: type[Record], sample_records: dict[type[Record], tuple[Record, ...]]
) -> None:
    data = sample_records[record_type][0].to_bytes()
    for version in (0, 2, 255):
        with pytest.raises(DecodeError, match="version"):
            record_type.from_bytes(data[:1] + bytes([version]) + data[2:])


def test_encoding_of_one_type_is_not_another(
    record_types: list[type[Record]],
    sample_records: dict[type[Record], tuple[Record, ...]],
) -> None:
    for source in record_types:
        data = sample_records[source][0].to_bytes()
        for target in record_types:
            if target is not source:
                with pytest.raises(DecodeError):
                    target.from_bytes(data)


def test_signature_is_the_last_field_and_outside_tbs(
    record_type: type[Record], sample_records: dict[type[Record], tuple[Record, ...]]
) -> None:
    for record in sample_records[record_type]:
        signature = getattr(record, "signature", None)
        if signature is None:
            assert record.tbs() == record.to_bytes()
        else:
            assert record.to_bytes() == record.tbs() + signature


def test_invalid_presence_octet_is_rejected(
    sample_records: dict[type[Record], tuple[Record, ...]],
) -> None:
    capsule = next(c for c in sample_records[KeyCapsule] if c.previous_kek is None)
    data = capsule.to_bytes()
    # previous_kek's presence octet sits right before created_at and the signature.
    position = len(data) - 64 - 8 - 1
    assert data[position] == 0
    KeyCapsule.from_bytes(data[:position] + b"\x00" + data[position + 1 :])
    for octet in (2, 0x80, 0xFF):
        with pytest.raises(DecodeError, match="presence"):
            KeyCapsule.from_bytes(data[:position] + bytes([octet]) + data[position + 1 :])


def test_unknown_enumeration_value_is_rejected(
    sample_records: dict[type[Record], tuple[Record, ...]],
) -> None:
    cert = sample_records[DeviceCertificate][0]
    assert isinstance(cert, DeviceCertificate)
    data = cert.to_bytes()
    nested = len(cert.keys.to_bytes())
    position = 2 + 32 + 16 + len(encode_varint(nested)) + nested
    assert data[position] == cert.role
    for value in (0, 3, 255):
        with pytest.raises(DecodeError, match="enumeration"):
            DeviceCertificate.from_bytes(data[:position] + bytes([value]) + data[position + 1 :])


@pytest.mark.parametrize(
    "text",
    [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"accoun\xf4"],
    ids=["ff", "overlong", "surrogate", "cut"],
)
def test_text_must_be_strict_utf8(text: bytes) -> None:
    data = bytes.fromhex("2201") + bytes([len(text)]) + text + bytes(4) + b"\x01\x00"
    with pytest.raises(DecodeError, match="UTF-8"):
        CapsuleFragment.from_bytes(data)


def test_text_must_match_its_pattern() -> None:
    good = bytes.fromhex("2201") + b"\x07account" + bytes(4) + b"\x01\x00"
    assert CapsuleFragment.from_bytes(good).label == "account"
    for label in (b"Account", b"account ", b"group:", b"group:a+b"):
        data = bytes.fromhex("2201") + bytes([len(label)]) + label + bytes(4) + b"\x01\x00"
        with pytest.raises(DecodeError, match="form"):
            CapsuleFragment.from_bytes(data)


def test_opaque_bounds_are_enforced_on_decode() -> None:
    empty_cfrag = bytes.fromhex("2201") + b"\x07account" + bytes(4) + b"\x00"
    with pytest.raises(DecodeError, match="bounds"):
        CapsuleFragment.from_bytes(empty_cfrag)
    huge = bytes.fromhex("2201") + b"\x07account" + bytes(4) + bytes.fromhex("4401") + bytes(1025)
    with pytest.raises(DecodeError, match="bounds"):
        CapsuleFragment.from_bytes(huge)


def test_field_that_fails_the_record_check_is_a_decode_error(
    sample_records: dict[type[Record], tuple[Record, ...]],
) -> None:
    """Values each field accepts, together invalid (a group label naming another group)."""
    header = sample_records[SnapshotHeader][0]
    assert isinstance(header, SnapshotHeader)
    with pytest.raises(ValueError):
        header.replace(label="group:AA")
    data = header.to_bytes()
    relabelled = data.replace(b"\x07account", b"\x08group:AA", 1)
    with pytest.raises(DecodeError, match="invalid SnapshotHeader"):
        SnapshotHeader.from_bytes(relabelled)


def test_from_bytes_accepts_buffers_but_not_text() -> None:
    keys = DeviceSecrets.generate().public_keys
    data = keys.to_bytes()
    assert DeviceKeys.from_bytes(bytearray(data)) == keys
    assert DeviceKeys.from_bytes(memoryview(data)) == keys
    with pytest.raises(TypeError):
        DeviceKeys.from_bytes(data.hex())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"role": 1}, TypeError),
        ({"not_before": True}, TypeError),
        ({"not_before": -1}, ValueError),
        ({"not_after": 2**64}, ValueError),
        ({"name": "tab\there"}, ValueError),
        ({"name": "x" * 65}, ValueError),
        ({"name": "é" * 33}, ValueError),
        ({"name": b"bytes"}, TypeError),
        ({"device_id": bytes(15)}, ValueError),
        ({"keys": b"keys"}, TypeError),
        ({"signature": bytearray(64)}, TypeError),
    ],
    ids=repr,
)
def test_building_a_record_with_bad_values_is_a_caller_error(
    sample_records: dict[type[Record], tuple[Record, ...]],
    changes: dict[str, object],
    error: type[Exception],
) -> None:
    cert = sample_records[DeviceCertificate][0]
    with pytest.raises(error):
        cert.replace(**changes)


def test_role_values_are_stable() -> None:
    assert [(r.name, r.value) for r in Role] == [("MEMBER", 1), ("ADMIN", 2)]

"""The encoding inside a sealed own state: strict, bounded, one encoding per value."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.mlsrs import OwnState, StoreError
from client_sdk.mlsrs.payload import MAX_RECORDS

OWN = OwnState(b"group", 9, b"state bytes", ((7, b"record 7"), (8, b"record 8")))


@settings(max_examples=100, deadline=None)
@given(
    group=st.binary(min_size=1, max_size=300),
    epoch=st.integers(0, 2**64 - 1),
    state=st.binary(max_size=500),
    records=st.dictionaries(st.integers(0, 2**64 - 1), st.binary(max_size=50), max_size=5),
)
def test_round_trip(group: bytes, epoch: int, state: bytes, records: dict[int, bytes]) -> None:
    own = OwnState(group, epoch, state, tuple(sorted(records.items())))
    assert OwnState.from_bytes(own.to_bytes()) == own


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x02" + OWN.to_bytes()[1:],  # an unknown version
        OWN.to_bytes()[:-1],  # truncated
        OWN.to_bytes() + b"\x00",  # trailing bytes
        b"\x01\x00\x00" + OWN.to_bytes()[8:],  # an empty group id
        # records out of order
        OwnState(b"g", 9, b"", ((7, b"a"),)).to_bytes()[:-13]
        + struct.pack(">HQI", 2, 8, 1)
        + b"b"
        + struct.pack(">QI", 7, 1)
        + b"a",
    ],
)
def test_malformed_is_refused(data: bytes) -> None:
    with pytest.raises(StoreError):
        OwnState.from_bytes(data)


def test_counts_are_bounded_before_reading() -> None:
    head = OwnState(b"g", 9, b"", ()).to_bytes()[:-2]
    with pytest.raises(StoreError, match="more than"):
        OwnState.from_bytes(head + struct.pack(">H", MAX_RECORDS + 1))
    # a length beyond the data is refused, not allocated
    with pytest.raises(StoreError, match="truncated"):
        OwnState.from_bytes(head + struct.pack(">HQI", 1, 1, 2**32 - 1))

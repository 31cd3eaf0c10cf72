"""A device's own MLS state: sealed for that device alone, bound to its address and epoch."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pre import (
    MAX_OWN_STATE_PLAINTEXT,
    OWN_STATE_ADDRESS_SIZE,
    DecodeError,
    DecryptionError,
    DeviceSecrets,
    PreError,
    open_own_state,
    own_state_address,
    owns_own_state_address,
    seal_own_state,
)
from tests.pre.conftest import device_secrets

DEVICE = device_secrets("own-state/phone")
OTHER = device_secrets("own-state/laptop")
GROUP = b"mls group \x00\x01"
ADDRESS = own_state_address(DEVICE.device_id, GROUP)
STATE = b"mls-rs group state and epoch records"


@settings(max_examples=50, deadline=None)
@given(
    group=st.binary(min_size=1, max_size=200),
    epoch=st.integers(0, 2**64 - 1),
    plaintext=st.binary(max_size=2000),
)
def test_round_trip(group: bytes, epoch: int, plaintext: bytes) -> None:
    address = own_state_address(DEVICE.device_id, group)
    sealed = seal_own_state(DEVICE, address, epoch, plaintext)
    assert open_own_state(DEVICE, address, epoch, sealed) == plaintext
    if len(plaintext) >= 8:
        assert plaintext not in sealed


def test_address_is_the_devices_own_and_hides_the_group() -> None:
    assert len(ADDRESS) == OWN_STATE_ADDRESS_SIZE
    assert own_state_address(OTHER.device_id, GROUP) != ADDRESS
    assert own_state_address(DEVICE.device_id, GROUP + b"\x00") != ADDRESS
    assert GROUP not in ADDRESS
    # length-prefixed: moving a byte between device id and group id changes the address
    assert own_state_address(bytes(16), b"\x01\x02") != own_state_address(
        bytes(15) + b"\x01", b"\x00\x02"
    )
    # It begins with the device id: nodes take an own state there from that device only.
    assert owns_own_state_address(DEVICE.device_id, ADDRESS)
    assert not owns_own_state_address(OTHER.device_id, ADDRESS)
    assert not owns_own_state_address(DEVICE.device_id, ADDRESS[:-1])


@pytest.mark.parametrize(
    ("device_id", "group"), [(bytes(15), GROUP), (bytes(17), GROUP), (bytes(16), b"")]
)
def test_address_refuses_bad_arguments(device_id: bytes, group: bytes) -> None:
    with pytest.raises(ValueError):
        own_state_address(device_id, group)


def test_sealing_is_randomised() -> None:
    one = seal_own_state(DEVICE, ADDRESS, 3, STATE)
    two = seal_own_state(DEVICE, ADDRESS, 3, STATE)
    assert one != two
    assert open_own_state(DEVICE, ADDRESS, 3, one) == open_own_state(DEVICE, ADDRESS, 3, two)


def test_another_device_cannot_open(make_device: Callable[[str], DeviceSecrets]) -> None:
    """Not even a device of the same account (it holds every label's KEK, not this key)."""
    sealed = seal_own_state(DEVICE, ADDRESS, 3, STATE)
    for other in (OTHER, make_device("own-state/tablet")):
        with pytest.raises(DecryptionError):
            open_own_state(other, ADDRESS, 3, sealed)


def test_same_signing_seed_other_pre_secret_cannot_open() -> None:
    """The key derives from all of the device's secrets."""
    twin = DeviceSecrets(DEVICE.signing_seed, OTHER.pre_secret)
    with pytest.raises(DecryptionError):
        open_own_state(twin, ADDRESS, 3, seal_own_state(DEVICE, ADDRESS, 3, STATE))


@pytest.mark.parametrize(
    ("address", "epoch"),
    [
        (own_state_address(DEVICE.device_id, b"another group"), 3),
        (own_state_address(OTHER.device_id, GROUP), 3),
        (ADDRESS, 2),
        (ADDRESS, 4),
    ],
)
def test_wrong_address_or_epoch_does_not_open(address: bytes, epoch: int) -> None:
    sealed = seal_own_state(DEVICE, ADDRESS, 3, STATE)
    with pytest.raises(DecryptionError):
        open_own_state(DEVICE, address, epoch, sealed)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_any_alteration_fails(data: st.DataObject) -> None:
    sealed = bytearray(seal_own_state(DEVICE, ADDRESS, 3, STATE))
    index = data.draw(st.integers(0, len(sealed) - 1))
    sealed[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(PreError):
        open_own_state(DEVICE, ADDRESS, 3, bytes(sealed))


@pytest.mark.parametrize("cut", [0, 1, 13, 28])
def test_truncated_is_a_decode_error(cut: int) -> None:
    sealed = seal_own_state(DEVICE, ADDRESS, 3, STATE)
    with pytest.raises(DecodeError):
        open_own_state(DEVICE, ADDRESS, 3, sealed[:cut])


def test_unknown_version_is_a_decode_error() -> None:
    sealed = seal_own_state(DEVICE, ADDRESS, 3, STATE)
    with pytest.raises(DecodeError, match="version"):
        open_own_state(DEVICE, ADDRESS, 3, b"\x02" + sealed[1:])


def test_seal_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError):
        seal_own_state(DEVICE, ADDRESS[:31], 0, STATE)
    with pytest.raises(ValueError):
        seal_own_state(DEVICE, ADDRESS, -1, STATE)
    with pytest.raises(ValueError):
        seal_own_state(DEVICE, ADDRESS, 2**64, STATE)
    with pytest.raises(ValueError):
        seal_own_state(DEVICE, ADDRESS, 0, bytes(MAX_OWN_STATE_PLAINTEXT + 1))

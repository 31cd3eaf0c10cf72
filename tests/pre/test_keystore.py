"""Passphrase boxes for the device keystore."""

from __future__ import annotations

import pytest

from pre import DecodeError, DecryptionError, open_with_passphrase, seal_with_passphrase
from pre.keystore import _PassphraseBox

PASSPHRASE = "correct horse"
# Offsets in a box's encoding: tag, version, salt (16), then the scrypt parameters.
LOG2_N, R, P = 18, 19, 20


def test_box_opens_with_its_passphrase(passphrase_box: bytes) -> None:
    assert open_with_passphrase(passphrase_box, PASSPHRASE) == b"device secrets"


def test_default_cost_round_trip() -> None:
    box = seal_with_passphrase(b"\x00" * 64, "pw")
    assert _PassphraseBox.from_bytes(box).log2_n == 15
    assert open_with_passphrase(box, "pw") == b"\x00" * 64


@pytest.mark.parametrize("wrong", ["correct horse ", "Correct horse", "correct hors", "x"])
def test_wrong_passphrase_is_a_decryption_error(passphrase_box: bytes, wrong: str) -> None:
    with pytest.raises(DecryptionError):
        open_with_passphrase(passphrase_box, wrong)


def test_sealing_is_randomised(passphrase_box: bytes) -> None:
    again = seal_with_passphrase(b"device secrets", PASSPHRASE, log2_n=10)
    assert again != passphrase_box
    assert open_with_passphrase(again, PASSPHRASE) == b"device secrets"


def test_box_layout(passphrase_box: bytes) -> None:
    box = _PassphraseBox.from_bytes(passphrase_box)
    assert passphrase_box[LOG2_N : P + 1] == bytes([box.log2_n, box.r, box.p]) == bytes([10, 8, 1])
    assert b"device secrets" not in passphrase_box


@pytest.mark.parametrize(
    ("offset", "value"),
    [(LOG2_N, 9), (LOG2_N, 21), (LOG2_N, 255), (R, 0), (R, 9), (P, 0), (P, 5)],
)
def test_hostile_scrypt_parameters_are_refused_before_any_work(
    passphrase_box: bytes, offset: int, value: int
) -> None:
    """Bounded on decode: a hostile file cannot make opening cost more than the maximum."""
    box = bytearray(passphrase_box)
    box[offset] = value
    with pytest.raises(DecodeError):
        open_with_passphrase(bytes(box), PASSPHRASE)


@pytest.mark.parametrize("log2_n", [9, 21])
def test_seal_refuses_out_of_range_cost(log2_n: int) -> None:
    with pytest.raises(ValueError):
        seal_with_passphrase(b"s", "pw", log2_n=log2_n)


def test_seal_refuses_an_empty_passphrase() -> None:
    with pytest.raises(ValueError):
        seal_with_passphrase(b"s", "")


@pytest.mark.parametrize("data", [b"", b"\x40", b"\x40\x01", b"\x01\x01" + bytes(40)])
def test_not_a_box_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        open_with_passphrase(data, PASSPHRASE)


def test_empty_secret_round_trip() -> None:
    assert open_with_passphrase(seal_with_passphrase(b"", "pw", log2_n=10), "pw") == b""

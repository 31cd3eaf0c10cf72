"""Enrolment requests: self-signed by the new device, bound to the account set-up it was
given; device fingerprints; the text checksum."""

from __future__ import annotations

import re

import pytest

from pre import (
    ENROLLMENT_CHECKSUM_SIZE,
    AccountSecrets,
    BindingError,
    DecodeError,
    DeviceKeys,
    DeviceSecrets,
    EnrollmentRequest,
    PreError,
    SignatureError,
    device_fingerprint,
    enrollment_checksum,
    make_enrollment_request,
)

NODES = ("http://127.0.0.1:8701", "http://127.0.0.1:8702", "http://127.0.0.1:8703")


@pytest.fixture(scope="module")
def request_(account: AccountSecrets, member_device: DeviceSecrets) -> EnrollmentRequest:
    return make_enrollment_request(
        member_device, account_id=account.account_id, nodes=NODES, threshold=2, name="laptop"
    )


def test_a_request_verifies_and_round_trips(
    request_: EnrollmentRequest, member_device: DeviceSecrets, account: AccountSecrets
) -> None:
    decoded = EnrollmentRequest.from_bytes(request_.to_bytes()).verify()
    assert decoded == request_
    assert decoded.verify_for(member_device.public_keys) is decoded
    assert (decoded.account_id, decoded.nodes, decoded.threshold, decoded.name) == (
        account.account_id,
        NODES,
        2,
        "laptop",
    )
    assert decoded.device_id == member_device.device_id


@pytest.mark.parametrize(
    "change",
    [
        {"account_id": bytes(32)},
        {"nodes": NODES[:2]},
        {"nodes": (NODES[1], NODES[0], NODES[2])},
        {"threshold": 3},
        {"name": "phone"},
    ],
    ids=["account", "fewer nodes", "node order", "threshold", "name"],
)
def test_every_field_is_signed(request_: EnrollmentRequest, change: dict[str, object]) -> None:
    with pytest.raises(SignatureError):
        request_.replace(**change).verify()


def test_another_devices_keys_do_not_verify(
    request_: EnrollmentRequest, stranger_device: DeviceSecrets
) -> None:
    """A request whose keys were swapped for another device's (signature kept) fails: the
    signature proves possession of the signing key it names."""
    swapped = request_.replace(keys=stranger_device.public_keys)
    with pytest.raises(SignatureError):
        swapped.verify()
    with pytest.raises(BindingError):
        request_.verify_for(stranger_device.public_keys)


def test_the_signature_is_domain_separated(
    request_: EnrollmentRequest, member_device: DeviceSecrets
) -> None:
    """The same device's signature over the same bytes in another context is refused."""
    other = member_device.sign("http-request", request_.tbs())
    with pytest.raises(SignatureError):
        request_.replace(signature=other).verify()


def test_bad_set_ups_and_names_are_refused(member_device: DeviceSecrets) -> None:
    def make(nodes: tuple[str, ...] = NODES, threshold: int = 2, name: str = "") -> object:
        return make_enrollment_request(
            member_device, account_id=bytes(32), nodes=nodes, threshold=threshold, name=name
        )

    for bad in (
        {"threshold": 0},
        {"threshold": 4},
        {"nodes": ()},
        {"nodes": (NODES[0], NODES[0])},
        {"nodes": ("ftp://x",)},
        {"name": "lap\u202etop"},
        {"name": "x" * 65},
    ):
        with pytest.raises(ValueError):
            make(**bad)  # type: ignore[arg-type]


def test_decoding_refuses_a_bad_set_up(request_: EnrollmentRequest) -> None:
    """Field rules hold for decoded requests too: a threshold above the node count, or a
    name with a bidi override, is a DecodeError, not a record."""
    data = request_.to_bytes()
    threshold_at = data.index(bytes([2]) + bytes([len(b"laptop")]) + b"laptop")
    high = data[:threshold_at] + bytes([4]) + data[threshold_at + 1 :]
    with pytest.raises(DecodeError):
        EnrollmentRequest.from_bytes(high)
    with pytest.raises(DecodeError):
        EnrollmentRequest.from_bytes(data + b"\x00")
    with pytest.raises(DecodeError):
        EnrollmentRequest.from_bytes(data[:-1])


def test_fingerprints(member_device: DeviceSecrets, stranger_device: DeviceSecrets) -> None:
    keys = member_device.public_keys
    fingerprint = device_fingerprint(keys)
    assert re.fullmatch(r"\d{5}( \d{5}){5}", fingerprint)
    assert device_fingerprint(DeviceKeys.from_bytes(keys.to_bytes())) == fingerprint
    assert device_fingerprint(stranger_device.public_keys) != fingerprint
    # Either key changes it: a swapped PRE key alone would let the wrong device read.
    mixed = DeviceKeys(keys.signing_key, stranger_device.public_keys.pre_key)
    assert device_fingerprint(mixed) != fingerprint


def test_fingerprint_known_answer() -> None:
    """Pinned: a change of the derivation changes every fingerprint people compare."""
    keys = DeviceKeys(bytes(range(32)), SECP256K1_GENERATOR)
    assert device_fingerprint(keys) == KNOWN_FINGERPRINT


def test_checksum() -> None:
    text = b"sc2.abc"
    assert len(enrollment_checksum(text)) == ENROLLMENT_CHECKSUM_SIZE
    assert enrollment_checksum(text) == enrollment_checksum(bytes(text))
    assert enrollment_checksum(text) != enrollment_checksum(b"sc2.abd")
    assert enrollment_checksum(text) != enrollment_checksum(b"sc2.ab")


KNOWN_FINGERPRINT = "28028 89032 73346 09161 53042 71667"
# A valid pre_key (DeviceKeys refuses one that is not a curve point): secp256k1's G.
SECP256K1_GENERATOR = bytes.fromhex(
    "0279BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798"
)


def test_a_pre_key_off_the_curve_is_refused(member_device: DeviceSecrets) -> None:
    """Certified, it would fail every grant made for it: refused where keys are made or
    decoded, so an enrolment request carrying one never reaches an approval."""
    bad = b"\x02" + b"\xff" * 32
    with pytest.raises(PreError):
        DeviceKeys(member_device.public_keys.signing_key, bad)
    raw = member_device.public_keys.to_bytes()
    with pytest.raises(PreError):
        DeviceKeys.from_bytes(raw[: -len(bad)] + bad)

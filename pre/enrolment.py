"""A new device's enrolment request, self-signed, and the fingerprint people compare.

A device that wants to join an account makes an `EnrollmentRequest`: its public keys, the
account id, node list and threshold it was given, and its name, signed by its own signing
key (proof of possession: whoever made the request holds the key the certificate will
name). The admin checks the signature and compares the device's fingerprint, a short
number derived from its public keys, with the one the new device shows: a request
swapped in transit carries other keys, so another fingerprint.

`enrollment_checksum` is a short domain-separated hash the text form of a request carries
(`client_sdk.enrolment`): it catches a changed, missing or extra character before any
decoding, with a message people can act on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import _primitives as prim
from ._codec import Fixed, Nested, Record, Seq, Tag, Text, UInt, wire
from .certificates import DEVICE_NAME, _check_device_name
from .errors import BindingError
from .keys import ACCOUNT_ID_SIZE, SIGNATURE_SIZE, DeviceKeys, DeviceSecrets

__all__ = [
    "ENROLLMENT_CHECKSUM_SIZE",
    "EnrollmentRequest",
    "device_fingerprint",
    "enrollment_checksum",
    "make_enrollment_request",
]

MAX_ENROLLMENT_NODES = 255  # as many as a manifest may name
ENROLLMENT_CHECKSUM_SIZE = 6
_URL = Text(512, r"https?://[!-~]{1,500}")
_FINGERPRINT_GROUPS = 6
_FINGERPRINT_DIGITS = 5


@dataclass(frozen=True)
class EnrollmentRequest(Record):
    """What a new device asks an admin to certify, signed by the device itself.

    `nodes` (in share order) and `threshold` are what the device was told its account
    uses; the admin's approval refuses a request whose account, nodes or threshold differ
    from the account's own, so a device is never certified into a set-up it cannot use."""

    TAG = Tag.ENROLLMENT_REQUEST
    account_id: bytes = wire(Fixed(ACCOUNT_ID_SIZE))
    keys: DeviceKeys = wire(Nested(DeviceKeys, 128))
    nodes: tuple[str, ...] = wire(Seq(_URL, MAX_ENROLLMENT_NODES))
    threshold: int = wire(UInt(1))
    name: str = wire(DEVICE_NAME)
    signature: bytes = wire(Fixed(SIGNATURE_SIZE), signature=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.threshold <= len(self.nodes):
            raise ValueError("need 1 <= threshold <= number of nodes")
        if len(set(self.nodes)) != len(self.nodes):
            raise ValueError("a node is named twice")
        _check_device_name(self.name)

    @property
    def device_id(self) -> bytes:
        return self.keys.device_id

    @property
    def fingerprint(self) -> str:
        return device_fingerprint(self.keys)

    def verify(self) -> EnrollmentRequest:
        """Check the device's own signature over the request (proof of possession)."""
        prim.ed25519_verify(self.keys.signing_key, "enrollment-request", self.tbs(), self.signature)
        return self

    def verify_for(self, device: DeviceKeys) -> EnrollmentRequest:
        """`verify`, and that the request is the one of `device`."""
        if self.keys != device:
            raise BindingError("enrolment request is for another device")
        return self.verify()


def make_enrollment_request(
    device: DeviceSecrets,
    *,
    account_id: bytes,
    nodes: Sequence[str],
    threshold: int,
    name: str = "",
) -> EnrollmentRequest:
    unsigned = EnrollmentRequest(
        account_id=account_id,
        keys=device.public_keys,
        nodes=tuple(nodes),
        threshold=threshold,
        name=name,
        signature=bytes(SIGNATURE_SIZE),
    )
    return unsigned.replace(signature=device.sign("enrollment-request", unsigned.tbs()))


def device_fingerprint(keys: DeviceKeys) -> str:
    """A safety number for a device: six groups of five decimal digits (about 100 bits)
    from a domain-separated hash of its public keys, e.g. "01234 56789 ...", short enough
    to read aloud and compare."""
    digest = prim.digest("device-fingerprint", keys.to_bytes())
    groups = [
        int.from_bytes(digest[5 * i : 5 * i + 5], "big") % 10**_FINGERPRINT_DIGITS
        for i in range(_FINGERPRINT_GROUPS)
    ]
    return " ".join(f"{g:0{_FINGERPRINT_DIGITS}d}" for g in groups)


def enrollment_checksum(text: bytes) -> bytes:
    """The check value of an enrolment request's text form (everything before it)."""
    return prim.digest("enrollment-checksum", text)[:ENROLLMENT_CHECKSUM_SIZE]

"""Enrolment: a new device's secrets and the `sc2.` text an admin approves.

    sc2.<base64url of a pre.EnrollmentRequest>.<base64url of its 6-byte checksum>

The request is signed by the new device's own key (proof of possession) and names the
account id, node list and threshold the device was given, and its name. The checksum, a
domain-separated hash of everything before the last dot, catches a changed, missing or
extra character before anything is decoded. Whitespace (a line break from copying out of
a terminal) is ignored. An `sc1.` request (unsigned, unchecked: before this format) is
refused with a message to enrol again; the device never reached a node, so nothing is lost.

Both sides show the device's fingerprint (`pre.device_fingerprint`, six groups of five
digits): the admin approves only when it matches the one the new device shows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pre
from cache_service.protocol.b64 import decode_b64url, encode_b64url

from .errors import EnrolmentRefused
from .keystore import Profile

__all__ = [
    "PREFIX",
    "check_enrollment",
    "check_fingerprint",
    "check_request",
    "encode_enrollment",
    "enrollment_request",
    "parse_enrollment",
]

PREFIX = "sc2."
OLD_PREFIX = "sc1."
# A request naming 255 nodes of 500-character URLs is about 175,000 characters; nobody
# pastes that. 32 KiB of text is far beyond any real node list, and bounds the work.
MAX_TEXT = 32 * 1024
_DAMAGED = "damaged enrolment request: check it was copied whole"
_WHITESPACE = re.compile(r"\s+")


def encode_enrollment(request: pre.EnrollmentRequest) -> str:
    body = PREFIX + encode_b64url(request.to_bytes())
    return body + "." + encode_b64url(pre.enrollment_checksum(body.encode()))


def enrollment_request(
    name: str = "", *, account_id: bytes, nodes: Sequence[str], threshold: int
) -> tuple[pre.DeviceSecrets, str]:
    """A new device's secrets and the text an admin approves, bound to the account id,
    node list and threshold the device was given."""
    device = pre.DeviceSecrets.generate()
    request = pre.make_enrollment_request(
        device, account_id=account_id, nodes=nodes, threshold=threshold, name=name
    )
    return device, encode_enrollment(request)


def parse_enrollment(blob: str) -> pre.EnrollmentRequest:
    """The request in `blob`, its checksum and the device's signature checked; raises
    `EnrolmentRefused` saying what is wrong."""
    text = _WHITESPACE.sub("", blob[: MAX_TEXT * 2])
    if text.startswith(OLD_PREFIX):
        raise EnrolmentRefused(
            "old_enrolment", "an old enrolment request: run `device enroll` again"
        )
    if not text.startswith(PREFIX):
        raise EnrolmentRefused(
            "damaged_enrolment", f"not a statecache enrolment request (one starts {PREFIX})"
        )
    body, _, check = text.rpartition(".")
    if len(text) > MAX_TEXT or body.count(".") != 1:
        raise EnrolmentRefused("damaged_enrolment", _DAMAGED)
    try:
        expected = decode_b64url(check, max_bytes=pre.ENROLLMENT_CHECKSUM_SIZE)
        if expected != pre.enrollment_checksum(body.encode()):
            raise ValueError("checksum")
        raw = decode_b64url(body[len(PREFIX) :], max_bytes=MAX_TEXT)
        request = pre.EnrollmentRequest.from_bytes(raw)
    except (ValueError, pre.DecodeError) as exc:
        raise EnrolmentRefused("damaged_enrolment", _DAMAGED) from exc
    try:
        return request.verify()
    except pre.PreError as exc:
        raise EnrolmentRefused(
            "invalid_enrolment",
            "enrolment request is not signed by the device it names: do not approve it",
        ) from exc


def _digits(fingerprint: str) -> str:
    return re.sub(r"[\s-]", "", fingerprint)


def check_fingerprint(request: pre.EnrollmentRequest, expected: str) -> None:
    """Refuse unless `expected` (as read aloud or typed: spaces and dashes ignored) is
    the request's device fingerprint."""
    actual = request.fingerprint
    if _digits(expected) != _digits(actual):
        raise EnrolmentRefused(
            "fingerprint_mismatch",
            f"fingerprint mismatch: this request's device is {actual}, not {expected.strip()}; "
            "do not approve it (the request may have been swapped)",
        )


def check_enrollment(
    request: pre.EnrollmentRequest,
    *,
    account_id: bytes,
    nodes: Sequence[str],
    threshold: int,
) -> None:
    """Refuse a request made for another account, node list or threshold than the
    admin's, naming each difference: the device could not use what it would be given."""
    differences = []
    if request.account_id != account_id:
        differences.append(
            f"it is for account {request.account_id.hex()}, this account is {account_id.hex()}"
        )
    if list(request.nodes) != list(nodes):
        differences.append(
            f"its node list is {' '.join(request.nodes)}, this account's is {' '.join(nodes)}"
        )
    if request.threshold != threshold:
        differences.append(f"its threshold is {request.threshold}, this account's is {threshold}")
    if differences:
        raise EnrolmentRefused(
            "enrolment_mismatch",
            "the enrolment request does not match this account: "
            + "; ".join(differences)
            + " (enrol the device again with this account's values)",
        )


def check_request(request: pre.EnrollmentRequest, profile: Profile, expect: str | None) -> None:
    """The fingerprint the admin expects, if given, then the request's account, node list
    and threshold against the admin's `profile`."""
    if expect is not None:
        check_fingerprint(request, expect)
    check_enrollment(
        request, account_id=profile.account_id, nodes=profile.nodes, threshold=profile.threshold
    )

"""Account records, device certificates and revocations."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from pre import (
    AccountRecord,
    AccountSecrets,
    BindingError,
    CertificateError,
    DeviceCertificate,
    DeviceKeys,
    DeviceSecrets,
    Revocation,
    Role,
    SignatureError,
    certify_device,
    register_account,
    revoke_device,
)
from pre.keys import account_id_for


def test_account_record_names_the_account(
    account: AccountSecrets, account_record: AccountRecord, now: int
) -> None:
    assert account_record.verify() is account_record
    assert account_record.account_id == account.account_id
    assert account_record.account_id == account_id_for(account.root_public)
    assert account_record.root_key == account.root_public
    assert account_record.kfrag_verifying_key == account.kfrag_verifying_key
    assert register_account(account, now=now).created_at == now


def test_account_record_with_a_swapped_key_does_not_verify(
    account_record: AccountRecord, other_account_record: AccountRecord
) -> None:
    forged = account_record.replace(kfrag_verifying_key=other_account_record.kfrag_verifying_key)
    with pytest.raises(SignatureError):
        forged.verify()
    # The other account's signature over this account's fields does not verify either.
    with pytest.raises(SignatureError):
        account_record.replace(root_key=other_account_record.root_key).verify()


def test_certificate_binds_device_keys_and_role(
    account: AccountSecrets,
    member_device: DeviceSecrets,
    member_cert: DeviceCertificate,
    admin_cert: DeviceCertificate,
    account_record: AccountRecord,
    now: int,
) -> None:
    assert member_cert.verify(account_record, now=now) is member_cert
    assert member_cert.account_id == account.account_id
    assert member_cert.device_id == member_device.device_id
    assert member_cert.keys == member_device.public_keys
    assert member_cert.role is Role.MEMBER
    assert admin_cert.role is Role.ADMIN
    assert member_cert.name == "member device"


@pytest.mark.parametrize("offset", [0, 1, 99])
def test_certificate_valid_from_not_before_until_before_not_after(
    account: AccountSecrets,
    member_device: DeviceSecrets,
    account_record: AccountRecord,
    now: int,
    offset: int,
) -> None:
    cert = certify_device(
        account, member_device.public_keys, role=Role.MEMBER, not_before=now, not_after=now + 100
    )
    cert.verify(account_record, now=now + offset)


@pytest.mark.parametrize(
    "offset", [-1, 100, 10**6], ids=["not-yet-valid", "at-not-after", "long-expired"]
)
def test_certificate_outside_its_window_is_refused(
    account: AccountSecrets,
    member_device: DeviceSecrets,
    account_record: AccountRecord,
    now: int,
    offset: int,
) -> None:
    cert = certify_device(
        account, member_device.public_keys, role=Role.MEMBER, not_before=now, not_after=now + 100
    )
    with pytest.raises(CertificateError):
        cert.verify(account_record, now=now + offset)


@pytest.mark.parametrize("revoked_at_offset", [0, -1, -1000])
def test_revoked_certificate_is_refused_from_revoked_at_on(
    member_cert: DeviceCertificate, account_record: AccountRecord, now: int, revoked_at_offset: int
) -> None:
    with pytest.raises(CertificateError):
        member_cert.verify(account_record, now=now, revoked_at=now + revoked_at_offset)


def test_certificate_is_valid_before_a_later_revocation(
    member_cert: DeviceCertificate, account_record: AccountRecord, now: int
) -> None:
    assert member_cert.verify(account_record, now=now, revoked_at=now + 1) is member_cert


def test_certificate_for_another_account_is_refused(
    other_account: AccountSecrets,
    member_device: DeviceSecrets,
    account_record: AccountRecord,
    other_account_record: AccountRecord,
    member_cert: DeviceCertificate,
    now: int,
) -> None:
    foreign = certify_device(
        other_account,
        member_device.public_keys,
        role=Role.ADMIN,
        not_before=now - 1,
        not_after=now + 1,
    )
    assert foreign.verify(other_account_record, now=now) is foreign
    with pytest.raises(CertificateError):
        foreign.verify(account_record, now=now)
    with pytest.raises(CertificateError):
        member_cert.verify(other_account_record, now=now)


def test_certificate_claiming_this_account_signed_by_another_is_refused(
    other_account: AccountSecrets,
    member_cert: DeviceCertificate,
    account_record: AccountRecord,
    now: int,
) -> None:
    foreign = certify_device(
        other_account,
        member_cert.keys,
        role=Role.ADMIN,
        not_before=member_cert.not_before,
        not_after=member_cert.not_after,
    )
    with pytest.raises(SignatureError):
        foreign.replace(account_id=member_cert.account_id).verify(account_record, now=now)


def test_certificate_with_altered_fields_is_refused(
    member_cert: DeviceCertificate,
    stranger_device: DeviceSecrets,
    account_record: AccountRecord,
    now: int,
) -> None:
    with pytest.raises(SignatureError):
        member_cert.replace(role=Role.ADMIN).verify(account_record, now=now)
    with pytest.raises(SignatureError):
        member_cert.replace(not_after=member_cert.not_after + 1).verify(account_record, now=now)
    with pytest.raises(SignatureError):
        member_cert.replace(name="admin").verify(account_record, now=now)
    # Another device's keys under this device id: the id no longer matches its key.
    with pytest.raises(CertificateError):
        member_cert.replace(keys=stranger_device.public_keys).verify(account_record, now=now)
    # Another device's keys and id: consistent, but not what the root signed.
    with pytest.raises(SignatureError):
        member_cert.replace(
            keys=stranger_device.public_keys, device_id=stranger_device.device_id
        ).verify(account_record, now=now)
    # Same signing key (and so device id), another PRE key.
    with pytest.raises(SignatureError):
        member_cert.replace(
            keys=DeviceKeys(member_cert.keys.signing_key, stranger_device.public_keys.pre_key)
        ).verify(account_record, now=now)


def test_certify_device_rejects_an_empty_window(
    account: AccountSecrets, member_device: DeviceSecrets, now: int
) -> None:
    with pytest.raises(ValueError, match="not_after"):
        certify_device(
            account, member_device.public_keys, role=Role.MEMBER, not_before=now, not_after=now
        )


def test_device_signatures_verify_under_its_certificate(
    member_device: DeviceSecrets, member_cert: DeviceCertificate, stranger_device: DeviceSecrets
) -> None:
    signature = member_device.sign("http-request", b"GET /x")
    member_cert.verify_signature("http-request", b"GET /x", signature)
    with pytest.raises(SignatureError):
        member_cert.verify_signature("http-request", b"GET /y", signature)
    with pytest.raises(SignatureError):
        member_cert.verify_signature("snapshot", b"GET /x", signature)
    with pytest.raises(SignatureError):
        member_cert.verify_signature(
            "http-request", b"GET /x", stranger_device.sign("http-request", b"GET /x")
        )


def test_revocation_verifies_for_its_account_only(
    account: AccountSecrets,
    other_account: AccountSecrets,
    stranger_device: DeviceSecrets,
    revocation: Revocation,
    account_record: AccountRecord,
    other_account_record: AccountRecord,
    now: int,
) -> None:
    assert revocation.verify(account_record) is revocation
    assert revocation.device_id == stranger_device.device_id
    assert revocation.revoked_at == now
    with pytest.raises(BindingError):
        revocation.verify(other_account_record)
    foreign = revoke_device(other_account, stranger_device.device_id, now=now)
    with pytest.raises(BindingError):
        foreign.verify(account_record)
    with pytest.raises(SignatureError):
        foreign.replace(account_id=account.account_id).verify(account_record)
    with pytest.raises(SignatureError):
        revocation.replace(revoked_at=now + 1).verify(account_record)


def test_ed25519_signatures_are_not_malleable(account_record: AccountRecord) -> None:
    """S + L is the same signature to a lax verifier; a second valid encoding of a signed
    record would break `encode(decode(b)) == b` as a stand-in for "the same record"."""
    group_order = 2**252 + 27742317777372353535851937790883648493
    s = int.from_bytes(account_record.signature[32:], "little")
    malleated = account_record.signature[:32] + (s + group_order).to_bytes(32, "little")
    with pytest.raises(SignatureError):
        account_record.replace(signature=malleated).verify()


def test_request_signatures_are_separate_from_context_signatures(
    member_device: DeviceSecrets, member_cert: DeviceCertificate, stranger_device: DeviceSecrets
) -> None:
    base = b'"@method": POST\n"@signature-params": ("@method");created=1'
    signature = member_device.sign_request(base)
    member_cert.verify_request(base, signature)
    with pytest.raises(SignatureError):
        member_cert.verify_request(base + b" ", signature)
    with pytest.raises(SignatureError):
        member_cert.verify_request(base, stranger_device.sign_request(base))
    with pytest.raises(SignatureError):
        member_cert.verify_request(base, member_device.sign("http-request", base))
    with pytest.raises(SignatureError):
        member_cert.verify_signature("http-request", base, signature)


@pytest.mark.parametrize("bad", ["a\nb", "tab\there", "c1\x85", "rtl\u202eevil", "line\u2028sep"])
def test_device_names_refuse_control_and_bidi_characters(
    account: AccountSecrets, member_device: DeviceSecrets, now: int, bad: str
) -> None:
    with pytest.raises(ValueError):
        certify_device(
            account,
            member_device.public_keys,
            role=Role.MEMBER,
            not_before=now,
            not_after=now + 1,
            name=bad,
        )
    assert (
        certify_device(
            account,
            member_device.public_keys,
            role=Role.MEMBER,
            not_before=now,
            not_after=now + 1,
            name="Ana's laptop (work) ✓",
        ).name
        == "Ana's laptop (work) ✓"
    )


INVISIBLE = {
    "LRM": "\u200e",
    "RLM": "\u200f",
    "ALM": "\u061c",
    "LRI": "\u2066",
    "RLI": "\u2067",
    "FSI": "\u2068",
    "PDI": "\u2069",
    "LRE": "\u202a",
    "RLE": "\u202b",
    "PDF": "\u202c",
    "LRO": "\u202d",
    "RLO": "\u202e",
    "WJ": "\u2060",
    "BOM": "\ufeff",
    "SHY": "\u00ad",
    "LS": "\u2028",
    "PS": "\u2029",
}


def _certify_named(account: AccountSecrets, device: DeviceSecrets, now: int, name: str) -> str:
    cert = certify_device(
        account, device.public_keys, role=Role.MEMBER, not_before=now, not_after=now + 1, name=name
    )
    return cert.name


@pytest.mark.parametrize("char", INVISIBLE.values(), ids=INVISIBLE.keys())
def test_new_device_names_refuse_invisible_formatting_characters(
    account: AccountSecrets, member_device: DeviceSecrets, now: int, char: str
) -> None:
    for name in (f"laptop{char}", f"{char}laptop", f"Ana{char}'s laptop", char):
        with pytest.raises(ValueError, match=f"U\\+{ord(char):04X}"):
            _certify_named(account, member_device, now, name)


def test_every_format_character_but_the_joiners_is_refused(
    account: AccountSecrets, member_device: DeviceSecrets, now: int
) -> None:
    """All of Unicode category Cf (this Python's Unicode version) but ZWNJ and ZWJ: tags,
    interlinear annotations, Mongolian and Arabic format marks, ... not only a list."""
    format_chars = [
        chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"
    ]
    assert {"\u200c", "\u200d", "\u200e", "\ufeff", "\U000e0001"} <= set(format_chars)
    for char in format_chars:
        if char in ("\u200c", "\u200d"):
            continue
        with pytest.raises(ValueError):
            _certify_named(account, member_device, now, f"a{char}b")


@pytest.mark.parametrize(
    "name",
    [
        "\U0001f469\u200d\U0001f4bb laptop",  # woman technologist: a ZWJ emoji sequence
        "\U0001f3f3\ufe0f\u200d\U0001f308 tablet",  # rainbow flag: VS16 and ZWJ
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian "mi-khaham": ZWNJ
        "\u0915\u094d\u200d\u0937",  # Devanagari with ZWJ
        "Ana's laptop (work) \u2713",
    ],
)
def test_device_names_keep_the_joiners_scripts_and_emoji_need(
    account: AccountSecrets, member_device: DeviceSecrets, now: int, name: str
) -> None:
    assert _certify_named(account, member_device, now, name) == name


def test_issued_certificate_with_a_now_refused_name_still_decodes(
    account: AccountSecrets,
    member_device: DeviceSecrets,
    account_record: AccountRecord,
    now: int,
) -> None:
    """The stricter rule is for new certificates: one issued before it (built here as
    `certify_device` used to, without the check) still decodes and verifies."""
    name = "laptop\u200e"
    with pytest.raises(ValueError):
        _certify_named(account, member_device, now, name)
    unsigned = DeviceCertificate(
        account_id=account.account_id,
        device_id=member_device.device_id,
        keys=member_device.public_keys,
        role=Role.MEMBER,
        not_before=now,
        not_after=now + 60,
        name=name,
        signature=bytes(64),
    )
    old = unsigned.replace(signature=account._sign_root("device-certificate", unsigned.tbs()))
    decoded = DeviceCertificate.from_bytes(old.to_bytes())
    assert decoded == old
    assert decoded.name == name
    assert decoded.verify(account_record, now=now) is decoded

"""Any bytes into any decoder: a record (then its only encoding) or a PreError, nothing else.

Three sources of input per record type: arbitrary bytes; arbitrary bytes behind the type's
valid tag and version, so parsing reaches the fields; and valid encodings with a few bytes
overwritten, inserted or cut. Then the places where bytes from elsewhere reach umbral-pre
(key fragments, capsule fragments, capsules, public keys), which must also answer only with
a PreError.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pre import (
    AccountRecord,
    AccountSecrets,
    CapsuleFragment,
    DeviceCertificate,
    DeviceSecrets,
    GrantShare,
    KeyCapsule,
    PreError,
    open_key_capsule_as_owner,
    verify_capsule_fragment,
    verify_grant_share,
)
from pre._codec import Record
from tests.pre.pre_strategies import records
from tests.security.battery import FIGURES, SIZE

# 200 examples per test in `make test`; more under `make soak` (tests/security/battery.py).
FUZZ = settings(max_examples=SIZE.pre_decoder_examples, deadline=None)
CHECK = "decoder_fuzz"  # the security battery's figure these examples count towards


def decode_or_pre_error(record_type: type[Record], data: bytes) -> None:
    FIGURES.add(CHECK, "pre_examples")
    try:
        record = record_type.from_bytes(data)
    except PreError:
        return
    except Exception as exc:
        FIGURES.add(CHECK, "unexpected_exceptions")
        FIGURES.note(CHECK, f"{record_type.__name__}.from_bytes: {type(exc).__name__}")
        raise
    # Decoding succeeded: the input must be the record's one canonical encoding.
    if record.to_bytes() != data:
        FIGURES.add(CHECK, "non_canonical_accepted")
    assert record.to_bytes() == data


@FUZZ
@given(data=st.binary(max_size=600))
def test_any_bytes(record_type: type[Record], data: bytes) -> None:
    decode_or_pre_error(record_type, data)


@FUZZ
@given(payload=st.binary(max_size=600))
def test_any_payload_behind_a_valid_prefix(record_type: type[Record], payload: bytes) -> None:
    decode_or_pre_error(record_type, bytes([record_type.TAG, 1]) + payload)


_EDITS = st.lists(
    st.tuples(
        st.sampled_from(["set", "insert", "delete", "cut"]), st.integers(0), st.integers(0, 255)
    ),
    min_size=1,
    max_size=3,
)


def edited(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for op, where, value in edits:
        at = where % (len(out) + 1)
        if op == "insert":
            out.insert(at, value)
        elif not out or at == len(out):
            continue
        elif op == "set":
            out[at] = value
        elif op == "delete":
            del out[at]
        else:
            del out[at:]
    return bytes(out)


@FUZZ
@given(data=st.data(), edits=_EDITS)
def test_edited_valid_encodings(
    record_type: type[Record], data: st.DataObject, edits: list[tuple[str, int, int]]
) -> None:
    encoding = data.draw(records(record_type)).to_bytes()
    decode_or_pre_error(record_type, edited(encoding, edits))


# Past the decoder: bytes that reach umbral-pre. Each test re-signs where a signature
# would otherwise stop the input before umbral-pre sees it.


@FUZZ
@given(cfrag=st.binary(min_size=1, max_size=600))
def test_any_capsule_fragment_bytes(
    cfrag: bytes,
    capsule1: KeyCapsule,
    account_record: AccountRecord,
    member_device: DeviceSecrets,
) -> None:
    fragment = CapsuleFragment(label=capsule1.label, key_epoch=capsule1.key_epoch, cfrag=cfrag)
    try:
        verify_capsule_fragment(
            fragment, capsule=capsule1, account=account_record, receiver=member_device
        )
    except PreError:
        return
    raise AssertionError("random bytes verified as a capsule fragment")


@FUZZ
@given(kfrag=st.binary(min_size=1, max_size=600))
def test_any_key_fragment_bytes_signed_by_the_account(
    kfrag: bytes,
    account: AccountSecrets,
    account_record: AccountRecord,
    capsule1: KeyCapsule,
    member_cert: DeviceCertificate,
    grant: tuple[GrantShare, ...],
    now: int,
) -> None:
    share = grant[0].replace(kfrag=kfrag)
    share = share.replace(signature=account._sign_kfrag_context("grant-share", share.tbs()))
    try:
        verify_grant_share(
            share,
            account=account_record,
            capsule=capsule1,
            device=member_cert,
            share_index=1,
            now=now,
        )
    except PreError:
        return
    raise AssertionError("random bytes verified as a key fragment")


@FUZZ
@given(
    which=st.sampled_from(["capsule", "encrypted_kek", "label_key"]),
    value=st.binary(min_size=1, max_size=256),
)
def test_any_capsule_contents_signed_by_the_account(
    which: str, value: bytes, account: AccountSecrets, capsule1: KeyCapsule
) -> None:
    if which == "label_key":
        value = (value * 33)[:33]
    capsule = capsule1.replace(**{which: value})
    capsule = capsule.replace(signature=account._sign_root("key-capsule", capsule.tbs()))
    try:
        open_key_capsule_as_owner(account, capsule)
    except PreError:
        return
    raise AssertionError(f"a capsule with random {which} opened")


@FUZZ
@given(key=st.binary(min_size=33, max_size=33), which=st.sampled_from(["kfrag", "label"]))
def test_any_public_key_bytes(
    key: bytes,
    which: str,
    account_record: AccountRecord,
    capsule1: KeyCapsule,
    member_cert: DeviceCertificate,
    grant: tuple[GrantShare, ...],
    now: int,
) -> None:
    account, capsule = account_record, capsule1
    if which == "kfrag":
        account = account_record.replace(kfrag_verifying_key=key)
    else:
        capsule = capsule1.replace(label_key=key)
    try:
        verify_grant_share(
            grant[0], account=account, capsule=capsule, device=member_cert, share_index=1, now=now
        )
    except PreError:
        return
    raise AssertionError(f"a share verified under a random {which} key")

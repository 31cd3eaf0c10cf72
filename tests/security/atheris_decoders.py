"""Coverage-guided fuzzing (atheris / libFuzzer) of every `pre` record decoder and every
wire model, run by tests/security/test_decoder_fuzz.py::test_atheris as

    python tests/security/atheris_decoders.py -runs=N -max_total_time=S

The first input byte picks the target; the rest is its input. A record decoder may only
raise `pre.PreError`, and what it accepts must be its canonical encoding; a model may only
raise pydantic's `ValidationError`. Anything else is left uncaught, so libFuzzer reports it
as a crash (with the input saved under -artifact_prefix) and exits non-zero.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["pre", "cache_service.protocol"]):
    import pydantic

    import pre
    from cache_service.protocol import models as wire
    from cache_service.protocol.b64 import encode_b64url as b64
    from pre._codec import Record

import contextlib

from tests.security.decoders import pre_record_types, wire_models

RECORDS: list[type[Record]] = pre_record_types()
MODELS: list[type[pydantic.BaseModel]] = wire_models()
TARGETS = len(RECORDS) + len(MODELS) + 1  # + the snapshot query's str -> str mapping


def one_input(data: bytes) -> None:
    if not data:
        return
    which, payload = data[0] % TARGETS, data[1:]
    if which < len(RECORDS):
        record_type = RECORDS[which]
        try:
            record = record_type.from_bytes(payload)
        except pre.PreError:
            return
        if record.to_bytes() != payload:
            raise AssertionError(f"{record_type.__name__} accepted a non-canonical encoding")
        return
    which -= len(RECORDS)
    if which < len(MODELS):
        with contextlib.suppress(pydantic.ValidationError):
            MODELS[which].model_validate_json(payload)
        return
    fdp = atheris.FuzzedDataProvider(payload)
    query = {
        fdp.ConsumeUnicodeNoSurrogates(8): fdp.ConsumeUnicodeNoSurrogates(24)
        for _ in range(fdp.ConsumeIntInRange(0, 6))
    }
    with contextlib.suppress(pydantic.ValidationError):
        wire.SnapshotQuery.model_validate(query)


def seeds() -> dict[str, bytes]:
    """A valid encoding of every record type and a valid document of every wire model,
    made with the real API: libFuzzer mutates from inside the formats instead of guessing
    type tags and JSON shapes from nothing."""
    now = 1_700_000_000
    account = pre.AccountSecrets.generate()
    record = pre.register_account(account, now=now)
    device = pre.DeviceSecrets.generate()
    cert = pre.certify_device(
        account, device.public_keys, role=pre.Role.MEMBER, not_before=now, not_after=now + 9
    )
    capsule, kek = pre.create_key_capsule(account, "account", 0, now=now)
    share = pre.make_grant(account, capsule, cert, threshold=1, shares=1, expires_at=now + 9)[0]
    verified = pre.verify_grant_share(
        share, account=record, capsule=capsule, device=cert, share_index=1, now=now
    )
    fragment = pre.reencrypt(capsule, verified)
    sealed = pre.seal_snapshot(
        kek, device, group_id=b"g1", kind="group_state", mls_epoch=3, plaintext=b"x", now=now
    )
    revocation = pre.revoke_device(account, device.device_id, now=now)
    node = pre.NodeSecrets.generate()
    ref = pre.ShareRef("account", 0)
    receipt = node.sign_receipt(
        account_id=record.account_id, device_id=device.device_id, revoked_at=now,
        deleted=(ref,), now=now,
    )  # fmt: skip
    manifest = pre.sign_manifest(account, pre.AccountManifest(
        account_id=record.account_id, version=1, previous=bytes(32), issued_at=now,
        threshold=1, grant_generation=0,
        nodes=(pre.ManifestNode(node_key=node.public_key, share_index=1,
                                url="http://127.0.0.1:8700", operator="op"),),
        labels=(pre.LabelEntry(label="account", key_epoch=0,
                               capsule_hash=pre.capsule_hash(capsule)),),
        devices=(pre.ManifestDevice(device_id=device.device_id,
                                    certificate_hash=pre.certificate_hash(cert), revoked_at=0),),
        grants=(pre.GrantEntry(device_id=device.device_id, label="account", key_epoch=0,
                               expires_at=now + 9, generation=0),),
        purges=(), signature=bytes(64),
    ))  # fmt: skip
    purge = pre.purge_group(account, b"g1", device.device_id, from_epoch=3, now=now)
    later = pre.sign_manifest(
        account,
        manifest.replace(version=2, previous=manifest.digest, grants=(), purges=(purge.entry,)),
    )
    update = pre.manifest_update(manifest, later)
    purge_receipt = node.sign_purge_receipt(
        account_id=record.account_id, purge=purge.to_bytes(), deleted=1, now=now
    )
    snapshot_receipt = node.sign_snapshot_receipt(
        account_id=record.account_id, digest=sealed.digest, stored_at=now
    )
    deletion = pre.delete_account(account, record, now=now)
    deletion_receipt = node.sign_deletion_receipt(
        account_id=record.account_id, deletion=deletion.to_bytes(), deleted=3, now=now
    )
    enrolment = pre.make_enrollment_request(
        device, account_id=record.account_id, nodes=["http://127.0.0.1:8700"], threshold=1
    )
    encodings: dict[str, bytes] = {
        type(r).__name__: r.to_bytes()
        for r in (account, record, device, device.public_keys, cert, capsule, share, fragment,
                  sealed, sealed.header, revocation, node, ref, receipt, manifest, update,
                  *manifest.nodes, *manifest.labels, *manifest.devices, *manifest.grants,
                  *update.grants_removed, purge.entry, purge, purge_receipt, snapshot_receipt,
                  deletion, deletion_receipt, enrolment)
    }  # fmt: skip
    encodings["_PassphraseBox"] = pre.seal_with_passphrase(b"secret", "pw", log2_n=10)

    item = {"label": "account", "key_epoch": 0}
    confirm_item = {
        "group_id": b64(sealed.header.group_id), "kind": sealed.header.kind,
        "mls_epoch": sealed.header.mls_epoch, "digest": b64(sealed.digest),
        "receipts": [b64(snapshot_receipt.to_bytes())],
    }  # fmt: skip
    entry = {"device_id": "ab" * 16, "certificate": b64(cert.to_bytes())}
    capsule_entry = {**item, "current": True, "capsule": b64(capsule.to_bytes())}
    snapshot_item = {
        "seq": 1, **item, "group_id": b64(b"g1"), "kind": "group_state", "mls_epoch": 3,
        "digest": b64(sealed.digest), "snapshot": b64(sealed.to_bytes()),
    }  # fmt: skip
    result = {"status": "stored", "seq": 1}
    documents: dict[str, object] = {
        "RegisterAccountRequest": {
            "account": b64(record.to_bytes()), "admin_certificate": b64(cert.to_bytes())
        },
        "AccountInfo": {"account_id": record.account_id.hex(), "account": b64(record.to_bytes())},
        "DeviceEntry": entry,
        "DeviceList": {"devices": [entry]},
        "DeviceCertificateBody": {"certificate": b64(cert.to_bytes())},
        "RevocationBody": {"revocation": b64(revocation.to_bytes())},
        "RevocationReceiptBody": {"receipt": b64(receipt.to_bytes())},
        "KeyCapsuleBody": {"capsule": b64(capsule.to_bytes())},
        "CapsuleEntry": capsule_entry,
        "CapsuleList": {"capsules": [capsule_entry]},
        "GrantShareBody": {"share": b64(share.to_bytes())},
        "GrantList": {"grants": [b64(share.to_bytes())]},
        "PublishRequest": {"snapshots": [b64(sealed.to_bytes())]},
        "SnapshotBody": {"snapshot": b64(sealed.to_bytes())},
        "PublishResult": result,
        "PublishResponse": {"results": [result]},
        "SnapshotItem": snapshot_item,
        "SnapshotPage": {"items": [snapshot_item], "next_cursor": None, "head": 1},
        "SnapshotQuery": {"order": "desc", "limit": 5},
        "ReencryptItem": item,
        "ReencryptRequest": {"items": [item]},
        "ReencryptResult": {**item, "fragment": b64(fragment.to_bytes())},
        "ReencryptResponse": {"node_id": "n", "share_index": 1, "results": [item]},
        "NodeInfo": {"node_id": "n", "public_key": b64(bytes(32)), "share_index": 1,
                     "version": "0.1.0"},
        "Problem": {"type": "about:blank", "title": "t", "status": 400, "code": "malformed"},
        "ManifestBody": {"manifest": b64(update.to_bytes())},
        "ManifestInfo": {"version": 1, "digest": b64(manifest.digest),
                         "manifest": b64(manifest.to_bytes())},
        "PurgeBody": {"purge": b64(purge.to_bytes())},
        "PurgeReceiptBody": {"receipt": b64(purge_receipt.to_bytes())},
        "AccountDeletionBody": {"deletion": b64(deletion.to_bytes())},
        "DeletionReceiptBody": {
            "receipt": b64(deletion_receipt.to_bytes()), "deletion": b64(deletion.to_bytes())
        },
        "ConfirmItem": confirm_item,
        "ConfirmRequest": {"items": [confirm_item]},
        "ConfirmResult": {"status": "stored"},
        "ConfirmResponse": {"results": [{"status": "kept"}]},
    }  # fmt: skip
    out = {}
    for i, cls in enumerate(RECORDS):
        out[f"record-{cls.__name__}"] = bytes([i]) + encodings[cls.__name__]
    for i, model in enumerate(MODELS):
        if model.__name__ in documents:  # a model without one is fuzzed from scratch
            document = json.dumps(documents[model.__name__]).encode()
            out[f"model-{model.__name__}"] = bytes([len(RECORDS) + i]) + document
    return out


def main() -> None:
    corpus = [Path(arg) for arg in sys.argv[1:] if not arg.startswith("-")]
    if corpus and corpus[0].is_dir() and not any(corpus[0].iterdir()):
        for name, data in seeds().items():
            (corpus[0] / name).write_bytes(data)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

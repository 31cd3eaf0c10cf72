"""The public surface of `pre`: exactly these names, each real, none leaking a backend type.

Changing the list is an API change: update EXPECTED in the same commit, on purpose.
"""

from __future__ import annotations

import dataclasses
import inspect
from functools import cached_property

import pre

EXPECTED = [
    "ACCOUNT_ID_SIZE",
    "AccountDeletion",
    "AccountManifest",
    "AccountRecord",
    "AccountSecrets",
    "BindingError",
    "CapsuleFragment",
    "CertificateError",
    "DEVICE_ID_SIZE",
    "DecodeError",
    "DecryptionError",
    "DeletionReceipt",
    "DeviceCertificate",
    "DeviceKeys",
    "DeviceSecrets",
    "ENROLLMENT_CHECKSUM_SIZE",
    "EnrollmentRequest",
    "FragmentError",
    "GrantEntry",
    "GrantKey",
    "GrantShare",
    "KEK_SIZE",
    "Kek",
    "KeyCapsule",
    "LABEL_PATTERN",
    "LabelEntry",
    "MAX_GROUP_ID_SIZE",
    "MAX_OWN_STATE_PLAINTEXT",
    "MAX_SHARES",
    "MAX_SNAPSHOT_PLAINTEXT",
    "ManifestDevice",
    "ManifestNode",
    "ManifestUpdate",
    "NodeSecrets",
    "OWN_STATE_ADDRESS_SIZE",
    "OWN_STATE_KIND",
    "PreError",
    "Purge",
    "PurgeEntry",
    "PurgeReceipt",
    "Revocation",
    "RevocationReceipt",
    "Role",
    "SNAPSHOT_RECEIPT_SIZE",
    "SealedSnapshot",
    "ShareRef",
    "SignatureError",
    "SnapshotHeader",
    "SnapshotReceipt",
    "UNCHECKED",
    "VerifiedCapsuleFragment",
    "VerifiedGrantShare",
    "account_id_for",
    "apply_update",
    "attest_grant_share",
    "capsule_hash",
    "certificate_hash",
    "certify_device",
    "content_digest",
    "content_hash",
    "create_key_capsule",
    "delete_account",
    "deletion_digest",
    "device_fingerprint",
    "device_id_for",
    "enrollment_checksum",
    "epoch_authenticator_hash",
    "label_for_group",
    "make_enrollment_request",
    "make_grant",
    "manifest_update",
    "node_id_for",
    "open_key_capsule",
    "open_key_capsule_as_owner",
    "open_own_state",
    "open_snapshot",
    "open_with_passphrase",
    "own_state_address",
    "owns_own_state_address",
    "purge_digest",
    "purge_group",
    "reencrypt",
    "register_account",
    "restore_grant_share",
    "revoke_device",
    "seal_own_state",
    "seal_snapshot",
    "seal_with_passphrase",
    "sign_manifest",
    "split_receipts",
    "verify_capsule_fragment",
    "verify_grant_share",
]

BACKENDS = ("umbral", "cryptography", "hazmat", "Ed25519")


def test_all_is_pinned() -> None:
    assert sorted(pre.__all__) == EXPECTED
    assert len(set(pre.__all__)) == len(pre.__all__)


def test_every_exported_name_resolves() -> None:
    for name in pre.__all__:
        assert getattr(pre, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from pre import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == EXPECTED


def test_errors_form_one_family() -> None:
    leaves = {
        pre.DecodeError,
        pre.SignatureError,
        pre.CertificateError,
        pre.BindingError,
        pre.FragmentError,
        pre.DecryptionError,
    }
    for leaf in leaves:
        assert leaf.__bases__ == (pre.PreError,)
    assert pre.PreError.__bases__ == (Exception,)
    exported = {obj for name in pre.__all__ if isinstance(obj := getattr(pre, name), type)}
    assert {cls for cls in exported if issubclass(cls, BaseException)} == leaves | {pre.PreError}


def _annotation_strings(obj: object) -> list[str]:
    try:
        signature = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []
    # Private parameters (a Verified* record's backend object) are not part of the API.
    parts = [str(p.annotation) for p in signature.parameters.values() if p.name[0] != "_"]
    return [*parts, str(signature.return_annotation)]


def _public_annotations(name: str, obj: object) -> dict[str, list[str]]:
    found = {name: _annotation_strings(obj)} if callable(obj) else {}
    if isinstance(obj, type):
        for attr, member in vars(obj).items():
            if attr.startswith("_"):
                continue
            target = member
            if isinstance(member, property):
                target = member.fget
            elif isinstance(member, cached_property):
                target = member.func
            elif isinstance(member, classmethod | staticmethod):
                target = member.__func__
            if inspect.isfunction(target):
                found[f"{name}.{attr}"] = _annotation_strings(target)
        if dataclasses.is_dataclass(obj):
            for field in dataclasses.fields(obj):
                if not field.name.startswith("_"):
                    found[f"{name}.{field.name}"] = [str(field.type)]
    return found


def test_no_backend_type_in_the_public_api() -> None:
    """umbral-pre and `cryptography` objects stay inside `pre` (STYLE.md, point 2)."""
    leaks = []
    for name in pre.__all__:
        for where, types in _public_annotations(name, getattr(pre, name)).items():
            leaks += [f"{where}: {t}" for t in types if any(b in t for b in BACKENDS)]
    assert not leaks

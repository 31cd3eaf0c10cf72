"""The account manifest: root-signed, versioned, one encoding per content, and updates
that a node applies to the previous version and checks against the root's signature."""

from __future__ import annotations

import pytest

import pre
from pre import AccountManifest, AccountSecrets, ManifestUpdate
from tests.pre.conftest import GROUP_ID, NOW, seed


def test_a_signed_manifest_verifies_and_names_its_predecessor(
    account_record: pre.AccountRecord, manifest_v1: AccountManifest, manifest_v2: AccountManifest
) -> None:
    assert manifest_v1.verify(account_record) is manifest_v1
    assert manifest_v2.verify(account_record).previous == manifest_v1.digest
    assert manifest_v1.previous == bytes(32)
    assert AccountManifest.from_bytes(manifest_v2.to_bytes()) == manifest_v2


def test_every_changed_byte_fails_verification(
    account_record: pre.AccountRecord, manifest_v2: AccountManifest
) -> None:
    raw = manifest_v2.to_bytes()
    for i in range(len(raw)):
        changed = bytearray(raw)
        changed[i] ^= 0x01
        with pytest.raises(pre.PreError):
            AccountManifest.from_bytes(bytes(changed)).verify(account_record)


def test_another_accounts_manifest_or_signature_is_refused(
    account: AccountSecrets, account_record: pre.AccountRecord, manifest_v1: AccountManifest
) -> None:
    other = AccountSecrets(seed("another account"))
    with pytest.raises(pre.BindingError):
        pre.sign_manifest(other, manifest_v1.replace(account_id=other.account_id)).verify(
            account_record
        )
    forged = pre.sign_manifest(other, manifest_v1)  # this account's id, another root's key
    with pytest.raises(pre.SignatureError):
        forged.verify(account_record)


def test_an_update_rebuilds_the_next_version_exactly(
    account_record: pre.AccountRecord, manifest_v1: AccountManifest, manifest_v2: AccountManifest
) -> None:
    update = pre.manifest_update(manifest_v1, manifest_v2)
    rebuilt = pre.apply_update(manifest_v1, ManifestUpdate.from_bytes(update.to_bytes()))
    assert rebuilt == manifest_v2 and rebuilt.verify(account_record)
    assert len(update.to_bytes()) < len(manifest_v2.to_bytes())
    assert [k.device_id for k in update.grants_removed] == [g.device_id for g in manifest_v1.grants]


def test_an_update_for_another_base_or_with_other_content_is_refused(
    account: AccountSecrets,
    account_record: pre.AccountRecord,
    manifest_v1: AccountManifest,
    manifest_v2: AccountManifest,
) -> None:
    update = pre.manifest_update(manifest_v1, manifest_v2)
    with pytest.raises(pre.BindingError):
        pre.apply_update(manifest_v2, update)  # not the version it follows
    other_base = pre.sign_manifest(account, manifest_v1.replace(issued_at=NOW + 1))
    with pytest.raises(pre.BindingError):
        pre.apply_update(other_base, update)  # same version, another digest
    # content the root did not sign: the signature over the result fails
    tampered = update.replace(purges=())
    with pytest.raises(pre.SignatureError):
        pre.apply_update(manifest_v1, tampered).verify(account_record)


def test_sections_are_sorted_and_unique_so_one_content_has_one_encoding(
    manifest_v1: AccountManifest,
) -> None:
    devices = manifest_v1.devices
    assert len(devices) == 2
    with pytest.raises(ValueError, match="sorted"):
        manifest_v1.replace(devices=(devices[1], devices[0]))
    with pytest.raises(ValueError, match="sorted"):
        manifest_v1.replace(devices=(devices[0], devices[0]))
    with pytest.raises(ValueError, match=r"shares 1\.\.N"):
        manifest_v1.replace(nodes=manifest_v1.nodes[1:])
    with pytest.raises(ValueError, match="previous"):
        manifest_v1.replace(version=2)


def test_a_purge_is_root_signed_and_names_its_entry(
    account: AccountSecrets, account_record: pre.AccountRecord
) -> None:
    author = bytes(range(16))
    purge = pre.purge_group(account, GROUP_ID, author, from_epoch=9, now=NOW)
    assert purge.verify(account_record).entry == pre.PurgeEntry(
        group_id=GROUP_ID, author=author, from_epoch=9
    )
    with pytest.raises(pre.SignatureError):
        purge.replace(from_epoch=10).verify(account_record)


def test_manifest_lookups(manifest_v1: AccountManifest, member_cert: pre.DeviceCertificate) -> None:
    entry = manifest_v1.label_entry("account")
    assert entry is not None and entry.key_epoch == 1
    assert manifest_v1.label_entry("group:x") is None
    device = manifest_v1.device_entry(member_cert.device_id)
    assert device is not None and device.certificate_hash == pre.certificate_hash(member_cert)
    assert [g.label for g in manifest_v1.grants_of(member_cert.device_id)] == ["account"]
    node = manifest_v1.node_entry(1)
    assert node is not None and node.operator == "operator one"

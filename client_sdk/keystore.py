"""The device's local keystore: its secrets (and the account seed on admin devices), the
account it belongs to, its nodes and their pinned identities.

One JSON file, created 0600 and refused if anyone else can read it. The secrets inside are
sealed with a passphrase (scrypt + AES-GCM, in `pre`) when the device has one; without one
they are in the clear, protected only by the file's mode: whoever reads the file holds the
device's keys (and, on an admin device, the account seed). `reseal` adds, changes or
removes the passphrase of an existing keystore, rewriting only its secrets.
"""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pre
from cache_service.protocol.b64 import decode_b64url, encode_b64url

from .errors import KeystoreError
from .private_files import write_private

if TYPE_CHECKING:
    from .admin_records import AdminRecords

__all__ = ["Profile", "is_sealed", "load_profile", "reseal", "save_profile"]

FORMAT = "statecache-keystore/1"


@dataclass
class Profile:
    """Everything a device needs to talk to its account's nodes."""

    account_id: bytes
    device: pre.DeviceSecrets
    nodes: list[str]
    threshold: int
    account: pre.AccountSecrets | None = None  # admin devices only
    node_keys: dict[str, bytes] = field(default_factory=dict)  # pinned at first contact
    # An admin's own records and manifests (`admin.json` in its home; not in the keystore).
    records: AdminRecords | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= self.threshold <= len(self.nodes):
            raise ValueError("need 1 <= threshold <= number of nodes")
        if self.account is not None and self.account.account_id != self.account_id:
            raise ValueError("account seed is for another account")

    @property
    def is_admin(self) -> bool:
        return self.account is not None


def _secrets_blob(profile: Profile) -> bytes:
    body = {"device": encode_b64url(profile.device.to_bytes())}
    if profile.account is not None:
        body["account"] = encode_b64url(profile.account.to_bytes())
    return json.dumps(body, sort_keys=True).encode()


def save_profile(path: Path, profile: Profile, passphrase: str | None = None) -> None:
    secrets = _secrets_blob(profile)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "account_id": profile.account_id.hex(),
        "nodes": profile.nodes,
        "threshold": profile.threshold,
        "node_keys": {url: encode_b64url(k) for url, k in profile.node_keys.items()},
    }
    _put_secrets(doc, secrets, passphrase)
    _write_private(path, doc)


def _put_secrets(doc: dict[str, Any], secrets: bytes, passphrase: str | None) -> None:
    doc.pop("secrets", None)
    doc.pop("sealed_secrets", None)
    if passphrase is None:
        doc["secrets"] = encode_b64url(secrets)
    else:
        doc["sealed_secrets"] = encode_b64url(pre.seal_with_passphrase(secrets, passphrase))


def _write_private(path: Path, doc: dict[str, Any]) -> None:
    """`doc` as `path`, whole or not at all, mode 0600."""
    write_private(path, json.dumps(doc, indent=2))


def load_profile(path: Path, passphrase: str | None = None) -> Profile:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise KeystoreError(f"no keystore at {path}") from exc
    if stat.S_IMODE(mode) & 0o077:
        raise KeystoreError(f"{path} is readable by others; chmod 600 it")
    try:
        doc = _read_doc(path)
        secrets = json.loads(_secrets_of(doc, passphrase))
        device = pre.DeviceSecrets.from_bytes(decode_b64url(secrets["device"], max_bytes=256))
        account = None
        if "account" in secrets:
            account = pre.AccountSecrets.from_bytes(
                decode_b64url(secrets["account"], max_bytes=256)
            )
        nodes = doc["nodes"]
        if not isinstance(nodes, list) or not all(isinstance(u, str) for u in nodes):
            raise TypeError("nodes must be a list of URLs")
        return Profile(
            account_id=bytes.fromhex(doc["account_id"]),
            device=device,
            nodes=nodes,
            threshold=int(doc["threshold"]),
            account=account,
            node_keys={
                url: decode_b64url(k, max_bytes=32) for url, k in doc.get("node_keys", {}).items()
            },
        )
    except KeystoreError:
        raise
    except (ValueError, KeyError, TypeError, pre.PreError) as exc:
        raise KeystoreError(f"{path} is damaged") from exc


def _read_doc(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise KeystoreError(f"{path} is not a statecache keystore")
    return doc


def _secrets_of(doc: dict[str, Any], passphrase: str | None) -> bytes:
    if "sealed_secrets" in doc:
        if passphrase is None:
            raise KeystoreError("the keystore is locked: give its passphrase")
        sealed = decode_b64url(doc["sealed_secrets"], max_bytes=64 * 1024)
        try:
            return pre.open_with_passphrase(sealed, passphrase)
        except pre.PreError as exc:
            raise KeystoreError("wrong passphrase or damaged keystore") from exc
    return decode_b64url(doc["secrets"], max_bytes=64 * 1024)


def is_sealed(path: Path) -> bool:
    """Whether the keystore at `path` has a passphrase (False if unreadable)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "sealed_secrets" in doc


def reseal(path: Path, old: str | None, new: str | None) -> None:
    """Add (`old` None), change, or remove (`new` None) the keystore's passphrase. The
    secrets are opened with `old` and checked to load before anything is written; the rest
    of the file is kept as it is; the new file replaces the old one atomically (0600)."""
    load_profile(path, old)  # the right passphrase, an undamaged keystore, a safe mode
    try:
        doc = _read_doc(path)
        secrets = _secrets_of(doc, old)
    except (ValueError, KeyError, TypeError, pre.PreError) as exc:
        raise KeystoreError(f"{path} is damaged") from exc
    _put_secrets(doc, secrets, new)
    _write_private(path, doc)

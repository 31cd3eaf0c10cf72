"""What one read verifies against, read afresh from the nodes: the account manifest's
purges, the label keys, the device directory, the clock, and a receipt pool that counts
receipts from the pinned nodes and those the manifest names. A read (`reader.Reader`) and a
tree fetched for a Welcome (`Reader.trees_at`) each use their own."""

from __future__ import annotations

from dataclasses import dataclass

import pre

from .confirmations import RECEIPT_REVOCATION_GRACE, ReceiptPool
from .directory import DeviceDirectory, Directory
from .keyring import Keyring
from .manifest_view import ManifestView
from .session import Session
from .state import SyncState
from .verify import Confirm

__all__ = ["ReadContext", "confirmer", "read_context"]


@dataclass(frozen=True)
class ReadContext:
    purges: tuple[pre.PurgeEntry, ...]
    directory: Directory
    pool: ReceiptPool
    now: int


async def read_context(
    session: Session,
    directory: DeviceDirectory,
    manifests: ManifestView,
    keyring: Keyring,
    state: SyncState,
) -> ReadContext:
    record = await directory.record()
    manifest = await manifests.current(record, state)
    await keyring.refresh(record, manifest)
    devices = await directory.load(manifest)
    now = session.now()
    # Receipts count from the nodes this device pinned and those the root-signed manifest
    # names (a node down at first contact is still known by its key).
    keys = {n.node_key for n in session.nodes if n.node_key is not None}
    keys |= {n.node_key for n in manifest.nodes} if manifest is not None else set()
    return ReadContext(
        () if manifest is None else manifest.purges,
        devices,
        ReceiptPool(record.account_id, frozenset(keys), now),
        now,
    )


def confirmer(context: ReadContext, needed: int) -> Confirm:
    """Whether M valid receipts in the context's pool back a snapshot."""
    directory = context.directory

    def confirm(header: pre.SnapshotHeader, digest: bytes) -> bool:
        # A receipt is a node's clock, the revocation the admin's: a short grace for their
        # skew, not the author's 600 s (a node that had not yet heard of the revocation is
        # exactly what a long grace lets through).
        nodes = context.pool.confirmations(
            header, digest,
            lambda a, t: directory.certificate_at(a, t, grace=RECEIPT_REVOCATION_GRACE),
            needed,
        )  # fmt: skip
        return len(nodes) >= needed

    return confirm

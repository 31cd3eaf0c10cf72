"""Reading this device's own-state backups back from the nodes (for `StatecacheStore.restore`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pre

from ..device import Statecache
from ..errors import RollbackError
from ..outcomes import NodeOutcome
from ..state import Known, SyncState
from ..verify import OpenedSnapshot

__all__ = ["OWN_STATE_KIND", "read_own_backups"]

OWN_STATE_KIND = pre.OWN_STATE_KIND


@asynccontextmanager
async def _fresh_reader(sc: Statecache) -> AsyncIterator[Statecache]:
    """A second SDK instance over the same profile, its read state without own backups.

    Why: a device's `SyncState` remembers the (epoch, digest) of every snapshot it
    published, and a read never yields what the device already holds, so its own backups
    would be skipped. Reading through a copy leaves the device's state untouched (nothing
    of another kind is marked delivered that the application never took), and keeps what
    still protects the read: the manifest version and the other (group, kind) epochs. The
    epochs of the own backups are checked after the read (`read_own_backups`)."""
    held = sc.state
    state = SyncState(
        known={
            k: v
            for k, v in held.known.items()
            if not (k[1] == OWN_STATE_KIND and v.author == sc.profile.device.device_id)
        },
        manifest_version=held.manifest_version,
        manifest_digest=held.manifest_digest,
    )
    session = sc._session  # the caller's retry policy and clock
    fresh = Statecache(sc.profile, state=state, policy=session.policy, clock=session.clock)
    async with fresh:
        yield fresh


async def read_own_backups(
    sc: Statecache, outcomes: dict[str, NodeOutcome] | None = None
) -> dict[bytes, OpenedSnapshot]:
    """The newest confirmed `mls_state` snapshot this device authored, per address.

    Snapshots of other devices' own state are left aside (sealed for them, they do not
    open here). Raises `RollbackError`, after the read, when the nodes served a backup of
    this device older than one it remembers publishing, or none at all: the caller has
    what came back in the exception's `restorable`. `outcomes` receives what the read
    made of each node (a node that served an older backup is `behind`)."""
    device_id = sc.profile.device.device_id
    newest: dict[bytes, OpenedSnapshot] = {}
    async with _fresh_reader(sc) as fresh:
        try:
            async for snap in fresh.onboard():
                if not (
                    isinstance(snap, OpenedSnapshot)
                    and snap.kind == OWN_STATE_KIND
                    and snap.header.author == device_id
                ):
                    continue
                held = newest.get(snap.group_id)
                if held is None or snap.mls_epoch > held.mls_epoch:
                    newest[snap.group_id] = snap
        finally:
            if outcomes is not None:
                outcomes.update(fresh.outcomes)
    floors: dict[bytes, Known] = {
        group_id: known
        for (group_id, kind), known in sc.state.known.items()
        if kind == OWN_STATE_KIND and known.author == device_id
    }
    behind = {
        address: known.mls_epoch
        for address, known in floors.items()
        if address not in newest or newest[address].mls_epoch < known.mls_epoch
    }
    fine = {a: s for a, s in newest.items() if a not in behind}
    if behind:
        raise BackupsBehind(behind, fine)
    return fine


class BackupsBehind(RollbackError):
    """The nodes served some of this device's backups older than it published them."""

    def __init__(self, behind: dict[bytes, int], restorable: dict[bytes, OpenedSnapshot]) -> None:
        super().__init__(
            f"the nodes serve {len(behind)} of this device's MLS state backups older than "
            "it published them, or not at all"
        )
        self.behind = behind
        self.restorable = restorable

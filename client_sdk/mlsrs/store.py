"""`StatecacheStore`: mls-rs's `GroupStateStorage` on local disk, backed up to statecache.

    store = StatecacheStore(home / "mls", profile.device)
    client = Client(name, keypair, ClientConfig(group_state_storage=store,
                                                use_ratchet_tree_extension=False))
    ...                                   # mls-rs calls store.write() on write_to_storage()
    await store.flush(sc)                 # publish the backups of groups whose epoch moved
    await store.restore(sc)               # a device whose MLS data was wiped: load them back

What it keeps, per group, in one file (mode 0600, replaced atomically, fsynced): mls-rs's
current group state and the newest `keep_epochs` epoch records (what decrypts a message of
an earlier epoch that arrives late), sealed with `pre.seal_own_state`. Older records are
deleted on every write, from memory and disk (forward secrecy: the file is rewritten without
them; the file system may keep freed blocks until reused).

Backups. `write()` runs synchronously inside mls-rs, so it only queues: when a group's epoch
moved above the last one backed up, the sealed bytes just written are also kept as the
group's pending backup (its own file: a retry after a crash publishes the very same bytes,
never a second seal at one epoch). `flush()` publishes all pending backups as one
`sc.publish` of `mls_state` snapshots under the `account` label, at the device's own
address (`pre.own_state_address`), so no other device ever writes that (group, kind). The
state also changes within an epoch (every message sent or received ratchets it): those
changes are not published, so a backup is the group as it entered its epoch.

Security (docs/SECURITY.md has the long form):
- the state holds this member's MLS signature secret key: whoever opens it *is* this member
  in the group. It is sealed under a key derived from this device's own secrets, so no other
  device of the account can open it, not even one holding the account seed;
- revoking a device in statecache stops it reading, but it still holds its MLS state: the
  group must remove (or the device update) its leaf in MLS too;
- a restored device holds the group as it entered the epoch: the sending ratchet positions
  it used since are used again if it sends, and those messages are lost (receivers refuse a
  generation they saw). It must commit an update before it sends.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import NamedTuple

import mls_rs_uniffi

import pre

from ..device import Statecache
from ..outcomes import NodeOutcome
from ..private_files import fsync_dir, write_private_bytes
from ..publisher import PublishReport, SnapshotInput
from ..verify import OpenedSnapshot, content_of
from .backups import OWN_STATE_KIND, BackupsBehind, read_own_backups
from .errors import StoreError
from .payload import MAX_RECORDS, OwnState
from .state_format import parse_state

__all__ = ["OWN_STATE_KIND", "StatecacheStore"]

_NAME = re.compile(r"[0-9a-f]{64}")
_STATE, _PENDING, _BACKED = ".state", ".pending", ".backed"


class _Backup(NamedTuple):
    address: bytes
    epoch: int
    sealed: bytes


class StatecacheStore(mls_rs_uniffi.GroupStateStorage):
    """One device's MLS groups. Files in `directory`, named by the group's address:
    `<address>.state` (the group), `<address>.pending` (its backup not yet published) and
    `<address>.backed` (the newest epoch published)."""

    def __init__(self, directory: Path, device: pre.DeviceSecrets, *, keep_epochs: int = 3) -> None:
        if not 1 <= keep_epochs <= MAX_RECORDS:
            # at least one: mls-rs checks a new record's id against the newest it holds
            raise ValueError(f"keep_epochs is 1 to {MAX_RECORDS}")
        self._dir = directory
        self._device = device
        self._keep = keep_epochs
        self._lock = threading.RLock()  # mls-rs may call in from any thread
        self._groups: dict[bytes, OwnState] = {}  # MLS group id -> what is held
        self._backed: dict[bytes, int] = {}  # address -> newest epoch published
        self._pending: dict[bytes, _Backup] = {}  # address -> backup to publish
        self.outcomes: dict[str, NodeOutcome] = {}  # each node, by the last restore's read
        self._load()

    # mls-rs's GroupStateStorage

    def state(self, group_id: bytes) -> bytes | None:
        with self._lock:
            held = self._groups.get(bytes(group_id))
            return None if held is None else held.state

    def epoch(self, group_id: bytes, epoch_id: int) -> bytes | None:
        with self._lock:
            held = self._groups.get(bytes(group_id))
            return None if held is None else dict(held.records).get(epoch_id)

    def max_epoch_id(self, group_id: bytes) -> int | None:
        with self._lock:
            held = self._groups.get(bytes(group_id))
            return held.records[-1][0] if held is not None and held.records else None

    def write(
        self,
        group_id: bytes,
        group_state: bytes,
        epoch_inserts: list[mls_rs_uniffi.EpochRecord],
        epoch_updates: list[mls_rs_uniffi.EpochRecord],
    ) -> None:
        """The new state with its inserted and updated epoch records, then the records
        beyond the newest `keep_epochs` deleted: one file replaced atomically. A group whose
        epoch moved above the last backup also gets its pending backup, before returning."""
        group_id, group_state = bytes(group_id), bytes(group_state)
        head = parse_state(group_state, group_id)
        with self._lock:
            held = self._groups.get(group_id)
            records = dict(held.records) if held is not None else {}
            records.update((int(r.id), bytes(r.data)) for r in epoch_inserts)
            # An update of a record already deleted is not brought back.
            records.update((int(r.id), bytes(r.data)) for r in epoch_updates if r.id in records)
            kept = sorted(records)[-self._keep :]
            own = OwnState(group_id, head.epoch, group_state, tuple((i, records[i]) for i in kept))
            address = self._address(group_id)
            sealed = pre.seal_own_state(self._device, address, head.epoch, own.to_bytes())
            self._save(address, _STATE, _frame(head.epoch, sealed))
            self._groups[group_id] = own
            self._queue(_Backup(address, head.epoch, sealed))

    # what the store holds

    def epoch_of(self, group_id: bytes) -> int | None:
        """The group's current MLS epoch, or None for a group not held."""
        with self._lock:
            held = self._groups.get(group_id)
            return None if held is None else held.epoch

    def groups(self) -> list[bytes]:
        with self._lock:
            return sorted(self._groups)

    def pending(self) -> int:
        """Backups not yet published (one per group at most: its newest epoch)."""
        with self._lock:
            return len(self._pending)

    # statecache

    async def flush(self, sc: Statecache) -> PublishReport | None:
        """Publish every pending backup in one `sc.publish`; None when none is pending.

        Each is then marked backed up and its file deleted. On failure (the exception
        propagates) they stay pending; the next flush sends the same bytes, which the SDK's
        own outbox also holds."""
        self._check_device(sc)
        with self._lock:
            batch = list(self._pending.values())
        if not batch:
            return None
        report = await sc.publish(
            [SnapshotInput(b.address, OWN_STATE_KIND, b.epoch, b.sealed) for b in batch]
        )
        with self._lock:
            for backup in batch:
                self._mark_backed(backup.address, backup.epoch)
        return report

    async def restore(self, sc: Statecache) -> list[bytes]:
        """Load this device's backups from the nodes (same statecache device keys, MLS data
        wiped): each group whose backup is newer than what the store holds is written as
        its state with its epoch records. Returns the MLS group ids restored.

        Then, per group, `client.load_group(group_id)` (any signature keypair: the state
        carries the member's own), and commit an update before sending (see the module).
        Raises `BackupsBehind` (a `RollbackError`) after restoring the rest, when the nodes
        served a backup older than this device remembers publishing, or none.
        `outcomes` then says what the read made of each node."""
        self._check_device(sc)
        self.outcomes = {}
        try:
            found = await read_own_backups(sc, self.outcomes)
        except BackupsBehind as exc:
            self._restore(sc, exc.restorable)
            raise
        return self._restore(sc, found)

    # internals

    def _restore(self, sc: Statecache, found: dict[bytes, OpenedSnapshot]) -> list[bytes]:
        restored = []
        for address, snap in sorted(found.items()):
            try:
                opened = pre.open_own_state(self._device, address, snap.mls_epoch, snap.plaintext)
                own = OwnState.from_bytes(opened)
            except pre.PreError as exc:  # signed by this device and confirmed: not a node's lie
                raise StoreError(f"a backup of this device does not open: {exc}") from exc
            if self._address(own.mls_group_id) != address or own.epoch != snap.mls_epoch:
                raise StoreError("a backup of this device holds another group or epoch")
            # The device now holds it (the chain of its next backup starts from it).
            sc.state.remember(
                address, OWN_STATE_KIND, snap.mls_epoch, snap.digest,
                author=self._device.device_id, content=content_of(snap),
            )  # fmt: skip
            with self._lock:
                held = self._groups.get(own.mls_group_id)
                if held is not None and held.epoch >= own.epoch:
                    continue
                self._save(address, _STATE, _frame(own.epoch, snap.plaintext))
                self._groups[own.mls_group_id] = own
                self._mark_backed(address, own.epoch)
            restored.append(own.mls_group_id)
        return restored

    def _address(self, group_id: bytes) -> bytes:
        return pre.own_state_address(self._device.device_id, group_id)

    def _check_device(self, sc: Statecache) -> None:
        if sc.profile.device.device_id != self._device.device_id:
            raise ValueError("this store belongs to another device than the Statecache's")

    def _queue(self, backup: _Backup) -> None:
        """Keep `backup` to publish if its epoch is above the last published and pending
        (never twice at one epoch; a newer epoch replaces an unpublished older one)."""
        held = self._pending.get(backup.address)
        newest = max(self._backed.get(backup.address, -1), -1 if held is None else held.epoch)
        if backup.epoch <= newest:
            return
        self._save(backup.address, _PENDING, _frame(backup.epoch, backup.sealed))
        self._pending[backup.address] = backup

    def _mark_backed(self, address: bytes, epoch: int) -> None:
        if epoch > self._backed.get(address, -1):
            self._save(address, _BACKED, str(epoch).encode())
            self._backed[address] = epoch
        held = self._pending.get(address)
        if held is not None and held.epoch <= epoch:  # not a newer one queued meanwhile
            del self._pending[address]
            self._path(address, _PENDING).unlink(missing_ok=True)
            fsync_dir(self._dir)

    def _path(self, address: bytes, suffix: str) -> Path:
        return self._dir / (address.hex() + suffix)

    def _save(self, address: bytes, suffix: str, data: bytes) -> None:
        write_private_bytes(self._path(address, suffix), data)
        fsync_dir(self._dir)

    def _load(self) -> None:
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._dir.chmod(0o700)  # one made earlier with looser modes: the files are secrets
        for tmp in self._dir.glob("*.tmp"):  # a crash mid-write: the old file stands
            tmp.unlink(missing_ok=True)
        files: dict[str, list[tuple[bytes, Path]]] = {_STATE: [], _PENDING: [], _BACKED: []}
        for path in self._dir.iterdir():
            if path.suffix in files and _NAME.fullmatch(path.stem):
                files[path.suffix].append((bytes.fromhex(path.stem), path))
        for address, path in files[_BACKED]:
            try:
                self._backed[address] = int(path.read_text())
            except ValueError as exc:
                raise StoreError(f"{path} is damaged") from exc
        states: dict[bytes, _Backup] = {}
        for address, path in files[_STATE]:
            epoch, sealed = _unframe(path)
            try:
                own = OwnState.from_bytes(pre.open_own_state(self._device, address, epoch, sealed))
            except pre.PreError as exc:
                raise StoreError(f"{path} does not open for this device: {exc}") from exc
            if self._address(own.mls_group_id) != address or own.epoch != epoch:
                raise StoreError(f"{path} holds another group or epoch")
            self._groups[own.mls_group_id] = own
            states[address] = _Backup(address, epoch, sealed)
        for address, path in files[_PENDING]:
            epoch, sealed = _unframe(path)
            self._pending[address] = _Backup(address, epoch, sealed)
            self._mark_backed(address, self._backed.get(address, -1))  # published, not let go
        for backup in states.values():
            # A crash between writing a group at a new epoch and queueing its backup: the
            # group's file holds that epoch's first seal, the one to publish.
            self._queue(backup)


def _frame(epoch: int, sealed: bytes) -> bytes:
    return epoch.to_bytes(8, "big") + sealed


def _unframe(path: Path) -> tuple[int, bytes]:
    data = path.read_bytes()
    if len(data) < 9:
        raise StoreError(f"{path} is damaged")
    return int.from_bytes(data[:8], "big"), data[8:]

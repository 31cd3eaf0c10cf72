"""`StatecacheStore`: mls-rs's storage on local sealed files, backed up to real nodes and
restored from them, with real mls-rs clients."""

from __future__ import annotations

import shutil
from pathlib import Path

import mls_rs_uniffi as mls
import pytest

import pre
from client_sdk import ContentConflict, SnapshotInput
from client_sdk.mlsrs import OWN_STATE_KIND, BackupsBehind, OwnState, StatecacheStore
from client_sdk.mlsrs import store as store_module
from client_sdk.verify import OpenedSnapshot
from tests.client_sdk.conftest import Cluster, collect
from tests.mlsrs.members import MemoryStorage, add, client, commit, read, send


def _own_states(directory: Path, device: pre.DeviceSecrets) -> list[OwnState]:
    """Everything the store's files hold, opened (state files and pending backups)."""
    out = []
    for path in sorted(directory.iterdir()):
        assert path.suffix in {".state", ".pending", ".backed"}, path.name
        if path.suffix == ".backed":
            continue
        data = path.read_bytes()
        epoch, sealed = int.from_bytes(data[:8], "big"), data[8:]
        opened = pre.open_own_state(device, bytes.fromhex(path.stem), epoch, sealed)
        out.append(OwnState.from_bytes(opened))
    return out


def _pending_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.glob("*.pending")}


def test_write_is_atomic_and_detects_epochs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = pre.DeviceSecrets.generate()
    store = StatecacheStore(tmp_path / "mls", device)
    alice = client(b"alice", store).create_group(b"group one")
    alice.write_to_storage()
    assert store.groups() == [b"group one"]
    assert (store.epoch_of(b"group one"), store.pending()) == (0, 1)
    bob = add(alice, client(b"bob", MemoryStorage()))
    assert (store.epoch_of(b"group one"), store.max_epoch_id(b"group one")) == (1, 0)
    assert store.pending() == 1  # epoch 1 replaced the unpublished epoch 0
    queued = _pending_files(tmp_path / "mls")
    for i in range(3):  # the state ratchets within the epoch: no new backup
        read(bob, send(alice, b"message %d" % i))
        read(alice, send(bob, b"answer %d" % i))
    assert _pending_files(tmp_path / "mls") == queued
    assert store.epoch_of(b"group one") == 1

    # A write that fails half-way (the disk full, say) leaves the group as it was, in
    # memory and on disk, and mls-rs sees the failure.
    before = store.state(b"group one")

    def torn(path: Path, data: bytes) -> None:
        path.with_name(path.name + ".tmp").write_bytes(data[: len(data) // 2])
        raise OSError("no space left on device")

    monkeypatch.setattr(store_module, "write_private_bytes", torn)
    out = alice.commit()
    alice.process_incoming_message(out.commit_message)
    with pytest.raises(mls.Error, match="no space left"):
        alice.write_to_storage()
    assert store.state(b"group one") == before
    assert store.epoch_of(b"group one") == 1
    monkeypatch.undo()
    reloaded = StatecacheStore(tmp_path / "mls", device)  # the torn temporary file is dropped
    assert not list((tmp_path / "mls").glob("*.tmp"))
    assert reloaded.state(b"group one") == before
    assert reloaded.epoch(b"group one", 0) == store.epoch(b"group one", 0)

    # State and records land together: a reload sees the new epoch with its new record.
    alice.write_to_storage()
    bob.process_incoming_message(out.commit_message)
    reloaded = StatecacheStore(tmp_path / "mls", device)
    assert (reloaded.epoch_of(b"group one"), reloaded.max_epoch_id(b"group one")) == (2, 1)
    assert reloaded.state(b"group one") == store.state(b"group one")
    assert reloaded.pending() == 1


def test_old_epoch_records_are_deleted_from_memory_and_disk(tmp_path: Path) -> None:
    device = pre.DeviceSecrets.generate()
    store = StatecacheStore(tmp_path / "mls", device, keep_epochs=2)
    alice = client(b"alice", store).create_group(b"g")
    alice.write_to_storage()
    bob = add(alice, client(b"bob", MemoryStorage()))
    seen: dict[int, bytes] = {}
    for _ in range(5):
        commit(bob, alice)
        for i in range(store.epoch_of(b"g") or 0):
            record = store.epoch(b"g", i)
            if record is not None:
                seen[i] = record
    assert store.epoch_of(b"g") == 6
    assert [i for i in range(6) if store.epoch(b"g", i) is not None] == [4, 5]
    assert store.max_epoch_id(b"g") == 5
    assert sorted(seen) == [0, 1, 2, 3, 4, 5]
    held = _own_states(tmp_path / "mls", device)  # the group's file and its pending backup
    assert len(held) == 2
    for own in held:
        assert [i for i, _ in own.records] == [4, 5]
        for i in range(4):
            assert all(seen[i] not in data for _, data in own.records)
    reloaded = StatecacheStore(tmp_path / "mls", device, keep_epochs=2)
    assert reloaded.epoch(b"g", 3) is None
    assert reloaded.epoch(b"g", 4) == seen[4]


async def test_a_crash_between_publish_and_marking_republishes_the_same_bytes(
    cluster: Cluster, tmp_path: Path
) -> None:
    profile = await cluster.account()
    home = tmp_path / "mls"
    store = StatecacheStore(home, profile.device)
    alice = client(b"alice", store).create_group(b"group")
    alice.write_to_storage()
    add(alice, client(b"bob", MemoryStorage()))
    queued = _pending_files(home)
    async with cluster.statecache(profile) as sc:
        report = await store.flush(sc)
        assert report is not None and report.stored == 1
        assert store.pending() == 0 and not _pending_files(home)
        assert await store.flush(sc) is None

        # The crash: published, but the process died before the backup was let go.
        for name, data in queued.items():
            (home / name).write_bytes(data)
        for marker in home.glob("*.backed"):
            marker.unlink()
        store = StatecacheStore(home, profile.device)
        assert store.pending() == 1
        report = await store.flush(sc)  # the very bytes again: a duplicate, not a conflict
        assert report is not None and (report.stored, report.duplicates) == (0, 1)
        assert store.pending() == 0

        # What sealing again would have done: a second content at one epoch.
        [(name, data)] = queued.items()
        address, epoch = bytes.fromhex(name[:64]), int.from_bytes(data[:8], "big")
        state = pre.open_own_state(profile.device, address, epoch, data[8:])
        again = pre.seal_own_state(profile.device, address, epoch, state)
        with pytest.raises(ContentConflict):
            await sc.publish([SnapshotInput(address, OWN_STATE_KIND, epoch, again)])

    # A crash before the publish: the queued bytes survive the restart and are the ones
    # stored.
    commit(alice)
    queued = _pending_files(home)
    store = StatecacheStore(home, profile.device)
    async with cluster.statecache(profile) as sc:
        report = await store.flush(sc)
        assert report is not None and report.stored == 1
    async with cluster.statecache(profile) as reader:
        snaps = [s for s in await collect(reader.onboard()) if isinstance(s, OpenedSnapshot)]
    [(name, data)] = queued.items()
    [newest] = [s for s in snaps if s.kind == OWN_STATE_KIND and s.mls_epoch == 2]
    assert (newest.group_id.hex(), newest.plaintext) == (name[:64], data[8:])
    assert b"group" not in newest.group_id  # nodes see the address, not the MLS group id


async def test_flush_publishes_once_per_epoch(cluster: Cluster, tmp_path: Path) -> None:
    profile = await cluster.account()
    store = StatecacheStore(tmp_path / "mls", profile.device)
    alice = client(b"alice", store).create_group(b"group")
    alice.write_to_storage()
    bob = add(alice, client(b"bob", MemoryStorage()))
    async with cluster.statecache(profile) as sc:
        first = await store.flush(sc)
        assert first is not None and first.stored == 1
        for i in range(3):  # within the epoch: the state changes, nothing is published
            read(bob, send(alice, b"%d" % i))
            assert await store.flush(sc) is None
        commit(bob, alice)
        commit(alice, bob)  # two epochs between flushes: only the newest is published
        second = await store.flush(sc)
        assert second is not None and (second.stored, second.duplicates) == (1, 0)
        read(alice, send(bob, b"late in epoch 3"))
        assert store.pending() == 0 and await store.flush(sc) is None
    async with cluster.statecache(profile) as reader:
        snaps = [s for s in await collect(reader.onboard()) if isinstance(s, OpenedSnapshot)]
    assert sorted(s.mls_epoch for s in snaps if s.kind == OWN_STATE_KIND) == [3]


async def test_a_wiped_device_restores_its_groups_reads_late_commits_and_sends(
    cluster: Cluster, tmp_path: Path
) -> None:
    profile = await cluster.account()
    home = tmp_path / "mls"
    store = StatecacheStore(home, profile.device)
    alice_client = client(b"alice", store)
    bob_client, carol_client = client(b"bob", MemoryStorage()), client(b"carol", MemoryStorage())
    one = alice_client.create_group(b"group one")
    one.write_to_storage()
    bob_one = add(one, bob_client)
    late = send(bob_one, b"sent at epoch 1, delivered after the restore")
    commit(bob_one, one)  # epoch 2: the late message needs epoch 1's record
    two = alice_client.create_group(b"group two")
    two.write_to_storage()
    bob_two = add(two, bob_client)
    carol_two = add(two, carol_client, bob_two)
    read(carol_two, send(two, b"before the wipe"))
    async with cluster.statecache(profile) as sc:
        report = await store.flush(sc)
        assert report is not None and report.stored == 2

        # The wipe: every MLS file and object of this device gone; its statecache keys and
        # sync state kept (which remember those backups: the restore reads past that).
        del one, two, alice_client, store
        shutil.rmtree(home)
        store = StatecacheStore(home, profile.device)
        assert store.groups() == []
        restored = await store.restore(sc)
        assert sorted(restored) == [b"group one", b"group two"]
        assert (store.epoch_of(b"group one"), store.epoch_of(b"group two")) == (2, 2)
        assert store.pending() == 0  # what was restored is already backed up

        # A new client (a new keypair: the state carries the member's own).
        alice_client = client(b"alice", store)
        one = alice_client.load_group(b"group one")
        assert read(one, late) == b"sent at epoch 1, delivered after the restore"
        two = alice_client.load_group(b"group two")
        # Why the update comes first: the backup is the group as it entered its epoch, so a
        # send reuses the generation of "before the wipe", which carol has consumed.
        reused = send(two, b"sent again at a used generation")
        assert read(bob_two, reused) == b"sent again at a used generation"
        with pytest.raises(mls.Error):
            carol_two.process_incoming_message(reused)
        for group, others in ((one, [bob_one]), (two, [bob_two, carol_two])):
            commit(group, *others)  # an update first: its old send ratchet is spent
            message = send(group, b"after the restore")
            for other in others:
                assert read(other, message) == b"after the restore"
            assert read(group, send(others[0], b"welcome back")) == b"welcome back"
        report = await store.flush(sc)
        assert report is not None and report.stored == 2


async def test_another_device_cannot_open_this_devices_backup(
    cluster: Cluster, tmp_path: Path
) -> None:
    profile = await cluster.account()
    store = StatecacheStore(tmp_path / "phone", profile.device)
    group = client(b"alice", store).create_group(b"group")
    group.write_to_storage()
    async with cluster.statecache(profile) as admin:
        assert (await store.flush(admin)) is not None
        laptop = await cluster.enrol(admin)
    laptop_store = StatecacheStore(tmp_path / "laptop", laptop.device)
    async with cluster.statecache(laptop) as sc:
        assert await laptop_store.restore(sc) == []  # the phone's backup: left aside
        assert laptop_store.groups() == []
        snaps = [s for s in await collect(sc.onboard()) if isinstance(s, OpenedSnapshot)]
    # The laptop holds the account KEK, so it opens the snapshot, but not what is inside.
    [backup] = [s for s in snaps if s.kind == OWN_STATE_KIND]
    assert backup.header.author == profile.device.device_id
    with pytest.raises(pre.DecryptionError):
        pre.open_own_state(laptop.device, backup.group_id, backup.mls_epoch, backup.plaintext)
    address = pre.own_state_address(laptop.device.device_id, b"group")
    assert address != backup.group_id  # its own backup of the group would go elsewhere


async def test_a_backup_served_older_than_published_is_refused(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The device remembers the epochs of its backups: nodes that serve an older one, or
    none, are caught, and the other groups are restored all the same."""
    profile = await cluster.account()
    store = StatecacheStore(tmp_path / "mls", profile.device)
    alice = client(b"alice", store)
    for name in (b"kept", b"held back"):
        alice.create_group(name).write_to_storage()
    async with cluster.statecache(profile) as sc:
        await store.flush(sc)
        held_back = pre.own_state_address(profile.device.device_id, b"held back")
        known = sc.state.known[(held_back, OWN_STATE_KIND)]
        # As if this device had published epoch 7 and every node served epoch 0.
        sc.state.known[(held_back, OWN_STATE_KIND)] = type(known)(
            7, known.digest, known.author, known.content
        )
        fresh = StatecacheStore(tmp_path / "wiped", profile.device)
        with pytest.raises(BackupsBehind) as info:
            await fresh.restore(sc)
        assert info.value.behind == {held_back: 7}
        assert fresh.groups() == [b"kept"]


def test_a_store_directory_made_with_looser_modes_is_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "mls"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    StatecacheStore(directory, pre.DeviceSecrets.generate())
    assert directory.stat().st_mode & 0o777 == 0o700

"""`Statecache`: one device's view of its account on N cache nodes, threshold M.

    async with Statecache(profile) as sc:
        await sc.publish([SnapshotInput(group_id, "group_state", epoch, state_bytes)])
        async for snap in sc.onboard():      # a new device: everything, newest first
            ...
        async for snap in sc.sync():         # later: only what changed
            ...
        await sc.publish([TreeInput(group_id, epoch, tree, suite)])  # a base or a patch
        tree_bytes = await sc.tree_at(group_id, epoch)  # for a Welcome sent without it

A front over small modules, each one job, data flowing one way:

    session     HTTP session, node clients and their pinned keys, each call's deadline
                and per-node outcomes; fan-out (`fanout`) and bounded paging (`paging`)
    directory   the account record and its devices and revocations
    keyring     key capsules, re-encryption fragments, KEKs
    admin       approve, authorise, add_label, rotate, revoke
    publisher   sealing and storing snapshots
    reader      onboarding and sync: listing, cross-checks, verification (`verify`),
                ratchet trees rebuilt through `trees` (and `tree_reader`: also a tree
                at one epoch, for a Welcome)

Every public call runs in one command scope: its deadline (`RetryPolicy.command_timeout`)
bounds it, and `outcomes` afterwards says what each node did, in the shared schema.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import pre

from .admin import YEAR, Admin, Approval, PurgeReport, RepairReport, RevokeReport
from .admin_records import AdminRecords
from .directory import DeviceDirectory, Directory
from .enrolment import enrollment_request, parse_enrollment
from .errors import AdminRequired, StatecacheError, ThresholdNotMet
from .keyring import Keyring
from .keystore import Profile
from .leaving import DeletionReport, delete_account
from .manifest_view import ManifestView
from .mls.stats import TreeStats, tree_stats
from .mls.suites import CipherSuite
from .mls.tree import RatchetTree
from .node_client import NodeClient
from .outbox import Outbox
from .outcomes import NodeOutcome, NodeState
from .paging import metadata
from .policy import RetryPolicy
from .publisher import ACCOUNT_LABEL, Publisher, PublishReport, SnapshotInput
from .reader import Opened, Reader, ReadReport
from .session import Session
from .state import SyncState
from .tree_sync import TreePolicy
from .trees import OpenedTree, TreeInput, TreeStore
from .verify import Commitments

__all__ = [
    "ACCOUNT_LABEL",
    "Approval",
    "Opened",
    "OpenedTree",
    "PublishReport",
    "ReadReport",
    "RevokeReport",
    "SnapshotInput",
    "Statecache",
    "TreeInput",
    "create_account",
    "enrollment_request",
    "parse_enrollment",
]


async def create_account(
    nodes: Sequence[str],
    threshold: int,
    *,
    name: str = "admin",
    clock: Callable[[], float] = time.time,
    policy: RetryPolicy | None = None,
) -> Profile:
    """Set up: a new account seed and admin device, registered on every node, with the
    `account` label's first key capsule. Needs every node (each will hold one share); the
    nodes' keys are pinned in the profile."""
    now = int(clock())
    account = pre.AccountSecrets.generate()
    device = pre.DeviceSecrets.generate()
    profile = Profile(account.account_id, device, list(nodes), threshold, account=account)
    record = pre.register_account(account, now=now)
    cert = pre.certify_device(
        account,
        device.public_keys,
        role=pre.Role.ADMIN,
        not_before=now - 60,
        not_after=now + 10 * YEAR,
        name=name,
    )
    capsule, _ = pre.create_key_capsule(account, ACCOUNT_LABEL, 0, now=now)
    profile.records = AdminRecords(
        certificates={device.device_id: cert.to_bytes()},
        capsules={(ACCOUNT_LABEL, 0): capsule.to_bytes()},
    )
    async with Statecache(profile, clock=clock, policy=policy) as sc, sc._session.command():
        fan = sc._session.fan
        (await fan.call(lambda n: n.register_account(record, cert))).require(len(nodes), "register")
        report = await sc._admin.repair()  # the capsule and manifest version 1, everywhere
        if any(o.state is not NodeState.OK for o in report.nodes.values()):
            raise ThresholdNotMet("account set-up", len(nodes), report.nodes)
    return profile


class Statecache:
    """The device SDK. Use as an async context manager."""

    def __init__(
        self,
        profile: Profile,
        *,
        state: SyncState | None = None,
        state_path: Path | None = None,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        tree_policy: TreePolicy | None = None,
    ) -> None:
        self.profile = profile
        if state is None:
            state = SyncState.load(state_path) if state_path is not None else SyncState()
        self._state_path = state_path
        self._session = Session(profile, policy or RetryPolicy(), clock)
        self._directory = DeviceDirectory(self._session)
        self._keyring = Keyring(self._session)
        # The newest ratchet tree per group, published or read (memory only).
        self._trees = TreeStore(tree_policy or TreePolicy())
        self._admin = Admin(self._session, self._keyring, self._directory)
        outbox = Outbox(None if state_path is None else state_path.parent / "outbox")
        self._publisher = Publisher(
            self._session, self._keyring, self._directory, self._trees, state,
            outbox=outbox, save=self._save_state,
        )  # fmt: skip
        self._reader = Reader(
            self._session, self._keyring, self._directory, self._trees, state, state_path
        )

    async def __aenter__(self) -> Statecache:
        await self._session.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._session.close()
        self._save_state()

    def _save_state(self) -> None:
        if self._state_path is not None:
            self._state_path.parent.mkdir(parents=True, exist_ok=True)
            self.state.save(self._state_path)

    @property
    def state(self) -> SyncState:
        """What this device remembers between runs (epochs, digests, cursors)."""
        return self._reader.state

    @state.setter
    def state(self, value: SyncState) -> None:
        self._reader.state = self._publisher.state = value

    # what the last call saw

    @property
    def nodes(self) -> list[NodeClient]:
        return self._session.nodes

    @property
    def outcomes(self) -> dict[str, NodeOutcome]:
        """Each node's outcome in the last call (the shared per-node schema)."""
        return self._session.last_outcomes

    @property
    def report(self) -> ReadReport:
        return self._reader.report

    @property
    def reencryptions(self) -> int:
        return self._keyring.reencryptions

    @property
    def bytes_sent(self) -> int:
        return sum(n.bytes_sent for n in self.nodes)

    @property
    def bytes_received(self) -> int:
        return sum(n.bytes_received for n in self.nodes)

    # the account

    async def account_record(self) -> pre.AccountRecord:
        async with self._session.command():
            return await self._directory.record()

    async def directory(self) -> Directory:
        """Devices from M or more nodes, merged, so no single node hides a revocation."""
        async with self._session.command():
            return await self._directory.load()

    async def list_devices(self) -> list[tuple[pre.DeviceCertificate, int | None]]:
        d = await self.directory()
        return [(c, d.revoked_at.get(i)) for i, c in sorted(d.certificates.items())]

    async def pin_nodes(self) -> dict[str, bytes]:
        async with self._session.command():
            return await self._admin.pin_nodes()

    async def manifest(self) -> pre.AccountManifest | None:
        """The newest account manifest this device can trust (an admin: its own)."""
        async with self._session.command():
            view = ManifestView(self._session)
            return await view.current(await self._directory.record(), self.state)

    async def repair(self) -> RepairReport:
        """Admin: re-deliver to every node what it missed (records, manifest versions) and
        say where each node stands."""
        async with self._session.command():
            return await self._admin.repair()

    async def replace_node(self, share_index: int, url: str) -> RepairReport:
        """Admin: a new node at `share_index`; every grant is issued again (a new grant
        generation) and the new node brought up. The caller saves the profile (its node
        list and pinned keys changed)."""
        async with self._session.command():
            return await self._admin.replace_node(share_index, url)

    async def purge(self, group_id: bytes, author: bytes, *, from_epoch: int = 0) -> PurgeReport:
        """Admin: void a revoked author's snapshots of a group from `from_epoch` on."""
        async with self._session.command():
            return await self._admin.purge(group_id, author, from_epoch=from_epoch)

    # keys

    async def load_keys(self) -> Mapping[tuple[str, int], pre.Kek]:
        async with self._session.command():
            return await self._keyring.load(await self._directory.record())

    async def refresh_keys(self) -> None:
        async with self._session.command():
            await self._keyring.refresh(await self._directory.record())

    def forget_keys(self) -> None:
        """Drop cached KEKs: the next read re-encrypts afresh (after a rotation, say)."""
        self._keyring.forget()

    @property
    def keys(self) -> Mapping[tuple[str, int], pre.Kek]:
        return dict(self._keyring.keks)

    # admin

    async def approve(
        self,
        blob: str,
        *,
        labels: Sequence[str] = (ACCOUNT_LABEL,),
        valid_for: int = YEAR,
        grant_for: int = 30 * 86_400,
        expect: str | None = None,
    ) -> Approval:
        """Admin: certify the device of an enrolment request and grant it `labels`;
        `expect`, its fingerprint as the new device shows it."""
        async with self._session.command():
            return await self._admin.approve(
                blob, labels=labels, valid_for=valid_for, grant_for=grant_for, expect=expect
            )

    async def authorise(
        self,
        cert: pre.DeviceCertificate,
        *,
        labels: Sequence[str] = (ACCOUNT_LABEL,),
        grant_for: int = 30 * 86_400,
    ) -> None:
        async with self._session.command():
            await self._admin.authorise(cert, labels=labels, grant_for=grant_for)

    async def add_label(self, label: str) -> None:
        async with self._session.command():
            await self._admin.add_label(label)

    async def rotate(self, label: str) -> int:
        async with self._session.command():
            return await self._admin.rotate(label)

    async def revoke(
        self, device_id: bytes, *, grant_for: int = 30 * 86_400, force: bool = False
    ) -> RevokeReport:
        async with self._session.command():
            return await self._admin.revoke(device_id, grant_for=grant_for, force=force)

    async def delete_account(self) -> DeletionReport:
        """Admin: delete the account and everything stored for it from every node (each
        answers a signed receipt). It cannot be undone; repeating it is safe."""
        account = self._session.profile.account
        if account is None:
            raise AdminRequired("this needs an admin device (one holding the account seed)")
        async with self._session.command():
            return await delete_account(self._session, account)

    # publishing

    async def publish(self, items: Sequence[SnapshotInput | TreeInput]) -> PublishReport:
        """Seal each item under its label's current KEK, chained to the last snapshot this
        device knows of that (group, kind), and store it on every node (M must accept).

        A `TreeInput` goes out as a patch against the tree this device holds for the group
        (`ratchet_tree_patch`), or whole (`ratchet_tree`) when it holds none or the patches
        since the last base would outgrow `TreePolicy.rebase_ratio` of the tree.

        Safe to retry: an item that failed is sent again as the same sealed bytes (a fresh
        seal would be a second snapshot at one epoch: a fork for every reader), and an item
        at an epoch this device already holds is counted as a duplicate, not sent. Except
        after a rotation this device had not loaded: every node refuses an item sealed under
        the old key epoch, so none stored it, and it is sealed again under the new one."""
        try:
            async with self._session.command():
                return await self._publisher.publish(items)
        finally:
            self._save_state()

    async def publish_tree(
        self, group_id: bytes, mls_epoch: int, tree: RatchetTree, suite: CipherSuite | int
    ) -> PublishReport:
        """`publish([TreeInput(group_id, mls_epoch, tree, suite)])`."""
        return await self.publish([TreeInput(group_id, mls_epoch, tree, suite)])

    def trees(self) -> dict[bytes, RatchetTree]:
        """The newest ratchet tree this device holds per group: published or rebuilt by a
        read of this instance (trees are kept in memory only)."""
        return self._trees.trees()

    def tree_health(self) -> dict[bytes, TreeStats]:
        """`mls.tree_stats` of every tree in `trees()`: size, blank leaves and parents,
        and the mean copath resolution (what a commit from a member costs)."""
        return {g: tree_stats(t) for g, t in self.trees().items()}

    # trees for Welcomes

    async def tree_at(self, group_id: bytes, mls_epoch: int) -> bytes:
        """Verified RFC 9420 ratchet_tree bytes of `group_id` at exactly `mls_epoch`, for
        mls-rs `join_group` (a Welcome sent without the tree). Raises TreeUnavailable
        (a StatecacheError, new) when no node serves a confirmed chain reaching that epoch
        (not published yet, or older than the nodes keep).

        The tree this device holds when it is at that epoch costs no request; else each
        node's chain of the group in turn, every piece author-signed, confirmed by M
        receipts and decrypted, rebuilt from the newest base at or below the epoch and
        checked against the tree hash its author signed for that epoch. `outcomes` names a
        node whose chain fell short (`behind`) or failed verification (`suspect`). The
        device's own trees and read state do not change."""
        return (await self.trees_at({group_id: mls_epoch}))[group_id]

    async def trees_at(self, wanted: Mapping[bytes, int]) -> dict[bytes, bytes]:
        """`tree_at` for many groups in one call: {group id: tree bytes} for every wanted
        (group id, MLS epoch). Every group is tried (a few at a time); if any has no tree,
        TreeUnavailable names the first, with `available` (the trees got) and `missing`."""
        for group_id, epoch in wanted.items():
            if not isinstance(group_id, bytes) or not group_id:
                raise TypeError("a group id is non-empty bytes")
            if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
                raise ValueError(f"an MLS epoch is an int >= 0, not {epoch!r}")
        async with self._session.command():
            return await self._reader.trees_at(wanted)

    # reading

    async def estimate_unread(self, mode: str) -> int | None:
        """How many snapshots the first node lists for an onboarding (`mode="onboard"`)
        or a sync (metadata only): a progress bar's total, nothing more; None when that
        node does not answer within `hedge_after`."""
        node = self.nodes[0]
        url = node.base_url
        after = 0 if mode == "onboard" else self.state.cursors.get(url, 0)
        before = self.state.onboarding.get(url) if mode == "onboard" else None
        try:
            async with self._session.command(self._session.policy.hedge_after):
                items, _ = await metadata(self._session.fan, node, after=after)
        except StatecacheError:
            return None  # the read itself will say what is wrong
        finally:
            self._session.last_outcomes = {}
        return sum(1 for item in items if before is None or item.seq < before)

    async def onboard(
        self,
        *,
        commitments: Mapping[bytes, Commitments] | None = None,
        page_size: int = 250,
    ) -> AsyncIterator[Opened]:
        """Everything this device may read, newest first, verified and opened; then each
        group's ratchet tree, rebuilt and verified. Resumable: an interrupted onboarding
        continues from its last completed page."""
        reading = self._reader.read(order="desc", commitments=commitments, page_size=page_size)
        async for snap in self._stepwise(reading):
            yield snap

    async def sync(
        self,
        *,
        commitments: Mapping[bytes, Commitments] | None = None,
        page_size: int = 250,
    ) -> AsyncIterator[Opened]:
        """Only what changed since this device's cursor, oldest first; then the ratchet
        tree of each group whose tree changed."""
        reading = self._reader.read(order="asc", commitments=commitments, page_size=page_size)
        async for snap in self._stepwise(reading):
            yield snap

    async def _stepwise(self, reading: AsyncGenerator[Opened, None]) -> AsyncIterator[Opened]:
        """One command scope for the whole read, current only while the read runs: a
        caller that stops iterating early leaves no scope (or deadline) behind."""
        command = self._session.begin()
        try:
            with self._session.use(command):
                await self._session.identify()
            while True:
                with self._session.use(command):
                    try:
                        snap = await anext(reading)
                    except StopAsyncIteration:
                        return
                yield snap
        finally:
            with self._session.use(command):
                await reading.aclose()
            self._session.finish(command)
            self._save_state()

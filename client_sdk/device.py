"""`Statecache`: one device's view of its account on N cache nodes, threshold M.

    async with Statecache(profile) as sc:
        await sc.publish([SnapshotInput(group_id, "group_state", epoch, state_bytes)])
        async for snap in sc.onboard():      # a new device: everything, newest first
            ...
        async for snap in sc.sync():         # later: only what changed
            ...
        await sc.publish([TreeInput(group_id, epoch, tree, suite)])  # a base or a patch

Writes go to every node and need M acknowledgements; reads come from one node and are
cross-checked against another; keys come from M verified re-encryptions. Everything a node
returns is verified before it is used (see `verify.py`). Ratchet trees travel as a base and
patches and come back as one verified `OpenedTree` per group (see `trees.py`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import aiohttp

import pre
from cache_service.protocol import models as m
from cache_service.protocol.b64 import decode_b64url, encode_b64url

from .errors import (
    AdminRequired,
    ForkError,
    RollbackError,
    StatecacheError,
    ThresholdNotMet,
    VerificationFailed,
)
from .fanout import FanOut, Outcome, RetryPolicy
from .keystore import Profile
from .mls.stats import TreeStats, tree_stats
from .mls.suites import CipherSuite
from .mls.tree import RatchetTree
from .node_client import NodeClient
from .state import Known, SyncState
from .tree_sync import PATCH_KIND, TREE_KINDS, TreePolicy, TreeVersion
from .trees import OpenedTree, TreeInput, TreeStore
from .verify import (
    Commitments,
    Directory,
    OpenedSnapshot,
    check_account,
    check_commitments,
    open_item,
    open_tree_piece,
)

__all__ = [
    "Approval",
    "Opened",
    "OpenedTree",
    "PublishReport",
    "RevokeReport",
    "SnapshotInput",
    "Statecache",
    "TreeInput",
    "create_account",
    "enrollment_request",
    "parse_enrollment",
]

YEAR = 365 * 86_400
ACCOUNT_LABEL = "account"
_PUBLISH_CHUNK_BYTES = 4 * 1024 * 1024

Opened = OpenedSnapshot | OpenedTree
"""What a read yields: a snapshot as published, or a group's rebuilt ratchet tree."""


@dataclass(frozen=True)
class SnapshotInput:
    group_id: bytes
    kind: str
    mls_epoch: int
    plaintext: bytes
    label: str = ACCOUNT_LABEL
    tree_hash: bytes | None = None
    epoch_authenticator: bytes | None = None


@dataclass(frozen=True)
class PublishReport:
    """What a publication stored. Of its trees: how many went whole (`tree_bases`), how
    many as patches, the patches' bytes, and what those trees would have cost whole."""

    stored: int
    duplicates: int
    per_node_failures: dict[str, str]
    tree_bases: int = 0
    tree_patches: int = 0
    tree_patch_bytes: int = 0
    tree_patched_bytes: int = 0


@dataclass(frozen=True)
class Approval:
    certificate: pre.DeviceCertificate
    upload_bytes: int  # what the admin sent all nodes to certify and authorise the device


@dataclass(frozen=True)
class RevokeReport:
    receipts: dict[str, pre.RevocationReceipt]
    failures: dict[str, str]
    rotated: dict[str, int]  # label -> new key epoch
    regranted: list[bytes]  # device ids


@dataclass
class ReadReport:
    """What the last onboarding or sync saw: where it read, what it opened, which nodes
    misbehaved (and how)."""

    primary: str = ""
    opened: int = 0
    unchanged: int = 0
    trees: int = 0  # ratchet trees rebuilt (base and patches, verified)
    suspects: dict[str, str] = field(default_factory=dict)


def enrollment_request(name: str = "") -> tuple[pre.DeviceSecrets, str]:
    """A new device's secrets and the short text an admin approves (its public keys)."""
    device = pre.DeviceSecrets.generate()
    blob = "sc1." + encode_b64url(device.public_keys.to_bytes())
    if name:
        blob += "." + encode_b64url(name.encode())
    return device, blob


def parse_enrollment(blob: str) -> tuple[pre.DeviceKeys, str]:
    parts = blob.strip().split(".")
    if len(parts) not in (2, 3) or parts[0] != "sc1":
        raise ValueError("not a statecache enrolment request")
    try:
        keys = pre.DeviceKeys.from_bytes(decode_b64url(parts[1], max_bytes=128))
        name = decode_b64url(parts[2], max_bytes=64).decode() if len(parts) == 3 else ""
    except (pre.PreError, UnicodeDecodeError) as exc:
        raise ValueError("damaged enrolment request") from exc
    return keys, name


async def create_account(
    nodes: Sequence[str],
    threshold: int,
    *,
    name: str = "admin",
    clock: Callable[[], float] = time.time,
    policy: RetryPolicy | None = None,
) -> Profile:
    """Set up: a new account seed and admin device, registered on every node, with the
    `account` label's first key capsule. Needs every node (each will hold one share)."""
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
    async with Statecache(profile, clock=clock, policy=policy) as sc:
        sc._require_all(await sc._fan.call(lambda n: n.register_account(record, cert)), "register")
        sc._require_all(await sc._fan.call(lambda n: n.put_capsule(capsule)), "key capsule")
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
        self.state = (
            state
            if state is not None
            else (SyncState.load(state_path) if state_path is not None else SyncState())
        )
        self._state_path = state_path
        self._policy = policy or RetryPolicy()
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._fan: FanOut
        self._keks: dict[tuple[str, int], pre.Kek] = {}
        self._capsules: dict[tuple[str, int], pre.KeyCapsule] = {}
        self._record: pre.AccountRecord | None = None
        self._labels: set[str] = set()  # the labels of the last capsule listing
        self.report = ReadReport()
        self.reencryptions = 0
        # Sealed but not yet stored on M nodes, by (group, kind, MLS epoch): a retry sends
        # these same bytes.
        self._pending: dict[tuple[bytes, str, int], tuple[bytes, pre.SealedSnapshot]] = {}
        # The newest ratchet tree per group, published or read (memory only).
        self._trees = TreeStore(tree_policy or TreePolicy())

    async def __aenter__(self) -> Statecache:
        self._session = aiohttp.ClientSession()
        clients = [
            NodeClient(
                self._session,
                url,
                account_id=self.profile.account_id,
                device=self.profile.device,
                timeout=self._policy.timeout,
                clock=self._clock,
            )
            for url in self.profile.nodes
        ]
        self._fan = FanOut(clients, self._policy)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
        self._save_state()

    # helpers

    @property
    def nodes(self) -> list[NodeClient]:
        return self._fan.nodes

    @property
    def bytes_sent(self) -> int:
        return sum(n.bytes_sent for n in self.nodes)

    @property
    def bytes_received(self) -> int:
        return sum(n.bytes_received for n in self.nodes)

    def _now(self) -> int:
        return int(self._clock())

    def _save_state(self) -> None:
        if self._state_path is not None:
            self._state_path.parent.mkdir(parents=True, exist_ok=True)
            self.state.save(self._state_path)

    def _require_all(self, outcome: Outcome[object], what: str) -> None:
        outcome.require(len(self.nodes), what)

    def _admin(self) -> pre.AccountSecrets:
        if self.profile.account is None:
            raise AdminRequired("this needs an admin device (one holding the account seed)")
        return self.profile.account

    async def account_record(self) -> pre.AccountRecord:
        if self._record is None:
            node, info = await self._fan.first(lambda n: n.get_account(), "account record")
            self._record = check_account(self.profile.account_id, info, node.base_url)
        return self._record

    async def directory(self) -> Directory:
        """Devices from M or more nodes, merged, so no single node hides a revocation."""
        record = await self.account_record()
        outcome = await self._fan.call(lambda n: n.list_devices())
        lists = outcome.require(self.profile.threshold, "device list")
        return Directory.build(record, lists.items())

    async def list_devices(self) -> list[tuple[pre.DeviceCertificate, int | None]]:
        d = await self.directory()
        return [(c, d.revoked_at.get(i)) for i, c in sorted(d.certificates.items())]

    async def _load_capsules(self) -> dict[str, int]:
        """Verified key capsules; returns each label's newest epoch."""
        record = await self.account_record()
        node, listing = await self._fan.first(lambda n: n.list_capsules(), "key capsules")
        current: dict[str, int] = {}
        for entry in listing.capsules:
            try:
                capsule = pre.KeyCapsule.from_bytes(entry.capsule).verify(record)
            except pre.PreError as exc:
                raise VerificationFailed("key capsule does not verify", node.base_url) from exc
            if (capsule.label, capsule.key_epoch) != (entry.label, entry.key_epoch):
                raise VerificationFailed("key capsule mislabelled", node.base_url)
            self._capsules[(capsule.label, capsule.key_epoch)] = capsule
            current[capsule.label] = max(current.get(capsule.label, -1), capsule.key_epoch)
        self._labels = set(current)
        return current

    async def refresh_keys(self) -> None:
        """Re-encrypt only when a node lists a key epoch this device holds no KEK for
        (first use, or after a rotation): a sync costs one small listing, not M
        re-encryptions."""
        if not self._keks:
            await self.load_keys()
            return
        current = await self._load_capsules()
        if any((label, epoch) not in self._keks for label, epoch in current.items()):
            await self.load_keys()

    async def load_keys(self) -> dict[tuple[str, int], pre.Kek]:
        """Every KEK this device may hold: as owner (admin), or from M verified
        re-encryptions of each label's newest granted capsule, then down the chain."""
        current = await self._load_capsules()
        if self.profile.account is not None:
            for key, owned in self._capsules.items():
                self._keks[key] = pre.open_key_capsule_as_owner(self.profile.account, owned)
            return self._keks
        record = await self.account_record()
        outcome = await self._fan.call(lambda n: n.reencrypt())
        answers = outcome.require(self.profile.threshold, "re-encryption")
        failures = dict(outcome.failures)
        # One fragment per node and capsule: a node holds one key fragment, and a repeated
        # cfrag would make the capsule fail to open.
        fragments: dict[tuple[str, int], dict[str, pre.VerifiedCapsuleFragment]] = {}
        for node_url, answer in answers.items():
            for result in answer.results:
                key = (result.label, result.key_epoch)
                capsule = self._capsules.get(key)
                if result.fragment is None or capsule is None:
                    failures.setdefault(node_url, f"{key}: {result.code}")
                    continue
                if node_url in fragments.get(key, {}):
                    self.report.suspects[node_url] = "answered twice for one key capsule"
                    continue
                try:
                    fragment = pre.CapsuleFragment.from_bytes(result.fragment)
                    verified = pre.verify_capsule_fragment(
                        fragment, capsule=capsule, account=record, receiver=self.profile.device
                    )
                except pre.PreError as exc:
                    self.report.suspects[node_url] = f"capsule fragment rejected: {exc}"
                    failures[node_url] = self.report.suspects[node_url]
                    continue
                fragments.setdefault(key, {})[node_url] = verified
                self.reencryptions += 1
        if not current:  # no capsule is listed for this device: it holds no grant
            raise ThresholdNotMet("re-encryption (no grant)", self.profile.threshold, failures)
        for label in current:
            epochs = sorted((e for (lb, e) in fragments if lb == label), reverse=True)
            for epoch in epochs:
                frags = list(fragments[(label, epoch)].values())
                if len(frags) < self.profile.threshold:
                    continue
                try:
                    kek = pre.open_key_capsule(
                        self.profile.device, self._capsules[(label, epoch)], frags
                    )
                except pre.PreError as exc:  # verified fragments that still do not open
                    raise VerificationFailed(f"key capsule of {label} does not open") from exc
                self._chain_down(kek)
                break
            else:  # fail closed: no grant (expired?) or too few valid fragments
                raise ThresholdNotMet(f"re-encryption of {label}", self.profile.threshold, failures)
        return self._keks

    def forget_keys(self) -> None:
        """Drop cached KEKs: the next read re-encrypts afresh (after a rotation, say)."""
        self._keks.clear()
        self._capsules.clear()

    @property
    def keys(self) -> Mapping[tuple[str, int], pre.Kek]:
        return dict(self._keks)

    def _chain_down(self, kek: pre.Kek) -> None:
        self._keks[(kek.label, kek.key_epoch)] = kek
        while kek.key_epoch > 0:
            record = self._capsules.get((kek.label, kek.key_epoch))
            if record is None or record.previous_kek is None:
                return
            kek = kek.open_previous(record)
            self._keks[(kek.label, kek.key_epoch)] = kek

    def _newest_kek(self, label: str) -> pre.Kek | None:
        epochs = [e for (lb, e) in self._capsules if lb == label]
        return self._keks.get((label, max(epochs))) if epochs else None

    async def _current_kek(self, label: str) -> pre.Kek:
        kek = self._newest_kek(label)
        if kek is None:  # not loaded yet: `rotate` and `add_label` cache only their own KEK
            await self.refresh_keys()
            kek = self._newest_kek(label)
        if kek is None:
            raise VerificationFailed(f"this device holds no key for label {label!r}")
        return kek

    # admin: certify, authorise, revoke, rotate

    async def approve(
        self,
        blob: str,
        *,
        labels: Sequence[str] = (ACCOUNT_LABEL,),
        valid_for: int = YEAR,
        grant_for: int = 30 * 86_400,
    ) -> Approval:
        """Certify an enrolling device (a member) on every node and grant it `labels`.

        An admin device is one holding the account seed; that is moved with the keystore,
        never through the nodes, so approval only makes members."""
        account = self._admin()
        keys, name = parse_enrollment(blob)
        current = await self._load_capsules()
        missing = sorted(set(labels) - set(current))
        if missing:  # before anything is uploaded
            raise ValueError(f"no key capsule for label(s) {', '.join(missing)}")
        now = self._now()
        cert = pre.certify_device(
            account,
            keys,
            role=pre.Role.MEMBER,
            not_before=now - 60,
            not_after=now + valid_for,
            name=name,
        )
        before = self.bytes_sent
        outcome = await self._fan.call(lambda n: n.put_device(cert))
        outcome.require(self.profile.threshold, "certificate upload")
        await self.authorise(cert, labels=labels, grant_for=grant_for)
        return Approval(cert, self.bytes_sent - before)

    async def authorise(
        self,
        cert: pre.DeviceCertificate,
        *,
        labels: Sequence[str] = (ACCOUNT_LABEL,),
        grant_for: int = 30 * 86_400,
    ) -> None:
        """One M-of-N grant per label, share i to node i: constant size in the number of
        groups."""
        account = self._admin()
        current = await self._load_capsules()
        n = len(self.nodes)
        for label in labels:
            if label not in current:
                raise ValueError(f"label {label!r} has no key capsule")
            capsule = self._capsules[(label, current[label])]
            shares = pre.make_grant(
                account,
                capsule,
                cert,
                threshold=self.profile.threshold,
                shares=n,
                expires_at=self._now() + grant_for,
            )
            outcome = await self._fan.call(_put_share(self.nodes, shares))
            outcome.require(self.profile.threshold, f"grant of {label}")

    async def add_label(self, label: str) -> None:
        """Create a label's first key capsule (e.g. `group:<id>` for one group)."""
        capsule, kek = pre.create_key_capsule(self._admin(), label, 0, now=self._now())
        (await self._fan.call(lambda n: n.put_capsule(capsule))).require(
            self.profile.threshold, "key capsule"
        )
        self._capsules[(label, 0)] = capsule
        self._keks[(label, 0)] = kek

    async def rotate(self, label: str) -> int:
        """Start the label's next key epoch, chaining the previous KEK into it. Nodes then
        refuse snapshots sealed under older epochs."""
        account = self._admin()
        current = await self._load_capsules()
        old = pre.open_key_capsule_as_owner(account, self._capsules[(label, current[label])])
        epoch = old.key_epoch + 1
        capsule, kek = pre.create_key_capsule(account, label, epoch, now=self._now(), previous=old)
        (await self._fan.call(lambda n: n.put_capsule(capsule))).require(
            self.profile.threshold, "rotation"
        )
        self._capsules[(label, epoch)] = capsule
        self._chain_down(kek)  # the older epochs too: their snapshots are still read
        return epoch

    async def revoke(self, device_id: bytes, *, grant_for: int = 30 * 86_400) -> RevokeReport:
        """Revoke on every node (each answers a signed receipt), rotate every label, and
        re-grant each remaining member device the labels it held, under the new key epochs,
        until the same expiry (at most `grant_for` from now)."""
        account = self._admin()
        if device_id not in (await self.directory()).certificates:
            raise ValueError("no such device in this account")
        revocation = pre.revoke_device(account, device_id, now=self._now())
        node_keys = await self.pin_nodes()
        outcome = await self._fan.call(lambda n: n.revoke(revocation))
        receipts: dict[str, pre.RevocationReceipt] = {}
        failures = dict(outcome.failures)
        for url, receipt in outcome.results.items():
            try:
                receipts[url] = receipt.verify(node_keys[url])
                if (receipt.account_id, receipt.device_id) != (account.account_id, device_id):
                    raise VerificationFailed("receipt names another device", url)
            except (pre.PreError, VerificationFailed) as exc:
                failures[url] = f"bad receipt: {exc}"
                receipts.pop(url, None)
        if len(receipts) < self.profile.threshold:
            raise ThresholdNotMet("revocation", self.profile.threshold, failures)
        current = await self._load_capsules()
        members = [
            cert
            for cert in (await self.directory()).active(self._now())
            if cert.role is pre.Role.MEMBER and cert.device_id != device_id
        ]
        held = {cert.device_id: await self._held_grants(cert, current) for cert in members}
        rotated = {label: await self.rotate(label) for label in sorted(current)}
        regranted = []
        for cert in members:
            for label, expires_at in sorted(held[cert.device_id].items()):
                remaining = min(expires_at - self._now(), grant_for)
                if remaining > 0:
                    await self.authorise(cert, labels=[label], grant_for=remaining)
            if held[cert.device_id]:
                regranted.append(cert.device_id)
        return RevokeReport(receipts, failures, rotated, regranted)

    async def _held_grants(
        self, cert: pre.DeviceCertificate, current: Mapping[str, int]
    ) -> dict[str, int]:
        """Label -> expiry of the grants the device holds at each label's current key epoch,
        from the shares the nodes keep. Each share is verified (the account signed it), so
        a node can withhold one but not add one; of several, the earliest expiry counts."""
        record = await self.account_record()
        now = self._now()
        outcome = await self._fan.call(lambda n: n.device_grants(cert.device_id))
        held: dict[str, int] = {}
        for index, node in enumerate(self.nodes, start=1):
            for raw in outcome.results.get(node.base_url, []):
                try:
                    share = pre.GrantShare.from_bytes(raw)
                    capsule = self._capsules.get((share.label, share.key_epoch))
                    if capsule is None or current.get(share.label) != share.key_epoch:
                        continue  # an older key epoch: not a grant of what is current
                    pre.verify_grant_share(
                        share,
                        account=record,
                        capsule=capsule,
                        device=cert,
                        share_index=index,
                        now=now,
                    )
                except pre.PreError:
                    self.report.suspects[node.base_url] = "served a grant share that fails"
                    continue
                held[share.label] = min(share.expires_at, held.get(share.label, share.expires_at))
        return held

    async def pin_nodes(self) -> dict[str, bytes]:
        """Each node's identity key, pinned in the profile at first contact; a node that
        later shows another key, or another share index than its position, is refused."""
        outcome = await self._fan.call(lambda n: n.node_info())
        for index, node in enumerate(self.nodes, start=1):
            info = outcome.results.get(node.base_url)
            if info is None:
                continue
            pinned = self.profile.node_keys.setdefault(node.base_url, info.public_key)
            if pinned != info.public_key or info.share_index != index:
                raise VerificationFailed("node identity or share index changed", node.base_url)
        return self.profile.node_keys

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
            return await self._publish(items)
        except ThresholdNotMet as exc:
            if not any(why.startswith("stale_key_epoch") for why in exc.failures.values()):
                raise
        await self.refresh_keys()
        return await self._publish(items)

    async def _publish(self, items: Sequence[SnapshotInput | TreeInput]) -> PublishReport:
        now = self._now()
        earlier = dict(self._pending)  # sealed by an earlier call: a node may hold them
        sealed: list[pre.SealedSnapshot] = []
        inputs, trees, duplicates = self._tree_inputs(items)
        for item in inputs:
            known = self.state.known.get((item.group_id, item.kind))
            key = (item.group_id, item.kind, item.mls_epoch)
            if known is not None and known.mls_epoch == item.mls_epoch and key not in self._pending:
                duplicates += 1
                continue
            sealed.append(await self._seal(item, known, now))
        stored = 0
        failures: dict[str, str] = {}
        counts = {"bases": 0, "patches": 0, "patch_bytes": 0, "patched_bytes": 0}
        sent = 0
        for chunk in _chunks(sealed):
            sent += len(chunk)
            outcome = await self._fan.call(_publish_chunk(chunk))
            failures.update(outcome.failures)
            accepted = [0] * len(chunk)
            new = [False] * len(chunk)
            stale = [0] * len(chunk)  # refusals as sealed under an old key epoch
            for url, answer in outcome.results.items():
                for i, result in enumerate(answer.results):
                    if result.status is m.PublishStatus.REJECTED:
                        failures[url] = f"{result.code}: {result.detail}"
                        stale[i] += result.code == "stale_key_epoch"
                        continue
                    accepted[i] += 1
                    new[i] = new[i] or result.status is m.PublishStatus.STORED
            for snap, count, fresh in zip(chunk, accepted, new, strict=True):
                h = snap.header
                if count < self.profile.threshold:
                    # Stored nowhere, so these may be sealed again: refused by every node
                    # as sealed under an old key epoch, or sealed by this call, never sent.
                    refused = [s for s, n in zip(chunk, stale, strict=True) if n == len(self.nodes)]
                    for s in [*refused, *sealed[sent:]]:
                        key = (s.header.group_id, s.header.kind, s.header.mls_epoch)
                        if s in refused or key not in earlier or earlier[key][1] is not s:
                            self._pending.pop(key, None)
                    self._save_state()
                    raise ThresholdNotMet("publish", self.profile.threshold, failures)
                self._pending.pop((h.group_id, h.kind, h.mls_epoch), None)
                stored, duplicates = stored + fresh, duplicates + (not fresh)
                self.state.remember(h.group_id, h.kind, h.mls_epoch, snap.digest)
                planned = trees.pop((h.group_id, h.kind, h.mls_epoch), None)
                if planned is not None:
                    self._trees.commit(h.group_id, planned[0])
                    _count_tree(counts, h.kind, *planned)
        self._save_state()
        return PublishReport(
            stored,
            duplicates,
            failures,
            tree_bases=counts["bases"],
            tree_patches=counts["patches"],
            tree_patch_bytes=counts["patch_bytes"],
            tree_patched_bytes=counts["patched_bytes"],
        )

    def _tree_inputs(
        self, items: Sequence[SnapshotInput | TreeInput]
    ) -> tuple[list[SnapshotInput], dict[tuple[bytes, str, int], tuple[TreeVersion, int]], int]:
        """Each tree as the base or patch to publish, and the version it makes; a tree this
        device already holds at that epoch is a duplicate."""
        inputs: list[SnapshotInput] = []
        versions: dict[tuple[bytes, str, int], tuple[TreeVersion, int]] = {}
        provisional: dict[bytes, TreeVersion] = {}
        duplicates = 0
        for item in items:
            if isinstance(item, SnapshotInput):
                inputs.append(item)
                continue
            step = self._trees.prepare(item, provisional)
            if step is None:
                duplicates += 1
                continue
            kind, plaintext, version = step
            inputs.append(
                SnapshotInput(
                    item.group_id,
                    kind,
                    item.mls_epoch,
                    plaintext,
                    label=item.label,
                    tree_hash=version.tree.tree_hash,
                    epoch_authenticator=item.epoch_authenticator,
                )
            )
            versions[(item.group_id, kind, item.mls_epoch)] = (version, len(plaintext))
        return inputs, versions, duplicates

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

    async def _seal(self, item: SnapshotInput, known: Known | None, now: int) -> pre.SealedSnapshot:
        key = (item.group_id, item.kind, item.mls_epoch)
        fingerprint = hashlib.sha256(
            b"\0".join(
                (item.label.encode(), item.plaintext, item.tree_hash or b"",
                 item.epoch_authenticator or b"")
            )
        ).digest()  # fmt: skip
        pending = self._pending.get(key)
        if pending is not None and pending[0] == fingerprint:
            return pending[1]
        kek = await self._current_kek(item.label)
        snapshot = pre.seal_snapshot(
            kek,
            self.profile.device,
            group_id=item.group_id,
            kind=item.kind,
            mls_epoch=item.mls_epoch,
            plaintext=item.plaintext,
            now=now,
            prev_hash=None if known is None else known.digest,
            tree_hash=item.tree_hash,
            epoch_authenticator=item.epoch_authenticator,
        )
        self._pending[key] = (fingerprint, snapshot)
        return snapshot

    # reading: onboarding and sync

    async def onboard(
        self,
        *,
        commitments: Mapping[bytes, Commitments] | None = None,
        page_size: int = 250,
    ) -> AsyncIterator[Opened]:
        """Everything this device may read, newest first, verified and opened; then each
        group's ratchet tree, rebuilt and verified. Resumable: an interrupted onboarding
        continues from its last completed page."""
        async for snap in self._read(order="desc", commitments=commitments, page_size=page_size):
            yield snap

    async def sync(
        self,
        *,
        commitments: Mapping[bytes, Commitments] | None = None,
        page_size: int = 250,
    ) -> AsyncIterator[Opened]:
        """Only what changed since this device's cursor, oldest first; then the ratchet
        tree of each group whose tree changed."""
        async for snap in self._read(order="asc", commitments=commitments, page_size=page_size):
            yield snap

    async def _read(
        self,
        *,
        order: str,
        commitments: Mapping[bytes, Commitments] | None,
        page_size: int,
    ) -> AsyncIterator[Opened]:
        self.report = ReadReport()
        await self.refresh_keys()
        if not self._labels <= set(self.state.labels):
            # A label granted (or granted again) since the last read: nodes listed none of
            # its snapshots to this device then, so its history lies behind the cursors.
            self.state.cursors.clear()
        directory = await self.directory()
        primary: NodeClient | None = None
        rollback: RollbackError | None = None
        for node in self.nodes:  # the first node that serves a complete, valid listing
            try:
                async for snap in self._read_from(node, order, page_size, directory, commitments):
                    yield snap
                if order == "desc":  # then what was published while onboarding ran
                    async for snap in self._read_from(
                        node, "asc", page_size, directory, commitments
                    ):
                        yield snap
            except ForkError:
                raise  # the author signed two snapshots for one epoch: stop
            except StatecacheError as exc:
                # Down, lying, or behind (an older epoch than the device knows or was told,
                # which an honest node that missed a publication also serves): never
                # accepted, reported, and read from the next node.
                self.report.suspects[node.base_url] = str(exc)
                if isinstance(exc, RollbackError) and rollback is None:
                    rollback = exc
                continue
            primary = node
            break
        if primary is None:
            if rollback is not None:
                raise rollback
            raise ThresholdNotMet("snapshot listing", 1, self.report.suspects)
        self.report.primary = primary.base_url
        async for snap in self._cross_check(primary, directory, commitments):
            yield snap
        fetch = self._tree_chain_fetcher(directory)
        trees = self._trees.settle(fetch, self.state, commitments, self.report.suspects)
        async for tree in trees:
            self.report.trees += 1
            yield tree
        if order == "desc":
            self.state.onboarded = True
        self.state.labels = sorted(self._labels)
        self._save_state()
        check_commitments(self.state, commitments)

    def _open(
        self,
        item: m.SnapshotItem,
        node: str,
        directory: Directory,
        commitments: Mapping[bytes, Commitments] | None,
    ) -> OpenedSnapshot | None:
        opened = open_item(
            item,
            node=node,
            directory=directory,
            keks=self._keks,
            state=self.state,
            commitments=commitments,
        )
        if opened is None:
            self.report.unchanged += 1
        else:
            self.state.remember(opened.group_id, opened.kind, opened.mls_epoch, opened.digest)
            self.report.opened += 1
        return opened

    async def _read_from(
        self,
        node: NodeClient,
        order: str,
        page_size: int,
        directory: Directory,
        commitments: Mapping[bytes, Commitments] | None,
    ) -> AsyncIterator[OpenedSnapshot]:
        url, state = node.base_url, self.state
        # A resumed onboarding ends where the interrupted one started.
        head = state.onboarding_head.get(url) if order == "desc" else None
        while True:
            if order == "desc":
                page = await node.list_snapshots(
                    order="desc", before=state.onboarding.get(url), limit=page_size
                )
            else:
                page = await node.list_snapshots(after=state.cursors.get(url, 0), limit=page_size)
            head = page.head if head is None else head
            for item in page.items:
                opened = self._open(item, url, directory, commitments)
                if opened is not None and not self._trees.collect(opened):
                    yield opened
            if page.next_cursor is None:
                break
            if order == "desc":
                state.onboarding[url] = page.next_cursor
                state.onboarding_head[url] = head
            else:
                state.cursors[url] = page.next_cursor
            self._save_state()
        # Newest first, the head seen at the start is where the next sync begins.
        state.onboarding.pop(url, None)
        state.onboarding_head.pop(url, None)
        final = head if order == "desc" else page.head
        state.cursors[url] = max(state.cursors.get(url, 0), final)

    async def _cross_check(
        self,
        primary: NodeClient,
        directory: Directory,
        commitments: Mapping[bytes, Commitments] | None,
    ) -> AsyncIterator[OpenedSnapshot]:
        """Compare with another node's listing (metadata only, since that node's cursor).
        A snapshot the primary left out or served at an older epoch is fetched from the
        other node and verified, and the primary is reported; a different snapshot at
        the same epoch, once its signature verifies, is a fork. No other node answering
        is fewer than M nodes: `ThresholdNotMet`, as for any read."""
        failures: dict[str, str] = {}
        for other in (n for n in self.nodes if n is not primary):
            url = other.base_url
            try:
                items, head = await other.list_metadata(after=self.state.cursors.get(url, 0))
            except StatecacheError as exc:
                failures[url] = str(exc)
                continue
            for item in items:
                have = self.state.known.get((item.group_id, item.kind))
                if have is not None and (
                    item.mls_epoch < have.mls_epoch or item.digest == have.digest
                ):
                    continue  # this node is behind, or holds what the device holds
                # Newer, or another snapshot at a known epoch (a fork, if its author really
                # signed it): only a verified snapshot is believed.
                page = await other.list_snapshots(order="desc", group_id=item.group_id, limit=500)
                for full in page.items:
                    if (full.kind, full.mls_epoch) != (item.kind, item.mls_epoch):
                        continue
                    try:
                        opened = self._open(full, url, directory, commitments)
                    except ForkError:
                        raise
                    except VerificationFailed as exc:  # the second opinion lied, not the primary
                        self.report.suspects[url] = str(exc)
                        continue
                    if opened is not None:
                        self.report.suspects[primary.base_url] = (
                            f"left out group {encode_b64url(item.group_id)} {item.kind} "
                            f"epoch {item.mls_epoch}, which {url} holds"
                        )
                        if not self._trees.collect(opened):
                            yield opened
            self.state.cursors[url] = max(self.state.cursors.get(url, 0), head)
            return  # fewer than M nodes misbehave, so one second opinion suffices
        if len(self.nodes) > 1:
            raise ThresholdNotMet("listing cross-check", 2, failures)

    def _tree_chain_fetcher(
        self, directory: Directory
    ) -> Callable[[bytes], AsyncIterator[tuple[str, list[OpenedSnapshot]]]]:
        """For `TreeStore.settle`: a group's verified tree snapshots, node by node."""

        async def fetch(group_id: bytes) -> AsyncIterator[tuple[str, list[OpenedSnapshot]]]:
            for node in self.nodes:
                try:
                    pieces = await self._tree_chain(node, group_id, directory)
                except ForkError:
                    raise
                except StatecacheError as exc:
                    self.report.suspects.setdefault(node.base_url, str(exc))
                    continue
                yield node.base_url, pieces

        return fetch

    async def _tree_chain(
        self, node: NodeClient, group_id: bytes, directory: Directory
    ) -> list[OpenedSnapshot]:
        pieces: list[OpenedSnapshot] = []
        before: int | None = None
        while True:
            page = await node.list_snapshots(
                order="desc", group_id=group_id, before=before, limit=m.MAX_PAGE
            )
            for item in page.items:
                if item.kind not in TREE_KINDS or item.group_id != group_id:
                    continue
                opened = open_tree_piece(
                    item, node=node.base_url, directory=directory, keks=self._keks,
                    state=self.state,
                )  # fmt: skip
                if opened is not None:
                    pieces.append(opened)
            if page.next_cursor is None:
                return pieces
            before = page.next_cursor


def _count_tree(counts: dict[str, int], kind: str, version: TreeVersion, size: int) -> None:
    if kind == PATCH_KIND:
        counts["patches"] += 1
        counts["patch_bytes"] += size
        counts["patched_bytes"] += version.tree.encoded_size()
    else:
        counts["bases"] += 1


def _put_share(
    nodes: Sequence[NodeClient], shares: Sequence[pre.GrantShare]
) -> Callable[[NodeClient], Awaitable[None]]:
    """Share i goes to node i, and only there."""
    by_node = {node.base_url: share for node, share in zip(nodes, shares, strict=True)}
    return lambda node: node.put_grant(by_node[node.base_url])


def _publish_chunk(
    chunk: list[pre.SealedSnapshot],
) -> Callable[[NodeClient], Awaitable[m.PublishResponse]]:
    return lambda node: node.publish(chunk)


def _chunks(sealed: list[pre.SealedSnapshot]) -> list[list[pre.SealedSnapshot]]:
    out: list[list[pre.SealedSnapshot]] = []
    current: list[pre.SealedSnapshot] = []
    size = 0
    for snap in sealed:
        n = len(snap.to_bytes())
        if current and (size + n > _PUBLISH_CHUNK_BYTES or len(current) == m.MAX_BATCH):
            out.append(current)
            current, size = [], 0
        current.append(snap)
        size += n
    if current:
        out.append(current)
    return out

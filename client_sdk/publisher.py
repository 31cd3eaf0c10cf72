"""Publishing: seal each item under its label's current KEK, chained to the last snapshot
this device knows of that (group, kind), and store it on every node; M must accept.

A node's answer must hold exactly one result per snapshot sent, else it is a suspect and
its answer counts for nothing. Retries resend the very bytes sealed before (a fresh seal
would be a second snapshot at one epoch: a fork for every reader)."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import pre
from cache_service.protocol import models as m
from cache_service.protocol.codes import Code, PublishStatus

from .directory import DeviceDirectory
from .errors import BadAnswer, ThresholdNotMet
from .keyring import Keyring
from .manifest_view import ManifestView
from .node_client import NodeClient
from .outcomes import OK, NodeOutcome, NodeState
from .session import Session
from .state import Known, SyncState
from .tree_sync import PATCH_KIND, TreeVersion
from .trees import TreeInput, TreeStore

__all__ = ["ACCOUNT_LABEL", "PublishReport", "Publisher", "SnapshotInput"]

ACCOUNT_LABEL = "account"
_PUBLISH_CHUNK_BYTES = 4 * 1024 * 1024

Key = tuple[bytes, str, int]  # (group, kind, MLS epoch)


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
    many as patches, the patches' bytes, and what those trees would have cost whole.
    `nodes`: each node's outcome."""

    stored: int
    duplicates: int
    nodes: dict[str, NodeOutcome] = field(default_factory=dict)
    tree_bases: int = 0
    tree_patches: int = 0
    tree_patch_bytes: int = 0
    tree_patched_bytes: int = 0

    @property
    def per_node_failures(self) -> dict[str, NodeOutcome]:
        return {url: o for url, o in self.nodes.items() if o != OK}


@dataclass
class _Counts:
    bases: int = 0
    patches: int = 0
    patch_bytes: int = 0
    patched_bytes: int = 0

    def add(self, kind: str, version: TreeVersion, size: int) -> None:
        if kind == PATCH_KIND:
            self.patches += 1
            self.patch_bytes += size
            self.patched_bytes += version.tree.encoded_size()
        else:
            self.bases += 1


class Publisher:
    def __init__(
        self,
        session: Session,
        keyring: Keyring,
        directory: DeviceDirectory,
        trees: TreeStore,
        state: SyncState,
    ) -> None:
        self._session = session
        self._keyring = keyring
        self._directory = directory
        self._trees = trees
        self.state = state
        # Sealed but not yet stored on M nodes, by (group, kind, MLS epoch): a retry sends
        # these same bytes.
        self._pending: dict[Key, tuple[bytes, pre.SealedSnapshot]] = {}
        self._manifests = ManifestView(session)

    async def publish(self, items: Sequence[SnapshotInput | TreeInput]) -> PublishReport:
        try:
            return await self._publish(items)
        except ThresholdNotMet as exc:
            if not any(o.code is Code.STALE_KEY_EPOCH for o in exc.failures.values()):
                raise
        record = await self._directory.record()
        await self._keyring.refresh(record, await self._manifests.current(record, self.state))
        return await self._publish(items)

    async def _publish(self, items: Sequence[SnapshotInput | TreeInput]) -> PublishReport:
        now = self._session.now()
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
        counts = _Counts()
        sent = 0
        nodes = self._session.nodes
        for chunk in _chunks(sealed):
            sent += len(chunk)
            answers = await self._session.fan.call(_publish_chunk(chunk))
            failures = dict(answers.failures)
            accepted = [0] * len(chunk)
            new = [False] * len(chunk)
            stale = [0] * len(chunk)  # refusals as sealed under an old key epoch
            for url, results in answers.results.items():
                for i, result in enumerate(results):
                    if result.status is PublishStatus.REJECTED:
                        code = result.error_code
                        failures[url] = NodeOutcome(
                            NodeState.UNAVAILABLE,  # it answered, but did not store it
                            code,
                            _one_line(result.detail) or (code.value if code else "rejected"),
                        )
                        self._session.outcomes.note(url, failures[url])
                        stale[i] += code is Code.STALE_KEY_EPOCH
                        continue
                    accepted[i] += 1
                    new[i] = new[i] or result.status is PublishStatus.STORED
            for snap, count, fresh in zip(chunk, accepted, new, strict=True):
                h = snap.header
                if count < self._session.threshold:
                    # Stored nowhere, so these may be sealed again: refused by every node
                    # as sealed under an old key epoch, or sealed by this call, never sent.
                    refused = [s for s, n in zip(chunk, stale, strict=True) if n == len(nodes)]
                    for s in [*refused, *sealed[sent:]]:
                        key = (s.header.group_id, s.header.kind, s.header.mls_epoch)
                        if s in refused or key not in earlier or earlier[key][1] is not s:
                            self._pending.pop(key, None)
                    nodes_seen = {url: OK for url in answers.results} | failures
                    raise ThresholdNotMet("publish", self._session.threshold, nodes_seen)
                self._pending.pop((h.group_id, h.kind, h.mls_epoch), None)
                stored, duplicates = stored + fresh, duplicates + (not fresh)
                self.state.remember(h.group_id, h.kind, h.mls_epoch, snap.digest)
                planned = trees.pop((h.group_id, h.kind, h.mls_epoch), None)
                if planned is not None:
                    self._trees.commit(h.group_id, planned[0])
                    counts.add(h.kind, *planned)
        return PublishReport(
            stored,
            duplicates,
            self._session.outcomes.snapshot(),
            tree_bases=counts.bases,
            tree_patches=counts.patches,
            tree_patch_bytes=counts.patch_bytes,
            tree_patched_bytes=counts.patched_bytes,
        )

    def _tree_inputs(
        self, items: Sequence[SnapshotInput | TreeInput]
    ) -> tuple[list[SnapshotInput], dict[Key, tuple[TreeVersion, int]], int]:
        """Each tree as the base or patch to publish, and the version it makes; a tree this
        device already holds at that epoch is a duplicate."""
        inputs: list[SnapshotInput] = []
        versions: dict[Key, tuple[TreeVersion, int]] = {}
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
        kek = self._keyring.newest(item.label)
        if kek is None:  # keys not loaded yet: from the labels the manifest names
            record = await self._directory.record()
            kek = await self._keyring.current(
                item.label, record, await self._manifests.current(record, self.state)
            )
        snapshot = pre.seal_snapshot(
            kek,
            self._session.profile.device,
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


def _publish_chunk(
    chunk: list[pre.SealedSnapshot],
) -> Callable[[NodeClient], Awaitable[list[m.PublishResult]]]:
    async def send(node: NodeClient) -> list[m.PublishResult]:
        answer = await node.publish(chunk)
        if len(answer.results) != len(chunk):
            raise BadAnswer(
                f"answered {len(answer.results)} results for {len(chunk)} snapshots",
                node.base_url,
            )
        return answer.results

    return send


def _one_line(text: str | None) -> str | None:
    return None if text is None else " ".join(text.split())[:300]


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

"""Publishing: seal each item under its label's current KEK, chained to the last snapshot
this device knows of that (group, kind), keep it in the outbox, and store it on every
node; M must accept, each with its signed receipt. Then every node that holds it is given
the others' receipts (`confirmations`), so that any one honest node proves to a reader
that M nodes stored it; only then does the outbox let it go.

A node's answer must hold exactly one result per snapshot sent, each accepted one with a
receipt of that node for that snapshot, else it is a suspect and its answer counts for
nothing. Retries, after a crash too, resend the very bytes in the outbox (a fresh seal
would be a second snapshot at one epoch). Different content at an epoch this device
already published is refused (`ContentConflict`), not counted as a duplicate."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import pre
from cache_service.protocol import models as m
from cache_service.protocol.codes import Code, PublishStatus

from .confirmations import CLOCK_SKEW
from .directory import DeviceDirectory, verify_listing
from .errors import BadAnswer, ContentConflict, ThresholdNotMet
from .keyring import Keyring
from .limits import check_sizes, chunks, quota_failure, quota_message, upload_limit
from .manifest_view import ManifestView
from .node_client import NodeClient
from .outbox import Outbox, OutboxEntry
from .outcomes import OK, NodeOutcome, NodeState
from .session import Session
from .state import Known, SyncState
from .tree_sync import PATCH_KIND, TreeVersion
from .trees import TreeInput, TreeStore

__all__ = ["ACCOUNT_LABEL", "PublishReport", "Publisher", "SnapshotInput"]

ACCOUNT_LABEL = "account"

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
        *,
        outbox: Outbox | None = None,
        save: Callable[[], None] = lambda: None,
    ) -> None:
        self._session = session
        self._keyring = keyring
        self._directory = directory
        self._trees = trees
        self.state = state
        # Sealed but not yet confirmed on M nodes: a retry sends these same bytes.
        self.outbox = outbox if outbox is not None else Outbox(None)
        self._save = save  # the device's state, durable before the outbox lets an entry go
        self._manifests = ManifestView(session)
        self._own: pre.DeviceCertificate | None = None  # this device's, once loaded

    async def publish(self, items: Sequence[SnapshotInput | TreeInput]) -> PublishReport:
        try:
            return await self._publish(items)
        except ThresholdNotMet as exc:
            if not any(o.code is Code.STALE_KEY_EPOCH for o in exc.failures.values()):
                raise
        # A node that refused the old key epoch stored nothing and is asked again: the
        # refusal is not held against it.
        self._session.outcomes.forget(Code.STALE_KEY_EPOCH)
        record = await self._directory.record()
        await self._keyring.refresh(record, await self._manifests.current(record, self.state))
        return await self._publish(items)

    async def _publish(self, items: Sequence[SnapshotInput | TreeInput]) -> PublishReport:
        now = self._session.now()
        inputs, trees, duplicates = self._tree_inputs(items)
        todo: list[tuple[SnapshotInput, bytes, OutboxEntry | None]] = []
        for item in inputs:  # every refusal before anything is sealed or sent
            content = _content(item)
            held = self.outbox.get((item.group_id, item.kind, item.mls_epoch))
            known = self.state.known.get((item.group_id, item.kind))
            if held is not None:
                if held.content != content:
                    raise _conflict(item, "is still being published with other content")
            elif known is not None and known.mls_epoch == item.mls_epoch:
                if known.content is not None and known.content != content:
                    raise _conflict(item, "was published with other content")
                duplicates += 1
                continue
            todo.append((item, content, held))
        if not todo:
            return PublishReport(0, duplicates, self._session.outcomes.snapshot())
        # What M nodes take (their `GET /v1/node`), before anything is sealed or uploaded.
        limit = await upload_limit(self._session)
        check_sizes([item for item, _, held in todo if held is None], limit)
        entries: list[OutboxEntry] = []
        sealed_now: set[Key] = set()
        for item, content, held in todo:
            if held is not None:
                entries.append(held)
                continue
            known = self.state.known.get((item.group_id, item.kind))
            entries.append(OutboxEntry(content, await self._seal(item, known, now)))
            sealed_now.add(entries[-1].key)
        self.outbox.put(entries)  # durable before any node sees the bytes
        stored = 0
        counts = _Counts()
        nodes = self._session.nodes
        threshold = self._session.threshold
        batches = chunks(entries, limit)
        for index, chunk in enumerate(batches):
            snaps = [e.snapshot for e in chunk]
            # Every node is waited for, but for no more than half the time left once M
            # answered: the confirmations that follow need the rest.
            fan = self._session.fan
            own = await self._own_certificate()
            answers = await fan.call(
                _publish_chunk(snaps, self._session, own),
                quorum=threshold,
                grace=fan.command.remaining() / 2,
            )
            failures = dict(answers.failures)
            receipts: list[dict[str, bytes]] = [{} for _ in chunk]
            new = [False] * len(chunk)
            stale = [0] * len(chunk)  # refusals as sealed under an old key epoch
            for url, results in answers.results.items():
                for i, result in enumerate(results):
                    if result.status is PublishStatus.REJECTED:
                        code = result.error_code
                        failures[url] = NodeOutcome(
                            NodeState.UNAVAILABLE,  # it answered, but did not store it
                            code,
                            quota_message(result)
                            if code is Code.QUOTA_EXCEEDED
                            else _refusal(result, chunk[i].snapshot.header.mls_epoch),
                        )
                        self._session.outcomes.note(url, failures[url])
                        stale[i] += code is Code.STALE_KEY_EPOCH
                        continue
                    assert result.receipt is not None  # checked by `_publish_chunk`
                    receipts[i][url] = result.receipt
                    new[i] = new[i] or result.status is PublishStatus.STORED
            short = [e for e, r in zip(chunk, receipts, strict=True) if len(r) < threshold]
            if not short:
                short = await self._confirm(chunk, receipts)
            if short:
                # Refused as sealed under an old key epoch by so many nodes that it can never
                # reach M: sealed again under the new one (a copy on fewer than M nodes is
                # never confirmed, so never a second state at its epoch).
                for entry, n in zip(chunk, stale, strict=True):
                    if n >= len(nodes) - threshold + 1:
                        self.outbox.remove(entry.key)
                for later in batches[index + 1 :]:  # sealed by this call and never sent
                    for entry in later:
                        if entry.key in sealed_now:
                            self.outbox.remove(entry.key)
                nodes_seen = {url: OK for url in answers.results} | failures
                raise quota_failure("publish", threshold, nodes_seen) or ThresholdNotMet(
                    "publish", threshold, nodes_seen
                )
            for entry, fresh in zip(chunk, new, strict=True):
                h = entry.snapshot.header
                stored, duplicates = stored + fresh, duplicates + (not fresh)
                self.state.remember(
                    h.group_id, h.kind, h.mls_epoch, entry.snapshot.digest,
                    author=h.author, content=entry.content,
                )  # fmt: skip
                planned = trees.pop((h.group_id, h.kind, h.mls_epoch), None)
                if planned is not None:
                    self._trees.commit(h.group_id, planned[0])
                    counts.add(h.kind, *planned)
            # Remembered durably first: a crash in between resends from the outbox (a
            # duplicate), never seals that epoch again.
            self._save()
            for entry in chunk:
                h = entry.snapshot.header
                self.outbox.remove(entry.key)
                self.outbox.supersede(h.group_id, h.kind, h.mls_epoch)
        return PublishReport(
            stored,
            duplicates,
            self._session.outcomes.snapshot(),
            tree_bases=counts.bases,
            tree_patches=counts.patches,
            tree_patch_bytes=counts.patch_bytes,
            tree_patched_bytes=counts.patched_bytes,
        )

    async def _own_certificate(self) -> pre.DeviceCertificate:
        """This device's certificate, once per session, from any one node (it verifies
        against the account root; an older one served only makes receipts look late): a
        receipt counts only at a time readers will find it valid."""
        if self._own is None:
            record = await self._directory.record()
            device_id = self._session.profile.device.device_id

            async def fetch(node: NodeClient) -> pre.DeviceCertificate:
                listed = verify_listing(record, await node.list_devices(), node.base_url)
                cert = listed.certificates.get(device_id)
                if cert is None:
                    raise BadAnswer("does not list this device", node.base_url)
                return cert

            _, own = await self._session.fan.first(fetch, "this device's certificate")
            self._own = own
        return self._own

    async def _confirm(
        self, chunk: list[OutboxEntry], receipts: list[dict[str, bytes]]
    ) -> list[OutboxEntry]:
        """Give every node that stored a snapshot the other nodes' receipts for it; those
        fewer than M nodes kept are returned (their outbox entries stay)."""
        items = [
            m.ConfirmItem(
                group_id=e.snapshot.header.group_id,
                kind=e.snapshot.header.kind,
                mls_epoch=e.snapshot.header.mls_epoch,
                digest=e.snapshot.digest,
                receipts=sorted(r.values())[: m.MAX_RECEIPTS],
            )
            for e, r in zip(chunk, receipts, strict=True)
        ]
        holders = {url for r in receipts for url in r}
        targets = [n for n in self._session.nodes if n.base_url in holders]
        answers = await self._session.fan.call(_confirm_chunk(items), nodes=targets)
        kept = [0] * len(chunk)
        for results in answers.results.values():
            for i, result in enumerate(results):
                kept[i] += result.status in ("stored", "kept")
        return [e for e, n in zip(chunk, kept, strict=True) if n < self._session.threshold]

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
        kek = self._keyring.newest(item.label)
        if kek is None:  # keys not loaded yet: from the labels the manifest names
            record = await self._directory.record()
            kek = await self._keyring.current(
                item.label, record, await self._manifests.current(record, self.state)
            )
        return pre.seal_snapshot(
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


def _content(item: SnapshotInput) -> bytes:
    ea = item.epoch_authenticator
    return pre.content_hash(
        item.label,
        item.plaintext,
        item.tree_hash,
        None if ea is None else pre.epoch_authenticator_hash(ea),
    )


def _conflict(item: SnapshotInput, what: str) -> ContentConflict:
    return ContentConflict(
        f"group {item.group_id.hex()} {item.kind} MLS epoch {item.mls_epoch} {what}: "
        "publish the new state at a new MLS epoch"
    )


def _publish_chunk(
    chunk: list[pre.SealedSnapshot], session: Session, own: pre.DeviceCertificate
) -> Callable[[NodeClient], Awaitable[list[m.PublishResult]]]:
    async def send(node: NodeClient) -> list[m.PublishResult]:
        answer = await node.publish(chunk)
        if len(answer.results) != len(chunk):
            raise BadAnswer(
                f"answered {len(answer.results)} results for {len(chunk)} snapshots",
                node.base_url,
            )
        for snap, result in zip(chunk, answer.results, strict=True):
            if result.status is not PublishStatus.REJECTED:
                _check_receipt(result.receipt, snap, node, session, own)
        return answer.results

    return send


def _check_receipt(
    data: bytes | None,
    snap: pre.SealedSnapshot,
    node: NodeClient,
    session: Session,
    own: pre.DeviceCertificate,
) -> None:
    """An accepted snapshot's receipt: this node's, for this account and snapshot, at a
    time every reader will count (`confirmations.ReceiptPool`): within the author's
    certificate, not before the snapshot's own time less the skew, not ahead of now."""
    try:
        if data is None or node.node_key is None:
            raise BadAnswer("accepted a snapshot without its receipt", node.base_url)
        receipt = pre.SnapshotReceipt.from_bytes(data).verify(node.node_key)
    except pre.PreError as exc:
        raise BadAnswer("its receipt does not verify", node.base_url) from exc
    if receipt.account_id != snap.header.account_id or receipt.digest != snap.digest:
        raise BadAnswer("its receipt names another snapshot", node.base_url)
    at = receipt.stored_at
    if not (
        own.not_before <= at < own.not_after
        and snap.header.created_at - CLOCK_SKEW <= at <= session.now() + CLOCK_SKEW
    ):
        raise BadAnswer(f"its receipt is dated at {at}, a time readers refuse", node.base_url)


def _confirm_chunk(
    items: list[m.ConfirmItem],
) -> Callable[[NodeClient], Awaitable[list[m.ConfirmResult]]]:
    async def send(node: NodeClient) -> list[m.ConfirmResult]:
        answer = await node.confirm(items)
        if len(answer.results) != len(items):
            raise BadAnswer(
                f"answered {len(answer.results)} results for {len(items)} confirmations",
                node.base_url,
            )
        return answer.results

    return send


def _refusal(result: m.PublishResult, mls_epoch: int) -> str:
    """A node's refusal of one snapshot, in words (`epoch 2 is older than the stored
    epoch 3`) rather than its code."""
    code = result.error_code
    current = result.current_epoch
    if code is Code.STALE_EPOCH and current is not None:
        return f"MLS epoch {mls_epoch} is older than the stored epoch {current}"
    return _one_line(result.detail) or (code.value if code else "rejected")


def _one_line(text: str | None) -> str | None:
    return None if text is None else " ".join(text.split())[:300]

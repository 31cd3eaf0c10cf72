"""Reading: onboarding (everything, newest first, resumable) and sync (what changed since
the device's per-node cursors), verified and opened; then each group's ratchet tree.

One node serves the listing (the first, in order, that serves a complete and valid one);
every other reachable node's metadata since its cursor is a second opinion: a snapshot the
primary left out or served at an older epoch is fetched from the node that holds it and
verified, and the primary is reported. Every answer goes through `verify` and `paging`; a
node that fails either is recorded in the command's per-node outcomes and the read moves
on to the next node."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pre
from cache_service.protocol import models as m
from cache_service.protocol.b64 import encode_b64url

from .directory import DeviceDirectory, Directory
from .errors import (
    BadAnswer,
    ForkError,
    MissingSnapshot,
    Purged,
    RollbackError,
    StatecacheError,
    ThresholdNotMet,
    VerificationFailed,
    outcome_of,
)
from .keyring import Keyring
from .manifest_view import ManifestView
from .node_client import NodeClient
from .outcomes import NodeOutcome, NodeState, Outcomes
from .paging import metadata, pages
from .session import Session
from .state import SyncState
from .tree_sync import TREE_KINDS
from .trees import OpenedTree, Pieces, TreeStore, add_pieces
from .verify import Commitments, OpenedSnapshot, check_commitments, open_item, open_tree_piece

__all__ = ["Opened", "ReadReport", "Reader"]

Opened = OpenedSnapshot | OpenedTree
"""What a read yields: a snapshot as published, or a group's rebuilt ratchet tree."""


@dataclass
class ReadReport:
    """What the last onboarding or sync saw: where it read, what it opened, and what each
    node did (`nodes`, the shared per-node schema)."""

    primary: str = ""
    opened: int = 0
    unchanged: int = 0
    trees: int = 0  # ratchet trees rebuilt (base and patches, verified)
    outcomes: Outcomes = field(default_factory=lambda: Outcomes([]))

    @property
    def nodes(self) -> dict[str, NodeOutcome]:
        return self.outcomes.snapshot()

    @property
    def suspects(self) -> dict[str, str]:
        """Nodes that misbehaved or held less than others, and how."""
        return {
            url: o.message or str(o)
            for url, o in self.nodes.items()
            if o.state in (NodeState.SUSPECT, NodeState.BEHIND)
        }

    @property
    def unavailable(self) -> dict[str, str]:
        return {
            url: o.message or str(o)
            for url, o in self.nodes.items()
            if o.state is NodeState.UNAVAILABLE
        }


class Reader:
    def __init__(  # noqa: PLR0917  (the modules it reads through, in one order)
        self,
        session: Session,
        keyring: Keyring,
        directory: DeviceDirectory,
        trees: TreeStore,
        state: SyncState,
        state_path: Path | None = None,
    ) -> None:
        self._manifests = ManifestView(session)
        self._purges: tuple[pre.PurgeEntry, ...] = ()
        self._session = session
        self._keyring = keyring
        self._directory = directory
        self._trees = trees
        self.state = state
        self._state_path = state_path  # saved after every page: an onboarding resumes
        self.report = ReadReport()

    def _save(self) -> None:
        if self._state_path is not None:
            self._state_path.parent.mkdir(parents=True, exist_ok=True)
            self.state.save(self._state_path)

    def _blame(self, node: str, exc: StatecacheError) -> None:
        self._session.outcomes.note(node, outcome_of(exc))

    async def read(
        self,
        *,
        order: Literal["asc", "desc"],
        commitments: Mapping[bytes, Commitments] | None,
        page_size: int,
    ) -> AsyncGenerator[Opened, None]:
        self.report = ReadReport(outcomes=self._session.outcomes)
        record = await self._directory.record()
        manifest = await self._manifests.current(record, self.state)
        self._purges = () if manifest is None else manifest.purges
        if self.state.forget_purged(self._purges):
            self.state.cursors.clear()  # read again what the purged snapshots hid
        await self._keyring.refresh(record, manifest)
        if not self._keyring.labels <= set(self.state.labels):
            # A label granted (or granted again) since the last read: nodes listed none of
            # its snapshots to this device then, so its history lies behind the cursors.
            self.state.cursors.clear()
        directory = await self._directory.load(manifest)
        primary: NodeClient | None = None
        rollback: RollbackError | None = None
        for node in self._session.nodes:  # the first node that serves a valid listing
            if node.base_url in self._session.fan.command.down:
                continue
            try:
                async for snap in self._read_from(node, order, page_size, directory, commitments):
                    yield snap
                if order == "desc":  # then what was published while onboarding ran
                    async for snap in self._read_from(
                        node, "asc", page_size, directory, commitments
                    ):
                        yield snap
            except ForkError as exc:
                self._blame(node.base_url, exc)
                raise  # the author signed two snapshots for one epoch: stop
            except StatecacheError as exc:
                # Down, lying, or behind (an older epoch than the device knows or was told,
                # which an honest node that missed a publication also serves): never
                # accepted, reported, and read from the next node.
                self._blame(node.base_url, exc)
                if isinstance(exc, RollbackError) and rollback is None:
                    rollback = exc
                continue
            primary = node
            break
        if primary is None:
            if rollback is not None:
                raise rollback
            raise ThresholdNotMet("snapshot listing", 1, self.report.nodes)
        self.report.primary = primary.base_url
        async for snap in self._cross_check(primary, directory, commitments):
            yield snap
        async for tree in self._settle_trees(directory, commitments):
            self.report.trees += 1
            yield tree
        if order == "desc":
            self.state.onboarded = True
        self.state.labels = sorted(self._keyring.labels)
        check_commitments(self.state, commitments)

    def _open(
        self,
        item: m.SnapshotItem,
        node: str,
        directory: Directory,
        commitments: Mapping[bytes, Commitments] | None,
    ) -> OpenedSnapshot | None:
        try:
            opened = open_item(
                item,
                node=node,
                directory=directory,
                keks=self._keyring.keks,
                state=self.state,
                commitments=commitments,
                purges=self._purges,
            )
        except Purged as exc:  # the node missed the purge: skip what it voided
            self._blame(node, exc)
            return None
        if opened is None:
            self.report.unchanged += 1
        else:
            self.state.remember(
                opened.group_id, opened.kind, opened.mls_epoch, opened.digest,
                opened.header.author,
            )  # fmt: skip
            self.report.opened += 1
        return opened

    async def _read_from(
        self,
        node: NodeClient,
        order: Literal["asc", "desc"],
        page_size: int,
        directory: Directory,
        commitments: Mapping[bytes, Commitments] | None,
    ) -> AsyncIterator[OpenedSnapshot]:
        url, state = node.base_url, self.state
        # A resumed onboarding ends where the interrupted one started.
        head = state.onboarding_head.get(url) if order == "desc" else None
        start = state.onboarding.get(url) if order == "desc" else state.cursors.get(url, 0)
        last_head = 0
        async for page in pages(self._session.fan, node, order=order, start=start, limit=page_size):
            head = page.head if head is None else head
            last_head = page.head
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
            self._save()
        # Newest first, the head seen at the start is where the next sync begins.
        state.onboarding.pop(url, None)
        state.onboarding_head.pop(url, None)
        final = (head or 0) if order == "desc" else last_head
        state.cursors[url] = max(state.cursors.get(url, 0), final)

    async def _cross_check(
        self,
        primary: NodeClient,
        directory: Directory,
        commitments: Mapping[bytes, Commitments] | None,
    ) -> AsyncIterator[OpenedSnapshot]:
        """Compare with every other reachable node's listing (metadata only, since that
        node's cursor). A snapshot the primary left out or served at an older epoch is
        fetched from the node that lists it and verified, and the primary is reported; a
        different snapshot at the same epoch, once its signature verifies, is a fork. A
        node that errs or lies here is recorded and skipped. No other node answering is
        fewer than M nodes: `ThresholdNotMet`, as for any read."""
        fan = self._session.fan
        others = [
            n for n in self._session.nodes
            if n is not primary and n.base_url not in fan.command.down
        ]  # fmt: skip
        listings = await asyncio.gather(*(self._listing(n) for n in others))
        answered = 0
        for other, listing in zip(others, listings, strict=True):
            if listing is None:
                continue
            answered += 1
            items, head = listing
            try:
                async for opened in self._fill_gaps(other, primary, items, directory, commitments):
                    yield opened
            except ForkError as exc:
                self._blame(other.base_url, exc)
                raise
            except StatecacheError as exc:  # the second opinion lied, or went away
                self._blame(other.base_url, exc)
                continue
            url = other.base_url
            self.state.cursors[url] = max(self.state.cursors.get(url, 0), head)
        if answered == 0 and self._session.threshold > 1:  # M = 1 trusts any one node
            raise ThresholdNotMet("listing cross-check", 2, self.report.nodes)

    async def _listing(self, node: NodeClient) -> tuple[list[m.SnapshotItem], int] | None:
        try:
            return await metadata(
                self._session.fan, node, after=self.state.cursors.get(node.base_url, 0)
            )
        except StatecacheError as exc:
            self._blame(node.base_url, exc)
            return None

    async def _fill_gaps(
        self,
        other: NodeClient,
        primary: NodeClient,
        items: list[m.SnapshotItem],
        directory: Directory,
        commitments: Mapping[bytes, Commitments] | None,
    ) -> AsyncIterator[OpenedSnapshot]:
        url = other.base_url
        for item in items:
            have = self.state.known.get((item.group_id, item.kind))
            if have is not None and (item.mls_epoch < have.mls_epoch or item.digest == have.digest):
                continue  # this node is behind, or holds what the device holds
            # Newer, or another snapshot at a known epoch (a fork, if its author really
            # signed it): fetched by its own sequence number, and only believed verified.
            page = await self._session.fan.ask(
                other,
                lambda n, item=item: n.list_snapshots(  # type: ignore[misc]
                    order="desc", before=item.seq + 1, limit=1, group_id=item.group_id
                ),
            )
            full = page.items[0] if page.items else None
            if full is None or (full.seq, full.kind, full.mls_epoch, full.digest) != (
                item.seq,
                item.kind,
                item.mls_epoch,
                item.digest,
            ):
                raise BadAnswer(f"lists snapshot {item.seq} but does not serve it", other.base_url)
            opened = self._open(full, url, directory, commitments)
            if opened is not None:
                self._session.outcomes.note(
                    primary.base_url,
                    MissingSnapshot(
                        f"left out group {encode_b64url(item.group_id)} {item.kind} "
                        f"epoch {item.mls_epoch}, which {url} holds",
                        primary.base_url,
                    ).outcome(),
                )
                if not self._trees.collect(opened):
                    yield opened

    # ratchet trees

    async def _settle_trees(
        self, directory: Directory, commitments: Mapping[bytes, Commitments] | None
    ) -> AsyncIterator[OpenedTree]:
        """Rebuild each group whose chain the read moved and yield its new tree, verified.
        A group that fails keeps its pieces for the next read and, once every other group
        is done, its failure is raised."""
        failure: VerificationFailed | None = None
        for group_id, pieces in self._trees.take_pending().items():
            try:
                opened = await self._settle(group_id, pieces, directory, commitments)
            except ForkError:
                raise
            except VerificationFailed as exc:
                self._trees.keep_pending(group_id, pieces)
                failure = failure or exc
                continue
            if opened is not None:
                yield opened
        if failure is not None:
            raise failure

    async def _settle(
        self,
        group_id: bytes,
        pieces: Pieces,
        directory: Directory,
        commitments: Mapping[bytes, Commitments] | None,
    ) -> OpenedTree | None:
        target = self._trees.target(group_id, pieces, self.state)
        if target is None:
            return None  # nothing newer than the tree this device holds
        try:
            version = self._trees.reach(group_id, pieces, target)
        except VerificationFailed as first:
            # The pieces the read brought fall short: add each node's whole chain in turn.
            short: list[str] = []
            for node in self._session.nodes:
                if node.base_url in self._session.fan.command.down:
                    continue
                try:
                    add_pieces(pieces, await self._tree_chain(node, group_id, directory))
                except ForkError:
                    raise
                except StatecacheError as exc:
                    self._blame(node.base_url, exc)
                    continue
                try:
                    version = self._trees.reach(group_id, pieces, target)
                except VerificationFailed:  # this node's chain does not complete it
                    short.append(node.base_url)
                    continue
                break
            else:
                raise first from None
            for url in short:
                self._session.outcomes.note(
                    url,
                    RollbackError(
                        f"its tree chain of group {group_id.hex()} does not reach epoch {target}",
                        url,
                    ).outcome(),
                )
        return self._trees.accept(group_id, version, pieces, commitments)

    async def _tree_chain(
        self, node: NodeClient, group_id: bytes, directory: Directory
    ) -> list[OpenedSnapshot]:
        chain: list[OpenedSnapshot] = []
        async for page in pages(
            self._session.fan, node, order="desc", start=None, limit=m.MAX_PAGE,
            group_id=group_id,
        ):  # fmt: skip
            for item in page.items:
                if item.kind not in TREE_KINDS:
                    continue
                try:
                    opened = open_tree_piece(
                        item, node=node.base_url, directory=directory, keks=self._keyring.keks,
                        state=self.state, purges=self._purges,
                    )  # fmt: skip
                except Purged as exc:
                    self._blame(node.base_url, exc)
                    continue
                if opened is not None:
                    chain.append(opened)
        return chain

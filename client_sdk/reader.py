"""Reading: onboarding (everything, newest first, resumable) and sync (what changed since
the device's per-node cursors), verified and opened; then each group's ratchet tree.

Every reachable node's metadata since its cursor is read first: the second opinion. One
node serves the listing with data and receipts (the first, in order, that serves a complete
and valid one); a snapshot it left out or served at an older epoch, or served without the
receipts to confirm it, is fetched with its receipts from a node that lists it (receipts
are pooled over the read: `confirmations.ReceiptPool`), and a primary that left it out is
reported. Only a snapshot M nodes' receipts confirm becomes a group's state; a
newer one that is not confirmed (yet), a label the device holds no key for, or too few
nodes read make the read incomplete (`ReadReport.incomplete`), and the (group, kind) is
looked at again by the next read (`SyncState.pending`).

The ratchet trees a read moved are rebuilt by `tree_reader.py`; the report is in
`read_report.py`. What stays here is one read's flow (listings, primary, gaps, pending
groups, reach), which shares the read's receipts, clock and state throughout.

Nothing counts as delivered before the caller took it: what a yielded snapshot advances
(what the device remembers, the cursor past its page) is recorded only once the caller asks
for the next one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Literal

import pre
from cache_service.protocol import models as m
from cache_service.protocol.b64 import encode_b64url

from .confirmations import ReceiptPool
from .directory import DeviceDirectory, Directory
from .errors import (
    BadAnswer,
    ForkError,
    MissingSnapshot,
    NoKey,
    Purged,
    RollbackError,
    StatecacheError,
    ThresholdNotMet,
    TreeUnavailable,
    Unconfirmed,
    VerificationFailed,
    outcome_of,
)
from .history import History
from .keyring import Keyring
from .manifest_view import ManifestView
from .node_client import NodeClient
from .outcomes import NodeState
from .paging import check_page, metadata, pages
from .read_context import ReadContext, confirmer, read_context
from .read_report import Incomplete, ReadReport
from .session import Session
from .state import SyncState
from .tree_reader import TreeReader
from .trees import OpenedTree, TreeStore
from .verify import Commitments, OpenedSnapshot, check_commitments, content_of, open_item

__all__ = ["Incomplete", "Opened", "ReadReport", "Reader"]

Opened = OpenedSnapshot | OpenedTree
"""What a read yields: a snapshot as published, or a group's rebuilt ratchet tree."""


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
        self._pool = ReceiptPool(b"", frozenset(), 0)
        self._dir: Directory | None = None
        self._now = 0
        self._served: set[bytes] = set()  # digests some node served this read
        self._accepted: set[bytes] = set()  # and those verified and confirmed
        # (group, kind) some node served older than the device holds / served as it holds
        self._rolled_back: dict[tuple[bytes, str], set[str]] = {}
        self._vouched: set[tuple[bytes, str]] = set()
        self._pieces: dict[bytes, list[OpenedSnapshot]] = {}  # tree pieces not yet delivered
        self._history = History()  # what each node lists beside older snapshots it keeps
        self._was_pending: dict[tuple[bytes, str], int] = {}

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
        context = await self._context()
        self._purges, self._dir, self._pool = context.purges, context.directory, context.pool
        self._now = context.now
        directory = context.directory
        if self.state.forget_purged(self._purges):
            self.state.cursors.clear()  # read again what the purged snapshots hid
        if not self._keyring.labels <= set(self.state.labels):
            # A label granted (or granted again) since the last read: nodes listed none of
            # its snapshots to this device then, so its history lies behind the cursors.
            self.state.cursors.clear()
        self._served, self._accepted = set(), set()
        self._rolled_back, self._vouched = {}, set()
        self._pieces = {}
        # What earlier reads saw unconfirmed: the cursors passed it then (see _fill_gaps).
        self._was_pending = dict(self.state.pending)
        # Every reachable node's metadata first (digests, no receipts): the second opinion.
        listings = await self._listings()
        self._history = History()
        for url, (items, _) in listings.items():
            self._history.note(url, items)
        primary: NodeClient | None = None
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
                raise  # the author signed two confirmed snapshots for one epoch: stop
            except StatecacheError as exc:
                # Down, lying, or behind (an older epoch than the device knows or was told,
                # which an honest node that missed a publication also serves): never
                # accepted, reported, and read from the next node.
                self._blame(node.base_url, exc)
                continue
            primary = node
            break
        if primary is None:
            raise ThresholdNotMet("snapshot listing", 1, self.report.nodes)
        self.report.primary = primary.base_url
        read = {primary.base_url}
        async for snap in self._cross_check(primary, listings, directory, commitments, read):
            yield snap
        async for snap in self._recheck(directory, commitments):
            yield snap
        trees = TreeReader(
            self._session, self._trees, self.state, self._keyring.keks, self._pool,
            self._confirm, self._now, self._purges, self._blame, self._settled,
        )  # fmt: skip
        async for tree in trees.settle(directory, commitments):
            self.report.trees += 1
            yield tree
        self._check_reach(read)
        self._check_held_back({primary.base_url} | set(listings))
        if order == "desc":
            self.state.onboarded = True
        self.state.labels = sorted(self._keyring.labels)
        check_commitments(self.state, commitments)

    async def _context(self) -> ReadContext:
        return await read_context(
            self._session, self._directory, self._manifests, self._keyring, self.state
        )

    async def trees_at(self, wanted: Mapping[bytes, int]) -> dict[bytes, bytes]:
        """Each group's verified tree at exactly its wanted epoch (RFC 9420 encoding): the
        tree this device holds when it is at that epoch (no node asked), else rebuilt from
        the nodes' chains (`TreeReader.trees_at`), in a context of its own, so a read this
        call interrupts keeps its own. The device's trees and state do not change."""
        out: dict[bytes, bytes] = {}
        todo: dict[bytes, int] = {}
        for group_id, epoch in wanted.items():
            held = self._trees.get(group_id)
            if held is not None and held.mls_epoch == epoch:
                out[group_id] = held.tree.tree.to_bytes()
            else:
                todo[group_id] = epoch
        if not todo:
            return out
        context = await self._context()
        trees = TreeReader(
            self._session, self._trees, self.state, self._keyring.keks, context.pool,
            confirmer(context, self._session.threshold), context.now, context.purges,
            self._blame, lambda _: None,
        )  # fmt: skip
        try:
            got = await trees.trees_at(todo, context.directory)
        except TreeUnavailable as exc:
            raise exc.with_others(out | exc.available, exc.missing) from None
        return out | got

    def _check_held_back(self, read: set[str]) -> None:
        """A (group, kind) some node served older than the device holds is fine while a
        node of this read served what the device holds, or did not list it at all (it lies
        behind that node's cursor): honest nodes that each missed a different publication.
        Served older by every node read, it is a rollback."""
        stale = sorted(
            key for key, nodes in self._rolled_back.items()
            if key not in self._vouched and read <= nodes
        )  # fmt: skip
        if stale:
            group_id, kind = stale[0]
            raise RollbackError(
                f"no node read serves {kind} of group {group_id.hex()} at the epoch this "
                f"device holds ({len(stale)} such)"
            )

    def _check_reach(self, read: set[str]) -> None:
        """Every M-acknowledged snapshot is on at least one of any N - M + 1 nodes: fewer
        read without fault, and something acknowledged may have been missed."""
        nodes = [n.base_url for n in self._session.nodes]
        clean = {
            url for url in read if self.report.nodes.get(url) is None
            or self.report.nodes[url].state is NodeState.OK
        }  # fmt: skip
        needed = len(nodes) - self._session.threshold + 1
        if len(clean) < needed:
            missing = tuple(url for url in nodes if url not in clean)
            self._incomplete(
                Incomplete(
                    f"read {len(clean)} of {len(nodes)} nodes without fault, fewer than the "
                    f"{needed} that guarantee every acknowledged snapshot was seen",
                    nodes=missing,
                )
            )

    def _incomplete(self, entry: Incomplete) -> None:
        """One entry per (group, kind), naming every node involved."""
        for i, held in enumerate(self.report.incomplete):
            if (held.group_id, held.kind) == (entry.group_id, entry.kind):
                nodes = held.nodes + tuple(n for n in entry.nodes if n not in held.nodes)
                epoch = max(held.mls_epoch or 0, entry.mls_epoch or 0)
                self.report.incomplete[i] = replace(held, nodes=nodes, mls_epoch=epoch)
                return
        self.report.incomplete.append(entry)

    def _confirm(self, header: pre.SnapshotHeader, digest: bytes) -> bool:
        assert self._dir is not None
        context = ReadContext(self._purges, self._dir, self._pool, self._now)
        return confirmer(context, self._session.threshold)(header, digest)

    def _open(
        self,
        item: m.SnapshotItem,
        node: str,
        directory: Directory,
        commitments: Mapping[bytes, Commitments] | None,
    ) -> OpenedSnapshot | None:
        """The snapshot, verified, confirmed and opened; None when there is nothing to
        deliver: the device holds it, the admin purged it, or it is not confirmed or not
        openable (then recorded as incomplete and pending, when newer)."""
        self._pool.add(item.digest, item.receipts)
        self._served.add(item.digest)
        self._history.note(node, (item,))
        if self._history.older(node, item):
            return None  # kept beside a newer one this node lists: not delivered, no blame
        try:
            opened = open_item(
                item,
                node=node,
                directory=directory,
                keks=self._keyring.keks,
                state=self.state,
                confirm=self._confirm,
                now=self._now,
                commitments=commitments,
                purges=self._purges,
            )
        except Purged as exc:  # the node missed the purge: skip what it voided
            self._blame(node, exc)
            return None
        except RollbackError as exc:
            # Older than the device holds (or than the delivery service says): this node is
            # behind on this group, which an honest node that missed a publish also is.
            self._blame(node, exc)
            self._rolled_back.setdefault((item.group_id, item.kind), set()).add(node)
            return None
        except (Unconfirmed, NoKey, ForkError) as exc:
            # Not the node's fault: a publish under way or failed, a key this device lacks
            # (both looked at again by the next read), or an author that signed two states
            # for one epoch (named; the state the device holds stands).
            if not isinstance(exc, Unconfirmed) or exc.newer:
                self._pending(item, node, exc)
            return None
        if opened is None:
            self.report.unchanged += 1
        else:
            self._accepted.add(opened.digest)
        self._vouched.add((item.group_id, item.kind))
        return opened

    def _pending(self, item: m.SnapshotItem, node: str, exc: VerificationFailed) -> None:
        key = (item.group_id, item.kind)
        self.state.pending[key] = max(item.mls_epoch, self.state.pending.get(key, 0))
        self._incomplete(
            Incomplete(
                exc.what,
                group_id=item.group_id,
                kind=item.kind,
                mls_epoch=item.mls_epoch,
                label=item.label if isinstance(exc, NoKey) else None,
                nodes=(node,),
            )
        )

    def _delivered(self, opened: OpenedSnapshot) -> None:
        """The caller took it: the device now holds it, and no longer misses it."""
        h = opened.header
        content = content_of(opened)
        self.state.remember(
            opened.group_id, opened.kind, opened.mls_epoch, opened.digest,
            author=h.author, content=content,
        )  # fmt: skip
        key = (opened.group_id, opened.kind)
        pending = self.state.pending.get(key)
        if pending is not None and pending <= opened.mls_epoch:
            del self.state.pending[key]
        self.report.incomplete = [
            e for e in self.report.incomplete
            if (e.group_id, e.kind) != key or (e.mls_epoch or 0) > opened.mls_epoch
        ]  # fmt: skip
        self.report.opened += 1

    async def _deliver(self, opened: OpenedSnapshot) -> AsyncIterator[OpenedSnapshot]:
        """Yield a snapshot, or collect a tree piece: delivered with its rebuilt tree, and
        pending meanwhile (its cursor may pass it before the caller takes the tree)."""
        if self._trees.collect(opened):
            key = (opened.group_id, opened.kind)
            self.state.pending[key] = max(opened.mls_epoch, self.state.pending.get(key, 0))
            self._pieces.setdefault(opened.group_id, []).append(opened)
            return
        yield opened
        self._delivered(opened)

    def _settled(self, group_id: bytes) -> None:
        for piece in self._pieces.pop(group_id, []):
            self._delivered(piece)

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
                if opened is not None:
                    async for snap in self._deliver(opened):
                        yield snap
            # The caller took every snapshot of the page: only now does the cursor pass it.
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

    async def _listings(self) -> dict[str, tuple[list[m.SnapshotItem], int]]:
        fan = self._session.fan
        nodes = [n for n in self._session.nodes if n.base_url not in fan.command.down]
        got = await asyncio.gather(*(self._listing(n) for n in nodes))
        out: dict[str, tuple[list[m.SnapshotItem], int]] = {}
        for node, listing in zip(nodes, got, strict=True):
            if listing is None:
                continue
            out[node.base_url] = listing
        return out

    async def _cross_check(
        self,
        primary: NodeClient,
        listings: dict[str, tuple[list[m.SnapshotItem], int]],
        directory: Directory,
        commitments: Mapping[bytes, Commitments] | None,
        read: set[str],
    ) -> AsyncIterator[OpenedSnapshot]:
        """Compare with every other node's listing (metadata since that node's cursor). A
        snapshot the primary left out or served at an older epoch is fetched from the node
        that lists it, verified and confirmed, and the primary is reported; a different
        confirmed snapshot at the same epoch is a fork. A node that errs or lies here is
        recorded and skipped; `read` gains each node read without fault."""
        for other in self._session.nodes:
            listing = listings.get(other.base_url)
            if other is primary or listing is None:
                continue
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
            read.add(other.base_url)
            url = other.base_url
            self.state.cursors[url] = max(self.state.cursors.get(url, 0), head)

    async def _listing(self, node: NodeClient) -> tuple[list[m.SnapshotItem], int] | None:
        try:
            return await metadata(
                self._session.fan, node, after=self.state.cursors.get(node.base_url, 0)
            )
        except StatecacheError as exc:
            self._blame(node.base_url, exc)
            return None

    async def _fetch(self, node: NodeClient, item: m.SnapshotItem) -> m.SnapshotItem:
        """The listed snapshot with its bytes, by its own sequence number."""
        page = await self._session.fan.ask(
            node,
            lambda n: n.list_snapshots(
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
            raise BadAnswer(f"lists snapshot {item.seq} but does not serve it", node.base_url)
        return full

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
            if have is not None and item.digest == have.digest:
                self._vouched.add((item.group_id, item.kind))
                continue  # this node holds what the device holds
            history = self._history.older(url, item)
            if have is not None and item.mls_epoch < have.mls_epoch:
                if not history:  # this node is behind
                    self._rolled_back.setdefault((item.group_id, item.kind), set()).add(url)
                continue
            if history:
                continue  # kept beside the newer one this node lists
            if item.digest in self._accepted:
                continue  # this read took it
            # Newer, or another snapshot at a known epoch (a fork, if confirmed): fetched by
            # its own sequence number, and only believed verified.
            served = item.digest in self._served  # without the receipts to confirm it
            opened = self._open(await self._fetch(other, item), url, directory, commitments)
            if opened is None:
                continue
            earlier = self._was_pending.get((item.group_id, item.kind))
            if served or (earlier is not None and item.mls_epoch <= earlier):
                # Not left out: the primary served it unconfirmed, in this read or in an
                # earlier one whose cursor passed it (so it is not listed again).
                async for snap in self._deliver(opened):
                    yield snap
                continue
            self._session.outcomes.note(
                primary.base_url,
                MissingSnapshot(
                    f"left out group {encode_b64url(item.group_id)} {item.kind} "
                    f"epoch {item.mls_epoch}, which {url} holds",
                    primary.base_url,
                ).outcome(),
            )
            async for snap in self._deliver(opened):
                yield snap

    async def _recheck(
        self, directory: Directory, commitments: Mapping[bytes, Commitments] | None
    ) -> AsyncIterator[OpenedSnapshot]:
        """Look again at each (group, kind) an earlier read left pending (a newer snapshot
        not confirmed, or not openable, then): its cursor has passed it, so each node's
        newest of that group is listed again and its receipts pooled."""
        todo: dict[bytes, set[str]] = {}
        for (group_id, kind), epoch in list(self.state.pending.items()):
            known = self.state.known.get((group_id, kind))
            if known is not None and known.mls_epoch >= epoch:
                del self.state.pending[(group_id, kind)]
                continue
            if any(e.group_id == group_id and e.kind == kind for e in self.report.incomplete):
                continue  # this read saw it already
            if any(p.kind == kind for p in self._pieces.get(group_id, ())):
                continue  # a tree piece this read collected: delivered with its tree
            if group_id not in todo and len(todo) >= _MAX_RECHECKS:
                # A liar can leave many groups pending; the rest wait for the next read.
                self._incomplete(
                    Incomplete(f"not looked at again in this read (more than {_MAX_RECHECKS})",
                               group_id=group_id, kind=kind, mls_epoch=epoch)
                )  # fmt: skip
                continue
            todo.setdefault(group_id, set()).add(kind)
        fan = self._session.fan
        nodes = [n for n in self._session.nodes if n.base_url not in fan.command.down]
        for group_id, kinds in todo.items():
            pages_ = await asyncio.gather(*(self._group_page(n, group_id) for n in nodes))
            found: list[tuple[NodeClient, m.SnapshotItem]] = []
            for node, page in zip(nodes, pages_, strict=True):
                self._history.note(node.base_url, page)
                for item in page:
                    self._pool.add(item.digest, item.receipts)
                    if item.kind in kinds:
                        found.append((node, item))
            found.sort(key=lambda f: -f[1].mls_epoch)
            for kind in kinds:  # no node lists it any more: nothing to wait for
                epoch = self.state.pending.get((group_id, kind), 0)
                if not any(i.kind == kind and i.mls_epoch >= epoch for _, i in found):
                    self.state.pending.pop((group_id, kind), None)
            done: set[str] = set()
            for node, item in found:
                if item.kind in done:
                    continue
                try:
                    opened = self._open(item, node.base_url, directory, commitments)
                except StatecacheError as exc:
                    if isinstance(exc, ForkError):
                        raise
                    self._blame(node.base_url, exc)
                    continue
                if opened is None:
                    continue
                done.add(item.kind)
                async for snap in self._deliver(opened):
                    yield snap

    async def _group_page(self, node: NodeClient, group_id: bytes) -> list[m.SnapshotItem]:
        """One page of a group's newest snapshots, with their bytes (empty if the node
        fails: it is recorded)."""
        try:
            page = await self._session.fan.ask(
                node,
                lambda n: n.list_snapshots(order="desc", limit=_RECHECK_PAGE, group_id=group_id),
            )
            check_page(
                page, node=node.base_url, order="desc", start=None, limit=_RECHECK_PAGE,
                group_id=group_id,
            )  # fmt: skip
        except StatecacheError as exc:
            self._blame(node.base_url, exc)
            return []
        return page.items


# A pending (group, kind) is looked for among its group's newest snapshots on each node,
# for at most this many groups per read.
_RECHECK_PAGE = 100
_MAX_RECHECKS = 100

"""Rebuilding the ratchet trees a read moved: from the pieces (a base and patches) the read
collected, and when they fall short, from each node's whole chain of the group, every
piece verified and confirmed like any snapshot. And a group's tree at one given epoch,
for a Welcome sent without it (`at`, `trees_at`), from those same chains."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping

import pre
from cache_service.protocol import models as m

from .confirmations import ReceiptPool
from .errors import (
    ForkError,
    NoKey,
    Purged,
    RollbackError,
    StatecacheError,
    ThresholdNotMet,
    TreeUnavailable,
    Unconfirmed,
    VerificationFailed,
)
from .node_client import NodeClient
from .outcomes import NodeState
from .paging import pages
from .session import Session
from .state import SyncState
from .tree_sync import BASE_KIND, TREE_KINDS
from .trees import OpenedTree, Pieces, TreeStore, add_pieces
from .verify import Commitments, Confirm, Directory, OpenedSnapshot, open_tree_piece

__all__ = ["TreeReader"]

# Groups whose chains `trees_at` fetches at once (each from one node at a time).
_GROUPS_AT_ONCE = 8

# How a node's chain of one group went, earlier in this call: the order nodes are asked
# in for the next group (a node that lied is not asked again).
_SERVED, _SHORT, _LIED = 0, 1, 2


class TreeReader:
    """One read's tree rebuilding, with that read's receipts, clock and purges."""

    def __init__(  # noqa: PLR0917  (one read's context, in one order)
        self,
        session: Session,
        trees: TreeStore,
        state: SyncState,
        keks: Mapping[tuple[str, int], pre.Kek],
        pool: ReceiptPool,
        confirm: Confirm,
        now: int,
        purges: tuple[pre.PurgeEntry, ...],
        blame: Callable[[str, StatecacheError], None],
        settled: Callable[[bytes], None],
    ) -> None:
        self._session = session
        self._trees = trees
        self.state = state
        self._keks = keks
        self._pool = pool
        self._confirm = confirm
        self._now = now
        self._purges = purges
        self._blame = blame
        self._settled = settled  # a group's pieces are delivered (the caller took its tree)
        self._record: dict[str, int] = {}  # node -> how its last chain went (_SERVED, ...)

    async def settle(
        self, directory: Directory, commitments: Mapping[bytes, Commitments] | None
    ) -> AsyncIterator[OpenedTree]:
        """Rebuild each group whose chain the read moved and yield its new tree, verified;
        once the caller took it (or no newer tree was due), its pieces are delivered. A
        group that fails keeps its pieces for the next read and, once every other group is
        done, its failure is raised."""
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
            self._settled(group_id)
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
            for node in self._chain_nodes():
                try:
                    add_pieces(pieces, await self._tree_chain(node, group_id, directory))
                except ForkError:
                    raise
                except StatecacheError as exc:
                    self._failed(node.base_url, exc)
                    continue
                try:
                    version = self._trees.reach(group_id, pieces, target)
                except VerificationFailed:  # this node's chain does not complete it
                    short.append(node.base_url)
                    self._record[node.base_url] = _SHORT
                    continue
                self._record[node.base_url] = _SERVED
                break
            else:
                raise first from None
            self._behind(short, group_id, target)
        return self._trees.accept(group_id, version, pieces, commitments)

    def _chain_nodes(self) -> list[NodeClient]:
        """The nodes to ask for a group's chain, in order: first those whose chains served
        earlier in this call, then those that fell short or failed to answer; one that
        lied (a piece failing verification, a listing breaking the paging rules) or timed
        out is not asked again in this call, so a liar costs one group's chain per call,
        not one per group."""
        down = self._session.fan.command.down
        nodes = [
            n for n in self._session.nodes
            if n.base_url not in down and self._record.get(n.base_url) != _LIED
        ]  # fmt: skip
        return sorted(nodes, key=lambda n: self._record.get(n.base_url, _SERVED))

    def _failed(self, url: str, exc: StatecacheError) -> None:
        self._blame(url, exc)
        if not isinstance(exc, NoKey):  # a key this device lacks is not the node's doing
            lied = isinstance(exc, VerificationFailed) and exc.state is NodeState.SUSPECT
            self._record[url] = _LIED if lied else _SHORT

    def _behind(self, urls: list[str], group_id: bytes, epoch: int) -> None:
        """Nodes whose chain fell short where another's completed (an honest node that
        missed a publication is short too)."""
        for url in urls:
            self._session.outcomes.note(
                url,
                RollbackError(
                    f"its tree chain of group {group_id.hex()} does not reach epoch {epoch}", url
                ).outcome(),
            )

    async def trees_at(
        self, wanted: Mapping[bytes, int], directory: Directory
    ) -> dict[bytes, bytes]:
        """`at` for each wanted group, a few groups at a time. Every group is tried; then
        `TreeUnavailable` for the first no node serves (naming the others). Any other
        error ends the call at once."""
        gate = asyncio.Semaphore(_GROUPS_AT_ONCE)

        async def one(group_id: bytes, epoch: int) -> bytes | TreeUnavailable:
            async with gate:
                try:
                    return await self.at(group_id, epoch, directory)
                except TreeUnavailable as exc:
                    return exc

        tasks = [asyncio.create_task(one(g, e)) for g, e in wanted.items()]
        try:
            got = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        trees: dict[bytes, bytes] = {}
        missing: dict[bytes, int] = {}
        first: TreeUnavailable | None = None
        for (group_id, epoch), result in zip(wanted.items(), got, strict=True):
            if isinstance(result, TreeUnavailable):
                missing[group_id] = epoch
                first = first or result
            else:
                trees[group_id] = result
        if first is not None:
            raise first.with_others(trees, missing)
        return trees

    async def at(self, group_id: bytes, mls_epoch: int, directory: Directory) -> bytes:
        """The group's tree at exactly `mls_epoch`, RFC 9420 encoded: each node's chain in
        turn, every piece verified and confirmed, until the pieces rebuild that epoch's
        tree (`TreeStore.at`). A node whose chain falls short while another's completes is
        `behind`; one that serves a piece failing verification is a suspect (its chain is
        not used). `TreeUnavailable` when no node completes it; `ThresholdNotMet` when no
        node answered at all."""
        pieces: Pieces = {}
        short: list[str] = []
        answered = 0
        nodes = self._session.nodes
        for node in self._chain_nodes():
            try:
                add_pieces(pieces, await self._tree_chain(node, group_id, directory, mls_epoch))
            except ForkError:
                raise
            except StatecacheError as exc:
                self._failed(node.base_url, exc)
                continue
            answered += 1
            try:
                version = self._trees.at(group_id, pieces, mls_epoch)
            except VerificationFailed:
                short.append(node.base_url)
                self._record[node.base_url] = _SHORT
                continue
            self._record[node.base_url] = _SERVED
            self._behind(short, group_id, mls_epoch)
            return version.tree.tree.to_bytes()
        if not answered:
            raise ThresholdNotMet(
                f"tree of group {group_id.hex()}", 1, self._session.outcomes.snapshot()
            )
        epochs = [epoch for _, epoch in pieces]
        bases = [epoch for kind, epoch in pieces if kind == BASE_KIND]
        raise TreeUnavailable(
            group_id, mls_epoch, newest=max(epochs, default=None),
            oldest=min(bases, default=None), served=mls_epoch in epochs,
            answered=answered, asked=len(nodes),
        )  # fmt: skip

    async def _tree_chain(
        self, node: NodeClient, group_id: bytes, directory: Directory, upto: int | None = None
    ) -> list[OpenedSnapshot]:
        chain: list[OpenedSnapshot] = []
        # The newest base opened so far (at or below `upto`, for a tree of that epoch): the
        # tree rebuilds from it, so the older bases and patches nodes keep beside it (a
        # window, for Welcomes of older epochs) are skipped.
        base = -1
        async for page in pages(
            self._session.fan, node, order="desc", start=None, limit=m.MAX_PAGE,
            group_id=group_id,
        ):  # fmt: skip
            for item in page.items:
                if item.kind not in TREE_KINDS or item.mls_epoch < base:
                    continue
                self._pool.add(item.digest, item.receipts)
                try:
                    opened = open_tree_piece(
                        item, node=node.base_url, directory=directory, keks=self._keks,
                        state=self.state, confirm=self._confirm, now=self._now,
                        purges=self._purges,
                    )  # fmt: skip
                except (Purged, Unconfirmed) as exc:
                    if isinstance(exc, Purged):
                        self._blame(node.base_url, exc)
                    continue
                if opened is not None:
                    chain.append(opened)
                    if opened.kind == BASE_KIND and (upto is None or opened.mls_epoch <= upto):
                        base = max(base, opened.mls_epoch)
        return chain

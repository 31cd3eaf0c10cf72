"""Listing a node's snapshots page by page, within bounds a lying node cannot stretch.

Each page must keep the API's promises: at most `limit` items, in order, inside the
requested range and group, and a cursor that moves strictly; the same snapshot twice in
one listing, or more than `max_pages` pages, ends the listing. Any breach is `BadAnswer`
(the node is a suspect); the command's deadline bounds the time."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

from cache_service.protocol import models as m

from .errors import BadAnswer
from .fanout import FanOut
from .node_client import NodeClient

__all__ = ["check_page", "metadata", "pages"]

Order = Literal["asc", "desc"]


def check_page(
    page: m.SnapshotPage,
    *,
    node: str,
    order: Order,
    start: int | None,
    limit: int,
    group_id: bytes | None,
) -> None:
    """`start`: the `after` (ascending) or `before` (newest first) the page was asked with."""
    if len(page.items) > limit:
        raise BadAnswer(f"sent {len(page.items)} items for a page of {limit}", node)
    seqs = [item.seq for item in page.items]
    ascending = order == "asc"
    if any((b <= a) if ascending else (b >= a) for a, b in itertools.pairwise(seqs)):
        raise BadAnswer("listed snapshots out of order", node)
    if seqs and start is not None and (seqs[0] <= start if ascending else seqs[0] >= start):
        raise BadAnswer("listed snapshots outside the requested range", node)
    if group_id is not None and any(item.group_id != group_id for item in page.items):
        raise BadAnswer("listed another group's snapshots", node)
    cursor = page.next_cursor
    if cursor is None:
        return
    if start is not None and (cursor <= start if ascending else cursor >= start):
        raise BadAnswer("its paging cursor does not move", node)
    if seqs and (cursor < seqs[-1] if ascending else cursor > seqs[-1]):
        raise BadAnswer("its paging cursor goes back over listed snapshots", node)


async def pages(
    fan: FanOut,
    node: NodeClient,
    *,
    order: Order,
    start: int | None,
    limit: int,
    group_id: bytes | None = None,
    data: bool = True,
    receipts: bool = True,
) -> AsyncIterator[m.SnapshotPage]:
    """Every page from `start` on, each checked; the caller keeps the cursors."""
    seen: set[bytes] = set()
    for _ in range(fan.policy.max_pages):
        page = await fan.ask(node, _page_fetch(order, start, limit, group_id, data, receipts))
        check_page(page, node=node.base_url, order=order, start=start, limit=limit,
                   group_id=group_id)  # fmt: skip
        for item in page.items:
            if item.digest in seen:
                raise BadAnswer("listed one snapshot twice", node.base_url)
            seen.add(item.digest)
        yield page
        if page.next_cursor is None:
            return
        start = page.next_cursor
    raise BadAnswer(f"listed more than {fan.policy.max_pages:,} pages", node.base_url)


def _page_fetch(  # noqa: PLR0917  (a page's query, in the API's order)
    order: Order,
    start: int | None,
    limit: int,
    group_id: bytes | None,
    data: bool,
    receipts: bool,
) -> Callable[[NodeClient], Awaitable[m.SnapshotPage]]:
    return lambda n: n.list_snapshots(
        order=order,
        after=start if order == "asc" else None,
        before=start if order == "desc" else None,
        limit=limit,
        group_id=group_id,
        data=data,
        receipts=receipts,
    )


async def metadata(
    fan: FanOut, node: NodeClient, *, after: int = 0
) -> tuple[list[m.SnapshotItem], int]:
    """Every snapshot's metadata and digest after `after` (no data, no receipts: a snapshot
    that needs another node's receipts is fetched whole from it), and the head."""
    items: list[m.SnapshotItem] = []
    head = after
    async for page in pages(
        fan, node, order="asc", start=after, limit=m.MAX_PAGE, data=False, receipts=False
    ):
        items.extend(page.items)
        head = max(head, page.head)
    return items, head

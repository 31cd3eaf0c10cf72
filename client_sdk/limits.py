"""What the account's nodes take, checked before anything is sealed or uploaded.

Each node advertises its limits in `GET /v1/node` (the answer the SDK reads before any
signed request anyway). A publish must be stored by M nodes, so a state is refused here
when fewer than M of the nodes that answered would take it: the limit is the M-th largest
advertised, so no one node can block publishing by advertising a tiny limit, and a node
taking less than the others is reported when it refuses. A node that advertises nothing
(an older node) counts with the defaults; with no node reachable, the defaults apply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cache_service.protocol import models as m
from cache_service.protocol.codes import Code, Quota
from cache_service.protocol.limits import (
    DEFAULT_MAX_BODY_BYTES,
    PUBLISH_ENVELOPE,
    b64_length,
    largest_state,
)

from .errors import QuotaExceeded, StatecacheError, StateTooLarge
from .outcomes import NodeOutcome
from .output import human_bytes

if TYPE_CHECKING:
    from .node_client import NodeClient
    from .outbox import OutboxEntry
    from .publisher import SnapshotInput
    from .session import Session

__all__ = ["UploadLimit", "check_sizes", "chunks", "quota_failure", "quota_message", "upload_limit"]

_CHUNK_SEALED_BYTES = 4 * 1024 * 1024  # sealed bytes per publish request, at most


@dataclass(frozen=True)
class UploadLimit:
    max_body_bytes: int
    largest_state: int
    max_batch: int = m.MAX_BATCH


DEFAULT_LIMIT = UploadLimit(DEFAULT_MAX_BODY_BYTES, largest_state(DEFAULT_MAX_BODY_BYTES))


def limit_of(limits: m.NodeLimits | None) -> UploadLimit:
    """One node's limit; its advertised largest state is believed only as far as its body
    limit carries it."""
    if limits is None:
        return DEFAULT_LIMIT
    body = limits.max_body_bytes
    return UploadLimit(
        body, min(limits.largest_state, largest_state(body)), min(limits.max_batch, m.MAX_BATCH)
    )


async def upload_limit(session: Session) -> UploadLimit:
    """The limit M of the session's nodes take (see the module's text), from the nodes
    that answer by `straggler_grace` after M did. Nothing is noted against a node here:
    the publish that follows asks every node again and reports what each did."""
    fan = session.fan
    tasks = [asyncio.ensure_future(_limit(node)) for node in session.nodes]
    for task in tasks:
        task.add_done_callback(_consume)
    found: list[UploadLimit] = []
    pending: set[asyncio.Future[UploadLimit | None]] = set(tasks)
    grace_ends: float | None = None
    loop = asyncio.get_running_loop()
    try:
        while pending:
            timeout = fan.command.remaining() if grace_ends is None else grace_ends - loop.time()
            done, pending = await asyncio.wait(
                pending, timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                break
            found += [x for x in (t.result() for t in done) if x is not None]
            if grace_ends is None and len(found) >= session.threshold:
                grace_ends = loop.time() + fan.policy.straggler_grace
    finally:
        for late in pending:
            late.cancel()
    if not found:
        return DEFAULT_LIMIT  # none answered: the publish reports why
    index = min(session.threshold, len(found)) - 1

    def mth(values: list[int]) -> int:
        return sorted(values, reverse=True)[index]

    return UploadLimit(
        mth([x.max_body_bytes for x in found]),
        mth([x.largest_state for x in found]),
        mth([x.max_batch for x in found]),
    )


async def _limit(node: NodeClient) -> UploadLimit | None:
    try:
        await node.identity()
    except (StatecacheError, OSError, TimeoutError):
        return None  # unreachable or lying: the publish finds out and reports it
    return limit_of(node.limits)


def _consume(task: asyncio.Future[UploadLimit | None]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a failure here is the publish's to report


def check_sizes(items: Sequence[SnapshotInput], limit: UploadLimit) -> None:
    for item in items:
        size = len(item.plaintext)
        if size > limit.largest_state:
            what = f"the {item.kind} of group {item.group_id.hex()}"
            raise StateTooLarge(size, limit.largest_state, what)


def chunks(entries: list[OutboxEntry], limit: UploadLimit) -> list[list[OutboxEntry]]:
    """Sealed snapshots in publish requests: each body within the limit's body size and
    batch, and at most 4 MiB of sealed data (a snapshot alone may be larger)."""
    out: list[list[OutboxEntry]] = []
    current: list[OutboxEntry] = []
    sealed, body = 0, PUBLISH_ENVELOPE
    for entry in entries:
        n = len(entry.snapshot.to_bytes())
        cost = b64_length(n) + 3  # `"<base64>",`
        if current and (
            sealed + n > _CHUNK_SEALED_BYTES
            or body + cost > limit.max_body_bytes
            or len(current) >= limit.max_batch
        ):
            out.append(current)
            current, sealed, body = [], 0, PUBLISH_ENVELOPE
        current.append(entry)
        sealed, body = sealed + n, body + cost
    if current:
        out.append(current)
    return out


_QUOTA_WORDS = {
    Quota.GROUPS.value: lambda n: f"{n:,} groups",
    Quota.STORED_BYTES.value: lambda n: f"{human_bytes(n)} of stored state",
}


def quota_message(result: m.PublishResult) -> str:
    """A node's quota refusal in the SDK's words (its own text is not repeated)."""
    words = _QUOTA_WORDS.get(result.quota or "")
    if words is None or result.limit is None:
        return "an account quota is reached"
    return f"the account's quota of {words(result.limit)} is reached"


def quota_failure(what: str, needed: int, nodes: dict[str, NodeOutcome]) -> QuotaExceeded | None:
    """A failed publish whose refusals include quotas: one line saying which, and what to
    do, rather than "fewer than M nodes answered"."""
    refused = [o for o in nodes.values() if o.code is Code.QUOTA_EXCEEDED]
    reasons = sorted({o.message or "an account quota is reached" for o in refused})
    if not reasons:
        return None
    return QuotaExceeded(what, needed, nodes, reasons)

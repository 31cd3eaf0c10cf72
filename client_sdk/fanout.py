"""Threshold fan-out: the same call to every node in parallel, with a timeout and bounded
retries with backoff per node; succeed once M nodes answered validly."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from .errors import NodeError, NodeUnavailable, StatecacheError, ThresholdNotMet
from .node_client import NodeClient

__all__ = ["FanOut", "Outcome", "RetryPolicy"]

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    base_delay: float = 0.05
    max_delay: float = 1.0
    timeout: float = 10.0  # per attempt

    def delay(self, attempt: int) -> float:
        # Full jitter: spreads retries of many devices after a node restarts.
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))  # noqa: S311


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """Per-node results: the valid answers, and why each other node failed."""

    results: dict[str, T]
    failures: dict[str, str]

    def require(self, needed: int, what: str) -> dict[str, T]:
        if len(self.results) < needed:
            raise ThresholdNotMet(what, needed, self.failures)
        return self.results


class FanOut:
    def __init__(self, nodes: Sequence[NodeClient], policy: RetryPolicy) -> None:
        self.nodes = list(nodes)
        self.policy = policy

    async def call(
        self,
        fn: Callable[[NodeClient], Awaitable[T]],
        *,
        nodes: Sequence[NodeClient] | None = None,
    ) -> Outcome[T]:
        """Run `fn` on every node (or `nodes`). Unavailable nodes are retried; a refusal
        (4xx problem) or a verification failure raised by `fn` is final for that node."""
        targets = self.nodes if nodes is None else list(nodes)
        answers = await asyncio.gather(*(self._one(node, fn) for node in targets))
        results: dict[str, T] = {}
        failures: dict[str, str] = {}
        for node, (ok, value) in zip(targets, answers, strict=True):
            if ok:
                results[node.base_url] = value  # type: ignore[assignment]
            else:
                failures[node.base_url] = str(value)
        return Outcome(results, failures)

    async def first(
        self, fn: Callable[[NodeClient], Awaitable[T]], what: str
    ) -> tuple[NodeClient, T]:
        """Nodes in turn until one answers validly (reads any single node can serve)."""
        failures: dict[str, str] = {}
        for node in self.nodes:
            ok, value = await self._one(node, fn)
            if ok:
                return node, value  # type: ignore[return-value]
            failures[node.base_url] = str(value)
        raise ThresholdNotMet(what, 1, failures)

    async def _one(
        self, node: NodeClient, fn: Callable[[NodeClient], Awaitable[T]]
    ) -> tuple[bool, T | StatecacheError]:
        last: StatecacheError = NodeUnavailable(node.base_url, "not tried")
        for attempt in range(self.policy.attempts):
            try:
                return True, await asyncio.wait_for(fn(node), self.policy.timeout)
            except TimeoutError:
                last = NodeUnavailable(node.base_url, "timed out")
            except NodeUnavailable as exc:
                last = exc
            except NodeError as exc:
                if exc.status != 429 and exc.status < 500:
                    return False, exc
                last = exc
            except StatecacheError as exc:  # verification failures: never retried
                return False, exc
            if attempt + 1 < self.policy.attempts:
                await asyncio.sleep(self.policy.delay(attempt))
        return False, last

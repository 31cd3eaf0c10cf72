"""Asking nodes: one node with retries, every node in parallel, or one node hedged by the
next. Each attempt is bounded by the per-request timeout and the command's deadline; each
node's result lands in the command's per-node outcomes (`outcomes.Outcomes`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import pre

from .errors import (
    NodeError,
    NodeTimeout,
    NodeUnavailable,
    StatecacheError,
    VerificationFailed,
    outcome_of,
    threshold_not_met,
)
from .node_client import NodeClient
from .outcomes import OK, LocalCode, NodeOutcome, NodeState, Outcomes
from .policy import RetryPolicy

__all__ = ["Answers", "Command", "FanOut", "RetryPolicy"]

T = TypeVar("T")
Ask = Callable[[NodeClient], Awaitable[T]]


@dataclass
class Command:
    """One SDK call: its deadline, what each node did, and the nodes that timed out (not
    asked again until the call ends)."""

    outcomes: Outcomes
    deadline: float  # time.monotonic()
    down: dict[str, NodeOutcome] = field(default_factory=dict)
    slow: set[str] = field(default_factory=set)  # cut off once: asked last from then on

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


@dataclass(frozen=True)
class Answers(Generic[T]):
    """Per-node results: the valid answers, and what went wrong with each other node."""

    results: dict[str, T]
    failures: dict[str, NodeOutcome]

    def require(self, needed: int, what: str) -> dict[str, T]:
        if len(self.results) < needed:
            nodes = {url: OK for url in self.results} | self.failures
            raise threshold_not_met(what, needed, nodes)
        return self.results


class FanOut:
    def __init__(
        self,
        nodes: Sequence[NodeClient],
        policy: RetryPolicy,
        command: Command,
        threshold: int = 1,
    ) -> None:
        self.nodes = list(nodes)
        self.policy = policy
        self.command = command
        self.threshold = threshold  # M: how many nodes must agree to tell the device anything

    async def ask(
        self,
        node: NodeClient,
        fn: Ask[T],
        *,
        expected: Callable[[StatecacheError], bool] | None = None,
    ) -> T:
        """One node: its answer, or the error that ended the last attempt (recorded unless
        `expected` says the caller takes it in its stride)."""
        ok, value = await self._one(node, fn, expected)
        if not ok:
            assert isinstance(value, StatecacheError)
            raise value
        return value  # type: ignore[return-value]

    async def call(
        self,
        fn: Ask[T],
        *,
        nodes: Sequence[NodeClient] | None = None,
        quorum: int | None = None,
        grace: float | None = None,
    ) -> Answers[T]:
        """`fn` on every node (or `nodes`) at once. Without a `quorum`, wait for every node
        (each bounded by its timeouts); with one, stop waiting `grace` (default:
        `straggler_grace`) after that many answered."""
        targets = self.nodes if nodes is None else list(nodes)
        tasks = {asyncio.ensure_future(self._one(node, fn)): node for node in targets}
        results: dict[str, T] = {}
        failures: dict[str, NodeOutcome] = {}
        pending = set(tasks)
        grace_ends: float | None = None
        try:
            while pending:
                timeout = None if grace_ends is None else max(0.0, grace_ends - time.monotonic())
                done, pending = await asyncio.wait(
                    pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    break  # the grace after the quorum ran out
                for task in done:
                    url = tasks[task].base_url
                    ok, value = task.result()
                    if ok:
                        results[url] = value  # type: ignore[assignment]
                    else:
                        failures[url] = outcome_of(value)  # type: ignore[arg-type]
                if quorum is not None and grace_ends is None and len(results) >= quorum:
                    wait = self.policy.straggler_grace if grace is None else grace
                    grace_ends = time.monotonic() + wait
        finally:
            for task in pending:
                task.cancel()
                url = tasks[task].base_url
                self.command.slow.add(url)
                failures[url] = NodeOutcome(
                    NodeState.UNAVAILABLE, LocalCode.SLOW, "still answering when no longer needed"
                )
                self.command.outcomes.note(url, failures[url])
        return Answers(results, failures)

    async def first(self, fn: Ask[T], what: str) -> tuple[NodeClient, T]:
        """The first valid answer of any node: nodes are asked in order, the next one as
        soon as the last failed or `hedge_after` passed without an answer."""
        queue = [n for n in self.nodes if n.base_url not in self.command.down] or self.nodes
        queue.sort(key=lambda n: n.base_url in self.command.slow)
        running: dict[asyncio.Future[tuple[bool, object]], NodeClient] = {}
        failures: dict[str, NodeOutcome] = {}
        try:
            while queue or running:
                if queue and not running:
                    node = queue.pop(0)
                    running[asyncio.ensure_future(self._one(node, fn))] = node
                done, _ = await asyncio.wait(
                    set(running),
                    timeout=self.policy.hedge_after if queue else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done and queue:  # hedge: also ask the next node
                    node = queue.pop(0)
                    running[asyncio.ensure_future(self._one(node, fn))] = node
                for task in done:
                    node = running.pop(task)
                    ok, value = task.result()
                    if ok:
                        return node, value  # type: ignore[return-value]
                    failures[node.base_url] = outcome_of(value)  # type: ignore[arg-type]
        finally:
            for task, node in running.items():
                task.cancel()
                self.command.slow.add(node.base_url)
        raise threshold_not_met(what, 1, failures, agree=self.threshold)

    async def _one(
        self,
        node: NodeClient,
        fn: Ask[T],
        expected: Callable[[StatecacheError], bool] | None = None,
    ) -> tuple[bool, T | StatecacheError]:
        url = node.base_url
        down = self.command.down.get(url)
        if down is not None:
            return False, NodeTimeout(url, "timed out earlier in this command")
        last: StatecacheError = NodeUnavailable(url, "not tried")
        for attempt in range(self.policy.attempts):
            remaining = self.command.remaining()
            if remaining <= 0:
                last = NodeTimeout(url, "the command's deadline passed")
                break
            try:
                value = await asyncio.wait_for(fn(node), min(self.policy.timeout, remaining))
            except TimeoutError as exc:
                # Hung or too slow: not asked again in this command.
                last = exc if isinstance(exc, NodeTimeout) else NodeTimeout(url, _late(remaining))
                self.command.down[url] = last.outcome()
                break
            except NodeUnavailable as exc:
                last = exc
            except NodeError as exc:
                last = exc
                if exc.status != 429 and exc.status < 500:
                    break  # a refusal: final
            except StatecacheError as exc:  # verification failures: never retried
                last = exc
                break
            except pre.PreError as exc:  # a record from the node that does not verify
                last = VerificationFailed(str(exc), url)
                break
            else:
                self.command.outcomes.ok(url)
                return True, value
            if attempt + 1 < self.policy.attempts:
                await asyncio.sleep(self.policy.delay(attempt))
        if isinstance(last, NodeUnavailable):
            # Every attempt failed (refused, reset, closed just before the idle timeout):
            # not asked again in this command, so it costs the command once.
            self.command.down[url] = last.outcome()
        if expected is None or not expected(last):
            self.command.outcomes.note(url, outcome_of(last))
        return False, last


def _late(remaining: float) -> str:
    return "no answer before the command's deadline" if remaining < 1 else "no answer in time"

"""How long the SDK waits, how often it retries and how much it reads: one policy per
`Statecache`, with defaults documented in docs/SECURITY.md ("Bounds")."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """Per request: `timeout` for the whole exchange, `connect_timeout` to open a
    connection and `idle_timeout` between two reads of an answer (a hung node is found by
    this one, without cutting short a large answer that keeps arriving); up to `attempts`
    tries while a node is unreachable or answers 5xx / 429, with jittered backoff, but a
    node that timed out is not asked again in the same command.

    Per command: `command_timeout` bounds the whole call. Reads any one node can serve go
    to one node and, when it has not answered after `hedge_after`, to the next as well;
    reads that need M answers wait `straggler_grace` for the rest once M arrived.

    Answers: at most `max_answer_bytes` each, and at most `max_pages` pages per listing."""

    attempts: int = 3
    base_delay: float = 0.05
    max_delay: float = 1.0
    timeout: float = 30.0
    connect_timeout: float = 3.0
    idle_timeout: float = 3.0
    hedge_after: float = 0.5
    straggler_grace: float = 0.25
    command_timeout: float = 300.0
    max_answer_bytes: int = 64 * 1024 * 1024
    max_pages: int = 20_000

    def __post_init__(self) -> None:
        if self.attempts < 1 or min(self.timeout, self.command_timeout) <= 0:
            raise ValueError("need attempts >= 1 and positive timeouts")

    def delay(self, attempt: int) -> float:
        # Full jitter: spreads retries of many devices after a node restarts.
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))  # noqa: S311

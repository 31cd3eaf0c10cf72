"""Per-node outcomes: one schema for every SDK call and CLI command.

Each node a command touched ends in one state:

    ok           answered validly every time it was asked
    behind       answered validly but held less than another node (an older epoch, a
                 missing snapshot): honest nodes that missed a write look like this
    unavailable  could not be reached, timed out, or refused with a 5xx / 429
    suspect      answered something that failed verification or broke the API's bounds
                 (a forged record, endless pages, an oversized or misshapen answer)

with a machine `code` (the node's own `Code` when it refused, else a `LocalCode`) and a
one-line `message`. In JSON: `"nodes": {URL: {"state", "code", "message"}}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cache_service.protocol.codes import Code

__all__ = ["LocalCode", "NodeOutcome", "NodeState", "OutcomeCode", "Outcomes"]


class NodeState(StrEnum):
    OK = "ok"
    BEHIND = "behind"
    UNAVAILABLE = "unavailable"
    SUSPECT = "suspect"


class LocalCode(StrEnum):
    """What the device concluded about a node (the node said nothing that named it)."""

    UNREACHABLE = "unreachable"  # connection refused, unknown host, TLS, reset
    TIMEOUT = "timeout"  # no (complete) answer within the per-request timeout
    SLOW = "slow"  # still working when the command no longer needed it
    SKIPPED = "skipped"  # not asked again in this command after it timed out
    INVALID_ANSWER = "invalid_answer"  # off the API: shape, size, count, paging, identity
    VERIFICATION_FAILED = "verification_failed"  # a record or fragment that does not verify
    ROLLBACK = "rollback"  # older than what the device or the delivery service knows
    FORK = "fork"  # two signed snapshots at one epoch
    MISSING = "missing"  # left out something another node holds


OutcomeCode = Code | LocalCode

# Worse states win when one node has several outcomes in one command.
_RANK = {NodeState.OK: 0, NodeState.BEHIND: 1, NodeState.UNAVAILABLE: 2, NodeState.SUSPECT: 3}


@dataclass(frozen=True)
class NodeOutcome:
    state: NodeState
    code: OutcomeCode | None = None
    message: str | None = None

    def as_json(self) -> dict[str, str | None]:
        return {
            "state": self.state.value,
            "code": None if self.code is None else self.code.value,
            "message": self.message,
        }

    def __str__(self) -> str:
        text = self.message or (self.code.value if self.code else self.state.value)
        return text if self.state is NodeState.OK else f"{self.state.value}: {text}"


OK = NodeOutcome(NodeState.OK)


class Outcomes:
    """What one command saw of each node; a node keeps its worst outcome."""

    def __init__(self, nodes: list[str]) -> None:
        self._nodes = list(nodes)
        self._seen: dict[str, NodeOutcome] = {}

    def note(self, node: str, outcome: NodeOutcome) -> None:
        held = self._seen.get(node)
        if held is None or _RANK[outcome.state] > _RANK[held.state]:
            self._seen[node] = outcome

    def ok(self, node: str) -> None:
        self.note(node, OK)

    def forget(self, code: OutcomeCode) -> None:
        """Drop the outcomes with `code`: refusals the caller recovered from by asking
        again (a publish sealed again under a label's new key epoch)."""
        self._seen = {url: o for url, o in self._seen.items() if o.code != code}

    def get(self, node: str) -> NodeOutcome | None:
        return self._seen.get(node)

    def snapshot(self) -> dict[str, NodeOutcome]:
        """Every node of the profile that this command asked, in profile order."""
        return {url: self._seen[url] for url in self._nodes if url in self._seen}

    def in_state(self, state: NodeState) -> dict[str, NodeOutcome]:
        return {url: o for url, o in self.snapshot().items() if o.state is state}

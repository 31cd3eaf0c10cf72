"""What a read reports: where it read, what it opened and what it could not deliver
(`Incomplete`), and what each node did."""

from __future__ import annotations

from dataclasses import dataclass, field

from .outcomes import NodeOutcome, NodeState, Outcomes

__all__ = ["Incomplete", "ReadReport"]


@dataclass(frozen=True)
class Incomplete:
    """Something the read did not deliver: a (group, kind) whose newer snapshot is not
    confirmed or could not be opened (`label` set when the device holds no key for it),
    or, with no group, nodes that could not be read (`nodes`)."""

    reason: str
    group_id: bytes | None = None
    kind: str | None = None
    mls_epoch: int | None = None
    label: str | None = None
    nodes: tuple[str, ...] = ()


@dataclass
class ReadReport:
    """What the last onboarding or sync saw: where it read, what it opened, what it could
    not deliver (`incomplete`; `complete` when nothing) and what each node did (`nodes`,
    the shared per-node schema)."""

    primary: str = ""
    opened: int = 0
    unchanged: int = 0
    trees: int = 0  # ratchet trees rebuilt (base and patches, verified)
    outcomes: Outcomes = field(default_factory=lambda: Outcomes([]))
    incomplete: list[Incomplete] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.incomplete

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

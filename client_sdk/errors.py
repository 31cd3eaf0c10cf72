"""Exceptions of the device SDK.

    StatecacheError
    ├── NodeError            a node refused a request (RFC 9457 problem: status, code, detail)
    │   └── EpochConflict    409: the MLS or key epoch did not move forward (current_epoch)
    ├── NodeUnavailable      a node could not be reached or answered garbage (also OSError)
    │   └── NodeTimeout      ... in time (also TimeoutError / asyncio.TimeoutError)
    ├── ThresholdNotMet      fewer than M nodes gave a valid answer (lists each node's failure)
    ├── VerificationFailed   a node's answer failed verification (wraps a pre.PreError)
    │   ├── RollbackError    a snapshot's MLS epoch is below one this device already knows
    │   ├── ForkError        two different snapshots claim the same (group, kind, epoch)
    │   ├── MissingSnapshot  a node left out a snapshot another node or the device knows
    │   └── TreeMismatch     a ratchet tree rebuilt from its base and patches does not match
    │                        a tree hash it must match (its signed header's, the next patch's,
    │                        the caller's GroupContext), or a tree snapshot does not decode
    ├── KeystoreError        the local keystore is missing, unreadable or locked
    └── AdminRequired        an admin action on a device without the account seed
                             (also PermissionError)

Bad arguments from the caller stay TypeError / ValueError.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AdminRequired",
    "EpochConflict",
    "ForkError",
    "KeystoreError",
    "MissingSnapshot",
    "NodeError",
    "NodeTimeout",
    "NodeUnavailable",
    "RollbackError",
    "StatecacheError",
    "ThresholdNotMet",
    "TreeMismatch",
    "VerificationFailed",
]


class StatecacheError(Exception):
    """Base of everything the SDK raises on purpose."""


class NodeError(StatecacheError):
    def __init__(self, node: str, status: int, problem: dict[str, Any]) -> None:
        self.node = node
        self.status = status
        self.problem = problem
        self.code = str(problem.get("code", "unknown"))
        self.detail = problem.get("detail")
        super().__init__(
            f"{node}: {status} {self.code}" + (f": {self.detail}" if self.detail else "")
        )


class EpochConflict(NodeError):
    @property
    def current_epoch(self) -> int | None:
        value = self.problem.get("current_epoch")
        return value if isinstance(value, int) else None


class NodeUnavailable(StatecacheError, OSError):
    def __init__(self, node: str, reason: str) -> None:
        self.node = node
        super().__init__(f"{node}: {reason}")


class NodeTimeout(NodeUnavailable, TimeoutError):
    pass


class VerificationFailed(StatecacheError):
    def __init__(self, what: str, node: str | None = None) -> None:
        self.node = node
        super().__init__(what if node is None else f"{node}: {what}")


class RollbackError(VerificationFailed):
    pass


class ForkError(VerificationFailed):
    pass


class MissingSnapshot(VerificationFailed):
    pass


class TreeMismatch(VerificationFailed):
    pass


class ThresholdNotMet(StatecacheError):
    def __init__(self, what: str, needed: int, failures: dict[str, str]) -> None:
        self.needed = needed
        self.failures = failures
        detail = "; ".join(
            f"{node}: {why.removeprefix(node + ': ')}" for node, why in failures.items()
        )
        super().__init__(f"{what}: fewer than {needed} nodes answered validly ({detail})")


class KeystoreError(StatecacheError):
    pass


class AdminRequired(StatecacheError, PermissionError):
    pass

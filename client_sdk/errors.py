"""Exceptions of the device SDK.

    StatecacheError
    ├── NodeError            a node refused a request (RFC 9457 problem: status, code, detail)
    │   └── EpochConflict    409: the MLS or key epoch did not move forward (current_epoch)
    ├── NodeUnavailable      a node could not be reached or answered garbage (also OSError)
    │   └── NodeTimeout      ... in time (also TimeoutError / asyncio.TimeoutError)
    └── VerificationFailed   a node's answer failed verification (wraps a pre.PreError)

Bad arguments from the caller stay TypeError / ValueError.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "EpochConflict",
    "NodeError",
    "NodeTimeout",
    "NodeUnavailable",
    "StatecacheError",
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

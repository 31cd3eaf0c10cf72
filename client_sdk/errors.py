"""Exceptions of the device SDK.

    StatecacheError
    ├── NodeError            a node refused a request (RFC 9457 problem: status, `Code`, detail)
    │   └── EpochConflict    409: the MLS or key epoch did not move forward (current_epoch)
    ├── NodeUnavailable      a node could not be reached (also OSError)
    │   └── NodeTimeout      ... in time (also TimeoutError / asyncio.TimeoutError)
    ├── ThresholdNotMet      fewer than M nodes gave a valid answer (`nodes`: each node's
    │   │                    typed `NodeOutcome`)
    │   └── NotApproved      ... because no node knows this device: not approved yet
    │   └── QuotaExceeded    ... because nodes refused it for an account quota
    ├── StateTooLarge        a state larger than the nodes take, refused before sealing
    │                        (also ValueError)
    ├── TreeUnavailable      no node serves a confirmed tree chain reaching a group's
    │                        tree at an MLS epoch: not published yet, or older than the
    │                        window nodes keep (`newest`, `oldest` say which)
    ├── VerificationFailed   a node's answer failed verification (wraps a pre.PreError)
    │   ├── BadAnswer        an answer off the API: shape, size, count, paging, identity
    │   ├── RollbackError    a snapshot's MLS epoch is below one this device already knows
    │   ├── ForkError        two different snapshots claim the same (group, kind, epoch)
    │   ├── MissingSnapshot  a node left out a snapshot another node or the device knows
    │   ├── Purged           a node served a snapshot the admin purged (it missed the purge)
    │   └── TreeMismatch     a ratchet tree rebuilt from its base and patches does not match
    │                        a tree hash it must match (its signed header's, the next patch's,
    │                        the caller's GroupContext), or a tree snapshot does not decode
    ├── KeystoreError        the local keystore is missing, unreadable or locked
    ├── EnrolmentRefused     an enrolment request damaged, old, unsigned, for another
    │                        set-up or device (also ValueError); `code` says which
    └── AdminRequired        an admin action on a device without the account seed
                             (also PermissionError)

Every error about one node says what it makes of that node: `outcome()`, in the shared
per-node schema (`outcomes.NodeOutcome`). Bad arguments from the caller stay TypeError /
ValueError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cache_service.protocol.codes import Code, parse_code
from cache_service.protocol.limits import format_mib

from .outcomes import LocalCode, NodeOutcome, NodeState

__all__ = [
    "AdminRequired",
    "BadAnswer",
    "ContentConflict",
    "DeviceRevoked",
    "EnrolmentRefused",
    "EpochConflict",
    "ForkError",
    "KeystoreError",
    "MissingSnapshot",
    "NoKey",
    "NodeError",
    "NodeTimeout",
    "NodeUnavailable",
    "NotApproved",
    "Purged",
    "QuotaExceeded",
    "RollbackError",
    "StateTooLarge",
    "StatecacheError",
    "ThresholdNotMet",
    "TreeMismatch",
    "TreeUnavailable",
    "Unconfirmed",
    "VerificationFailed",
    "outcome_of",
    "threshold_not_met",
]


class StatecacheError(Exception):
    """Base of everything the SDK raises on purpose."""


class NodeError(StatecacheError):
    def __init__(self, node: str, status: int, problem: Mapping[str, Any]) -> None:
        self.node = node
        self.status = status
        self.problem = dict(problem)
        self.code: Code = parse_code(problem.get("code"))
        detail = problem.get("detail")
        self.detail = detail if isinstance(detail, str) else None
        super().__init__(
            f"{node}: {status} {self.code.value}" + (f": {self.detail}" if self.detail else "")
        )

    def outcome(self) -> NodeOutcome:
        if self.status == 429 or self.status >= 500:
            state = NodeState.UNAVAILABLE
        elif self.code is Code.WRONG_NODE:
            state = NodeState.SUSPECT  # another key answers at this address
        else:
            state = NodeState.UNAVAILABLE  # a refusal: this node did not serve the request
        return NodeOutcome(state, self.code, self.detail or f"{self.status} {self.code.value}")


class EpochConflict(NodeError):
    @property
    def current_epoch(self) -> int | None:
        value = self.problem.get("current_epoch")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


class NodeUnavailable(StatecacheError, OSError):
    code: LocalCode = LocalCode.UNREACHABLE

    def __init__(self, node: str, reason: str) -> None:
        self.node = node
        self.reason = reason
        super().__init__(f"{node}: {reason}")

    def outcome(self) -> NodeOutcome:
        return NodeOutcome(NodeState.UNAVAILABLE, self.code, self.reason)


class NodeTimeout(NodeUnavailable, TimeoutError):
    code = LocalCode.TIMEOUT


class VerificationFailed(StatecacheError):
    code: LocalCode = LocalCode.VERIFICATION_FAILED
    state: NodeState = NodeState.SUSPECT

    def __init__(self, what: str, node: str | None = None) -> None:
        self.node = node
        self.what = what
        super().__init__(what if node is None else f"{node}: {what}")

    def outcome(self) -> NodeOutcome:
        return NodeOutcome(self.state, self.code, self.what)


class BadAnswer(VerificationFailed):
    code = LocalCode.INVALID_ANSWER


class RollbackError(VerificationFailed):
    # An honest node that missed a write serves an older epoch too.
    code = LocalCode.ROLLBACK
    state = NodeState.BEHIND


class ForkError(VerificationFailed):
    code = LocalCode.FORK


class MissingSnapshot(VerificationFailed):
    code = LocalCode.MISSING
    state = NodeState.BEHIND


class Purged(VerificationFailed):
    code = LocalCode.MISSING
    state = NodeState.BEHIND


class TreeMismatch(VerificationFailed):
    pass


class Unconfirmed(VerificationFailed):
    """A snapshot fewer than M nodes' receipts back (yet): never taken as state. `newer`:
    above what the device holds (the group is incomplete until it is confirmed); else a
    copy at an epoch the device holds (a superseded retry, or a forgery), ignored."""

    code = LocalCode.MISSING
    state = NodeState.OK  # an honest node holds such a snapshot until its publisher confirms

    def __init__(self, what: str, node: str | None = None, *, newer: bool) -> None:
        super().__init__(what, node)
        self.newer = newer


class NoKey(VerificationFailed):
    """The device holds no key for a snapshot's (label, key epoch): a grant it lacks or
    could not fetch, not the node's fault. The label is incomplete."""

    state = NodeState.OK


class ThresholdNotMet(StatecacheError):
    """Fewer than `needed` nodes answered validly; `nodes` says what each node did."""

    def __init__(self, what: str, needed: int, nodes: Mapping[str, NodeOutcome]) -> None:
        self.what = what
        self.needed = needed
        self.nodes = dict(nodes)
        failed = {url: o for url, o in self.nodes.items() if o.state is not NodeState.OK}
        deleted = sum(o.code is Code.ACCOUNT_DELETED for o in failed.values())
        # No node answered, and some say (with the admin's order) the account was deleted.
        self.account_deleted = deleted > 0 and len(failed) == len(self.nodes)
        if self.account_deleted:
            super().__init__(
                f"this account was deleted by its admin ({deleted} of {len(self.nodes)} "
                "nodes say so): this device's home can be removed"
            )
            return
        fewer = "no node" if needed == 1 else f"fewer than {needed} nodes"
        super().__init__(f"{what}: {fewer} answered validly ({_failures_text(self.nodes)})")

    @property
    def failures(self) -> dict[str, NodeOutcome]:
        return {url: o for url, o in self.nodes.items() if o.state is not NodeState.OK}


def _failures_text(nodes: Mapping[str, NodeOutcome]) -> str:
    """The nodes that failed, each reason once: `a, b: unavailable: connection refused;
    c: suspect: ...` (`all 3 nodes: ...` when every node failed alike)."""
    by_reason: dict[str, list[str]] = {}
    for url, outcome in nodes.items():
        if outcome.state is not NodeState.OK:
            by_reason.setdefault(str(outcome), []).append(url)
    if not by_reason:
        return "no node answered"
    if len(by_reason) == 1 and len(nodes) > 1:
        [(reason, urls)] = by_reason.items()
        if len(urls) == len(nodes):
            return f"all {len(urls)} nodes: {reason}"
    return "; ".join(f"{', '.join(urls)}: {reason}" for reason, urls in by_reason.items())


_MiB = 1024 * 1024


class QuotaExceeded(ThresholdNotMet):
    """Nodes refused a publish for an account quota (`quota_exceeded`): `reasons` says
    which, in the SDK's words."""

    code = "quota_exceeded"

    def __init__(
        self, what: str, needed: int, nodes: Mapping[str, NodeOutcome], reasons: list[str]
    ) -> None:
        super().__init__(what, needed, nodes)
        self.reasons = reasons
        refused = sum(o.code is Code.QUOTA_EXCEEDED for o in self.nodes.values())
        self.args = (
            f"{what}: refused by {refused} of {len(self.nodes)} nodes: {'; '.join(reasons)}; "
            "ask the nodes' operator to raise the quota, or publish less",
        )


class StateTooLarge(StatecacheError, ValueError):
    """A state larger than the nodes take (`size` and `limit` in bytes), refused before
    anything is sealed or uploaded. `what` names it (a file name, for the CLI)."""

    code = "too_large"

    def __init__(self, size: int, limit: int, what: str) -> None:
        self.size, self.limit, self.what = size, limit, what
        if limit >= _MiB and size - limit >= _MiB // 10:
            shown, most = format_mib(size, up=True), format_mib(limit)
        else:  # within one decimal of MiB of each other: exact
            shown, most = f"{size:,} bytes", f"{limit:,} bytes"
        super().__init__(f"{what} is {shown}; the largest state a node takes is {most}")

    def named(self, what: str) -> StateTooLarge:
        return StateTooLarge(self.size, self.limit, what)


class ContentConflict(StatecacheError):
    """Other content at a (group, kind, MLS epoch) this device already published: a new
    state needs a new epoch."""


class TreeUnavailable(StatecacheError):
    """No node serves a confirmed chain that rebuilds `group_id`'s tree at exactly
    `mls_epoch`. `newest` / `oldest`: the newest tree piece and the oldest base the nodes
    that answered serve, verified and confirmed (None: none); `served`: a piece of that
    very epoch among them. `newest` below `mls_epoch`: not published (or not confirmed)
    yet, retry later; `oldest` above it: older than the window nodes keep.
    `trees_at` raises it for the first group it could not serve: `available` holds the
    trees it did get, `missing` every group it could not, with its epoch."""

    def __init__(
        self,
        group_id: bytes,
        mls_epoch: int,
        *,
        newest: int | None,
        oldest: int | None,
        served: bool,
        answered: int,
        asked: int,
    ) -> None:
        self.group_id, self.mls_epoch = group_id, mls_epoch
        self.newest, self.oldest = newest, oldest
        self.available: dict[bytes, bytes] = {}
        self.missing: dict[bytes, int] = {group_id: mls_epoch}
        what = f"no tree of group {group_id.hex()} at MLS epoch {mls_epoch}"
        if newest is None:
            why = "no node serves a confirmed tree of this group: none published yet (retry later)"
        elif newest < mls_epoch:
            why = f"the nodes' newest is epoch {newest}: not published yet, retry later"
        elif oldest is None or oldest > mls_epoch:
            kept = "no base" if oldest is None else f"trees from epoch {oldest} on"
            why = f"the nodes keep {kept}: it is older than the window kept"
        elif served:
            why = "its chain is incomplete on every node that answered"
        else:
            why = (
                f"the nodes keep no piece of that epoch (theirs run from {oldest} to "
                f"{newest}): none was published for it, or it was pruned"
            )
        if answered < asked:
            why += f"; {answered} of {asked} nodes answered"
        super().__init__(f"{what}: {why}")

    def with_others(
        self, available: Mapping[bytes, bytes], missing: Mapping[bytes, int]
    ) -> TreeUnavailable:
        """This error, for a `trees_at` that got `available` and missed `missing`."""
        self.available, self.missing = dict(available), dict(missing)
        if len(missing) > 1:
            self.args = (f"{self.args[0]} (and {len(missing) - 1} more groups)",)
        return self


class KeystoreError(StatecacheError):
    pass


class AdminRequired(StatecacheError, PermissionError):
    pass


def outcome_of(exc: StatecacheError) -> NodeOutcome:
    """What an error raised while talking to one node makes of that node."""
    if isinstance(exc, NodeError | NodeUnavailable | VerificationFailed):
        return exc.outcome()
    return NodeOutcome(NodeState.UNAVAILABLE, None, str(exc))


class EnrolmentRefused(StatecacheError, ValueError):
    """An enrolment request an admin must not approve as it stands. `code` says why:
    `damaged_enrolment` (changed, cut or extended in copying), `old_enrolment` (an `sc1.`
    request), `invalid_enrolment` (not signed by the device it names),
    `enrolment_mismatch` (made for another account, node list or threshold) or
    `fingerprint_mismatch` (not the device the admin expected)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class NotApproved(ThresholdNotMet):
    """No node knows this device: it enrolled, and no admin has approved it yet (or the
    account id it was given is wrong). Every node that answered refused its signature."""

    def __init__(self, what: str, needed: int, nodes: Mapping[str, NodeOutcome]) -> None:
        super().__init__(what, needed, nodes)
        self.args = (
            "this device is not approved yet: ask an admin to run `statecache device approve "
            "…` with the request `statecache device enroll` printed",
        )


class DeviceRevoked(ThresholdNotMet):
    """M or more nodes, and every node that answered, refuse this device as revoked."""

    code = "device_revoked"

    def __init__(self, what: str, needed: int, nodes: Mapping[str, NodeOutcome]) -> None:
        super().__init__(what, needed, nodes)
        self.args = (
            "this device was revoked by an admin: it can no longer read or publish "
            "(enrol it again, in a new home, if it should)",
        )


def threshold_not_met(
    what: str, needed: int, nodes: Mapping[str, NodeOutcome], *, agree: int = 1
) -> ThresholdNotMet:
    """`ThresholdNotMet`; or, when no node took the request and at least `needed` and
    `agree` (M) nodes said the same of this device, what they said: `NotApproved` (every
    node that answered refused the device's signature: `unauthenticated`, the nodes' one
    answer for an unknown device, an unknown account and a bad signature) or
    `DeviceRevoked`. Fewer than M such answers prove nothing: M - 1 lying nodes cannot
    tell a device that."""
    answered = [o for o in nodes.values() if isinstance(o.code, Code) or o.state is NodeState.OK]
    for code, error in ((Code.UNAUTHENTICATED, NotApproved), (Code.DEVICE_REVOKED, DeviceRevoked)):
        if len(answered) >= max(needed, agree, 1) and all(o.code is code for o in answered):
            return error(what, needed, nodes)
    return ThresholdNotMet(what, needed, nodes)

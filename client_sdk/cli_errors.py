"""How a failed `statecache` command is reported: one line on stderr, or (`--json`) one
object `{"error": {"code", "message", "nodes"}}` on stdout, with a machine code for
every failure the SDK knows."""

from __future__ import annotations

import sys

from .commands import CommandError
from .errors import (
    AdminRequired,
    ContentConflict,
    DeviceRevoked,
    EnrolmentRefused,
    KeystoreError,
    NodeError,
    NodeUnavailable,
    NotApproved,
    QuotaExceeded,
    StatecacheError,
    StateTooLarge,
    ThresholdNotMet,
    VerificationFailed,
)
from .outcomes import NodeOutcome
from .output import error_json, escape

__all__ = ["error_code", "error_nodes", "fail", "one_line"]


def one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, StatecacheError) and exc.filename:
        text = f"{exc.filename}: {exc.strerror}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def error_code(exc: BaseException) -> str:
    """A failure's machine code for `--json`: the node's code, or what the SDK found."""
    if isinstance(exc, QuotaExceeded | StateTooLarge):
        return exc.code
    if isinstance(exc, NodeError | NodeUnavailable | VerificationFailed):
        code = exc.outcome().code
        return code.value if code is not None else "node_error"
    if isinstance(exc, DeviceRevoked):
        return "device_revoked"
    if isinstance(exc, NotApproved):
        return "not_approved"
    if isinstance(exc, ThresholdNotMet):
        return "account_deleted" if exc.account_deleted else "threshold_not_met"
    if isinstance(exc, EnrolmentRefused):
        return exc.code
    if isinstance(exc, ContentConflict):
        return "conflict"
    if isinstance(exc, KeystoreError):
        return "keystore"
    if isinstance(exc, AdminRequired | CommandError):
        return "refused"
    return "error"


def error_nodes(exc: BaseException) -> dict[str, NodeOutcome]:
    if isinstance(exc, ThresholdNotMet):
        return exc.nodes
    if isinstance(exc, NodeError | NodeUnavailable | VerificationFailed) and exc.node:
        return {exc.node: exc.outcome()}
    return {}


def fail(as_json: bool, code: str, message: str, nodes: dict[str, NodeOutcome], status: int) -> int:
    """A failed command: one JSON object on stdout (`--json`), else one line on stderr."""
    if as_json:
        sys.stdout.write(error_json(code, message, nodes))
    else:  # node words may be in it: control characters shown, never sent to the terminal
        print(f"statecache: {escape(message)}", file=sys.stderr)
    return status

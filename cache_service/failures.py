"""Why a node cannot start or keep running: one line for the operator.

`statecache serve` prints a `NodeFailure` as `statecache: <message>` on stderr and exits 1;
everything the node does on the way up (options, data dir, node key, Redis, listening)
turns its failures into one of these, never a traceback.
"""

from __future__ import annotations

__all__ = ["NodeFailure", "one_line"]


class NodeFailure(Exception):
    """The node cannot start, or must stop; `str()` is one line that says why."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


def one_line(exc: BaseException) -> str:
    """An OS or library error as a short phrase: `strerror` for OS errors (the caller names
    the file), else the message, else the class name."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())

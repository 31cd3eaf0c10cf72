"""A worker process of `statecache serve --processes N`: `python -m cache_service.node_worker`,
started by `node_processes` (not by hand). It serves as a one-process node does, with the
node key its parent read, its socket sharing the node's port.

Its parent talks to it over stdin and stdout, never argv or the environment (the node key,
and a Redis URL with its password, travel there):

- stdin: first a line of JSON, `{"index": I, "node_key": HEX, "settings": {...}}`; later
  `quiet`: the parent stops the node over another worker's failure and prints that one
  line, so this one logs nothing more. End of file (the parent stops it after a failure,
  or is gone, even killed): stop as on SIGTERM.
- stdout: `listening HOST PORT` once its socket listens, or `failed MESSAGE` (one line)
  before it exits 1.

Both are moved to private descriptors at once (stdout then points at stderr), so the
re-encryption pool's processes inherit neither. Logs go to the node's stderr, each line
with `"worker": I`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys

import pre

from .failures import NodeFailure, one_line
from .logs import configure_logging
from .serving import serve
from .settings import Settings

__all__ = ["main"]

log = logging.getLogger("statecache.node")

_CHUNK = 65536


class _Parent:
    """The pipes to the parent: configuration and `quiet` in, one-line reports out."""

    def __init__(self) -> None:
        self._in = os.dup(0)  # new descriptors are not inherited by the pool's processes
        self._out = os.dup(1)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(2, 1)  # anything printed lands in the log, not in the reports
        self._pending = b""

    def configuration(self) -> dict[str, object]:
        while b"\n" not in self._pending:
            chunk = os.read(self._in, _CHUNK)
            if not chunk:
                raise EOFError("no configuration from the parent")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        config: dict[str, object] = json.loads(line)
        return config

    def tell(self, line: str) -> None:
        with contextlib.suppress(OSError):  # the parent is gone: end of file on stdin stops us
            os.write(self._out, f"{' '.join(line.split())}\n".encode())

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Act on what the parent says (and on what it said with the configuration)."""
        loop.add_reader(self._in, self._readable, loop)
        self._handle(loop, self._pending, end=False)

    def _readable(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            chunk = os.read(self._in, _CHUNK)
        except OSError:
            chunk = b""
        self._handle(loop, chunk, end=not chunk)

    def _handle(self, loop: asyncio.AbstractEventLoop, chunk: bytes, *, end: bool) -> None:
        if b"quiet" in chunk.split(b"\n"):
            logging.disable(logging.CRITICAL)
        if end:
            loop.remove_reader(self._in)
            signal.raise_signal(signal.SIGTERM)  # serve() stops on it as on the operator's


def main() -> int:
    parent = _Parent()
    try:
        config = parent.configuration()
        settings = Settings.model_validate(config["settings"])
        node = pre.NodeSecrets.from_bytes(bytes.fromhex(str(config["node_key"])))
        index = int(str(config["index"]))
    except (EOFError, OSError, ValueError, KeyError, pre.PreError) as exc:
        parent.tell(f"failed worker process: bad configuration from its parent: {one_line(exc)}")
        return 1
    configure_logging(settings.log_level, worker=index)
    try:
        asyncio.run(_serve(settings, node, parent))
    except NodeFailure as exc:
        parent.tell(f"failed {exc}")
        return 1
    except Exception as exc:
        log.debug("unexpected failure", exc_info=True)
        parent.tell(f"failed unexpected error: {type(exc).__name__}: {one_line(exc)}")
        return 1
    return 0


async def _serve(settings: Settings, node: pre.NodeSecrets, parent: _Parent) -> None:
    parent.watch(asyncio.get_running_loop())
    await serve(
        settings, node=node, listening=lambda host, port: parent.tell(f"listening {host} {port}")
    )


if __name__ == "__main__":
    sys.exit(main())

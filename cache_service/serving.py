"""One node process serving: start the app, listen, run until a signal or a failure, stop.

`serve()` is what `statecache serve` runs. A worker of `--processes N` runs it too, with
the node key its parent read, a socket sharing the port with the other workers
(SO_REUSEPORT), and a `listening` callback that tells the parent instead of logging and
writing the ready file (the parent does that once for the whole node).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

import pre

from .app import STOP, create_app
from .failures import NodeFailure, one_line
from .node_identity import warn_if_others_can_read
from .settings import Settings
from .startup import Stop
from .tls import ServerTLS, server_tls

__all__ = ["Listening", "announce", "load_tls", "serve"]

log = logging.getLogger("statecache.node")

Listening = Callable[[str, int], None]  # (host, port) once the socket listens


def load_tls(settings: Settings) -> ServerTLS | None:
    """The certificate and key, checked: a bad one stops the node before anything starts."""
    if settings.tls_cert is not None and settings.tls_key is not None:
        return server_tls(settings.tls_cert, settings.tls_key)
    return None


async def serve(
    settings: Settings,
    ready_file: Path | None = None,
    *,
    node: pre.NodeSecrets | None = None,
    listening: Listening | None = None,
) -> None:
    """Run until SIGTERM or SIGINT, then shut down cleanly (Redis flushed, pool joined).

    Raises `NodeFailure` if the node cannot start, or must stop (the embedded redis-server
    keeps dying); whatever was started is stopped first."""
    tls = load_tls(settings)
    app = create_app(settings, node=node)
    stop = app[STOP]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.request)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    if not await _start(runner, stop):
        log.info("stopped while starting")
        return
    try:
        host, port = await _listen(runner, settings, tls)
        if listening is not None:
            listening(host, port)
        else:
            announce(settings, tls, ready_file, host, port)
        await stop.wait()
    except BaseException:
        await _cleanup(runner, report=False)
        raise
    if stop.failure is not None:
        log.error("stopping", extra={"reason": str(stop.failure)})
        await _cleanup(runner, report=False)
        raise stop.failure
    log.info("stopping")
    await _cleanup(runner, report=True)


def announce(
    settings: Settings,
    tls: ServerTLS | None,
    ready_file: Path | None,
    host: str,
    port: int,
    **fields: object,
) -> None:
    """The node listens: log it, warn about a TLS key others can read (said now, so that a
    failure to start stays one line), write the ready file (` https` when serving TLS)."""
    scheme = "http" if tls is None else "https"
    log.info(
        "listening",
        extra={
            "host": host,
            "port": port,
            "scheme": scheme,
            "data_dir": str(settings.data_dir),
            **fields,
        },
    )
    if tls is not None:
        warn_if_others_can_read(tls.key_path, tls.key_mode, "TLS key file", owner=tls.key_owner)
    if ready_file is not None:
        _write_ready_file(ready_file, f"{host} {port}{' https' if tls else ''}\n")


async def _start(runner: web.AppRunner, stop: Stop) -> bool:
    """Set the app up (its lifecycle: lock, key, Redis, pool; closed again on failure);
    False if a signal came first (e.g. while waiting for Redis): then nothing is left open."""
    setup = asyncio.ensure_future(runner.setup())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({setup, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not setup.done():
        setup.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await setup
        try:
            await runner.app.cleanup()  # whatever the lifecycle had opened when cancelled
        except Exception as exc:
            log.error("clean shutdown failed", extra={"error": one_line(exc)})
        return False
    setup.result()  # a startup failure: raise it
    return True


async def _listen(
    runner: web.AppRunner, settings: Settings, tls: ServerTLS | None
) -> tuple[str, int]:
    context = None if tls is None else tls.context
    site = web.TCPSite(
        runner,
        settings.host,
        settings.port,
        ssl_context=context,
        reuse_port=settings.processes > 1 or None,  # the workers of one node share the port
    )
    try:
        await site.start()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else one_line(exc)
        raise NodeFailure(
            f"cannot listen on {settings.host} port {settings.port}: {reason}"
        ) from None
    host, port = runner.addresses[0][:2]
    return str(host), int(port)


async def _cleanup(runner: web.AppRunner, *, report: bool) -> None:
    """Stop serving and close the lifecycle; a failure there is raised as one line if
    `report`, else (another failure is already on its way out) logged."""
    try:
        await runner.cleanup()
    except Exception as exc:
        failure = NodeFailure(f"clean shutdown failed: {one_line(exc)}")
        if report:
            raise failure from None
        log.error("clean shutdown failed", extra={"error": str(failure)})


def _write_ready_file(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as exc:
        raise NodeFailure(f"cannot write ready file {path}: {one_line(exc)}") from None

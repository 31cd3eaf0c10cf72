"""The `serve` command: options, each also read from a `STATECACHE_*` variable."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from aiohttp import web

from .app import create_app
from .logs import configure_logging
from .settings import Settings

__all__ = ["add_serve_arguments", "main", "run", "serve"]

log = logging.getLogger("statecache.node")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default 8700; 0 picks one)")
    parser.add_argument("--data-dir", type=Path, help="node key and embedded Redis data")
    parser.add_argument("--redis-url", help="external Redis instead of the embedded one")
    parser.add_argument(
        "--redis-cluster", action="store_true", default=None, help="--redis-url is a cluster"
    )
    parser.add_argument(
        "--appendfsync",
        choices=["always", "everysec"],
        help="embedded Redis AOF fsync (default always: an acknowledged write is on disk)",
    )
    parser.add_argument("--share-index", type=int, help="which grant share this node holds")
    parser.add_argument(
        "--skew-seconds", type=int, help="clock skew allowed in signed requests (default 300)"
    )
    parser.add_argument("--workers", type=int, help="re-encryption processes (default: cores)")
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="default info"
    )
    parser.add_argument(
        "--ready-file", type=Path, help="write 'host port' here once listening (scripts)"
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        redis_url=args.redis_url,
        redis_cluster=args.redis_cluster,
        appendfsync=args.appendfsync,
        share_index=args.share_index,
        skew_seconds=args.skew_seconds,
        workers=args.workers,
        log_level=args.log_level,
    )


async def serve(settings: Settings, ready_file: Path | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down cleanly (Redis flushed, pool joined)."""
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    host, port = runner.addresses[0][:2]
    log.info("listening", extra={"host": host, "port": port, "data_dir": str(settings.data_dir)})
    if ready_file is not None:
        tmp = ready_file.with_suffix(".tmp")
        tmp.write_text(f"{host} {port}\n")
        tmp.replace(ready_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await runner.cleanup()


def run(args: argparse.Namespace) -> int:
    """Serve with parsed `add_serve_arguments` options (`statecache serve` shares this)."""
    settings = settings_from_args(args)
    configure_logging(settings.log_level)
    asyncio.run(serve(settings, args.ready_file))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cache_service", description="Run a statecache node.")
    add_serve_arguments(parser)
    return run(parser.parse_args(argv))

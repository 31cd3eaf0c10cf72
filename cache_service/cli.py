"""The `serve` command: options, each also read from a `STATECACHE_*` variable; and the
`node` commands that need no running node (`node keygen`).

Every failure to start or keep running prints one line, `statecache: ...`, on stderr: exit
2 for an invalid option value (like any usage error; `--tls-cert` without `--tls-key` too),
1 for everything else (port in use, data dir unusable or in use, bad node key, bad TLS
certificate or key, Redis unreachable, the embedded redis-server
dying too often, a worker process of `--processes N` dying). Never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

import pre

from .failures import NodeFailure, one_line
from .logs import configure_logging
from .node_identity import create_key_file
from .node_processes import serve_processes
from .serving import serve
from .settings import Settings
from .startup import redact_url

__all__ = ["add_node_command", "add_serve_arguments", "main", "run"]

log = logging.getLogger("statecache.node")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default 8700; 0 picks one)")
    parser.add_argument(
        "--data-dir", type=Path, help="node key and embedded Redis data; locked while serving"
    )
    parser.add_argument("--redis-url", help="external Redis instead of the embedded one")
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        default=None,
        help="--redis-url is a Redis Cluster",
    )
    parser.add_argument(
        "--redis-wait",
        type=float,
        metavar="SECONDS",
        help="retry an external Redis unreachable at start this long, then exit 1 (default 30)",
    )
    parser.add_argument(
        "--node-key",
        type=Path,
        metavar="FILE",
        help="node key file to use, read only (from `statecache node keygen`); "
        "default: DATA_DIR/node.key, created on first start",
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="serve HTTPS with this PEM certificate (the chain may follow the leaf); "
        "needs --tls-key; read at start (a renewed one takes a restart)",
    )
    parser.add_argument(
        "--tls-key", type=Path, metavar="FILE", help="the unencrypted PEM key of --tls-cert"
    )
    parser.add_argument(
        "--appendfsync",
        choices=["always", "everysec"],
        help="embedded Redis: fsync every write before acknowledging it (always, the "
        "default) or once a second",
    )
    parser.add_argument("--share-index", type=int, help="which grant share this node holds")
    parser.add_argument(
        "--skew-seconds", type=int, metavar="S", help="accepted request clock skew (default 300)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        help="node processes sharing the port (default 1); more than one needs --redis-url",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="re-encryption processes per node process (default: cores / --processes, at least 1)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="least level logged (JSON lines on stderr; default info)",
    )
    parser.add_argument(
        "--ready-file",
        type=Path,
        help="write 'HOST PORT' here once listening, 'HOST PORT https' when serving TLS (scripts)",
    )


def ready_file_from(args: argparse.Namespace) -> Path | None:
    """`--ready-file`, else `STATECACHE_READY_FILE` (empty: unset); not a node setting."""
    if args.ready_file is not None:
        return Path(args.ready_file)
    raw = os.environ.get("STATECACHE_READY_FILE")
    return Path(raw) if raw else None


_OPTIONS = (
    "host", "port", "data_dir", "redis_url", "redis_cluster", "redis_wait", "node_key",
    "tls_cert", "tls_key", "appendfsync", "share_index", "skew_seconds", "processes", "workers",
    "log_level",
)  # fmt: skip


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings.from_env(**{name: getattr(args, name, None) for name in _OPTIONS})


def _settings_problem(exc: ValidationError, args: argparse.Namespace) -> str:
    """Pydantic's errors as one line naming the option (or variable) that was wrong."""
    problems = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        if not loc:  # a rule across fields (--tls-cert with --tls-key): its message says all
            problems.append(error["msg"].removeprefix("Value error, "))
            continue
        field = str(loc[0])
        source, sep = "--" + field.replace("_", "-"), " "
        if getattr(args, field, None) is None:  # not on the command line: the environment
            source, sep = f"STATECACHE_{field.upper()}", "="
            if field == "redis_url" and source not in os.environ:
                source = "REDIS_URL"
        value = error.get("input")
        if field == "redis_url" and isinstance(value, str):
            value = redact_url(value)
        shown = f"{sep}{value}" if len(loc) == 1 and isinstance(value, str | int | float) else ""
        problems.append(f"{source}{shown}: {error['msg'].removeprefix('Value error, ')}")
    return " ".join("; ".join(problems).split())


def _fail(message: str, status: int = 1) -> int:
    print(f"statecache: {message}", file=sys.stderr)
    return status


def run(args: argparse.Namespace) -> int:
    """Serve with parsed `add_serve_arguments` options (`statecache serve` shares this)."""
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        return _fail(_settings_problem(exc, args), 2)
    configure_logging(settings.log_level)
    try:
        ready_file = ready_file_from(args)
        if settings.processes > 1:
            asyncio.run(serve_processes(settings, ready_file))
        else:
            asyncio.run(serve(settings, ready_file))
    except NodeFailure as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as exc:
        log.debug("unexpected failure", exc_info=True)
        return _fail(f"unexpected error: {type(exc).__name__}: {one_line(exc)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cache_service", description="Run a statecache node.")
    add_serve_arguments(parser)
    return run(parser.parse_args(argv))


# `statecache node ...`


def add_node_command(commands: Any) -> None:
    """Add `node keygen` to the `statecache` subcommands (`commands` is the parser's
    `add_subparsers()` object)."""
    node = commands.add_parser("node", help="node administration that needs no running node")
    node_cmds = node.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    description = (
        "Make a node key (mode 0600) for `serve --node-key FILE`, e.g. to keep it in a "
        "secret store; refuses to overwrite an existing file. Prints the node id and "
        "public key."
    )
    keygen = node_cmds.add_parser("keygen", help="make a node key file", description=description)
    keygen.add_argument("--out", metavar="FILE", type=Path, required=True, help="file to create")
    keygen.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print one JSON object instead of text",
    )
    keygen.set_defaults(run=run_keygen)


def run_keygen(args: argparse.Namespace) -> int:
    as_json = bool(getattr(args, "json", False))
    node = pre.NodeSecrets.generate()
    try:
        create_key_file(args.out, node)
    except FileExistsError:
        return _keygen_error(as_json, "refused", f"{args.out} exists: not overwriting a key")
    except OSError as exc:
        return _keygen_error(as_json, "error", f"cannot write {args.out}: {one_line(exc)}")
    made = {
        "file": str(args.out),
        "node_id": node.node_id.hex(),
        "public_key": node.public_key.hex(),
    }
    if as_json:
        print(json.dumps(made))
    else:
        print("\n".join(f"{k}: {v}" for k, v in made.items()))
    return 0


def _keygen_error(as_json: bool, code: str, message: str) -> int:
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message, "nodes": {}}}))
        return 1
    return _fail(message)

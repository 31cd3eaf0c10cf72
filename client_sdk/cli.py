"""The `statecache` command line: run a cache node, or act as one device of an account.

    statecache serve --port 8700 --data-dir var/node1 --share-index 1
    statecache account init --node URL --node URL --node URL --threshold 2 --name phone
    statecache device enroll --account ID --node URL ... --threshold 2 --name laptop
    statecache account repair | replace-node --index I --node URL | delete --yes
    statecache device approve [--expect FINGERPRINT] BLOB | list | revoke DEVICE_ID
    statecache group purge --group HEX --author DEVICE_ID [--from-epoch N]
    statecache publish --group HEX --kind group_state --epoch N --file PATH
    statecache onboard --out DIR [--keep-epochs]
    statecache sync --out DIR [--keep-epochs]
    statecache label create LABEL | list
    statecache keystore passphrase [--new-passphrase-env VAR | --remove]
    statecache mls tree-info ...

Device commands keep their keystore and sync state in a home directory (--home, or
$STATECACHE_HOME, or ~/.statecache). --home, --json and --passphrase-env are accepted
before or after the subcommand. Failures print one line, `statecache: ...`, exit status 1
(with --json: one object `{"error": {"code", "message", "nodes"}}` on stdout instead);
Ctrl-C exits 130 the same way. Usage errors (an unknown option, a malformed label, id or
URL) exit 2 with argparse's usage text on stderr, --json or not: they are mistakes in the
command line itself, found before anything runs. An onboarding or sync that could not
deliver everything exits 3 (its output says `complete: false` and what is missing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Coroutine
from importlib import metadata
from pathlib import Path
from typing import Any

import pre
from cache_service import cli as node_cli

from . import cli_keystore, cli_labels, commands
from . import cli_types as argtypes
from .account_deletion_command import account_delete
from .cli_errors import error_code, error_nodes, fail, one_line
from .commands import CommandError, Context
from .enrolment import MAX_TEXT
from .errors import (
    StatecacheError,
)
from .mls import cli as mls_cli
from .output import Result, escape, to_json, to_text
from .publisher import ACCOUNT_LABEL

__all__ = ["build_parser", "main"]

Pending = Coroutine[Any, Any, Result]
Action = Callable[[Context, argparse.Namespace], Pending]

# the parser


def _version() -> str:
    try:
        return metadata.version("statecache")
    except metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


def _common() -> argparse.ArgumentParser:
    """Options every device command takes, before or after its name. SUPPRESS keeps a
    subcommand from resetting a value given before it."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("common options")
    group.add_argument(
        "--home",
        metavar="DIR",
        type=Path,
        default=argparse.SUPPRESS,
        help="device home directory (default: $STATECACHE_HOME or ~/.statecache)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print one JSON object instead of text",
    )
    group.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=argtypes.seconds,
        default=argparse.SUPPRESS,
        help="give up on a node operation after this long (default 300); a hung node "
        "costs a command about 3 s, whatever this is",
    )
    group.add_argument(
        "--passphrase-env",
        metavar="VAR",
        default=argparse.SUPPRESS,
        help="environment variable holding the keystore passphrase",
    )
    return common


def _add_nodes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--node",
        dest="nodes",
        metavar="URL",
        type=argtypes.url,
        action="append",
        required=True,
        help="a cache node, once per node, in share order (node i holds share i)",
    )
    parser.add_argument(
        "--threshold", metavar="M", type=argtypes.int_at_least(1), required=True, help="M of N"
    )


def _add_group(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--group",
        metavar="GROUP_ID_HEX",
        type=argtypes.hex_bytes(),
        required=True,
        help="the MLS group id",
    )


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="statecache",
        description="Run a statecache node, or act as one device of an account.",
        parents=[common],
    )
    parser.add_argument(
        "--version", action="version", version=f"statecache {_version()}", help="print the version"
    )
    commands_ = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands_.add_parser("serve", help="run a cache node")
    node_cli.add_serve_arguments(serve)
    serve.set_defaults(run=node_cli.run)
    node_cli.add_node_command(commands_)

    mls = commands_.add_parser("mls", help="inspect MLS structures (no node involved)")
    mls_cmds = mls.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    tree_info = mls_cmds.add_parser(
        "tree-info", help="check a ratchet tree: hashes, resolutions, signatures, health"
    )
    mls_cli.add_tree_info_arguments(tree_info)
    tree_info.set_defaults(run=mls_cli.run_tree_info)

    def add(
        group: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        action: Action,
        help_text: str,
    ) -> argparse.ArgumentParser:
        sub = group.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.set_defaults(action=action)
        return sub

    account = commands_.add_parser("account", help="create an account", parents=[common])
    account_cmds = account.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    init = add(account_cmds, "init", _account_init, "create an account; this device is admin")
    _add_nodes(init)
    init.add_argument("--name", default="admin", help="this device's name (default admin)")
    add(
        account_cmds,
        "repair",
        _account_repair,
        "re-deliver to every node what it missed; show each node's manifest version",
    )

    replace = add(
        account_cmds,
        "replace-node",
        _account_replace_node,
        "put a new node at a share index; every grant is issued again",
    )
    replace.add_argument(
        "--index",
        metavar="I",
        type=argtypes.int_at_least(1),
        required=True,
        help="the share index (1-based position) of the node replaced",
    )
    replace.add_argument(
        "--node", metavar="URL", type=argtypes.url, required=True, help="the new node"
    )
    delete = add(
        account_cmds,
        "delete",
        _account_delete,
        "delete the account and everything stored for it from every node (cannot be undone)",
    )
    delete.add_argument(
        "--yes", action="store_true", help="confirm the deletion (required: it cannot be undone)"
    )

    group = commands_.add_parser("group", help="admin actions on one group", parents=[common])
    group_cmds = group.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    purge = add(group_cmds, "purge", _group_purge, "void a revoked device's snapshots of a group")
    _add_group(purge)
    purge.add_argument(
        "--author", metavar="DEVICE_ID", type=argtypes.hex_bytes(size=pre.DEVICE_ID_SIZE),
        required=True, help="the revoked device whose snapshots are voided",
    )  # fmt: skip
    purge.add_argument(
        "--from-epoch", metavar="N", type=argtypes.int_at_least(0), default=0,
        help="void its snapshots at this MLS epoch and above (default 0: all)",
    )  # fmt: skip

    device = commands_.add_parser("device", help="enrol, approve, list, revoke", parents=[common])
    device_cmds = device.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    enroll = add(device_cmds, "enroll", _device_enroll, "make this device; print its request")
    enroll.add_argument(
        "--account", metavar="ACCOUNT_ID", type=argtypes.hex_bytes(size=pre.ACCOUNT_ID_SIZE),
        required=True, help="the account id `account init` printed",
    )  # fmt: skip
    _add_nodes(enroll)
    enroll.add_argument("--name", default="", help="this device's name")

    approve = add(device_cmds, "approve", _device_approve, "certify and authorise a device")
    approve.add_argument("blob", metavar="BLOB", help="the enrolment request (- reads stdin)")
    approve.add_argument(
        "--expect",
        metavar="FINGERPRINT",
        type=argtypes.fingerprint,
        help="refuse unless the device's fingerprint is this one, as the new device shows it "
        "(spaces and dashes ignored; quote it)",
    )
    approve.add_argument(
        "--label",
        dest="labels",
        metavar="LABEL",
        type=cli_labels.label,
        action="append",
        help=f"grant this label (repeatable; default {ACCOUNT_LABEL})",
    )
    approve.add_argument(
        "--grant-days", metavar="DAYS", type=argtypes.int_at_least(1), default=30, help="default 30"
    )
    approve.add_argument(
        "--valid-days",
        metavar="DAYS",
        type=argtypes.int_at_least(1),
        default=365,
        help="default 365",
    )

    add(device_cmds, "list", _device_list, "the account's devices")

    revoke = add(device_cmds, "revoke", _device_revoke, "revoke a device; rotate every label")
    revoke.add_argument(
        "device_id", metavar="DEVICE_ID", type=argtypes.hex_bytes(size=pre.DEVICE_ID_SIZE),
        help="the device to revoke (`device list` shows the ids)",
    )  # fmt: skip
    revoke.add_argument(
        "--grant-days",
        metavar="DAYS",
        type=argtypes.int_at_least(1),
        default=30,
        help="longest validity of the grants remade for the other devices, which keep "
        "their labels and expiry (default 30)",
    )
    revoke.add_argument(
        "--force",
        action="store_true",
        help="for a device revoked before: rotate every label again (without it, an "
        "already revoked device is only reported, exit 0)",
    )

    publish = add(commands_, "publish", _publish, "publish one snapshot")
    _add_group(publish)
    publish.add_argument("--kind", type=argtypes.kind, required=True, help="e.g. group_state")
    publish.add_argument(
        "--epoch", metavar="N", type=argtypes.int_at_least(0), required=True,
        help="the MLS epoch of this state (a new state needs a newer epoch)",
    )  # fmt: skip
    publish.add_argument("--file", metavar="PATH", required=True, help="the state; - for stdin")
    publish.add_argument(
        "--label",
        type=cli_labels.label,
        default=ACCOUNT_LABEL,
        help=f"seal under this label (default {ACCOUNT_LABEL}; `label create` makes others)",
    )

    cli_keystore.add_keystore_parser(commands_, common)
    cli_labels.add_label_parser(commands_, common)

    for name, action, text in (
        ("onboard", _onboard, "read everything (resumable)"),
        ("sync", _sync, "read what changed since the last onboard or sync"),
    ):
        reader = add(commands_, name, action, text)
        reader.add_argument(
            "--out",
            metavar="DIR",
            type=Path,
            help="write DIR/<group hex>/<kind>.<epoch>.bin (plaintext MLS state: files 0600, "
            "directories 0700; default: keep them in the home until a read with --out)",
        )
        reader.add_argument(
            "--keep-epochs",
            action="store_true",
            help="keep a group's older epochs in --out (default: the newest replaces them)",
        )
    return parser


# adapters: parsed arguments -> typed command calls


def _account_init(ctx: Context, a: argparse.Namespace) -> Pending:
    return commands.account_init(ctx, nodes=a.nodes, threshold=a.threshold, name=a.name)


def _account_repair(ctx: Context, a: argparse.Namespace) -> Pending:
    return commands.account_repair(ctx)


def _account_replace_node(ctx: Context, a: argparse.Namespace) -> Pending:
    return commands.account_replace_node(ctx, share_index=a.index, url=a.node)


def _account_delete(ctx: Context, a: argparse.Namespace) -> Pending:
    return account_delete(ctx, confirmed=a.yes)


def _group_purge(ctx: Context, a: argparse.Namespace) -> Pending:
    return commands.group_purge(ctx, group_id=a.group, author=a.author, from_epoch=a.from_epoch)


def _device_enroll(ctx: Context, a: argparse.Namespace) -> Pending:
    return commands.device_enroll(
        ctx, account_id=a.account, nodes=a.nodes, threshold=a.threshold, name=a.name
    )


def _device_approve(ctx: Context, a: argparse.Namespace) -> Pending:
    # A request is a few hundred bytes: stdin is read no further than a bound.
    blob = sys.stdin.read(2 * MAX_TEXT) if a.blob == "-" else a.blob
    return commands.device_approve(
        ctx,
        blob=blob.strip(),
        labels=a.labels or [ACCOUNT_LABEL],
        valid_days=a.valid_days,
        grant_days=a.grant_days,
        expect=a.expect,
    )


def _device_list(ctx: Context, a: argparse.Namespace) -> Pending:
    return commands.device_list(ctx)


def _device_revoke(ctx: Context, a: argparse.Namespace) -> Pending:
    return commands.device_revoke(
        ctx, device_id=a.device_id, grant_days=a.grant_days, force=a.force
    )


def _publish(ctx: Context, a: argparse.Namespace) -> Pending:
    return commands.publish(
        ctx,
        group_id=a.group,
        kind=a.kind,
        epoch=a.epoch,
        data=commands.read_input(a.file),
        label=a.label,
        source=a.file,
    )


def _onboard(ctx: Context, a: argparse.Namespace) -> Pending:
    return commands.read_snapshots(ctx, mode="onboard", out=a.out, keep_epochs=a.keep_epochs)


def _sync(ctx: Context, a: argparse.Namespace) -> Pending:
    return commands.read_snapshots(ctx, mode="sync", out=a.out, keep_epochs=a.keep_epochs)


# running


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.command == "publish" and (why := cli_labels.check_group_label(args.label, args.group)):
        parser.error(why)
    nodes: list[str] | None = getattr(args, "nodes", None)
    if nodes is not None:
        if len(set(nodes)) != len(nodes):
            parser.error("each --node must be different")
        if args.threshold > len(nodes):
            parser.error(f"--threshold {args.threshold} is more than the {len(nodes)} nodes")


def _tolerant_streams() -> None:
    """A name or a node's words the terminal's encoding cannot show (an ASCII or Latin-1
    locale) are written escaped, never raised after the work is done."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    _tolerant_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("serve", "mls", "node"):  # commands with no device home
        result: int = args.run(args)
        return result
    _check(parser, args)
    action: Action = args.action
    as_json = bool(getattr(args, "json", False))
    try:
        home = cli_keystore.home_for(args)
        outcome = asyncio.run(action(Context(home, timeout=getattr(args, "timeout", None)), args))
    except (StatecacheError, CommandError, pre.PreError, OSError) as exc:
        return fail(as_json, error_code(exc), one_line(exc), error_nodes(exc), 1)
    except KeyboardInterrupt:
        return fail(as_json, "interrupted", "interrupted", {}, 130)
    except Exception as exc:  # a bug: still one line (STATECACHE_TRACEBACK=1 shows it)
        if os.environ.get("STATECACHE_TRACEBACK"):
            raise
        message = f"unexpected {type(exc).__name__}: {one_line(exc)}"
        return fail(as_json, "internal", message, {}, 1)
    try:
        sys.stdout.write(to_json(outcome) if as_json else to_text(outcome))
        sys.stdout.flush()
    except BrokenPipeError:  # `statecache ... | head`: the reader left; the work is done
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the exit flush is quiet
    for warning in outcome.warnings:
        print(f"statecache: warning: {escape(warning)}", file=sys.stderr)
    return outcome.status


if __name__ == "__main__":
    sys.exit(main())

"""Labels on the command line: the LABEL argument type (a malformed label is a usage error,
exit 2, wherever a label is taken) and `statecache label create | list`.

A label names what a key seals: `account` (every device's, made with the account) or
`group:<id>`, one MLS group's: its group id in unpadded base64url (1-171 of
[A-Za-z0-9_-]), as `pre.label_for_group` makes it; a snapshot sealed under a group label
must be of that group. `label create --group HEX` (or `label create group:<id>`) makes the
label's first key capsule on every node, so `publish --label` and `approve --label` can use
it.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Coroutine
from typing import Any

import pre

from .commands import CommandError, Context, connect
from .output import Cell, Result, Table
from .publisher import ACCOUNT_LABEL

__all__ = ["add_label_parser", "label"]

_LABEL = re.compile(f"(?:{pre.LABEL_PATTERN})")


def label(text: str) -> str:
    """An argparse type: `account` or `group:<1-171 of [A-Za-z0-9_-]>`."""
    if not _LABEL.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"not a label: {text!r} (a label is `account` or `group:NAME`, NAME 1-171 of "
            "A-Z a-z 0-9 _ -)"
        )
    return text


def add_label_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    labels = commands.add_parser("label", help="the account's labels (keys)", parents=[common])
    subcommands = labels.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    text = "make a label's first key on every node (admin), for --label"
    create = subcommands.add_parser("create", parents=[common], help=text, description=text)
    which = create.add_mutually_exclusive_group(required=True)
    which.add_argument("name", metavar="LABEL", nargs="?", type=label, help="e.g. group:Chs")
    which.add_argument(
        "--group", metavar="GROUP_ID_HEX", type=group_id, help="the label of this MLS group"
    )
    create.set_defaults(action=_create)
    text = "the labels this device holds a key for, and their key epochs"
    listing = subcommands.add_parser("list", parents=[common], help=text, description=text)
    listing.set_defaults(action=_list)


def group_id(text: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not hexadecimal: {text!r}") from None
    if not 1 <= len(value) <= pre.MAX_GROUP_ID_SIZE:
        raise argparse.ArgumentTypeError(f"need 1 to {pre.MAX_GROUP_ID_SIZE} bytes")
    return value


def check_group_label(name: str, group: bytes) -> str | None:
    """Why `name` cannot seal a snapshot of `group` (None: it can)."""
    if name == ACCOUNT_LABEL or name == pre.label_for_group(group):
        return None
    return (
        f"--label {name} is another group's; group {group.hex()}'s label is "
        f"{pre.label_for_group(group)} (or use account)"
    )


def _create(ctx: Context, args: argparse.Namespace) -> Coroutine[Any, Any, Result]:
    name = args.name if args.group is None else pre.label_for_group(args.group)
    return label_create(ctx, name)


def _list(ctx: Context, args: argparse.Namespace) -> Coroutine[Any, Any, Result]:
    return label_list(ctx)


async def label_create(ctx: Context, name: str) -> Result:
    profile = ctx.home.load()
    if not profile.is_admin:
        raise CommandError("this needs an admin device (one holding the account seed)")
    async with connect(ctx, profile) as sc:
        try:
            await sc.add_label(name)
        except ValueError as exc:  # it exists already
            raise CommandError(str(exc)) from exc
        nodes = sc.outcomes
    return Result(
        fields={"label": name, "key_epoch": 0},
        nodes=nodes,
        notes=[
            f"Publish under it with: statecache publish --label {name} ...",
            f"Grant it with: statecache device approve --label {name} ...",
        ],
    )


async def label_list(ctx: Context) -> Result:
    profile = ctx.home.load()
    async with connect(ctx, profile) as sc:
        keys = await sc.load_keys()
        nodes = sc.outcomes
    newest: dict[str, int] = {}
    for name, epoch in keys:
        newest[name] = max(epoch, newest.get(name, -1))
    rows: list[dict[str, Cell]] = [
        {"label": name, "key_epoch": epoch} for name, epoch in sorted(newest.items())
    ]
    return Result(tables={"labels": Table(("label", "key_epoch"), rows)}, nodes=nodes)

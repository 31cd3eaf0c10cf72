"""The `statecache` device commands: each one loads the device's home, calls the SDK and
returns a `Result` for `output` to print. Parsing lives in `cli`; nothing here reads
`argparse` or prints (except the progress bar, on stderr)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

import pre

from .device import (
    OpenedTree,
    SnapshotInput,
    Statecache,
    create_account,
    enrollment_request,
    parse_enrollment,
)
from .enrolment import check_request
from .enrolment_view import ALREADY_REVOKED, approval_result
from .errors import EnrolmentRefused, StateTooLarge
from .home import Home
from .keystore import Profile
from .output import EXIT_INCOMPLETE, Cell, Progress, Result, Table, timestamp
from .policy import RetryPolicy
from .snapshot_files import move_inbox, write_snapshot

__all__ = [
    "CommandError",
    "Context",
    "account_init",
    "account_repair",
    "account_replace_node",
    "connect",
    "device_approve",
    "device_enroll",
    "device_list",
    "device_revoke",
    "group_purge",
    "publish",
    "read_input",
    "read_snapshots",
]

DAY = 86_400
SNAPSHOT_ROWS_IN_TEXT = 20


class CommandError(Exception):
    """A request the command refuses (not an admin, a damaged enrolment text, ...): printed
    as one line, exit status 1."""


@dataclass(frozen=True)
class Context:
    home: Home
    stderr: TextIO = sys.stderr  # where the progress bar goes
    timeout: float | None = None  # --timeout: each SDK call's deadline, in seconds

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy() if self.timeout is None else RetryPolicy(command_timeout=self.timeout)


@asynccontextmanager
async def connect(ctx: Context, profile: Profile) -> AsyncIterator[Statecache]:
    """The SDK over this home's state file; node keys pinned meanwhile are saved."""
    pinned = dict(profile.node_keys)
    try:
        async with Statecache(profile, state_path=ctx.home.state_path, policy=ctx.policy) as sc:
            yield sc
    finally:
        if profile.node_keys != pinned:
            ctx.home.save(profile)
        else:
            ctx.home.save_records(profile)  # what the nodes acknowledged, even on failure


def _require_admin(profile: Profile) -> None:
    if not profile.is_admin:
        raise CommandError("this needs an admin device (one holding the account seed)")


def _role(role: pre.Role) -> str:
    return role.name.lower()


# account and devices


async def account_init(ctx: Context, *, nodes: Sequence[str], threshold: int, name: str) -> Result:
    ctx.home.ensure_new()
    profile = await create_account(nodes, threshold, name=name, policy=ctx.policy)
    ctx.home.save(profile)  # before anything else can fail: it holds the account seed
    async with connect(ctx, profile) as sc:
        await sc.pin_nodes()
    return Result(
        nodes=sc.outcomes,
        fields={
            "account_id": profile.account_id.hex(),
            "device_id": profile.device.device_id.hex(),
            "name": name,
            "role": "admin",
            "node_list": list(profile.nodes),
            "threshold": threshold,
            "home": str(ctx.home.path),
            "keystore": ctx.home.protection,
        },
        notes=["Keep this home safe: its keystore holds the account seed."],
        warnings=ctx.home.unencrypted_warning("the account seed"),
    )


async def device_enroll(
    ctx: Context, *, account_id: bytes, nodes: Sequence[str], threshold: int, name: str
) -> Result:
    try:
        device, blob = enrollment_request(
            name, account_id=account_id, nodes=nodes, threshold=threshold
        )
    except ValueError as exc:  # a name with invisible characters, say
        raise CommandError(str(exc)) from exc
    ctx.home.ensure_new()
    ctx.home.save(Profile(account_id, device, list(nodes), threshold))
    fingerprint = pre.device_fingerprint(device.public_keys)
    return Result(
        fields={
            "device_id": device.device_id.hex(),
            "account_id": account_id.hex(),
            "name": name,
            "fingerprint": fingerprint,
            "enrolment": blob,
            "home": str(ctx.home.path),
            "keystore": ctx.home.protection,
        },
        notes=[
            f"An admin approves this device with:\n  statecache device approve {blob}",
            f"Tell the admin this fingerprint another way (read it aloud): {fingerprint}\n"
            "They approve with --expect and it, or compare it with the one they see.",
        ],
        warnings=ctx.home.unencrypted_warning("this device's keys"),
    )


async def device_approve(
    ctx: Context,
    *,
    blob: str,
    labels: Sequence[str],
    valid_days: int,
    grant_days: int,
    expect: str | None = None,
) -> Result:
    profile = ctx.home.load()
    _require_admin(profile)
    check_request(parse_enrollment(blob), profile, expect)  # before any node is asked
    async with connect(ctx, profile) as sc:
        held = {label for label, _ in await sc.load_keys()}
        missing = sorted(set(labels) - held)
        if missing:
            raise CommandError(f"no key capsule for label(s): {', '.join(missing)}")
        try:
            approval = await sc.approve(
                blob,
                labels=labels,
                valid_for=valid_days * DAY,
                grant_for=grant_days * DAY,
                expect=expect,
            )
        except EnrolmentRefused:
            raise
        except ValueError as exc:  # a revoked device's keys
            raise CommandError(str(exc)) from exc
    return approval_result(approval, labels, checked=expect is not None)


async def device_list(ctx: Context) -> Result:
    profile = ctx.home.load()
    async with connect(ctx, profile) as sc:
        devices = await sc.list_devices()
        nodes = sc.outcomes
    me = profile.device.device_id
    # An admin knows each device's grants (its own records); a member does not.
    until = profile.records.grants_until() if profile.records is not None else {}
    rows: list[dict[str, Cell]] = [
        {
            "device_id": cert.device_id.hex(),
            "name": cert.name,
            "role": _role(cert.role),
            "valid_until": timestamp(cert.not_after),
            "grants_until": timestamp(until.get(cert.device_id)),
            "revoked": timestamp(revoked_at),
            "this_device": cert.device_id == me,
        }
        for cert, revoked_at in devices
    ]
    columns = (
        "device_id", "name", "role", "valid_until", "grants_until", "revoked", "this_device"
    )  # fmt: skip
    return Result(tables={"devices": Table(columns, rows)}, nodes=nodes)


async def device_revoke(
    ctx: Context, *, device_id: bytes, grant_days: int, force: bool = False
) -> Result:
    profile = ctx.home.load()
    _require_admin(profile)
    if device_id == profile.device.device_id:
        raise CommandError("refusing to revoke this device itself")
    async with connect(ctx, profile) as sc:
        known = {cert.device_id for cert, _ in await sc.list_devices()}
        if device_id not in known:
            raise CommandError(f"no device {device_id.hex()} in this account")
        report = await sc.revoke(device_id, grant_for=grant_days * DAY, force=force)
    receipts: list[dict[str, Cell]] = [
        {
            "node": url,
            "node_id": receipt.node_id.hex(),
            "shares_deleted": [f"{ref.label}@{ref.key_epoch}" for ref in receipt.deleted],
            "processed_at": timestamp(receipt.processed_at),
        }
        for url, receipt in sorted(report.receipts.items())
    ]
    rotated: list[dict[str, Cell]] = [
        {"label": label, "key_epoch": epoch} for label, epoch in sorted(report.rotated.items())
    ]
    return Result(
        fields={
            "device_id": device_id.hex(),
            "already_revoked": report.already_revoked,
            "regranted": [d.hex() for d in report.regranted],
        },
        notes=[ALREADY_REVOKED] if report.already_revoked and not force else [],
        tables={
            "receipts": Table(("node", "node_id", "shares_deleted", "processed_at"), receipts),
            "rotated": Table(("label", "key_epoch"), rotated),
        },
        nodes=report.nodes,
    )


async def account_repair(ctx: Context) -> Result:
    """Re-deliver to every node what it missed and bring its manifest up to date."""
    profile = ctx.home.load()
    _require_admin(profile)
    async with connect(ctx, profile) as sc:
        report = await sc.repair()
    rows: list[dict[str, Cell]] = [
        {"node": url, "manifest_version": report.versions.get(url)} for url in profile.nodes
    ]
    return Result(
        fields={"manifest_version": report.manifest_version},
        tables={"versions": Table(("node", "manifest_version"), rows)},
        nodes=report.nodes,
    )


async def account_replace_node(ctx: Context, *, share_index: int, url: str) -> Result:
    """A new node at share `share_index`; every grant issued again to all nodes."""
    profile = ctx.home.load()
    _require_admin(profile)
    if url in profile.nodes:
        raise CommandError(f"{url} is already node {profile.nodes.index(url) + 1}")
    async with connect(ctx, profile) as sc:
        try:
            report = await sc.replace_node(share_index, url)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
    ctx.home.save(profile)  # the node list and the new node's pinned key
    return Result(
        fields={
            "share_index": share_index,
            "node": url,
            "node_list": list(profile.nodes),
            "manifest_version": report.manifest_version,
        },
        nodes=report.nodes,
        notes=[
            "Other devices keep the node list they were given: the replaced node counts as "
            "down for them (they read through the others) until they enrol again."
        ],
    )


async def group_purge(ctx: Context, *, group_id: bytes, author: bytes, from_epoch: int) -> Result:
    """Void a revoked device's snapshots of a group from an MLS epoch on."""
    profile = ctx.home.load()
    _require_admin(profile)
    async with connect(ctx, profile) as sc:
        try:
            report = await sc.purge(group_id, author, from_epoch=from_epoch)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
    rows: list[dict[str, Cell]] = [
        {"node": url, "deleted": r.deleted, "processed_at": timestamp(r.processed_at)}
        for url, r in sorted(report.receipts.items())
    ]
    return Result(
        fields={"group_id": group_id.hex(), "author": author.hex(), "from_epoch": from_epoch},
        tables={"receipts": Table(("node", "deleted", "processed_at"), rows)},
        nodes=report.nodes,
    )


# snapshots


def read_input(source: str, stdin: TextIO | None = None) -> bytes:
    """A file's bytes, or stdin's for `-`, refusing more than one snapshot may hold."""
    limit = pre.MAX_SNAPSHOT_PLAINTEXT
    if source == "-":
        data = (stdin or sys.stdin).buffer.read(limit + 1)
    else:
        with open(source, "rb") as f:
            data = f.read(limit + 1)
    if len(data) > limit:
        raise CommandError(f"{source}: a snapshot holds at most {limit:,} bytes")
    return data


async def publish(
    ctx: Context, *, group_id: bytes, kind: str, epoch: int, data: bytes, label: str,
    source: str | None = None,
) -> Result:  # fmt: skip
    profile = ctx.home.load()
    async with connect(ctx, profile) as sc:
        try:
            report = await sc.publish([SnapshotInput(group_id, kind, epoch, data, label=label)])
        except StateTooLarge as exc:  # named as the user named it
            raise exc.named("stdin" if source in (None, "-") else str(source)) from None
    return Result(
        fields={
            "group_id": group_id.hex(),
            "kind": kind,
            "mls_epoch": epoch,
            "label": label,
            "bytes": len(data),
            "stored": report.stored,
            "duplicates": report.duplicates,
        },
        nodes=report.nodes,
    )


async def read_snapshots(
    ctx: Context,
    *,
    mode: Literal["onboard", "sync"],
    out: Path | None,
    keep_epochs: bool = False,
) -> Result:
    """`onboard` (everything, newest first; resumes an interrupted run) or `sync` (what
    changed since the saved cursor). Each snapshot is written under `out`, or, without
    `--out`, kept in the home's inbox until a later read with `--out` moves it there: the
    cursors pass nothing that was not written somewhere. A group's older epochs of a kind
    are deleted when a newer one is written, unless `keep_epochs` (`snapshot_files`)."""
    profile = ctx.home.load()
    rows: list[dict[str, Cell]] = []
    total_bytes = 0
    inbox = ctx.home.inbox_path
    moved = move_inbox(inbox, out, keep_epochs=keep_epochs) if out is not None else []
    async with connect(ctx, profile) as sc:
        bar = Progress(mode, stream=ctx.stderr)
        if bar.enabled:
            bar.total = await sc.estimate_unread(mode)
        with bar:
            reader = sc.onboard() if mode == "onboard" else sc.sync()
            async for snap in reader:
                # A rebuilt tree is written as its RFC 9420 `ratchet_tree` encoding.
                data = snap.tree.to_bytes() if isinstance(snap, OpenedTree) else snap.plaintext
                path = write_snapshot(
                    inbox if out is None else out,
                    snap.group_id,
                    snap.kind,
                    snap.mls_epoch,
                    data,
                    keep_epochs=keep_epochs and out is not None,
                )
                total_bytes += len(data)
                rows.append(
                    {
                        "group_id": snap.group_id.hex(),
                        "kind": snap.kind,
                        "mls_epoch": snap.mls_epoch,
                        "label": snap.label,
                        "bytes": len(data),
                        "file": str(path) if out is not None else None,
                    }
                )
                bar.update(sc.report.opened + sc.report.unchanged, total_bytes)
            bar.update(sc.report.opened + sc.report.unchanged, total_bytes)
        report = sc.report
        downloaded = sc.bytes_received
    columns = ("group_id", "kind", "mls_epoch", "label", "bytes", "file")
    missing: list[dict[str, Cell]] = [
        {
            "group_id": None if gap.group_id is None else gap.group_id.hex(),
            "kind": gap.kind,
            "mls_epoch": gap.mls_epoch,
            "label": gap.label,
            "reason": gap.reason,
            "nodes": list(gap.nodes),
        }
        for gap in report.incomplete
    ]
    notes = []
    if out is None and rows:
        notes.append(f"Kept in {inbox}: a read with --out DIR writes them there.")
    if missing:
        notes.append(
            "Incomplete: what is listed under `incomplete` was not delivered; "
            f"run `statecache {mode}` again once the nodes named are reachable and confirm it."
        )
    return Result(
        # The counts add up: `delivered` is the rows of `snapshots` (each a file; `trees`
        # of them rebuilt ratchet trees), `not_delivered` the rows of `incomplete`;
        # `unchanged` were listed but already held; `opened` counts every snapshot opened,
        # the bases and patches a tree was rebuilt from included.
        fields={
            "complete": report.complete,
            "delivered": len(rows),
            "trees": report.trees,
            "not_delivered": len(missing),
            "unchanged": report.unchanged,
            "opened": report.opened,
            "bytes": total_bytes,
            "downloaded_bytes": downloaded,
            "primary": report.primary,
            "out": None if out is None else str(out),
            "from_inbox": len(moved),
        },
        tables={
            "snapshots": Table(columns, rows, text_rows=SNAPSHOT_ROWS_IN_TEXT),
            "incomplete": Table(
                ("group_id", "kind", "mls_epoch", "label", "reason", "nodes"),
                missing,
                empty=None,
            ),
        },
        notes=notes,
        nodes=report.nodes,
        status=0 if report.complete else EXIT_INCOMPLETE,
    )

"""`statecache account delete`: the admin deletes the account from every node."""

from __future__ import annotations

import pre

from .commands import CommandError, Context, connect
from .output import EXIT_INCOMPLETE, Cell, Result, Table, timestamp

__all__ = ["account_delete"]


async def account_delete(ctx: Context, *, confirmed: bool) -> Result:
    """Delete the account from every node; exit 3 (`"complete": false`) while a node has
    not answered a valid receipt: run it again once it is back."""
    profile = ctx.home.load()
    if not profile.is_admin:
        raise CommandError("this needs an admin device (one holding the account seed)")
    if not confirmed:
        raise CommandError(
            f"this deletes account {profile.account_id.hex()} and everything stored for it "
            "from every node, for every device, and cannot be undone: add --yes to go ahead"
        )
    async with connect(ctx, profile) as sc:
        report = await sc.delete_account()
    rows: list[dict[str, Cell]] = [
        {
            "node": url,
            "node_id": pre.node_id_for(receipt.node_key).hex(),
            "keys_deleted": receipt.deleted,
            "processed_at": timestamp(receipt.processed_at),
        }
        for url, receipt in sorted(report.receipts.items())
    ]
    missing = [url for url in profile.nodes if url not in report.receipts]
    notes = [f"The home {ctx.home.path} still holds this device's keys: remove it when done."]
    if missing:
        notes.insert(0, f"Not deleted yet on {', '.join(missing)}: run this again later.")
    return Result(
        fields={
            "account_id": profile.account_id.hex(),
            "complete": not missing,
            "deleted_on": len(report.receipts),
            "nodes_total": len(profile.nodes),
        },
        tables={"receipts": Table(("node", "node_id", "keys_deleted", "processed_at"), rows)},
        nodes=report.nodes,
        notes=notes,
        status=EXIT_INCOMPLETE if missing else 0,
    )

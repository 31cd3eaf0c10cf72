"""Writing the results: JSON, a printed table, and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DESIGNS = ("statecache", "per_snapshot_capsules", "naive_reupload")


def write_json(results: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "latest.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def table(results: dict[str, Any]) -> str:
    lines = []
    r = results["reencrypt"]
    lines.append(
        f"re-encryption: raw {r['raw_per_s']:,.0f}/s, through the API {r['service_per_s']:,.0f}/s"
        f" (service/raw {r['service_over_raw']:.2f})"
    )
    lines.append("")
    lines.append(f"{'groups':>7}  {'design':<22} {'seconds':>8} {'cpu s':>7} "
                 f"{'authoriser up':>14} {'new device down':>16}")  # fmt: skip
    for row in results["onboarding"]:
        lines.append(
            f"{row['groups']:>7,}  {row['design']:<22} {row['seconds']:>8.3f} "
            f"{row['new_device_cpu_s']:>7.3f} {row['authoriser_upload_bytes']:>14,} "
            f"{row['new_device_download_bytes']:>16,}"
        )
    for row in results.get("mls_join", []):
        lines.append(
            f"mls-rs join, {row['groups']:,} groups ({row['members_min']}-{row['members_max']}"
            f" members): trees fetched and verified in {row['fetch_and_verify_seconds']:.2f} s"
            f" (onboarding {row['onboard_seconds']:.2f} s), mls-rs joins"
            f" {row['mls_rs_join_seconds']:.2f} s; Welcomes {row['welcome_bytes_without_tree']:,}"
            f" B without the tree, {row['welcome_bytes_with_tree']:,} B with it"
        )
    p = results["publish"]
    lines.append("")
    lines.append(
        f"publish, {p['concurrency']} devices: {p['per_s']:,.0f}/s, p50 {p['p50_ms']} ms, "
        f"p99 {p['p99_ms']} ms, errors {p['errors']}"
    )
    c = results.get("confirmation")
    if c:
        lines.append(
            f"confirmation, {c['publishes']} sequential publishes: {c['publish_ms_median']} ms"
            f" each against a bare store's {c['bare_store_ms_median']} ms"
            f" ({c['publish_over_bare_store']:.2f}x; outbox write+delete"
            f" {c['outbox_write_and_delete_ms_median']} ms); a read checks receipts in"
            f" {c['read_receipt_checks_ms_per_snapshot']} ms per snapshot, the author in"
            f" {c['read_author_check_ms_per_snapshot']} ms"
        )
    s = results["sync_after_update"]
    lines.append(
        f"sync after one update ({s['groups']:,} groups): {s['bytes']:,} B in {s['seconds']:.3f} s;"
        f" full refetch {s['full_refetch_bytes']:,} B in {s['full_refetch_seconds']:.3f} s"
    )
    lines.append(f"server peak RSS: {results['server_peak_rss_mib']:.1f} MiB (node process)")
    tp = results.get("tree_patches")
    if tp:
        mix = ", ".join(f"{share:.0%} {change}s" for change, share in tp["mix"].items())
        lines.append("")
        lines.append(f"ratchet tree per epoch ({tp['rows'][0]['epochs']} epochs: {mix}):")
        lines.append(f"{'members':>8}  {'whole tree':>12} {'patch':>8} {'patch/log2 n':>13} "
                     f"{'published':>10} {'new bases':>9} {'long run':>9} "
                     f"{'rebuild s':>9}")  # fmt: skip
        for row in tp["rows"]:
            lines.append(
                f"{row['members']:>8,}  {row['full_tree_bytes_per_epoch']:>12,} "
                f"{row['patch_bytes_per_epoch']:>8,} {row['patch_bytes_per_log2_members']:>13,} "
                f"{row['published_bytes_per_epoch']:>10,} {row['new_bases']:>9} "
                f"{row['steady_state_bytes_per_epoch']:>9,} {row['rebuild_seconds']:>9.3f}"
            )
    th = results.get("tree_health")
    if th:
        g = th["groups"]
        lines.append(
            f"tree health, {g['count']:,} groups (mean {g['members_mean']} members): blank "
            f"leaves {g['blank_leaf_ratio_mean']:.0%}, blank parents "
            f"{g['blank_parent_ratio_mean']:.0%}, copath resolution "
            f"{g['mean_copath_resolution_mean']:.1f} ({g['copath_over_log2_leaves_mean']:.2f}"
            f" x log2 n); worst {g['worst']['copath_over_log2_leaves']:.2f} x log2 n"
        )
    return "\n".join(lines)


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["onboarding"]
    written = []
    for key, name, ylabel in (
        ("seconds", "onboarding_seconds.png", "onboarding time (s)"),
        ("authoriser_upload_bytes", "authoriser_upload_bytes.png", "authoriser upload (bytes)"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
        for design in DESIGNS:
            points = sorted((r["groups"], r[key]) for r in rows if r["design"] == design)
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=design)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("groups")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        ax.set_title(results.get("machine", ""), fontsize=8)
        fig.tight_layout()
        path = out / name
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    if results.get("tree_patches"):
        written.append(_tree_patch_plot(plt, results, out))
    return written


def _tree_patch_plot(plt: Any, results: dict[str, Any], out: Path) -> Path:
    rows = sorted(results["tree_patches"]["rows"], key=lambda r: r["members"])
    members = [r["members"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for key, label in (
        ("full_tree_bytes_per_epoch", "whole tree"),
        ("steady_state_bytes_per_epoch", "published: patches, a new base at 50%"),
        ("patch_bytes_per_epoch", "patch"),
    ):
        ax.plot(members, [r[key] for r in rows], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("group members")
    ax.set_ylabel("bytes per epoch")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(results.get("machine", ""), fontsize=8)
    fig.tight_layout()
    path = out / "tree_patch_bytes.png"
    fig.savefig(path)
    plt.close(fig)
    return path

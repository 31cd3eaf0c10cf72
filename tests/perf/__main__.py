"""`make bench`: re-encryption throughput, onboarding versus groups for three designs,
publishing under load, sync after one update, ratchet-tree patches against whole trees and
tree health. BENCH_QUICK=1 for a short run."""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import mls_join, report, scenarios, trees
from .nodes import peak_rss_mib, start_bench_nodes, stop_nodes


def _machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


SIZES = {
    # mode: (seconds per throughput run, labels, onboarding groups, sync groups,
    #        publishing devices, publishes per device)
    "full": (5.0, 255, (10, 100, 1_000, 10_000), 1_000, 100, 20),
    "quick": (1.5, 32, (10, 100, 1_000), 100, 100, 3),
    "smoke": (0.3, 4, (3,), 3, 5, 2),  # the test suite's check that the harness runs
}
# groups a new device joins with real mls-rs clients (Welcomes without the tree)
MLS_JOIN_GROUPS = {"full": (100, 1_000), "quick": (100, 1_000), "smoke": (3,)}
CONFIRM_PUBLISHES = {"full": 300, "quick": 100, "smoke": 5}
# mode: (group sizes, epochs of commits per group) for tree_patches; groups for tree_health
TREE_SIZES = {
    "full": ((100, 1_000, 10_000), 100, 1_000),
    "quick": ((100, 1_000, 10_000), 100, 1_000),
    "smoke": ((16, 64), 10, 20),
}


async def run(base: Path, mode: str) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": _machine(), "mode": mode, "started": time.time()}
    seconds, labels, groups_list, sync_groups, devices, per_device = SIZES[mode]
    confirm_publishes = CONFIRM_PUBLISHES[mode]

    print("re-encryption throughput ...", flush=True)
    raw = await scenarios.raw_reencrypt_per_s(seconds)
    [single] = await start_bench_nodes(base / "throughput", 1)
    try:
        service = await scenarios.service_reencrypt_per_s(
            single, labels=labels, clients=4, seconds=seconds
        )
    finally:
        await stop_nodes([single])
    results["reencrypt"] = {
        "raw_per_s": round(raw, 1),
        "service_per_s": round(service, 1),
        "service_over_raw": round(service / raw, 3),
    }

    # Onboarding set-up publishes a lot; everysec keeps that part short. The measured
    # reads do not depend on it.
    nodes = await start_bench_nodes(base / "onboarding", 3, appendfsync="everysec")
    try:
        urls = [n.url for n in nodes]
        results["onboarding"] = []
        for groups in groups_list:
            print(f"onboarding, {groups:,} groups ...", flush=True)
            results["onboarding"] += await scenarios.onboarding_rows(urls, groups)
        print("sync after one update ...", flush=True)
        results["sync_after_update"] = await scenarios.sync_after_update(urls, sync_groups)
        onboarding_rss = peak_rss_mib(nodes)
    finally:
        await stop_nodes(nodes)

    nodes = await start_bench_nodes(base / "mls-join", 3, appendfsync="everysec")
    try:
        results["mls_join"] = []
        for groups in MLS_JOIN_GROUPS[mode]:
            print(f"a new device joins {groups:,} mls-rs groups ...", flush=True)
            row = await mls_join.mls_join_row([n.url for n in nodes], groups, base / "mls-home")
            results["mls_join"].append(row)
    finally:
        await stop_nodes(nodes)

    nodes = await start_bench_nodes(base / "publish", 3)  # the default: appendfsync always
    try:
        print("what confirmation costs ...", flush=True)
        results["confirmation"] = await scenarios.confirmation_costs(
            [n.url for n in nodes], base / "confirm-home", publishes=confirm_publishes
        )
        print("publishing under load ...", flush=True)
        results["publish"] = await scenarios.publish_under_load(
            [n.url for n in nodes], devices=devices, per_device=per_device
        )
        publish_rss = peak_rss_mib(nodes)
    finally:
        await stop_nodes(nodes)
    sizes, epochs, health_groups = TREE_SIZES[mode]
    print("tree patches against whole trees ...", flush=True)
    results["tree_patches"] = trees.tree_patches(sizes, epochs)
    results["tree_health"] = trees.tree_health(health_groups, results["tree_patches"]["rows"])
    results["server_peak_rss_mib"] = round(max(onboarding_rss["node"], publish_rss["node"]), 1)
    results["server_peak_rss_with_workers_and_redis_mib"] = round(
        max(onboarding_rss["node_with_workers_and_redis"],
            publish_rss["node_with_workers_and_redis"]), 1
    )  # fmt: skip
    results["seconds_total"] = round(time.time() - results["started"], 1)
    return results


def main() -> int:
    mode = scenarios.mode()
    out = scenarios.results_dir()
    with tempfile.TemporaryDirectory(prefix="statecache-bench-") as tmp:
        results = asyncio.run(run(Path(tmp), mode))
    path = report.write_json(results, out)
    pictures = report.plots(results, out)
    print()
    print(report.table(results))
    print(f"\nwrote {path} and {', '.join(str(p) for p in pictures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

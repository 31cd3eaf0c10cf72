"""The benchmark harness runs end to end at tiny sizes and writes what it promises. No
timing is asserted: performance lives in `make bench`, not in tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_bench_harness_writes_json_and_plots(tmp_path: Path) -> None:
    env = {**os.environ, "BENCH_SMOKE": "1", "BENCH_DIR": str(tmp_path), "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.perf"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "latest.json").read_text())
    assert set(results["reencrypt"]) == {"raw_per_s", "service_per_s", "service_over_raw"}
    designs = {row["design"] for row in results["onboarding"]}
    assert designs == {"statecache", "per_snapshot_capsules", "naive_reupload"}
    for row in results["onboarding"]:
        assert set(row) == {
            "groups",
            "design",
            "seconds",
            "new_device_cpu_s",
            "authoriser_upload_bytes",
            "new_device_download_bytes",
        }
    [join] = results["mls_join"]
    assert join["groups"] == 3
    assert join["welcome_bytes_with_tree"] > join["welcome_bytes_without_tree"] > 0
    assert join["fetch_and_verify_seconds"] >= join["trees_at_seconds"] >= 0
    assert set(results["publish"]) == {"concurrency", "per_s", "p50_ms", "p99_ms", "errors"}
    assert set(results["sync_after_update"]) >= {
        "bytes",
        "seconds",
        "full_refetch_bytes",
        "full_refetch_seconds",
    }
    assert results["server_peak_rss_mib"] > 0
    tree_patches = results["tree_patches"]
    assert set(tree_patches) == {"mix", "rebase_ratio", "rows"}
    assert [row["members"] for row in tree_patches["rows"]] == [16, 64]
    for row in tree_patches["rows"]:
        assert set(row) >= {
            "members",
            "epochs",
            "full_tree_bytes_per_epoch",
            "patch_bytes_per_epoch",
            "patch_bytes_by_change",
            "published_bytes_per_epoch",
            "steady_state_bytes_per_epoch",
            "new_bases",
            "rebuild_seconds",
            "health_before",
            "health_after",
        }
        assert 0 < row["patch_bytes_per_epoch"] < row["full_tree_bytes_per_epoch"]
    health = results["tree_health"]
    assert set(health["groups"]) >= {
        "count",
        "members_mean",
        "blank_leaf_ratio_mean",
        "blank_parent_ratio_mean",
        "mean_copath_resolution_mean",
        "worst",
    }
    assert len(health["after_epochs"]) == 2
    pictures = ("onboarding_seconds.png", "authoriser_upload_bytes.png", "tree_patch_bytes.png")
    for picture in pictures:
        assert (tmp_path / picture).read_bytes().startswith(b"\x89PNG")

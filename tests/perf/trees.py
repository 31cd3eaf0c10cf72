"""Ratchet-tree figures, computed with the SDK's own code and no nodes (bytes do not depend
on them): what a tree update costs as a patch against a whole tree, and tree health."""

from __future__ import annotations

import math
import random
import statistics
import time
from typing import Any

from client_sdk.demo import synthetic_groups
from client_sdk.device import TreeInput
from client_sdk.mls import TreeStats, tree_stats
from client_sdk.mls.synthetic import SyntheticGroup
from client_sdk.tree_sync import (
    BASE_KIND,
    TreePiece,
    TreePolicy,
    diff,
    plan,
    rebuild,
)

MIX = {"update": 0.8, "add": 0.1, "remove": 0.1}  # of the epochs' commits
BLANK_RATIO = 0.1


def _step(group: SyntheticGroup, rng: random.Random) -> str:
    change = rng.choices(list(MIX), weights=list(MIX.values()))[0]
    if change == "remove" and len(group.members()) < 2:
        change = "add"
    if change == "update":
        group.commit()  # a commit with an UpdatePath: a new leaf and path
    elif change == "add":
        group.add()  # a commit adding one member, without a path
    else:
        group.remove()  # a commit removing one member, with the committer's path
    return change


def patch_row(members: int, epochs: int, policy: TreePolicy, seed: int = 1) -> dict[str, Any]:
    """`epochs` commits on one group of `members` members: each epoch's patch against the
    previous tree, the whole tree, and what the SDK's policy publishes (a patch, or now and
    then a new base)."""
    rng = random.Random(seed * 1_000_003 + members)
    started = time.perf_counter()
    group = SyntheticGroup.create(members, blank_ratio=BLANK_RATIO, rng=rng)
    made_s = time.perf_counter() - started
    before = tree_stats(group.tree)
    _, data, current = plan(None, 0, group.tree, group.suite, policy)
    pieces = [TreePiece(0, BASE_KIND, current.tree.tree_hash, data)]
    full: list[int] = []
    patches: list[int] = []
    published: list[int] = []
    by_change: dict[str, list[int]] = {change: [] for change in MIX}
    bases = 0
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        change = _step(group, rng)
        tree = group.tree
        kind, data, version = plan(current, epoch, tree, group.suite, policy)
        if kind == BASE_KIND:
            bases += 1
            pieces = []
            patch = len(diff(current.tree, tree).to_bytes())
        else:
            patch = len(data)
        pieces.append(TreePiece(epoch, kind, version.tree.tree_hash, data))
        full.append(version.tree.encoded_size())
        patches.append(patch)
        by_change[change].append(patch)
        published.append(len(data))
        current = version
    publish_s = time.perf_counter() - started
    started = time.perf_counter()
    rebuilt = rebuild(pieces)  # what a new device does: the newest base and its patches
    rebuild_s = time.perf_counter() - started
    assert rebuilt.tree.tree == group.tree, "the chain does not rebuild the tree"
    # Over many epochs the policy sends one base (B) and then patches (p each) until they
    # add up to rebase_ratio x B: (1 + r) B every r B / p + 1 epochs, about (1 + r) / r x p.
    whole, patch_mean, r = statistics.fmean(full), statistics.fmean(patches), policy.rebase_ratio
    steady = (1 + r) * whole / (max(1, int(r * whole / patch_mean)) + 1)
    return {
        "members": members,
        "members_after": len(group.members()),
        "epochs": epochs,
        "full_tree_bytes_per_epoch": round(statistics.fmean(full)),
        "patch_bytes_per_epoch": round(statistics.fmean(patches)),
        "patch_bytes_by_change": {
            change: round(statistics.fmean(sizes)) if sizes else None
            for change, sizes in by_change.items()
        },
        "patch_bytes_p50": round(statistics.median(patches)),
        "patch_bytes_max": max(patches),
        "patch_over_full": round(statistics.fmean(patches) / statistics.fmean(full), 5),
        "patch_bytes_per_log2_members": round(statistics.fmean(patches) / math.log2(members)),
        "published_bytes_per_epoch": round(statistics.fmean(published)),
        "steady_state_bytes_per_epoch": round(steady),
        "new_bases": bases,
        "chain_at_end": {"patches": rebuilt.chain_length, "bytes": rebuilt.chain_bytes},
        "rebuild_seconds": round(rebuild_s, 4),
        "publisher_seconds_per_epoch": round(publish_s / epochs, 5),
        "synthetic_tree_seconds": round(made_s, 3),
        "health_before": _stats(before),
        "health_after": _stats(tree_stats(group.tree)),
    }


def tree_patches(sizes: tuple[int, ...], epochs: int) -> dict[str, Any]:
    policy = TreePolicy()
    return {
        "mix": MIX,
        "rebase_ratio": policy.rebase_ratio,
        "rows": [patch_row(members, epochs, policy) for members in sizes],
    }


def _stats(stats: TreeStats) -> dict[str, Any]:
    return {
        "n_leaves": stats.n_leaves,
        "n_members": stats.n_members,
        "blank_leaf_ratio": round(stats.blank_leaf_ratio, 4),
        "blank_parent_ratio": round(stats.blank_parent_ratio, 4),
        "mean_copath_resolution": round(stats.mean_copath_resolution, 3),
    }


def tree_health(groups: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Tree health over the onboarding data's groups (the demo's and the onboarding rows'
    trees: 2-200 members, log-uniform), and of each `tree_patches` group before and after
    its epochs of commits."""
    trees = [i.tree for i in synthetic_groups(groups) if isinstance(i, TreeInput)]
    memo: dict[int, TreeStats] = {}
    stats = [memo.setdefault(id(t), tree_stats(t)) for t in trees]

    def overhead(s: TreeStats) -> float:  # commit cost relative to a full tree's log2 n
        return s.mean_copath_resolution / max(1.0, math.log2(s.n_leaves))

    worst = max(stats, key=overhead)
    return {
        "groups": {
            "count": len(stats),
            "members_mean": round(statistics.fmean(s.n_members for s in stats), 1),
            "members_max": max(s.n_members for s in stats),
            "blank_leaf_ratio_mean": round(statistics.fmean(s.blank_leaf_ratio for s in stats), 4),
            "blank_parent_ratio_mean": round(
                statistics.fmean(s.blank_parent_ratio for s in stats), 4
            ),
            "mean_copath_resolution_mean": round(
                statistics.fmean(s.mean_copath_resolution for s in stats), 3
            ),
            "copath_over_log2_leaves_mean": round(statistics.fmean(map(overhead, stats)), 3),
            "worst": {**_stats(worst), "copath_over_log2_leaves": round(overhead(worst), 3)},
        },
        "after_epochs": [
            {
                "members": r["members"],
                "epochs": r["epochs"],
                "before": r["health_before"],
                "after": r["health_after"],
            }
            for r in rows
        ],
    }

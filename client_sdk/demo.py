"""`make demo`: the statecache story end to end on three local nodes, threshold 2-of-3.

1. three nodes start, each with its own embedded Redis;
2. an admin device creates the account and publishes state for 1,000 groups
   (group_state 2-8 KiB, and a real RFC 9420 ratchet tree for groups of 2-200 members);
3. a new laptop enrols, the admin approves it (one constant-size grant), the laptop
   onboards: M verified re-encryptions, then every snapshot verified and opened, every
   tree rebuilt and checked against its signed tree hash; a tree-health summary;
4. the admin publishes updates (trees as patches) and the laptop syncs only those;
5. one node stops and sync still works; it comes back;
6. the laptop is revoked: every node refuses it and signs a receipt; labels rotate;
7. a tablet is added and onboards everything, old key epochs included, trees rebuilt
   from their base and patches.

Prints a summary and exits non-zero if any check fails. DEMO_GROUPS changes the size.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any

import pre

from .costs import authoriser_upload, uploaded
from .device import (
    Opened,
    OpenedTree,
    SnapshotInput,
    Statecache,
    TreeInput,
    create_account,
    enrollment_request,
)
from .errors import StatecacheError
from .keystore import Profile
from .local_nodes import LocalNode, start_nodes, stop_nodes
from .mls import RatchetTree, TreeStats
from .mls.synthetic import SyntheticGroup

THRESHOLD, NODES = 2, 3
UPDATES = 50
MIN_MEMBERS, MAX_MEMBERS = 2, 200
# Group sizes come in 22 classes, log-spaced from 2 to 200 members (2, 3, 4, 5, 7, ... 200).
SIZE_CLASSES = sorted({round(MIN_MEMBERS * 100 ** (i / 23)) for i in range(24)})

Item = SnapshotInput | TreeInput
# (group, kind) -> (newest MLS epoch, what was published: a plaintext's hash or the tree)
Fingerprints = dict[tuple[bytes, str], tuple[int, bytes | RatchetTree]]


class SyntheticTrees:
    """Valid ratchet trees (real keys, signatures and parent hashes; `mls.synthetic`) for
    many groups. Generating a distinct tree per group costs about 0.2 ms per member, ten
    seconds for the demo's 1,000 groups, so groups of one size class share a template tree
    (each template is its own valid group, signed with its own group id); a group that
    moves on gets its own copy and evolves from there by real commits."""

    def __init__(self, seed: int = 11) -> None:
        self._rng = random.Random(seed)  # noqa: S311 - test data, reproducible
        self._templates: dict[int, tuple[SyntheticGroup, RatchetTree]] = {}
        self._groups: dict[tuple[bytes, int], SyntheticGroup] = {}

    def _template(self, n_members: int) -> tuple[SyntheticGroup, RatchetTree]:
        size = min(SIZE_CLASSES, key=lambda c: abs(math.log(c / n_members)))
        if size not in self._templates:
            rng = random.Random(size)  # noqa: S311
            group = SyntheticGroup.create(
                size,
                blank_ratio=rng.uniform(0.0, 0.3),
                rng=rng,
                group_id=b"statecache demo group of %d" % size,
            )
            self._templates[size] = (group, group.tree)
        return self._templates[size]

    def tree(self, group_id: bytes, mls_epoch: int, n_members: int) -> TreeInput:
        group, tree = self._template(n_members)
        self._groups[(group_id, mls_epoch)] = group
        return TreeInput(group_id, mls_epoch, tree, group.suite)

    def next(self, item: TreeInput, by: int) -> TreeInput:
        """The group's tree `by` epochs later: that many commits, each with an UpdatePath
        from a random member."""
        group = self._groups[(item.group_id, item.mls_epoch)].copy(self._rng)
        for _ in range(by):
            group.commit()
        self._groups[(item.group_id, item.mls_epoch + by)] = group
        return TreeInput(item.group_id, item.mls_epoch + by, group.tree, group.suite)


TREES = SyntheticTrees()


def synthetic_groups(count: int, seed: int = 7) -> list[Item]:
    """MLS state of realistic sizes: group_state 2-8 KiB (opaque) and a valid ratchet
    tree, for groups of 2-200 members drawn log-uniformly (most groups are small: mean
    about 42 members)."""
    rng = random.Random(seed)  # noqa: S311 - sizes only; contents come from os.urandom
    items: list[Item] = []
    for g in range(count):
        group_id = hashlib.sha256(b"group %d" % g).digest()[:16]
        epoch = rng.randrange(1, 500)
        state = os.urandom(rng.randrange(2048, 8193))
        members = round(math.exp(rng.uniform(math.log(MIN_MEMBERS), math.log(MAX_MEMBERS))))
        items.append(SnapshotInput(group_id, "group_state", epoch, state))
        items.append(TREES.tree(group_id, epoch, members))
    return items


def bump(items: Sequence[Item], by: int, size: int | None = None) -> list[Item]:
    """These groups `by` MLS epochs later: fresh state, trees moved on by commits."""
    return [
        TREES.next(i, by)
        if isinstance(i, TreeInput)
        else SnapshotInput(
            i.group_id, i.kind, i.mls_epoch + by, os.urandom(size or len(i.plaintext))
        )
        for i in items
    ]


def kind_of(item: Item) -> str:
    return "ratchet_tree" if isinstance(item, TreeInput) else item.kind


def fingerprints(items: Iterable[Item]) -> Fingerprints:
    latest: Fingerprints = {}
    for i in items:
        key = (i.group_id, kind_of(i))
        if key not in latest or i.mls_epoch >= latest[key][0]:
            value = i.tree if isinstance(i, TreeInput) else hashlib.sha256(i.plaintext).digest()
            latest[key] = (i.mls_epoch, value)
    return latest


def opened_fingerprints(opened: Iterable[Opened]) -> Fingerprints:
    latest: Fingerprints = {}
    for s in opened:
        key = (s.group_id, s.kind)
        if key not in latest or s.mls_epoch >= latest[key][0]:
            value = s.tree if isinstance(s, OpenedTree) else hashlib.sha256(s.plaintext).digest()
            latest[key] = (s.mls_epoch, value)
    return latest


def health_summary(stats: dict[bytes, TreeStats]) -> tuple[str, str]:
    """Means over the groups, and the least healthy tree: the one whose members' commits
    cost most relative to a full tree (mean copath resolution over log2 of its leaves)."""
    values = list(stats.values())
    members = [s.n_members for s in values]

    def overhead(s: TreeStats) -> float:
        return s.mean_copath_resolution / max(1.0, math.log2(s.n_leaves))

    means = (
        f"{min(members)}-{max(members)} members (mean {statistics.fmean(members):.0f}); "
        f"blank leaves {statistics.fmean(s.blank_leaf_ratio for s in values):.0%}, "
        f"blank parents {statistics.fmean(s.blank_parent_ratio for s in values):.0%}; "
        f"copath resolution {statistics.fmean(s.mean_copath_resolution for s in values):.1f}"
        f" ({statistics.fmean(overhead(s) for s in values):.2f} x log2 n)"
    )
    group, worst = max(stats.items(), key=lambda kv: overhead(kv[1]))
    least = (
        f"group {group.hex()[:8]}: {worst.n_members} members in {worst.n_leaves} leaves, "
        f"blank parents {worst.blank_parent_ratio:.0%}, copath resolution "
        f"{worst.mean_copath_resolution:.1f} ({overhead(worst):.2f} x log2 n)"
    )
    return means, least


class Demo:
    def __init__(self, nodes: list[LocalNode], groups: int) -> None:
        self.nodes = nodes
        self.urls = [n.url for n in nodes]
        self.groups = groups
        self.summary: list[tuple[str, str]] = []
        self.checks: list[tuple[str, bool]] = []
        self.published: list[Item] = []  # everything the admin published, in order
        self.patches = self.patch_bytes = self.patched_bytes = 0  # tree updates as patches
        self.reupload_bytes = 0  # what publishing everything cost the admin (`costs`)

    def check(self, what: str, ok: bool) -> None:
        self.checks.append((what, ok))
        print(("  ok    " if ok else "  FAIL  ") + what, flush=True)

    def note(self, what: str, value: str) -> None:
        self.summary.append((what, value))

    async def run(self) -> None:
        profile = await create_account(self.urls, THRESHOLD, name="phone")
        async with Statecache(profile) as admin:
            await admin.pin_nodes()
            published = await self.publish_all(admin)
            laptop, cert = await self.enrol(admin, "laptop")
            async with Statecache(laptop) as lap:
                await self.onboard_laptop(lap, published)
                await self.sync_updates(admin, lap, published)
                await self.sync_with_a_node_down(admin, lap, published)
                old_keys = await self.revoke(admin, lap)
            await self.sealed_out(admin, old_keys, cert, published)
            tablet, _ = await self.enrol(admin, "tablet")
            async with Statecache(tablet) as tab:
                started = time.perf_counter()
                opened = [s async for s in tab.onboard()]
                took = time.perf_counter() - started
                trees = [s for s in opened if isinstance(s, OpenedTree)]
                patched = sum(1 for t in trees if t.patches)
                self.note(
                    "tablet onboarding after rotation",
                    f"{len(opened) - len(trees):,} snapshots and {len(trees):,} trees "
                    f"({patched} from a base and patches), {took:.2f} s",
                )
                self.check(
                    "the tablet opened every group as last published, old and new key epochs",
                    opened_fingerprints(opened) == fingerprints(self.published),
                )

    async def publish(self, admin: Statecache, items: list[Item]) -> None:
        report = await admin.publish(items)
        self.published += items
        self.patches += report.tree_patches
        self.patch_bytes += report.tree_patch_bytes
        self.patched_bytes += report.tree_patched_bytes

    async def publish_all(self, admin: Statecache) -> list[Item]:
        started = time.perf_counter()
        published = synthetic_groups(self.groups)
        made = time.perf_counter() - started
        started = time.perf_counter()
        with uploaded(admin) as sent:
            report = await admin.publish(published)
        self.reupload_bytes = sent.bytes
        self.published += published
        took = time.perf_counter() - started
        self.note("synthetic ratchet trees made", f"{made:.2f} s")
        self.note("admin publishes (groups x 2 kinds)", f"{len(published):,} in {took:.2f} s")
        self.check(f"{report.stored:,} snapshots stored", report.stored == len(published))
        self.check(
            f"{report.tree_bases:,} trees published whole (a first base each)",
            report.tree_bases == self.groups,
        )
        return published

    async def enrol(self, admin: Statecache, name: str) -> tuple[Profile, pre.DeviceCertificate]:
        device, blob = enrollment_request(
            name, account_id=admin.profile.account_id, nodes=self.urls, threshold=THRESHOLD
        )
        shown = pre.device_fingerprint(device.public_keys)  # what the new device displays
        print(f"{name} asks to enrol (fingerprint {shown}): {blob}", flush=True)
        approval = await admin.approve(blob, expect=shown)  # the admin compares it
        if name == "laptop":
            upload = authoriser_upload(approval)
            self.note("admin upload to authorise the laptop", f"{upload:,} B")
        return Profile(admin.profile.account_id, device, self.urls, THRESHOLD), approval.certificate

    async def onboard_laptop(self, lap: Statecache, published: list[Item]) -> None:
        started = time.perf_counter()
        opened = opened_fingerprints([s async for s in lap.onboard()])
        took = time.perf_counter() - started
        # The re-upload it replaces: what the admin sent to publish everything (`costs`).
        self.note("re-uploading every group's state instead", f"{self.reupload_bytes:,} B")
        self.note("laptop onboarding, verified and opened", f"{took:.2f} s")
        self.note("laptop download", f"{lap.bytes_received:,} B")
        self.note("re-encryptions for the laptop", str(lap.reencryptions))
        self.check("the laptop opened every group as published", opened == fingerprints(published))
        self.check(
            f"the laptop rebuilt {lap.report.trees:,} trees, each matching its signed tree hash",
            lap.report.trees == self.groups,
        )
        self.check("no node was suspected of tampering", not lap.report.suspects)
        means, least = health_summary(lap.tree_health())
        self.note(f"tree health, {self.groups:,} groups", means)
        self.note("least healthy tree", least)

    async def sync_updates(self, admin: Statecache, lap: Statecache, published: list[Item]) -> None:
        updates = bump(published[: 2 * UPDATES], 1)
        await self.publish(admin, updates)
        before = lap.bytes_received
        synced = [s async for s in lap.sync()]
        self.note(f"laptop sync after {len(updates)} updates", f"{lap.bytes_received - before:,} B")
        self.check(
            f"sync returned exactly the {len(updates)} updated snapshots and trees",
            {(s.group_id, s.kind, s.mls_epoch) for s in synced}
            == {(u.group_id, kind_of(u), u.mls_epoch) for u in updates},
        )
        patched = [s for s in synced if isinstance(s, OpenedTree) and s.patches]
        self.note(
            "tree updates sent as patches",
            f"{self.patches} of {UPDATES}: {self.patch_bytes:,} B instead of "
            f"{self.patched_bytes:,} B as whole trees",
        )
        self.check(
            f"the laptop applied {len(patched)} tree patches and holds the admin's trees",
            bool(patched) and opened_fingerprints(synced) == fingerprints(updates),
        )

    async def sync_with_a_node_down(
        self, admin: Statecache, lap: Statecache, published: list[Item]
    ) -> None:
        await self.nodes[2].stop()
        more = bump(published[:10], 2, size=64)
        await self.publish(admin, more)
        lap.forget_keys()  # fresh re-encryptions, from the two nodes left
        synced = [s async for s in lap.sync()]
        self.check("with one node stopped, sync still returns the new state", len(synced) == 10)
        await self.nodes[2].start()

    async def revoke(self, admin: Statecache, lap: Statecache) -> dict[tuple[str, int], pre.Kek]:
        old_keys = dict(lap.keys)
        report = await admin.revoke(lap.profile.device.device_id)
        self.note("signed revocation receipts", f"{len(report.receipts)} of {NODES}")
        self.check("every node signed a revocation receipt", len(report.receipts) == NODES)
        self.check("the account label rotated to key epoch 1", report.rotated == {"account": 1})
        lap.forget_keys()
        before = lap.bytes_received
        try:
            _ = [s async for s in lap.sync()]
            refused = False
        except StatecacheError:
            refused = True
        self.check("every node refuses the revoked laptop", refused)
        self.check(
            "the revoked laptop received no snapshot after revocation",
            lap.bytes_received - before < 4096,
        )
        return old_keys

    async def sealed_out(
        self,
        admin: Statecache,
        old_keys: dict[tuple[str, int], pre.Kek],
        laptop_cert: pre.DeviceCertificate,
        published: list[Item],
    ) -> None:
        await self.publish(admin, bump(published[:20], 5, size=256))
        page = await admin.nodes[0].list_snapshots(order="desc", limit=1)
        newest = pre.SealedSnapshot.from_bytes(page.items[0].snapshot or b"")
        opened_by_laptop = False
        for kek in old_keys.values():
            try:
                pre.open_snapshot(newest, kek, laptop_cert)
                opened_by_laptop = True
            except pre.PreError:
                pass
        self.check("state sealed after rotation does not open with the laptop's keys",
                   not opened_by_laptop and newest.header.key_epoch == 1)  # fmt: skip

    def print_summary(self) -> None:
        width = max(len(k) for k, _ in self.summary)
        print()
        for key, value in self.summary:
            print(f"{key:<{width}}  {value}")
        passed = sum(ok for _, ok in self.checks)
        print(f"{'checks passed':<{width}}  {passed} of {len(self.checks)}")


async def run(base: Path, groups: int) -> int:
    print(f"starting {NODES} nodes (threshold {THRESHOLD}) under {base}", flush=True)
    nodes = await start_nodes(base, NODES)
    demo = Demo(nodes, groups)
    try:
        await demo.run()
    finally:
        await stop_nodes(nodes)
    demo.print_summary()
    return 0 if demo.checks and all(ok for _, ok in demo.checks) else 1


def main() -> int:
    return run_in_scratch(run, default_groups=1000, prefix="statecache-demo-")


def run_in_scratch(
    demo: Callable[[Path, int], Coroutine[Any, Any, int]], *, default_groups: int, prefix: str
) -> int:
    """`demo(scratch dir, DEMO_GROUPS)`; its exit code. Ctrl-C stops the nodes, removes
    their data and prints one line, `interrupted`."""
    groups = int(os.environ.get("DEMO_GROUPS", str(default_groups)))
    try:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            return asyncio.run(demo(Path(tmp), groups))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`make demo`: the statecache story end to end on three local nodes, threshold 2-of-3.

1. three nodes start, each with its own embedded Redis;
2. an admin device creates the account and publishes state for 1,000 groups
   (group_state 2-8 KiB, ratchet_tree sized for groups of 2-200 members);
3. a new laptop enrols, the admin approves it (one constant-size grant), the laptop
   onboards: M verified re-encryptions, then every snapshot verified and opened;
4. the admin publishes updates and the laptop syncs only those;
5. one node stops and sync still works; it comes back;
6. the laptop is revoked: every node refuses it and signs a receipt; labels rotate;
7. a tablet is added and onboards everything, old key epochs included.

Prints a summary and exits non-zero if any check fails. DEMO_GROUPS changes the size.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import pre

from .device import SnapshotInput, Statecache, create_account, enrollment_request
from .errors import StatecacheError
from .keystore import Profile
from .local_nodes import LocalNode, start_nodes, stop_nodes

THRESHOLD, NODES = 2, 3
UPDATES = 50

Fingerprints = dict[tuple[bytes, str], tuple[int, bytes]]


def synthetic_groups(count: int, seed: int = 7) -> list[SnapshotInput]:
    """Opaque stand-ins for MLS state of realistic sizes: group_state 2-8 KiB and a
    ratchet tree of about 190 bytes per member, for groups of 2-200 members."""
    rng = random.Random(seed)  # noqa: S311 - sizes only; contents come from os.urandom
    items = []
    for g in range(count):
        group_id = hashlib.sha256(b"group %d" % g).digest()[:16]
        epoch = rng.randrange(1, 500)
        state = os.urandom(rng.randrange(2048, 8193))
        tree = os.urandom(rng.randrange(2, 201) * 190)
        items.append(SnapshotInput(group_id, "group_state", epoch, state))
        items.append(SnapshotInput(group_id, "ratchet_tree", epoch, tree))
    return items


def bump(items: list[SnapshotInput], by: int, size: int | None = None) -> list[SnapshotInput]:
    """The next MLS epoch of these groups, with fresh state."""
    return [
        SnapshotInput(i.group_id, i.kind, i.mls_epoch + by, os.urandom(size or len(i.plaintext)))
        for i in items
    ]


def fingerprints(items: list[SnapshotInput]) -> Fingerprints:
    latest: Fingerprints = {}
    for i in items:
        key = (i.group_id, i.kind)
        if key not in latest or i.mls_epoch >= latest[key][0]:
            latest[key] = (i.mls_epoch, hashlib.sha256(i.plaintext).digest())
    return latest


class Demo:
    def __init__(self, nodes: list[LocalNode], groups: int) -> None:
        self.nodes = nodes
        self.urls = [n.url for n in nodes]
        self.groups = groups
        self.summary: list[tuple[str, str]] = []
        self.checks: list[tuple[str, bool]] = []

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
                count = sum([1 async for _ in tab.onboard()])
                took = time.perf_counter() - started
                self.note("tablet onboarding after rotation", f"{count:,} snapshots, {took:.2f} s")
                self.check(
                    "the tablet opened every group, old and new key epochs",
                    count == len(fingerprints(published)),
                )

    async def publish_all(self, admin: Statecache) -> list[SnapshotInput]:
        published = synthetic_groups(self.groups)
        started = time.perf_counter()
        report = await admin.publish(published)
        took = time.perf_counter() - started
        self.note("admin publishes (groups x 2 kinds)", f"{len(published):,} in {took:.2f} s")
        self.check(f"{report.stored:,} snapshots stored", report.stored == len(published))
        return published

    async def enrol(self, admin: Statecache, name: str) -> tuple[Profile, pre.DeviceCertificate]:
        device, blob = enrollment_request(name)
        print(f"{name} asks to enrol: {blob}", flush=True)
        approval = await admin.approve(blob)
        if name == "laptop":
            self.note("admin upload to authorise the laptop", f"{approval.upload_bytes:,} B")
        return Profile(admin.profile.account_id, device, self.urls, THRESHOLD), approval.certificate

    async def onboard_laptop(self, lap: Statecache, published: list[SnapshotInput]) -> None:
        started = time.perf_counter()
        opened = {
            (s.group_id, s.kind): (s.mls_epoch, hashlib.sha256(s.plaintext).digest())
            async for s in lap.onboard()
        }
        took = time.perf_counter() - started
        state_bytes = sum(len(i.plaintext) for i in published)
        self.note("re-uploading every group's state instead", f"{state_bytes:,} B")
        self.note("laptop onboarding, verified and opened", f"{took:.2f} s")
        self.note("laptop download", f"{lap.bytes_received:,} B")
        self.note("re-encryptions for the laptop", str(lap.reencryptions))
        self.check("the laptop opened every group as published", opened == fingerprints(published))
        self.check("no node was suspected of tampering", not lap.report.suspects)

    async def sync_updates(
        self, admin: Statecache, lap: Statecache, published: list[SnapshotInput]
    ) -> None:
        updates = bump(published[: 2 * UPDATES], 1)
        await admin.publish(updates)
        before = lap.bytes_received
        synced = {(s.group_id, s.kind, s.mls_epoch) async for s in lap.sync()}
        self.note(f"laptop sync after {len(updates)} updates", f"{lap.bytes_received - before:,} B")
        self.check(
            f"sync returned exactly the {len(updates)} updated snapshots",
            synced == {(u.group_id, u.kind, u.mls_epoch) for u in updates},
        )

    async def sync_with_a_node_down(
        self, admin: Statecache, lap: Statecache, published: list[SnapshotInput]
    ) -> None:
        await self.nodes[2].stop()
        more = bump(published[:10], 2, size=64)
        await admin.publish(more)
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
        published: list[SnapshotInput],
    ) -> None:
        await admin.publish(bump(published[:20], 5, size=256))
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
    groups = int(os.environ.get("DEMO_GROUPS", "1000"))
    with tempfile.TemporaryDirectory(prefix="statecache-demo-") as tmp:
        return asyncio.run(run(Path(tmp), groups))


if __name__ == "__main__":
    sys.exit(main())

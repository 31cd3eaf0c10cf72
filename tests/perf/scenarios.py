"""The measured scenarios. Each starts from real local nodes and real SDK devices."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import umbral_pre

import pre
from client_sdk.costs import authoriser_upload, uploaded
from client_sdk.demo import synthetic_groups
from client_sdk.device import SnapshotInput, Statecache, create_account, enrollment_request
from client_sdk.errors import StatecacheError
from client_sdk.keystore import Profile
from client_sdk.local_nodes import LocalNode

THRESHOLD = 2

# --- re-encryption throughput ----------------------------------------------------------


def _raw_worker(seconds: float) -> int:
    """umbral_pre.reencrypt in a loop for `seconds`, on one core."""
    delegating, receiving = umbral_pre.SecretKey.random(), umbral_pre.SecretKey.random()
    signer = umbral_pre.Signer(umbral_pre.SecretKey.random())
    capsule, _ = umbral_pre.encrypt(delegating.public_key(), b"k" * 32)
    kfrag = umbral_pre.generate_kfrags(
        delegating, receiving.public_key(), signer, 1, 1, True, True
    )[0]
    done, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(50):
            umbral_pre.reencrypt(capsule, kfrag)
        done += 50
    return done


async def raw_reencrypt_per_s(seconds: float) -> float:
    cores = os.cpu_count() or 1
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(cores) as pool:
        await loop.run_in_executor(pool, _raw_worker, 0.2)  # start the workers
        started = time.perf_counter()
        counts = await asyncio.gather(
            *(loop.run_in_executor(pool, _raw_worker, seconds) for _ in range(cores))
        )
        return sum(counts) / (time.perf_counter() - started)


async def service_reencrypt_per_s(
    node: LocalNode, *, labels: int, clients: int, seconds: float
) -> float:
    """Capsules re-encrypted per second through one node's API: one device holding grants
    for `labels` labels, `clients` concurrent batch requests."""
    profile = await create_account([node.url], 1)
    async with Statecache(profile) as admin:
        for i in range(labels):
            await admin.add_label(pre.label_for_group(i.to_bytes(4, "big")))
        device, blob = enrollment_request(
            "bench",
            account_id=admin.profile.account_id,
            nodes=admin.profile.nodes,
            threshold=admin.profile.threshold,
        )
        all_labels = ["account"] + [
            pre.label_for_group(i.to_bytes(4, "big")) for i in range(labels)
        ]
        await admin.approve(blob, labels=all_labels)
    member = Profile(profile.account_id, device, [node.url], 1)
    async with Statecache(member) as sc:
        client = sc.nodes[0]
        await client.reencrypt()  # warm
        done = 0
        deadline = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                answer = await client.reencrypt()
                done += sum(r.fragment is not None for r in answer.results)

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(clients)))
        return done / (time.perf_counter() - started)


# --- onboarding versus number of groups --------------------------------------------------


def _reencrypt_many(capsules: list[bytes], kfrag: bytes) -> tuple[list[bytes], float]:
    """One node's part in the per-snapshot design: re-encrypt every snapshot's capsule."""
    started = time.perf_counter()
    verified = umbral_pre.KeyFrag.from_bytes(kfrag).skip_verification()
    out = [
        bytes(umbral_pre.reencrypt(umbral_pre.Capsule.from_bytes(c), verified)) for c in capsules
    ]
    return out, time.perf_counter() - started


async def onboarding_rows(urls: list[str], groups: int) -> list[dict[str, Any]]:
    """The three designs on the same data and nodes."""
    published = synthetic_groups(groups, seed=groups)
    rows = []

    # statecache, as built
    admin_profile = await create_account(urls, THRESHOLD)
    async with Statecache(admin_profile) as admin:
        await admin.publish(published)
        device, blob = enrollment_request(
            "new",
            account_id=admin.profile.account_id,
            nodes=admin.profile.nodes,
            threshold=admin.profile.threshold,
        )
        approval = await admin.approve(blob)
    member = Profile(admin_profile.account_id, device, urls, THRESHOLD)
    async with Statecache(member) as sc:
        wall, cpu = time.perf_counter(), time.process_time()
        opened = [s async for s in sc.onboard()]
        seconds, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
        download = sc.bytes_received
    assert len(opened) == len(published), "onboarding lost snapshots"
    authorised = authoriser_upload(approval)  # defined once, with the demo's (`costs`)
    rows.append(_row(groups, "statecache", seconds, cpu_s, authorised, download))

    # per_snapshot_capsules: the same transfers and opening, plus what the design adds:
    # every snapshot's own capsule re-encrypted by M nodes (in parallel processes, as M
    # nodes would) and M cfrags per snapshot verified and opened by the new device.
    extra_wall, extra_cpu, cfrag_bytes = await _per_snapshot_extra(len(published))
    rows.append(
        _row(groups, "per_snapshot_capsules", seconds + extra_wall, cpu_s + extra_cpu,
             authorised, download + cfrag_bytes)
    )  # fmt: skip

    # naive_reupload: the old device seals every snapshot again for the new device and
    # uploads it; the new device (given the key directly) downloads and opens everything.
    naive_profile = await create_account(urls, THRESHOLD)
    async with Statecache(naive_profile) as old_device:
        started = time.perf_counter()
        with uploaded(old_device) as sent:  # the demo's "re-uploading ... instead" (`costs`)
            await old_device.publish(published)
        upload_s = time.perf_counter() - started
        upload = sent.bytes
    heir = Profile(naive_profile.account_id, naive_profile.device, urls, THRESHOLD,
                   account=naive_profile.account)  # fmt: skip
    async with Statecache(heir) as nd:
        wall, cpu = time.perf_counter(), time.process_time()
        count = sum([1 async for _ in nd.onboard()])
        seconds, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    assert count == len(published)
    rows.append(
        _row(groups, "naive_reupload", upload_s + seconds, cpu_s, upload, nd.bytes_received)
    )
    return rows


def _row(
    groups: int, design: str, seconds: float, cpu: float, up: int, down: int
) -> dict[str, Any]:
    return {
        "groups": groups,
        "design": design,
        "seconds": round(seconds, 4),
        "new_device_cpu_s": round(cpu, 4),
        "authoriser_upload_bytes": up,
        "new_device_download_bytes": down,
    }


async def _per_snapshot_extra(snapshots: int) -> tuple[float, float, int]:
    account = pre.AccountSecrets.generate()
    device = pre.DeviceSecrets.generate()
    record = pre.register_account(account, now=0)
    cert = pre.certify_device(account, device.public_keys, role=pre.Role.MEMBER,
                              not_before=0, not_after=1 << 40)  # fmt: skip
    capsules = [pre.create_key_capsule(account, "account", 0, now=0)[0] for _ in range(snapshots)]
    shares = pre.make_grant(account, capsules[0], cert, threshold=THRESHOLD, shares=THRESHOLD,
                            expires_at=1 << 40)  # fmt: skip
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    with ProcessPoolExecutor(THRESHOLD) as pool:
        results = await asyncio.gather(
            *(loop.run_in_executor(pool, _reencrypt_many, [c.capsule for c in capsules], s.kfrag)
              for s in shares)
        )  # fmt: skip
    node_wall = time.perf_counter() - started
    cpu = time.process_time()
    wall = time.perf_counter()
    for i, capsule in enumerate(capsules):
        frags = [
            pre.verify_capsule_fragment(
                pre.CapsuleFragment(label="account", key_epoch=0, cfrag=cfrags[i]),
                capsule=capsule,
                account=record,
                receiver=device,
            )
            for cfrags, _ in results
        ]
        pre.open_key_capsule(device, capsule, frags)
    client_wall, client_cpu = time.perf_counter() - wall, time.process_time() - cpu
    # Each cfrag travels as base64url in JSON: about 4/3 of its size plus field names.
    cfrag_bytes = sum(len(c) * 4 // 3 + 64 for cfrags, _ in results for c in cfrags)
    return node_wall + client_wall, client_cpu, cfrag_bytes


# --- publishing under load ----------------------------------------------------------------


async def publish_under_load(urls: list[str], *, devices: int, per_device: int) -> dict[str, Any]:
    profile = await create_account(urls, THRESHOLD)
    members = []
    async with Statecache(profile) as admin:
        for _ in range(devices):
            device, blob = enrollment_request(
                "load",
                account_id=admin.profile.account_id,
                nodes=admin.profile.nodes,
                threshold=admin.profile.threshold,
            )
            await admin.approve(blob)
            members.append(Profile(profile.account_id, device, urls, THRESHOLD))
    latencies: list[float] = []
    errors = 0

    async def run(member: Profile, index: int) -> None:
        nonlocal errors
        async with Statecache(member) as sc:
            await sc.load_keys()
            await ready.wait()
            for epoch in range(1, per_device + 1):
                item = SnapshotInput(
                    index.to_bytes(8, "big"), "group_state", epoch, os.urandom(4096)
                )
                started = time.perf_counter()
                try:
                    await sc.publish([item])
                    latencies.append(time.perf_counter() - started)
                except StatecacheError:
                    errors += 1

    ready = asyncio.Event()
    tasks = [asyncio.create_task(run(m, i)) for i, m in enumerate(members)]
    await asyncio.sleep(0.5 + devices * 0.02)  # let every device load its keys
    started = time.perf_counter()
    ready.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "concurrency": devices,
        "per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 2)
        if latencies
        else None,
        "errors": errors,
    }


# --- sync after one update ----------------------------------------------------------------


async def sync_after_update(urls: list[str], groups: int) -> dict[str, Any]:
    published = synthetic_groups(groups, seed=1)
    profile = await create_account(urls, THRESHOLD)
    async with Statecache(profile) as admin:
        await admin.publish(published)
        device, blob = enrollment_request(
            "sync",
            account_id=admin.profile.account_id,
            nodes=admin.profile.nodes,
            threshold=admin.profile.threshold,
        )
        await admin.approve(blob)
        member = Profile(profile.account_id, device, urls, THRESHOLD)
        async with Statecache(member) as sc:
            _ = [s async for s in sc.onboard()]
            first = published[0]
            await admin.publish([SnapshotInput(first.group_id, first.kind, first.mls_epoch + 1,
                                               os.urandom(len(first.plaintext)))])  # fmt: skip
            before, started = sc.bytes_received, time.perf_counter()
            changed = [s async for s in sc.sync()]
            sync_s, sync_bytes = time.perf_counter() - started, sc.bytes_received - before
    assert len(changed) == 1, f"sync returned {len(changed)} snapshots"
    async with Statecache(member) as fresh:
        started = time.perf_counter()
        _ = [s async for s in fresh.onboard()]
        full_s, full_bytes = time.perf_counter() - started, fresh.bytes_received
    return {
        "bytes": sync_bytes,
        "seconds": round(sync_s, 4),
        "full_refetch_bytes": full_bytes,
        "full_refetch_seconds": round(full_s, 4),
        "groups": groups,
    }


def mode() -> str:
    """BENCH_QUICK=1: a short run; BENCH_SMOKE=1: tiny sizes, only to check the harness."""
    if os.environ.get("BENCH_SMOKE", "") not in ("", "0"):
        return "smoke"
    return "quick" if os.environ.get("BENCH_QUICK", "") not in ("", "0") else "full"


def results_dir() -> Path:
    return Path(os.environ.get("BENCH_DIR", "bench-results"))


# --- what confirmation costs ----------------------------------------------------------------


async def confirmation_costs(urls: list[str], home: Path, *, publishes: int) -> dict[str, Any]:
    """Side by side in one run, on the same nodes: a publish as built (seal, outbox on disk
    with fsync, store on every node with receipts checked, then the confirmations round)
    against the bare store it used to be (the same sealed bytes sent once to every node,
    answers awaited), one snapshot per publish, one device, sequential; and, for a read,
    the receipt checks against the author-signature checks over the same snapshots."""
    from client_sdk.outbox import Outbox, OutboxEntry

    profile = await create_account(urls, THRESHOLD)
    async with Statecache(profile, state_path=home / "state.json") as sc:
        await sc.load_keys()
        full: list[float] = []
        for i in range(publishes):  # one group each: the read below checks them all
            item = SnapshotInput(b"cost" + i.to_bytes(4, "big"), "group_state", 1, os.urandom(4096))
            started = time.perf_counter()
            await sc.publish([item])
            full.append(time.perf_counter() - started)
        kek = sc._keyring.newest("account")  # the bench seals by hand
        assert kek is not None
        sealed = [
            pre.seal_snapshot(kek, profile.device, group_id=b"bare-cost", kind="group_state",
                              mls_epoch=e, plaintext=os.urandom(4096), now=int(time.time()))
            for e in range(1, publishes + 1)
        ]  # fmt: skip
        bare: list[float] = []
        for snap in sealed:
            started = time.perf_counter()
            await asyncio.gather(*(n.publish([snap]) for n in sc.nodes))
            bare.append(time.perf_counter() - started)
        outbox = Outbox(home / "outbox-cost")
        disk: list[float] = []
        for snap in sealed:
            started = time.perf_counter()
            entry = OutboxEntry(bytes(32), snap)
            outbox.put([entry])
            outbox.remove(entry.key)
            disk.append(time.perf_counter() - started)
        # a read's checks, per snapshot: M receipts against the author's signature
        page = await sc.nodes[0].list_snapshots(order="asc", limit=publishes)
        items = [i for i in page.items if i.snapshot is not None]
        keys = {n.node_key for n in sc.nodes if n.node_key is not None}
        started = time.perf_counter()
        for item in items:
            for data in item.receipts[:THRESHOLD]:
                receipt = pre.SnapshotReceipt.from_bytes(data)
                receipt.verify(receipt.node_key)
                assert receipt.node_key in keys
        receipts_s = time.perf_counter() - started
        directory = await sc.directory()
        started = time.perf_counter()
        for item in items:
            snap = pre.SealedSnapshot.from_bytes(item.snapshot or b"")
            snap.verify(directory.certificates[snap.header.author])
        author_s = time.perf_counter() - started
    med = statistics.median
    return {
        "publishes": publishes,
        "publish_ms_median": round(med(full) * 1000, 2),
        "bare_store_ms_median": round(med(bare) * 1000, 2),
        "publish_over_bare_store": round(med(full) / med(bare), 2),
        "outbox_write_and_delete_ms_median": round(med(disk) * 1000, 3),
        "read_snapshots": len(items),
        "read_receipt_checks_ms_per_snapshot": round(receipts_s / len(items) * 1000, 4),
        "read_author_check_ms_per_snapshot": round(author_s / len(items) * 1000, 4),
        "receipts_per_snapshot_listed": round(sum(len(i.receipts) for i in items) / len(items), 2),
    }

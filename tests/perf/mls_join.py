"""`mls_join`: a new device joining every group of its account from Welcomes sent without
the tree, with real mls-rs clients: the seconds to fetch and verify the trees from the
nodes (its onboarding, then `trees_at`), mls-rs's join time apart, and the bytes of the
Welcome messages with the tree in them and without it (what the cache saves the sender)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import mls_rs_uniffi as mls

import pre
from client_sdk.device import Statecache, create_account, enrollment_request
from client_sdk.keystore import Profile
from client_sdk.mlsrs.clients import MemoryStore, apply, new_client
from client_sdk.mlsrs.demo import World
from client_sdk.mlsrs.flows import commit_tree, join_all
from client_sdk.mlsrs.store import StatecacheStore

THRESHOLD = 2


def _with_tree_bytes(world: World) -> int:
    """The same adds by a committer that puts the tree in its Welcomes: a second phone, in
    groups of the same sizes, each adding one new device."""
    keys = mls.generate_signature_keypair(mls.CipherSuite.CURVE25519_AES128)
    config = mls.ClientConfig(group_state_storage=MemoryStore(), use_ratchet_tree_extension=True)
    phone = mls.Client(b"alice-phone-with-trees", keys, config)
    device = new_client("new-device", MemoryStore())
    total = 0
    for others in world.members.values():
        group = phone.create_group(None)
        apply(group, group.add_members([u.client.generate_key_package_message() for u in others]))
        out = apply(group, group.add_members([device.generate_key_package_message()]))
        total += len(out.welcome_message.to_bytes())
    return total


async def mls_join_row(urls: list[str], groups: int, home: Path) -> dict[str, Any]:
    admin = await create_account(urls, THRESHOLD, name="phone")
    async with Statecache(admin) as sc:
        world = World(StatecacheStore(home / f"phone{groups}", admin.device), groups, join=False)
        device, blob = enrollment_request(
            "laptop", account_id=admin.account_id, nodes=urls, threshold=THRESHOLD
        )
        await sc.approve(blob, expect=pre.device_fingerprint(device.public_keys))
        laptop_profile = Profile(admin.account_id, device, urls, THRESHOLD)
        laptop = new_client("alice-laptop", StatecacheStore(home / f"laptop{groups}", device))
        pairs = list(world.add_device(laptop))
        await sc.publish(
            [commit_tree(world.store, world.phone.groups[w.group_id], w.group_id) for w, _ in pairs]
        )
    welcomes = [w for w, _ in pairs]
    async with Statecache(laptop_profile) as lap:
        started = time.perf_counter()
        opened = [s async for s in lap.onboard()]
        onboard_s = time.perf_counter() - started
        report = await join_all(lap, laptop, welcomes)
    assert len(report.groups) == groups and opened
    return {
        "groups": groups,
        "members_min": min(len(m) + 1 for m in world.members.values()),
        "members_max": max(len(m) + 1 for m in world.members.values()),
        "fetch_and_verify_seconds": round(onboard_s + report.tree_seconds, 3),
        "onboard_seconds": round(onboard_s, 3),
        "trees_at_seconds": round(report.tree_seconds, 3),
        "mls_rs_join_seconds": round(report.join_seconds, 3),
        "tree_bytes": report.tree_bytes,
        "welcome_bytes_without_tree": sum(len(w.message) for w in welcomes),
        "welcome_bytes_with_tree": _with_tree_bytes(world),
    }

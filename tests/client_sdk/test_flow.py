"""The whole device story on three real nodes, threshold 2: set up, publish, approve a new
device, onboard, sync, revoke, rotate, re-grant."""

from __future__ import annotations

import pytest

import pre
from cache_service.protocol.codes import Code
from client_sdk.errors import ThresholdNotMet
from tests.client_sdk.conftest import (
    Cluster,
    as_latest,
    assert_all_genuine,
    bump,
    collect,
    groups,
    latest,
)


async def test_full_flow(cluster: Cluster) -> None:
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        node_keys = dict(await admin.pin_nodes())
        assert set(node_keys) == set(cluster.urls)

        first = groups(6)
        report = await admin.publish(first)
        assert (report.stored, report.duplicates, report.per_node_failures) == (12, 0, {})
        # An application retry of what is stored is a duplicate, and nothing is resent.
        sent = admin.bytes_sent
        again = await admin.publish(first[:1])
        assert (again.stored, again.duplicates, admin.bytes_sent) == (0, 1, sent)
        # Another seal of a state at an epoch already stored is another snapshot: refused.
        async with cluster.statecache(profile) as forgetful:  # a device that lost its state
            with pytest.raises(ThresholdNotMet) as refused:
                await forgetful.publish(first[:1])
        assert all(o.code is Code.CONFLICT for o in refused.value.failures.values())

        laptop = await cluster.enrol(admin, "laptop")
        tablet = await cluster.enrol(admin, "tablet")
        async with cluster.statecache(laptop) as lap, cluster.statecache(tablet) as tab:
            # onboarding: one re-encryption per node for the one label, everything opens
            onboarded = await collect(lap.onboard())
            assert len(onboarded) == 12
            assert as_latest(onboarded) == latest(first)
            assert_all_genuine(onboarded, first)
            assert lap.report.suspects == {}
            assert lap.report.primary == cluster.urls[0]
            assert lap.reencryptions == 3
            assert lap.keys[("account", 0)].secret == admin.keys[("account", 0)].secret
            assert lap.state.onboarded

            # sync: exactly the updates, then nothing
            updates = bump(first[:4])
            await admin.publish(updates)
            synced = await collect(lap.sync())
            assert sorted((s.group_id, s.kind, s.mls_epoch) for s in synced) == sorted(
                (u.group_id, u.kind, u.mls_epoch) for u in updates
            )
            assert_all_genuine(synced, updates)
            assert await collect(lap.sync()) == []

            assert as_latest(await collect(tab.onboard())) == latest(first, updates)
            laptop_keys = dict(lap.keys)

            # revoke the laptop: every node signs a receipt naming the deleted share
            revoked = await admin.revoke(laptop.device.device_id)
            assert set(revoked.receipts) == set(cluster.urls)
            assert revoked.failures == {}
            for url, receipt in revoked.receipts.items():
                receipt.verify(node_keys[url])
                assert (receipt.account_id, receipt.device_id) == (
                    profile.account_id,
                    laptop.device.device_id,
                )
                assert pre.ShareRef(label="account", key_epoch=0) in receipt.deleted
            assert revoked.rotated == {"account": 1}
            assert revoked.regranted == [tablet.device.device_id]
            devices = {c.device_id: at for c, at in await admin.list_devices()}
            assert devices[laptop.device.device_id] is not None
            assert devices[tablet.device.device_id] is None

            # state published after the rotation: the tablet reads it, sealed at key epoch 1
            after = bump(first, 2)
            await admin.publish(after)
            tab_synced = await collect(tab.sync())
            assert as_latest(tab_synced) == latest(after)
            assert {s.header.key_epoch for s in tab_synced} == {1}
            assert ("account", 1) in tab.keys and ("account", 0) in tab.keys

            # the revoked laptop gets nothing from any node, and cannot publish
            before = lap.bytes_received
            with pytest.raises(ThresholdNotMet) as info:
                await collect(lap.sync())
            assert info.value.failures
            assert all(o.code is Code.DEVICE_REVOKED for o in info.value.failures.values())
            assert lap.bytes_received - before < 4096
            with pytest.raises(ThresholdNotMet):
                await lap.publish(bump(first[:1], 10))

            # and what it kept from before cannot open what was sealed after the rotation
            page = await admin.nodes[0].list_snapshots(order="desc", limit=1)
            newest = pre.SealedSnapshot.from_bytes(page.items[0].snapshot or b"")
            assert newest.header.key_epoch == 1
            author = (await admin.directory()).certificates[profile.device.device_id]
            for kek in laptop_keys.values():
                posing = pre.Kek(kek.account_id, kek.label, 1, kek.secret)
                for key in (kek, posing):
                    with pytest.raises(pre.PreError):
                        pre.open_snapshot(newest, key, author)


async def test_new_device_after_rotation_reads_every_key_epoch(cluster: Cluster) -> None:
    """A device approved after a rotation opens the old epoch's snapshots through the KEK
    chain: one re-encryption per node, for the newest epoch only."""
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        old = groups(3, tag="old")
        await admin.publish(old)
        assert await admin.rotate("account") == 1
        new = groups(2, tag="new")
        await admin.publish(new)
        tablet = await cluster.enrol(admin, "tablet")
    async with cluster.statecache(tablet) as tab:
        opened = await collect(tab.onboard())
        assert as_latest(opened) == latest(old, new)
        assert {s.header.key_epoch for s in opened} == {0, 1}
        assert tab.reencryptions == 3  # epoch 1 only; epoch 0 comes down the chain

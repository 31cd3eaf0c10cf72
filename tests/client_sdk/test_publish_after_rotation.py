"""A member publishing after a rotation it had not loaded: every node refuses the old key
epoch, the SDK seals again under the new one, and the report shows every node ok (the
first refusal is not held against the nodes). Found by the state machine
(tests/reliability/test_state_machine.py: approve, publish, rotate, publish)."""

from __future__ import annotations

from client_sdk.device import SnapshotInput
from client_sdk.outcomes import NodeState
from tests.client_sdk.conftest import Cluster


async def test_a_publish_sealed_again_after_a_rotation_reports_every_node_ok(
    cluster: Cluster,
) -> None:
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        laptop = await cluster.enrol(admin)
        [cert] = [
            c for c, _ in await admin.list_devices() if c.device_id == laptop.device.device_id
        ]
        async with cluster.statecache(laptop) as lap:
            await lap.publish([SnapshotInput(b"g", "group_state", 1, b"one")])
            assert await admin.rotate("account") == 1
            await admin.authorise(cert, labels=["account"])
            report = await lap.publish([SnapshotInput(b"g", "group_state", 2, b"two")])
    assert report.stored == 1
    assert report.per_node_failures == {}
    assert {o.state for o in report.nodes.values()} == {NodeState.OK}

"""The device lifecycle through the SDK, against three real in-process nodes over real
Redis: approval refuses a request before anything is sent, an unapproved device gets
`NotApproved`, renewal, and revoking a revoked device."""

from __future__ import annotations

import pytest

import pre
from client_sdk import EnrolmentRefused, NotApproved, ThresholdNotMet, enrollment_request
from client_sdk.enrolment import encode_enrollment
from client_sdk.keystore import Profile
from client_sdk.outcomes import NodeState
from tests.client_sdk.conftest import THRESHOLD, Cluster, collect


def _request(profile: Profile, **changes: object) -> tuple[pre.DeviceSecrets, str]:
    set_up: dict[str, object] = {
        "account_id": profile.account_id,
        "nodes": profile.nodes,
        "threshold": profile.threshold,
    }
    return enrollment_request("laptop", **{**set_up, **changes})  # type: ignore[arg-type]


async def test_a_refused_request_sends_nothing(cluster: Cluster) -> None:
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        device, blob = _request(profile)
        other_nodes = _request(profile, nodes=profile.nodes[::-1])[1]
        sent = admin.bytes_sent
        for bad, kw, code in [
            (blob, {"expect": "0" * 30}, "fingerprint_mismatch"),
            (other_nodes, {}, "enrolment_mismatch"),
            (blob[:-1], {}, "damaged_enrolment"),
        ]:
            with pytest.raises(EnrolmentRefused) as info:
                await admin.approve(bad, **kw)  # type: ignore[arg-type]
            assert info.value.code == code
        assert admin.bytes_sent == sent
        fingerprint = pre.device_fingerprint(device.public_keys)
        approval = await admin.approve(blob, expect=fingerprint)
        assert approval.fingerprint == fingerprint and not approval.renewed
        assert approval.grants_until == approval.certificate.not_before + 60 + 30 * 86_400


async def test_an_unapproved_device_is_not_approved_even_with_a_node_down(
    cluster: Cluster,
) -> None:
    """Every node that answers refuses the device's signature: `NotApproved` (still a
    `ThresholdNotMet`, with each node's outcome), also when a node is unreachable."""
    profile = await cluster.account()
    device, blob = _request(profile)
    laptop = Profile(profile.account_id, device, list(profile.nodes), THRESHOLD)
    async with cluster.statecache(laptop) as lap:
        with pytest.raises(NotApproved) as info:
            await collect(lap.sync())
        assert isinstance(info.value, ThresholdNotMet)
        assert "not approved yet" in str(info.value)
        await cluster.nodes[2].stop()
        with pytest.raises(NotApproved) as info:
            await collect(lap.onboard())
        assert info.value.nodes[cluster.urls[2]].state is NodeState.UNAVAILABLE
    await cluster.nodes[2].start()
    async with cluster.statecache(profile) as admin:
        await admin.approve(blob)
    async with cluster.statecache(laptop) as lap:
        assert await collect(lap.sync()) == []


async def test_revoking_again_redelivers_without_rotating(cluster: Cluster) -> None:
    """A revocation a node missed reaches it when the admin revokes again, without a
    second rotation; `force` rotates again."""
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        laptop = await cluster.enrol(admin)
        down = cluster.nodes[2]
        await down.stop()
        first = await admin.revoke(laptop.device.device_id)
        assert set(first.receipts) == set(cluster.urls[:2]) and first.rotated == {"account": 1}
        await down.start()
        again = await admin.revoke(laptop.device.device_id)
        assert again.already_revoked and again.rotated == {}
        assert set(again.receipts) == {down.url}  # only the node that missed it
        forced = await admin.revoke(laptop.device.device_id, force=True)
        assert forced.already_revoked and forced.rotated == {"account": 2}


async def test_a_request_with_a_key_off_the_curve_records_nothing(cluster: Cluster) -> None:
    """A request the new device really signed, whose PRE key is not a curve point: refused
    at parsing, and nothing of it lands in the admin's records (which the next admin
    command delivers to every node), so it is never certified."""
    profile = await cluster.account()
    device = pre.DeviceSecrets.generate()
    keys = object.__new__(pre.DeviceKeys)  # past DeviceKeys' own check, as an attacker's
    object.__setattr__(keys, "signing_key", device.public_keys.signing_key)
    object.__setattr__(keys, "pre_key", b"\x02" + b"\xff" * 32)
    unsigned = pre.EnrollmentRequest(
        account_id=profile.account_id, keys=keys, nodes=tuple(profile.nodes),
        threshold=profile.threshold, name="evil", signature=bytes(64),
    )  # fmt: skip
    signed = unsigned.replace(signature=device.sign("enrollment-request", unsigned.tbs()))
    blob = encode_enrollment(signed)
    async with cluster.statecache(profile) as admin:
        records = await admin._admin.records()
        before = records.to_json()
        with pytest.raises(EnrolmentRefused):
            await admin.approve(blob)
        assert records.to_json() == before
        await admin.repair()
        listed = {cert.device_id for cert, _ in await admin.list_devices()}
        assert device.device_id not in listed

"""An onboarding interrupted after its first page resumes where it stopped, from the
state file, in a new session."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from client_sdk.state import SyncState
from tests.client_sdk.conftest import (
    Cluster,
    as_latest,
    assert_all_genuine,
    bump,
    collect,
    groups,
    latest,
)

PAGE = 4


async def test_interrupted_onboarding_resumes(cluster: Cluster, tmp_path: Path) -> None:
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        first = groups(9)  # 18 snapshots: 5 pages of 4
        await admin.publish(first)
        laptop = await cluster.enrol(admin)
    state_path = tmp_path / "laptop" / "state.json"

    before: list = []
    async with cluster.statecache(laptop, state_path=state_path) as lap:
        async for snap in lap.onboard(page_size=PAGE):
            before.append(snap)
            if len(before) == PAGE + 1:  # the first page done, one into the second
                break
        interrupted = lap.state
    assert not interrupted.onboarded
    assert state_path.exists()
    saved = SyncState.load(state_path)
    assert saved.onboarding == interrupted.onboarding and saved.onboarding

    async with cluster.statecache(laptop, state_path=state_path) as lap:
        after = await collect(lap.onboard(page_size=PAGE))
        assert lap.report.suspects == {}
        assert lap.state.onboarded
        # the second page was asked for again, not the first
        assert lap.report.unchanged <= PAGE

    both = before + after
    assert_all_genuine(both, first)
    assert as_latest(both) == latest(first)
    seen = Counter((s.group_id, s.kind, s.mls_epoch) for s in both)
    duplicates = {key for key, n in seen.items() if n > 1}
    second_page = {(s.group_id, s.kind, s.mls_epoch) for s in before[PAGE:]}
    assert duplicates <= second_page
    assert len(both) - len(duplicates) == len(first)

    # and a later sync starts after everything onboarded
    async with cluster.statecache(laptop, state_path=state_path) as lap:
        assert await collect(lap.sync()) == []


async def test_publications_between_interruption_and_resumption(
    cluster: Cluster, tmp_path: Path
) -> None:
    """What is published while an onboarding is paused is read too, and the node that
    served the onboarding is not taken for one that left it out."""
    profile = await cluster.account()
    async with cluster.statecache(profile) as admin:
        first = groups(6)
        await admin.publish(first)
        laptop = await cluster.enrol(admin)
        state_path = tmp_path / "state.json"

        before: list = []
        async with cluster.statecache(laptop, state_path=state_path) as lap:
            async for snap in lap.onboard(page_size=PAGE):
                before.append(snap)
                if len(before) == PAGE + 1:
                    break

        updates = bump(first[:2]) + groups(1, tag="new")
        await admin.publish(updates)

        async with cluster.statecache(laptop, state_path=state_path) as lap:
            after = await collect(lap.onboard(page_size=PAGE))
            assert lap.report.suspects == {}
            both = before + after
            assert_all_genuine(both, first, updates)
            assert as_latest(both) == latest(first, updates)

            more = bump(updates)
            await admin.publish(more)
            synced = await collect(lap.sync())
            assert as_latest(synced) == latest(more)
            assert lap.report.suspects == {}

"""Hung nodes and every command, with the SDK's default policy.

Three real node processes, threshold 2, on the demo-shaped account the sizes name (a
group_state and a ratchet_tree per group). One node is frozen with SIGSTOP (it accepts
connections and never answers); then each command runs once and is timed: publish, device
list, approve, a fresh device's onboarding, a sync. Each must finish within `BOUND` and
name the frozen node as unavailable. Then two nodes are frozen: a read must fail closed
(`ThresholdNotMet`) within the bound, naming both. Figures: bench-results/battery/
hung_nodes.json, quoted in docs/SECURITY.md ("Bounds").
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest

from client_sdk import NodeState, Statecache, ThresholdNotMet, create_account, enrollment_request
from client_sdk.keystore import Profile
from client_sdk.local_nodes import LocalNode
from tests.client_sdk.conftest import as_latest, bump, groups, latest
from tests.reliability.conftest import node_processes
from tests.reliability.figures import record
from tests.reliability.sizes import SIZES

N, M = 3, 2
BOUND = 10.0  # seconds: the documented bound for a command with N - M nodes hung
FIGURES: list[dict[str, Any]] = []


@pytest.fixture(scope="module")
def local_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LocalNode]]:
    try:
        with node_processes(Path(tmp_path_factory.mktemp("hung")), N) as nodes:
            yield nodes
    finally:
        _write_figures()


def _signal(node: LocalNode, sig: signal.Signals) -> None:
    assert node.process is not None
    os.kill(node.process.pid, sig)


async def _timed(what: Awaitable[object]) -> float:
    started = time.monotonic()
    await what
    return round(time.monotonic() - started, 3)


def _positions() -> list[int]:
    return list(range(N)) if SIZES.fault_every_position else [0]


@pytest.mark.slow
@pytest.mark.timeout(SIZES.timeout)
@pytest.mark.parametrize("position", _positions())
async def test_every_command_with_one_node_hung(
    local_nodes: list[LocalNode], position: int
) -> None:
    urls = [n.url for n in local_nodes]
    profile = await create_account(urls, M)
    published = groups(SIZES.fault_groups, tag=uuid.uuid4().hex)
    async with Statecache(profile) as admin:
        await admin.publish(published)
        secrets, blob = enrollment_request(
            "laptop",
            account_id=profile.account_id,
            nodes=profile.nodes,
            threshold=profile.threshold,
        )
        await admin.approve(blob)
    laptop = Profile(profile.account_id, secrets, urls, M)
    async with Statecache(laptop) as lap:  # pins the nodes, reads once: sync has a cursor
        assert as_latest([s async for s in lap.onboard()]) == latest(published)
        state = lap.state

    hung = local_nodes[position]
    _signal(hung, signal.SIGSTOP)
    times: dict[str, float] = {}
    try:
        updates = bump(published)
        async with Statecache(profile) as admin:
            times["publish"] = await _timed(admin.publish(updates))
            assert admin.outcomes[hung.url].state is NodeState.UNAVAILABLE
            times["device list"] = await _timed(admin.list_devices())
            _, tablet = enrollment_request(
                "tablet",
                account_id=profile.account_id,
                nodes=profile.nodes,
                threshold=profile.threshold,
            )
            times["approve"] = await _timed(admin.approve(tablet))
            assert admin.outcomes[hung.url].state is NodeState.UNAVAILABLE
        async with Statecache(laptop, state=state) as lap:
            got: list[Any] = []
            times["sync"] = await _timed(_drain(lap.sync(), got))
            assert as_latest(got) == latest(updates)
            assert lap.report.nodes[hung.url].state is NodeState.UNAVAILABLE
        async with Statecache(laptop) as fresh:  # no state: everything again
            got = []
            times["onboard"] = await _timed(_drain(fresh.onboard(), got))
            assert as_latest(got) == latest(updates)
            assert fresh.report.nodes[hung.url].state is NodeState.UNAVAILABLE
    finally:
        _signal(hung, signal.SIGCONT)
    assert max(times.values()) < BOUND, times
    FIGURES.append({"hung": [position + 1], "seconds": times})


@pytest.mark.slow
@pytest.mark.timeout(SIZES.timeout)
async def test_a_read_with_two_nodes_hung_fails_closed(local_nodes: list[LocalNode]) -> None:
    urls = [n.url for n in local_nodes]
    profile = await create_account(urls, M)
    async with Statecache(profile) as admin:
        await admin.publish(groups(SIZES.fault_groups, tag=uuid.uuid4().hex))
    hung = local_nodes[:2]
    for node in hung:
        _signal(node, signal.SIGSTOP)
    try:
        async with Statecache(profile) as admin:
            started = time.monotonic()
            with pytest.raises(ThresholdNotMet) as info:
                await _drain(admin.sync(), [])
            took = round(time.monotonic() - started, 3)
    finally:
        for node in hung:
            _signal(node, signal.SIGCONT)
    assert took < BOUND
    assert {info.value.nodes[n.url].state for n in hung} == {NodeState.UNAVAILABLE}
    FIGURES.append({"hung": [1, 2], "seconds": {"sync (fails closed)": took}})


async def _drain(reading: Any, into: list[Any]) -> None:
    async for snap in reading:
        into.append(snap)


def _write_figures() -> None:
    if not FIGURES:
        return
    one = [f for f in FIGURES if len(f["hung"]) == 1]
    slowest: dict[str, float] = {}
    for f in one:
        for command, seconds in f["seconds"].items():
            slowest[command] = max(slowest.get(command, 0.0), seconds)
    two = [s for f in FIGURES if len(f["hung"]) == 2 for s in f["seconds"].values()]
    record(
        "hung_nodes",
        "one node of 3 frozen, default policy, slowest per command: "
        + ", ".join(f"{c} {s:.2f} s" for c, s in slowest.items())
        + (f"; two frozen: read failed closed in {max(two):.2f} s" if two else ""),
        {
            "nodes": N,
            "threshold": M,
            "groups": SIZES.fault_groups,
            "bound_seconds": BOUND,
            "policy": "RetryPolicy() defaults",
            "runs": FIGURES,
            "slowest_with_one_hung": slowest,
        },
    )

"""Nodes that stop, hang or slow down while a new device's onboarding is running.

Three real node processes (`client_sdk.local_nodes`, each with its own embedded
redis-server), threshold 2. A fresh account publishes, a new device starts `onboard()`,
and once the iterator has yielded its first snapshot (keys loaded, a page read) one or
more nodes fail:

- stop: the node process is stopped (SIGTERM), so connections are refused;
- hang: the node process is frozen (SIGSTOP): it accepts connections and never answers;
- slow: a proxy in front of the node holds each request for a while, below or above the
  retry policy's per-attempt timeout.

With N - M faulty nodes the onboarding completes and yields every snapshot, verified; with
N - M + 1 it either fails closed with `ThresholdNotMet` (without marking the device
onboarded) or, when the node it reads from carries every snapshot's receipts of M nodes,
delivers what that node proves and says the read is incomplete (`report.complete` false,
naming the nodes it could not read): either way only genuine snapshots; once the nodes
recover, the same device resumes and completes. Figures: per scenario, the outcome, what
was yielded and how long it took under the retry policy used.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from client_sdk.device import Statecache, create_account, enrollment_request
from client_sdk.errors import StatecacheError, ThresholdNotMet
from client_sdk.fanout import RetryPolicy
from client_sdk.keystore import Profile
from client_sdk.local_nodes import LocalNode
from client_sdk.verify import OpenedSnapshot
from tests.client_sdk.conftest import as_latest, assert_all_genuine, groups, latest
from tests.client_sdk.malicious_proxy import MaliciousProxy
from tests.reliability.conftest import node_processes
from tests.reliability.figures import record
from tests.reliability.sizes import SIZES

N, M = 3, 2
TIMEOUT = 1.0  # per attempt
POLICY = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.05, timeout=TIMEOUT)
SLOW = 0.25  # seconds a slow node holds each request: below the timeout
SLOWER = 1.5 * TIMEOUT  # above it: as good as hung


class SlowProxy(MaliciousProxy):
    """Forwards honestly, after `delay` seconds."""

    delay = 0.0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.delay:
            await asyncio.sleep(self.delay)
        return await super()._handle(request)


@dataclass(frozen=True)
class Scenario:
    fault: str  # stop | hang | slow | slower
    faulty: tuple[int, ...]  # node positions, 0-based

    @property
    def expect_complete(self) -> bool:
        return self.fault == "slow" or len(self.faulty) <= N - M

    @property
    def id(self) -> str:
        return f"{self.fault}-{'+'.join(str(i + 1) for i in self.faulty)}"


def scenarios() -> list[Scenario]:
    out = []
    for fault in ("stop", "hang", "slow", "slower"):
        if SIZES.fault_every_position:
            sets = [*combinations(range(N), 1), *combinations(range(N), 2)]
        else:  # the primary alone, then the primary and the node that takes over
            sets = [(0,), (0, 1)]
        out += [Scenario(fault, faulty) for faulty in sets]
    return out


FIGURES: list[dict[str, Any]] = []


@pytest.fixture(scope="module")
def local_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LocalNode]]:
    """Three node processes for the module (every scenario uses a fresh account)."""
    try:
        with node_processes(Path(tmp_path_factory.mktemp("faults")), N) as nodes:
            yield nodes
    finally:
        _write_figures()


@pytest.fixture
async def proxies(local_nodes: list[LocalNode]) -> AsyncIterator[list[SlowProxy]]:
    started = [SlowProxy(node.url) for node in local_nodes]
    for proxy in started:
        await proxy.start()
    yield started
    for proxy in started:
        await proxy.close()


async def inject(scenario: Scenario, nodes: list[LocalNode], proxies: list[SlowProxy]) -> None:
    for i in scenario.faulty:
        process = nodes[i].process
        assert process is not None
        if scenario.fault == "stop":
            await nodes[i].stop()
        elif scenario.fault == "hang":
            os.kill(process.pid, signal.SIGSTOP)
        else:
            proxies[i].delay = SLOW if scenario.fault == "slow" else SLOWER


async def heal(scenario: Scenario, nodes: list[LocalNode], proxies: list[SlowProxy]) -> None:
    for i in scenario.faulty:
        if scenario.fault == "stop":
            await nodes[i].start()
        elif scenario.fault == "hang":
            process = nodes[i].process
            assert process is not None
            os.kill(process.pid, signal.SIGCONT)
        else:
            proxies[i].delay = 0.0


async def run(scenario: Scenario, nodes: list[LocalNode], proxies: list[SlowProxy]) -> None:
    # Slow nodes are reached through their proxy, from the start; the others directly.
    slow = scenario.fault in ("slow", "slower")
    urls = [
        proxies[i].url if slow and i in scenario.faulty else node.url
        for i, node in enumerate(nodes)
    ]
    profile = await create_account(urls, M, policy=POLICY)
    published = groups(SIZES.fault_groups, tag=uuid.uuid4().hex)
    async with Statecache(profile, policy=POLICY) as admin:
        await admin.publish(published)
        secrets, blob = enrollment_request(
            "laptop",
            account_id=profile.account_id,
            nodes=profile.nodes,
            threshold=profile.threshold,
        )
        await admin.approve(blob)
    laptop = Profile(profile.account_id, secrets, urls, M)
    expected = latest(published)

    got: list[OpenedSnapshot] = []
    error: Exception | None = None
    async with Statecache(laptop, policy=POLICY) as lap:
        reading = lap.onboard(page_size=SIZES.fault_page)
        started = time.monotonic()
        got.append(await anext(reading))  # the onboarding is under way
        injected_after = time.monotonic() - started
        await inject(scenario, nodes, proxies)
        try:
            async for snap in reading:
                got.append(snap)  # type: ignore[arg-type]
        except StatecacheError as exc:
            error = exc
        finally:
            took = time.monotonic() - started
            await heal(scenario, nodes, proxies)
        onboarded, suspects = lap.state.onboarded, dict(lap.report.suspects)
        complete = lap.report.complete
        state = lap.state

    # never anything unverified: every yield is a published snapshot, byte for byte, once
    assert_all_genuine(got, published)
    keys = [(s.group_id, s.kind, s.mls_epoch) for s in got]
    assert len(keys) == len(set(keys)), "a snapshot was yielded twice"
    if scenario.expect_complete:
        assert error is None, f"{scenario.id}: {error!r}"
        assert as_latest(got) == expected and onboarded and complete
    elif error is None:  # what one node proves, said to be incomplete
        assert not complete, scenario.id
    else:
        assert isinstance(error, ThresholdNotMet), f"{scenario.id}: {error!r}"
        assert not onboarded

    # after recovery the same device resumes where it stopped and completes
    async with Statecache(laptop, policy=POLICY, state=state) as lap:
        resumed = [s async for s in lap.onboard(page_size=SIZES.fault_page)]
    assert_all_genuine(resumed, published)
    assert as_latest([*got, *resumed]) == expected  # type: ignore[list-item]

    FIGURES.append(
        {
            "scenario": scenario.id,
            "fault": scenario.fault,
            "faulty_nodes": [i + 1 for i in scenario.faulty],
            "faulty_count": len(scenario.faulty),
            "outcome": type(error).__name__
            if error is not None
            else ("completed" if complete else "incomplete"),
            "expected": "completed"
            if scenario.expect_complete
            else ("incomplete" if error is None else "ThresholdNotMet"),
            "snapshots_published": len(published),
            "snapshots_yielded": len(got),
            "unverified_yielded": 0,
            "seconds": round(took, 3),
            "fault_injected_after_seconds": round(injected_after, 3),
            "resumed_and_completed": True,
            "suspects": sorted(suspects),
        }
    )


@pytest.mark.slow
@pytest.mark.timeout(SIZES.timeout)
@pytest.mark.parametrize("scenario", scenarios(), ids=lambda s: s.id)
@pytest.mark.parametrize("repeat", range(SIZES.fault_repeats))
async def test_onboarding_under_node_faults(
    local_nodes: list[LocalNode], proxies: list[SlowProxy], scenario: Scenario, repeat: int
) -> None:
    await run(scenario, local_nodes, proxies)


def _write_figures() -> None:
    if not FIGURES:
        return
    tolerated = [f for f in FIGURES if f["faulty_count"] <= N - M or f["fault"] == "slow"]
    beyond = [f for f in FIGURES if f not in tolerated]
    as_expected = sum(f["outcome"] == f["expected"] for f in FIGURES)
    record(
        "node_faults",
        f"{as_expected}/{len(FIGURES)} scenarios as expected; "
        f"tolerated faults completed in <= {max(f['seconds'] for f in tolerated):.2f} s, "
        f"{N - M + 1} faulty nodes failed closed or said incomplete in <= "
        f"{max((f['seconds'] for f in beyond), default=0):.2f} s "
        f"(timeout {TIMEOUT} s x {POLICY.attempts} attempts); 0 unverified yields",
        {
            "nodes": N,
            "threshold": M,
            "retry_policy": {
                "attempts": POLICY.attempts,
                "timeout_seconds": POLICY.timeout,
                "base_delay": POLICY.base_delay,
                "max_delay": POLICY.max_delay,
            },
            "slow_delay_seconds": SLOW,
            "slower_delay_seconds": SLOWER,
            "page_size": SIZES.fault_page,
            "scenarios": FIGURES,
        },
    )

"""The SDK and the CLI check a state against what the nodes take before anything is
sealed or uploaded, and say what limit a refusal hit, in one line."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cache_service.protocol import models as m
from cache_service.protocol.codes import Code
from cache_service.protocol.limits import format_mib, largest_state
from client_sdk.device import SnapshotInput
from client_sdk.errors import QuotaExceeded, StateTooLarge
from client_sdk.limits import DEFAULT_LIMIT, limit_of, quota_message
from client_sdk.local_nodes import start_nodes, stop_nodes
from tests.client_sdk.conftest import Cluster
from tests.client_sdk.test_cli import cli, node_args  # noqa: F401 - the `cli` fixture

BODY = 256 * 1024  # a small body limit: the boundary costs little to reach
LARGEST = largest_state(BODY)


async def _restart(cluster: Cluster, **settings: object) -> None:
    for node in cluster.nodes:
        await node.stop()
        node.settings = dict(settings)
        await node.start()


async def test_the_largest_state_publishes_and_one_byte_more_is_refused_unsent(
    cluster: Cluster,
) -> None:
    await _restart(cluster, max_body_bytes=BODY)
    profile = await cluster.account()
    async with cluster.statecache(profile) as sc:
        group = os.urandom(16)
        too_big = SnapshotInput(group, "group_state", 1, os.urandom(LARGEST + 1))
        with pytest.raises(StateTooLarge) as refused:
            await sc.publish([too_big])
        assert sc.bytes_sent == 0  # only GET /v1/node was asked
        assert refused.value.limit == LARGEST
        assert str(refused.value) == (
            f"the group_state of group {group.hex()} is {LARGEST + 1:,} bytes; "
            f"the largest state a node takes is {LARGEST:,} bytes"
        )  # one decimal of MiB would not tell them apart
        report = await sc.publish([SnapshotInput(group, "group_state", 1, os.urandom(LARGEST))])
        assert (report.stored, report.per_node_failures) == (1, {})


async def test_the_limit_is_what_m_nodes_take_so_one_node_cannot_block(
    cluster: Cluster,
) -> None:
    small = cluster.nodes[2]  # 2 of 3: the two larger limits decide
    await small.stop()
    small.settings = {"max_body_bytes": BODY // 2}
    await small.start()
    profile = await cluster.account()
    async with cluster.statecache(profile) as sc:
        # over what the small node takes even with the smallest header, within the others
        size = largest_state(BODY // 2) + 1_000
        state = SnapshotInput(os.urandom(16), "group_state", 1, os.urandom(size))
        report = await sc.publish([state])
        assert report.stored == 1
        assert set(report.per_node_failures) == {small.url}
        assert report.per_node_failures[small.url].code is Code.TOO_LARGE


async def test_publish_requests_fit_the_body_limit_and_batch_the_nodes_advertise(
    cluster: Cluster,
) -> None:
    await _restart(cluster, max_body_bytes=BODY, max_batch=2)
    profile = await cluster.account()
    async with cluster.statecache(profile) as sc:
        # 3 states of 100 kB: all in one request would be a body of about 400 kB
        large = [
            SnapshotInput(os.urandom(16), "group_state", 1, os.urandom(100_000)) for _ in range(3)
        ]
        small = [SnapshotInput(os.urandom(16), "group_state", 1, b"state") for _ in range(5)]
        report = await sc.publish(large + small)
    assert (report.stored, report.per_node_failures) == (8, {})


def test_sizes_read_in_mib_when_a_decimal_tells_them_apart() -> None:
    default = largest_state(16 * 1024 * 1024)
    size = 13 * 1024 * 1024 + 100_000
    assert str(StateTooLarge(size, default, "state.bin")) == (
        f"state.bin is {format_mib(size, up=True)}; the largest state a node takes is 11.9 MiB"
    )
    assert format_mib(size, up=True) == "13.1 MiB"
    assert str(StateTooLarge(default + 1, default, "state.bin")) == (
        "state.bin is 12,582,250 bytes; the largest state a node takes is 12,582,249 bytes"
    )


def test_a_node_advertising_nothing_counts_with_the_defaults() -> None:
    assert limit_of(None) == DEFAULT_LIMIT
    assert DEFAULT_LIMIT.largest_state == largest_state(16 * 1024 * 1024)


async def test_a_quota_refusal_says_which_quota_and_what_to_do(cluster: Cluster) -> None:
    await _restart(cluster, quota_groups=1)
    profile = await cluster.account()
    async with cluster.statecache(profile) as sc:
        await sc.publish([SnapshotInput(b"first", "group_state", 1, b"state")])
        with pytest.raises(QuotaExceeded) as refused:
            await sc.publish([SnapshotInput(b"second", "group_state", 1, b"state")])
    message = str(refused.value)
    assert message == (
        "publish: refused by 3 of 3 nodes: the account's quota of 1 groups is reached; "
        "ask the nodes' operator to raise the quota, or publish less"
    )
    assert all(o.code is Code.QUOTA_EXCEEDED for o in refused.value.failures.values())


def test_a_quota_is_worded_from_the_answer_s_fields_not_its_text() -> None:
    def result(**kw: object) -> m.PublishResult:
        answer = {"status": "rejected", "code": "quota_exceeded", "detail": "x\u202e", **kw}
        return m.PublishResult.model_validate_json(json.dumps(answer))

    assert quota_message(result(quota="stored_bytes", limit=2**30)) == (
        "the account's quota of 1.0 GiB of stored state is reached"
    )
    assert quota_message(result(quota="groups", limit=10_000)) == (
        "the account's quota of 10,000 groups is reached"
    )
    assert quota_message(result(quota="from_a_newer_node", limit=3)) == (
        "an account quota is reached"
    )


# the command line, against node processes


@pytest.fixture(scope="module")
def small_nodes() -> Iterator[list[str]]:
    base = Path(tempfile.mkdtemp(prefix="sc-lim-", dir="/tmp"))
    env = {"STATECACHE_MAX_BODY_BYTES": str(BODY), "STATECACHE_QUOTA_GROUPS": "2"}
    nodes = asyncio.run(start_nodes(base, 3, extra_env=env))
    try:
        yield [n.url for n in nodes]
    finally:
        asyncio.run(stop_nodes(nodes))
        shutil.rmtree(base, ignore_errors=True)


def _publishes(url: str) -> float:
    """Publish requests a node has answered, from its metrics."""
    with urllib.request.urlopen(url + "/metrics") as resp:
        text = resp.read().decode()
    pattern = r'^statecache_requests_total\{[^}]*route="publish_snapshots"[^}]*\} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, flags=re.M))


def test_statecache_publish_refuses_a_state_too_large_before_uploading(
    cli,  # noqa: F811
    small_nodes: list[str],
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    assert cli(home, "account init --threshold 2", *node_args(small_nodes)).code == 0
    largest, big = tmp_path / "largest.bin", tmp_path / "state.bin"
    largest.write_bytes(os.urandom(LARGEST))
    big.write_bytes(os.urandom(LARGEST + 1))
    publish = "--json publish --group aa01 --kind group_state --epoch 1 --file"
    assert cli(home, publish, largest).json["stored"] == 1
    before = [_publishes(u) for u in small_nodes]
    ran = cli(home, "publish --group aa02 --kind group_state --epoch 1 --file", big)
    ran.failed_cleanly()
    assert ran.err == (
        f"statecache: {big} is {LARGEST + 1:,} bytes; "
        f"the largest state a node takes is {LARGEST:,} bytes\n"
    )
    error = cli(home, publish.replace("aa01", "aa02"), big).failed_cleanly()
    assert error is not None and error["code"] == "too_large"
    assert [_publishes(u) for u in small_nodes] == before  # nothing was uploaded

    # the groups quota: the second group stored, the third refused in one line
    small = tmp_path / "small.bin"
    small.write_bytes(b"state")
    assert cli(home, publish.replace("aa01", "aa03"), small).json["stored"] == 1
    ran = cli(home, "publish --group aa04 --kind group_state --epoch 1 --file", small)
    ran.failed_cleanly()
    assert "the account's quota of 2 groups is reached" in ran.err
    assert "ask the nodes' operator" in ran.err
    error = cli(home, publish.replace("aa01", "aa04"), small).failed_cleanly()
    assert error is not None and error["code"] == "quota_exceeded"
    assert json.dumps(error["nodes"]).count("quota_exceeded") == 3

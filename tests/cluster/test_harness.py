"""The cluster the tests run on is what they claim: 3 masters, 3 replicas, all slots
served, and a killed master's replica takes over."""

from __future__ import annotations

from tests.redis_cluster import RedisClusterProcesses


def test_three_masters_three_replicas(redis_cluster: RedisClusterProcesses) -> None:
    roles = redis_cluster.roles()
    assert sorted(role for role, _ in roles.values()) == ["master"] * 3 + ["slave"] * 3
    assert redis_cluster.state_ok()
    info = redis_cluster.info(redis_cluster.nodes[0])
    assert info["cluster_slots_assigned"] == "16384"
    assert info["cluster_known_nodes"] == "6"


def test_failover_promotes_the_replica() -> None:
    """On a cluster of its own: kill -9 a master, its replica is promoted; the killed
    process, started again, rejoins as a replica."""
    with RedisClusterProcesses() as cluster:
        key = "sc:{harness}:seq"
        old = cluster.master_of(key)
        (replica,) = cluster.replicas_of(old)
        cluster.kill(old)
        cluster.wait_promoted(key, old)
        assert cluster.master_of(key) is replica
        cluster.launch(old)
        cluster.wait_replicas_synced()
        assert cluster.roles()[old.port][0] == "slave"

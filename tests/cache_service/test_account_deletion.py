"""Deleting an account: the admin's root-signed order deletes every key the account had
on the node (checked in the real Redis), answers a signed receipt, and leaves a tombstone
that refuses the account from then on, a replayed registration included."""

from __future__ import annotations

import asyncio

import pytest

import pre
from cache_service.api.keys import SERVICES
from cache_service.errors import Code, ServiceError
from tests.cache_service.conftest import Node, Tenant, expect_error, make_tenant, new_account


async def _keys(node: Node, account_id: str, *, expiring: bool = False) -> set[bytes]:
    """The account's keys; without `expiring`, leaving out the replay nonces and rate
    counters, which are not indexed and expire on their own (checked here)."""
    pattern = "sc:{" + account_id + "}:*"
    found = {bytes(k) async for k in node.storage._r.scan_iter(match=pattern, count=1000)}
    if expiring:
        return found
    prefix = ("sc:{" + account_id + "}:").encode()
    out = set()
    for key in found:
        if key.removeprefix(prefix).split(b":")[0] in (b"nonce", b"rl"):
            ttl = await node.storage._r.ttl(key)
            assert 0 < ttl <= 2 * node.settings.skew_seconds + 2, (key, ttl)
        else:
            out.add(key)
    return out


async def _fill(tenant: Tenant) -> None:
    """Snapshots, a grant, the manifest: a key of most kinds an account has."""
    await tenant.admin_client.put_grant(tenant.grant()[0])
    await tenant.admin_client.put_manifest(tenant.manifest(await _node_key(tenant.node)))
    for epoch in (1, 2):
        await tenant.admin_client.publish([tenant.seal(epoch=epoch, group=b"g-one")])
    await tenant.member_client.publish([tenant.seal(tenant.member, group=b"g-two")])


async def _node_key(node: Node) -> bytes:
    return node.app[SERVICES].node.public_key


def _deletion(tenant: Tenant, at: float | None = None) -> pre.AccountDeletion:
    account = tenant.account
    return pre.delete_account(account.secrets, account.record, now=int(at or tenant.now))


async def test_deletion_removes_every_key_and_answers_a_receipt(node: Node) -> None:
    tenant, bystander = await make_tenant(node), await make_tenant(node)
    await _fill(tenant)
    await _fill(bystander)
    account_id = tenant.account.id_hex
    before = await _keys(node, account_id)
    assert len(before) > 10
    others = await _keys(node, bystander.account.id_hex)

    deletion = _deletion(tenant)
    receipt, in_force = await node.client(tenant.account).delete_account(deletion)
    receipt.verify(await _node_key(node))
    assert receipt.account_id == tenant.account.account_id
    assert receipt.deletion_digest == pre.deletion_digest(deletion.to_bytes())
    assert in_force == deletion
    assert receipt.deleted == len(before)  # its own keys: nonces and counters expire
    tombstone = ("sc:{" + account_id + "}:deleted").encode()
    assert await _keys(node, account_id) == {tombstone}
    assert await _keys(node, bystander.account.id_hex) == others  # nobody else's


async def test_a_deleted_account_is_refused_and_cannot_be_registered_again(node: Node) -> None:
    tenant = await make_tenant(node)
    await node.client(tenant.account).delete_account(_deletion(tenant))
    await expect_error(tenant.member_client.list_capsules(), 410, "account_deleted")
    await expect_error(tenant.admin_client.list_devices(), 410, "account_deleted")
    await expect_error(tenant.admin_client.publish([tenant.seal()]), 410, "account_deleted")
    registration = node.client().register_account(tenant.account.record, tenant.account.admin.cert)
    await expect_error(registration, 410, "account_deleted")


async def test_a_repeat_is_answered_with_the_first_receipt(node: Node) -> None:
    tenant = await make_tenant(node)
    client = node.client(tenant.account)
    first = _deletion(tenant)
    receipt, _ = await client.delete_account(first)
    again, in_force = await client.delete_account(first)
    assert again == receipt
    # another, later order from the same root (a lost run): the first stays in force
    later, in_force = await client.delete_account(_deletion(tenant, tenant.now + 60))
    assert later == receipt and in_force == first


async def test_only_the_accounts_root_orders_a_deletion(node: Node) -> None:
    tenant, other = await make_tenant(node), await make_tenant(node)
    client = node.client(tenant.account)
    # the other account's valid deletion, sent to this account's path
    await expect_error(client.delete_account(_deletion(other)), 400, "invalid_record")
    # this account's record, signed by another root
    forged = _deletion(tenant).replace(signature=_deletion(other).signature)
    await expect_error(client.delete_account(forged), 400, "invalid_record")
    resp = await node.send(
        "POST", f"/v1/accounts/{tenant.account.id_hex}/deletion", body=b"\x1d\x01junk",
        content_type="application/octet-stream",
    )  # fmt: skip
    assert resp.status == 400
    assert len((await tenant.admin_client.list_devices()).devices) == 2  # still there


async def test_an_account_never_held_is_refused_from_then_on(node: Node) -> None:
    """A node that never held the account keeps its tombstone all the same: a replayed
    registration must not bring the account there later."""
    account = new_account(node.clock())
    deletion = pre.delete_account(account.secrets, account.record, now=int(node.clock()))
    receipt, in_force = await node.client(account).delete_account(deletion)
    assert receipt.deleted == 0 and in_force == deletion
    receipt.verify(await _node_key(node))
    assert await _keys(node, account.id_hex, expiring=True) == {
        ("sc:{" + account.id_hex + "}:deleted").encode()
    }
    registration = node.client().register_account(account.record, account.admin.cert)
    await expect_error(registration, 410, "account_deleted")


async def test_no_write_lands_after_the_tombstone(node: Node) -> None:
    """A request that authenticated just before the deletion reaches storage after it:
    each write script checks the tombstone in the same atomic step."""
    tenant = await make_tenant(node)
    account_id, storage = tenant.account.id_hex, node.storage
    await node.client(tenant.account).delete_account(_deletion(tenant))
    late = tenant.account.device(node.clock())
    writes = [
        storage.put_device(account_id, late.id_hex, late.cert.to_bytes(), 10),
        storage.put_grant(account_id, tenant.member.id_hex, "account", 0, share=b"share", ttl=60),
        storage.put_capsule(account_id, "account", 0, tenant.capsule.to_bytes(), 10),
        storage.revoke_device(account_id, late.id_hex, b"revocation"),
    ]
    for write in writes:
        with pytest.raises(ServiceError) as info:
            await write
        assert info.value.code is Code.ACCOUNT_DELETED
        assert info.value.extra["deletion"]  # the order, as proof
    assert await _keys(node, account_id) == {("sc:{" + account_id + "}:deleted").encode()}


async def test_a_deleted_accounts_devices_get_the_order_as_proof(node: Node) -> None:
    tenant = await make_tenant(node)
    order = _deletion(tenant)
    await node.client(tenant.account).delete_account(order)
    err = await expect_error(tenant.member_client.list_capsules(), 410, "account_deleted")
    assert pre.AccountDeletion.from_bytes(err.problem["deletion"]) == order
    # a node saying "deleted" without the order, or with another account's, is a liar:
    # tested against lying nodes in tests/client_sdk/test_account_delete_cli.py


async def test_concurrent_orders_sweep_once(node: Node) -> None:
    tenant = await make_tenant(node)
    await _fill(tenant)
    client = node.client(tenant.account)
    first = _deletion(tenant)
    answers = await asyncio.gather(*(client.delete_account(first) for _ in range(8)))
    assert len({receipt.to_bytes() for receipt, _ in answers}) == 1
    assert answers[0][0].deleted > 10

"""Deleting an account: the admin's root-signed order deletes every key the account had
on the node (checked in the real Redis), answers a signed receipt, and leaves a tombstone
that refuses the account from then on, a replayed registration included."""

from __future__ import annotations

import asyncio

import pre
from cache_service.api.keys import SERVICES
from tests.cache_service.conftest import Node, Tenant, expect_error, make_tenant, new_account


async def _keys(node: Node, account_id: str) -> set[bytes]:
    pattern = "sc:{" + account_id + "}:*"
    return {bytes(k) async for k in node.storage._r.scan_iter(match=pattern, count=1000)}


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
    assert receipt.deleted == len(before)
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


async def test_an_account_never_held_gets_a_receipt_and_leaves_nothing(node: Node) -> None:
    account = new_account(node.clock())
    deletion = pre.delete_account(account.secrets, account.record, now=int(node.clock()))
    receipt, in_force = await node.client(account).delete_account(deletion)
    assert receipt.deleted == 0 and in_force == deletion
    receipt.verify(await _node_key(node))
    assert await _keys(node, account.id_hex) == set()


async def test_keys_written_just_after_the_sweep_are_swept_again(node: Node) -> None:
    """A request that authenticated just before the tombstone may still write."""
    tenant = await make_tenant(node)
    node.app[SERVICES].deletions._delays = (0.2,)
    await node.client(tenant.account).delete_account(_deletion(tenant))
    stray = "sc:{" + tenant.account.id_hex + "}:grant:late"
    await node.storage._r.set(stray, b"x")
    await asyncio.sleep(0.6)
    assert not await node.storage._r.exists(stray)

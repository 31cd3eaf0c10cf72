"""The whole flow through `NodeClient`, with `pre` as the device: register, certify,
create key capsules, publish, page through snapshots, grant M-of-N shares, re-encrypt,
open, revoke."""

from __future__ import annotations

import pytest

import pre
from cache_service.protocol.b64 import encode_b64url
from tests.cache_service.conftest import (
    Device,
    Node,
    StartNode,
    Tenant,
    assert_problem,
    expect_error,
    make_tenant,
    new_account,
    open_with_fragments,
)


def register_body(record: pre.AccountRecord, cert: pre.DeviceCertificate) -> dict[str, str]:
    return {
        "account": encode_b64url(record.to_bytes()),
        "admin_certificate": encode_b64url(cert.to_bytes()),
    }


async def test_register_account_is_created_then_an_identical_retry_is_ok(node: Node) -> None:
    account = new_account(node.clock())
    body = register_body(account.record, account.admin.cert)
    first = await node.send("POST", "/v1/accounts", body=body)
    assert first.status == 201
    assert first.content_type == "application/json"
    assert first.json() == {"account_id": account.id_hex, "account": body["account"]}

    retry = await node.send("POST", "/v1/accounts", body=body)
    assert retry.status == 200
    assert retry.json() == first.json()

    admin = node.client(account, account.admin)
    info = await admin.get_account()
    assert info.account == account.record.to_bytes()
    devices = await admin.list_devices()
    assert [d.device_id for d in devices.devices] == [account.admin.id_hex]


async def test_register_with_another_record_for_the_same_account_conflicts(node: Node) -> None:
    account = new_account(node.clock())
    await node.client().register_account(account.record, account.admin.cert)
    other = pre.register_account(account.secrets, now=int(node.clock()) + 1)
    assert other.account_id == account.account_id
    resp = await node.send("POST", "/v1/accounts", body=register_body(other, account.admin.cert))
    assert_problem(resp, 409, "conflict")


async def test_register_with_another_admin_certificate_is_not_a_silent_success(
    node: Node,
) -> None:
    """An identical account record with a different first certificate would otherwise
    answer 200 while the certificate is dropped: the device could never sign in."""
    account = new_account(node.clock())
    await node.client().register_account(account.record, account.admin.cert)
    second = account.device(node.clock(), role=pre.Role.ADMIN)
    resp = await node.send("POST", "/v1/accounts", body=register_body(account.record, second.cert))
    assert_problem(resp, 409, "conflict")
    await expect_error(node.client(account, second).get_account(), 401, "unauthenticated")


async def test_register_refuses_a_member_as_first_device(node: Node) -> None:
    account = new_account(node.clock())
    member = account.device(node.clock())
    resp = await node.send("POST", "/v1/accounts", body=register_body(account.record, member.cert))
    assert_problem(resp, 400, "invalid_record")
    await expect_error(node.client(account, member).get_account(), 401, "unauthenticated")


async def test_put_device_is_created_then_identical_retry_is_ok(tenant: Tenant) -> None:
    node, account = tenant.node, tenant.account
    laptop = account.device(node.clock(), name="laptop")
    path = f"/v1/accounts/{account.id_hex}/devices/{laptop.id_hex}"
    body = {"certificate": encode_b64url(laptop.cert.to_bytes())}
    first = await node.send("PUT", path, body=body, device=account.admin)
    assert first.status == 201
    assert first.json()["device_id"] == laptop.id_hex
    again = await node.send("PUT", path, body=body, device=account.admin)
    assert again.status == 200
    listed = {d.device_id for d in (await tenant.member_client.list_devices()).devices}
    assert listed == {account.admin.id_hex, tenant.member.id_hex, laptop.id_hex}


async def test_whole_flow_two_of_three_across_two_nodes(start_node: StartNode) -> None:
    node1 = await start_node(share_index=1)
    node2 = await start_node(share_index=2, db=1)  # each node has its own Redis
    t1 = await make_tenant(node1)
    account, member = t1.account, t1.member
    # the same account, member and key capsule on the second node
    await node2.client().register_account(account.record, account.admin.cert)
    admin2 = node2.client(account, account.admin)
    await admin2.put_device(member.cert)
    await admin2.put_capsule(t1.capsule)
    assert (await t1.admin_client.list_capsules()).capsules[0].capsule == t1.capsule.to_bytes()

    # publish: a batch of two groups, then one group by its (group, kind) address
    plaintexts = {b"g1": b"state of g1", b"g2": b"state of g2", b"g3": b"state of g3"}
    sealed = {g: t1.seal(group=g, epoch=4, plaintext=p) for g, p in plaintexts.items()}
    batch = await t1.admin_client.publish([sealed[b"g1"], sealed[b"g2"]])
    assert [(r.status.value, r.seq, r.code) for r in batch.results] == [
        ("stored", 1, None),
        ("stored", 2, None),
    ]
    single = await t1.admin_client.put_snapshot(sealed[b"g3"])
    assert (single.status.value, single.seq) == ("stored", 3)

    # authorise the member with a 2-of-3 grant: node i holds share i only
    shares = t1.grant(threshold=2, shares=3)
    await t1.admin_client.put_grant(shares[0])
    err = await expect_error(admin2.put_grant(shares[0]), 400, "invalid_record")
    assert "grant share" in (err.detail or "")
    await admin2.put_grant(shares[1])

    # the member sees its capsule, asks both nodes to re-encrypt, checks and opens
    member1, member2 = t1.member_client, node2.client(account, member)
    assert [c.label for c in (await member1.list_capsules()).capsules] == ["account"]
    r1 = await member1.reencrypt()
    r2 = await member2.reencrypt([("account", 0)])
    info1, info2 = await member1.node_info(), await member2.node_info()
    assert (r1.share_index, r2.share_index) == (1, 2)
    assert (r1.node_id, r2.node_id) == (info1.node_id, info2.node_id)
    assert r1.node_id != r2.node_id
    fragments = []
    for response in (r1, r2):
        [result] = response.results
        assert (result.label, result.key_epoch, result.code) == ("account", 0, None)
        assert result.fragment is not None
        fragments.append(result.fragment)
    with pytest.raises(pre.PreError):  # one node alone is below the threshold
        open_with_fragments(t1, member, t1.capsule, fragments[:1])
    kek = open_with_fragments(t1, member, t1.capsule, fragments)
    assert kek.secret == t1.kek.secret

    page = await member1.list_snapshots()
    assert [(i.seq, i.group_id, i.kind, i.mls_epoch) for i in page.items] == [
        (1, b"g1", "group_state", 4),
        (2, b"g2", "group_state", 4),
        (3, b"g3", "group_state", 4),
    ]
    assert (page.head, page.next_cursor) == (3, None)
    for item in page.items:
        assert item.snapshot is not None
        snapshot = pre.SealedSnapshot.from_bytes(item.snapshot)
        opened = pre.open_snapshot(
            snapshot, kek, account.admin.cert, group_id=item.group_id, kind=item.kind
        )
        assert opened == plaintexts[item.group_id]

    # revoke on node 1: a signed receipt naming the deleted share, then refusal
    revocation = pre.revoke_device(account.secrets, member.secrets.device_id, now=int(t1.now))
    receipt = await t1.admin_client.revoke(revocation)
    receipt.verify(info1.public_key)
    with pytest.raises(pre.PreError):
        receipt.verify(info2.public_key)
    assert receipt.account_id == account.account_id
    assert receipt.device_id == member.secrets.device_id
    assert receipt.revoked_at == revocation.revoked_at
    assert receipt.deleted == (pre.ShareRef("account", 0),)
    await assert_revoked_everywhere(t1, member)
    await expect_error(t1.admin_client.put_grant(shares[0]), 403, "device_revoked")
    await expect_error(t1.admin_client.put_device(member.cert), 403, "device_revoked")
    devices = {d.device_id: d for d in (await t1.admin_client.list_devices()).devices}
    assert devices[member.id_hex].revocation == revocation.to_bytes()
    # revoking again: nothing left to delete, and the receipt keeps the first time
    later = pre.revoke_device(account.secrets, member.secrets.device_id, now=int(t1.now) + 99)
    again = (await t1.admin_client.revoke(later)).verify(info1.public_key)
    assert (again.revoked_at, again.deleted) == (revocation.revoked_at, ())


async def assert_revoked_everywhere(tenant: Tenant, device: Device) -> None:
    """Every request the device can make answers 403 device_revoked."""
    client = tenant.node.client(tenant.account, device)
    snapshot = tenant.seal(group=b"after-revocation", epoch=1)
    calls = [
        client.get_account(),
        client.list_devices(),
        client.list_capsules(),
        client.list_snapshots(),
        client.publish([snapshot]),
        client.put_snapshot(snapshot),
        client.reencrypt(),
        client.reencrypt([("account", 0)]),
    ]
    for call in calls:
        await expect_error(call, 403, "device_revoked")


async def test_revocation_receipt_lists_every_deleted_share(tenant: Tenant) -> None:
    account, node = tenant.account, tenant.node
    group_capsule, _ = pre.create_key_capsule(
        account.secrets, pre.label_for_group(b"team"), 0, now=int(tenant.now)
    )
    await tenant.admin_client.put_capsule(group_capsule)
    await tenant.admin_client.put_grant(tenant.grant()[0])
    await tenant.admin_client.put_grant(tenant.grant(group_capsule)[0])
    assert len((await tenant.member_client.reencrypt()).results) == 2

    revocation = pre.revoke_device(account.secrets, tenant.member.secrets.device_id, now=1)
    receipt = await tenant.admin_client.revoke(revocation)
    receipt.verify((await node.client().node_info()).public_key)
    assert set(receipt.deleted) == {
        pre.ShareRef("account", 0),
        pre.ShareRef(group_capsule.label, 0),
    }
    await assert_revoked_everywhere(tenant, tenant.member)
    # the admin itself is untouched
    assert (await tenant.admin_client.get_account()).account_id == account.id_hex


async def test_snapshot_paging_ascending_descending_and_by_group(tenant: Tenant) -> None:
    admin = tenant.admin_client
    layout = [(b"ga", 1), (b"gb", 1), (b"ga", 2), (b"gc", 1), (b"gb", 2), (b"ga", 3)]
    for group, epoch in layout:
        # one snapshot per (group, kind), so retention trims nothing here
        result = await admin.put_snapshot(tenant.seal(group=group, kind=f"k{epoch}", epoch=epoch))
        assert result.status.value == "stored"
    expected = [(seq, g, e) for seq, (g, e) in enumerate(layout, start=1)]

    # ascending from a sync cursor, two at a time; a full page always has a cursor
    seen, cursor, pages = [], None, 0
    while True:
        page = await admin.list_snapshots(after=cursor, limit=2)
        pages += 1
        assert page.head == 6
        seen += [(i.seq, i.group_id, i.mls_epoch) for i in page.items]
        if page.next_cursor is None:
            break
        assert page.next_cursor == page.items[-1].seq
        cursor = page.next_cursor
    assert seen == expected
    assert pages == 4
    assert [i.seq for i in (await admin.list_snapshots(after=4)).items] == [5, 6]

    # newest first, resumable with `before`
    seen, before, pages = [], None, 0
    while True:
        page = await admin.list_snapshots(order="desc", before=before, limit=4)
        pages += 1
        seen += [(i.seq, i.group_id, i.mls_epoch) for i in page.items]
        if page.next_cursor is None:
            break
        before = page.next_cursor
    assert seen == expected[::-1]
    assert pages == 2
    newest = await admin.list_snapshots(order="desc", before=2**53 - 1, limit=1)
    assert [i.seq for i in newest.items] == [6]
    assert newest.next_cursor == 6
    below = await admin.list_snapshots(order="desc", before=3, limit=10)
    assert [i.seq for i in below.items] == [2, 1]

    # one group only, both directions
    ga = await admin.list_snapshots(group_id=b"ga")
    assert [(i.seq, i.mls_epoch) for i in ga.items] == [(1, 1), (3, 2), (6, 3)]
    assert {i.group_id for i in ga.items} == {b"ga"}
    ga_desc = await admin.list_snapshots(order="desc", group_id=b"ga", before=6, limit=1)
    assert [i.seq for i in ga_desc.items] == [3]
    assert ga_desc.next_cursor == 3
    assert (await admin.list_snapshots(group_id=b"nothing-here")).items == []


async def test_reencrypt_named_items_one_result_each(tenant: Tenant) -> None:
    label = pre.label_for_group(b"team")
    group_capsule, group_kek = pre.create_key_capsule(
        tenant.account.secrets, label, 0, now=int(tenant.now)
    )
    await tenant.admin_client.put_capsule(group_capsule)
    await tenant.admin_client.put_grant(tenant.grant()[0])
    await tenant.admin_client.put_grant(tenant.grant(group_capsule)[0])
    client = tenant.member_client

    everything = await client.reencrypt()
    assert [(r.label, r.key_epoch, r.code) for r in everything.results] == [
        ("account", 0, None),
        (label, 0, None),
    ]

    asked = [(label, 0), ("group:unknown", 0), ("account", 5), (label, 0)]
    answer = await client.reencrypt(asked)
    got = [(r.label, r.key_epoch, r.code, r.fragment is not None) for r in answer.results]
    assert got == [
        (label, 0, None, True),
        ("group:unknown", 0, "no_grant", False),
        ("account", 5, "no_grant", False),
    ]
    assert answer.results[1].detail
    fragment = answer.results[0].fragment
    assert fragment is not None
    kek = open_with_fragments(tenant, tenant.member, group_capsule, [fragment])
    assert kek.secret == group_kek.secret

    # an admin without grants gets no_grant, not an error
    mine = await tenant.admin_client.reencrypt([("account", 0)])
    assert [r.code for r in mine.results] == ["no_grant"]


async def test_reencrypt_runs_in_the_process_pool(start_node: StartNode) -> None:
    node = await start_node(workers=2)
    tenant = await make_tenant(node, grant=True)
    keks = {"account": tenant.kek}
    for i in range(11):  # more than one chunk per worker
        label = pre.label_for_group(f"group-{i}".encode())
        capsule, kek = pre.create_key_capsule(
            tenant.account.secrets, label, 0, now=int(node.clock())
        )
        await tenant.admin_client.put_capsule(capsule)
        await tenant.admin_client.put_grant(tenant.grant(capsule)[0])
        keks[label] = kek
    capsules = {
        c.label: pre.KeyCapsule.from_bytes(c.capsule)
        for c in (await tenant.member_client.list_capsules()).capsules
    }
    assert set(capsules) == set(keks)

    answer = await tenant.member_client.reencrypt()
    assert sorted(r.label for r in answer.results) == sorted(keks)
    for result in answer.results:
        assert result.code is None and result.fragment is not None
        kek = open_with_fragments(tenant, tenant.member, capsules[result.label], [result.fragment])
        assert kek.secret == keks[result.label].secret


async def test_identity_is_per_node_even_in_one_process(start_node: StartNode) -> None:
    """Two nodes in one process (workers=0) each re-encrypt with their own identity."""
    node_a = await start_node()
    tenant = await make_tenant(node_a, grant=True)
    node_b = await start_node(db=1)  # started later: must not take over node A's key
    await make_tenant(node_b, grant=True)
    [result] = (await tenant.member_client.reencrypt()).results
    assert (result.code, result.fragment is not None) == (None, True)


async def test_put_grant_needs_capsule_and_device(tenant: Tenant) -> None:
    stranger = tenant.account.device(tenant.now)  # certified, never put on the node
    share = tenant.grant(device=stranger)[0]
    await expect_error(tenant.admin_client.put_grant(share), 404, "not_found")
    label = pre.label_for_group(b"no-capsule-here")
    capsule, _ = pre.create_key_capsule(tenant.account.secrets, label, 0, now=int(tenant.now))
    await expect_error(tenant.admin_client.put_grant(tenant.grant(capsule)[0]), 404, "not_found")

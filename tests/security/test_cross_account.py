"""Cross-account and unauthenticated attacks against real nodes.

A victim account (admin, member, a revoked device, two labels, grants, snapshots) and an
attacker account live on one node. For every authenticated route the attacker tries the
victim's own valid request bodies: signed by its own devices, unsigned, with a victim
signature made for another path, method or node, replayed, under the victim's key id, and
from the victim's revoked device. Then it tries to reach the victim's data from inside its own
account (the victim's group ids, labels, device ids, records), and the public routes.

An attempt *succeeds* if a request that must be refused gets a 2xx, if any answer carries
bytes of the victim's records (raw, base64url, base64 or hex; the victim's ids too on the
public routes), if a capsule fragment answered to the attacker opens the victim's capsule,
or if anything of the victim's state changed. Enumeration: every authenticated route must
answer identically for an existing and a never-registered account (and device).

Figures: attempts, successes (goal 0), victim bytes returned (goal 0), victim state
changed (goal 0), enumeration probes and distinguishable answers (goal 0), and the
latency of refusals for existing and absent accounts (reported, not judged: timing is
visible to callers, see docs/SECURITY.md).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

import pre
from cache_service.api.routes import ROUTES, Route
from cache_service.protocol.b64 import encode_b64url
from tests.cache_service.conftest import (
    Device,
    Node,
    RawResponse,
    Tenant,
    make_tenant,
    new_account,
    signed_headers,
)
from tests.security.battery import FIGURES, SIZE

CHECK = "cross_account"
FIGURES.goal(CHECK, "successes", "==", 0)
FIGURES.goal(CHECK, "victim_bytes_returned", "==", 0)
FIGURES.goal(CHECK, "victim_state_changed", "==", 0)
FIGURES.goal(CHECK, "enumeration_distinguishable", "==", 0)

AUTHENTICATED = [r for r in ROUTES if not r.public]
PUBLIC = [r for r in ROUTES if r.public]
OCTETS = "application/octet-stream"


def b64(data: bytes) -> str:
    return encode_b64url(data)


def fill(route: Route, **params: str) -> str:
    """The route's path with these parameter values."""
    path = route.path
    for name, value in params.items():
        start = path.index("{" + name)
        depth, end = 0, start
        for end in range(start, len(path)):  # up to the brace that closes it
            depth += {"{": 1, "}": -1}.get(path[end], 0)
            if depth == 0:
                break
        path = path[:start] + value + path[end + 1 :]
    assert "{" not in path, path
    return path


# the two accounts


@dataclass
class Victim:
    tenant: Tenant
    revoked: Device
    group_label: str
    group_capsule: pre.KeyCapsule
    group_share: pre.GrantShare
    groups: list[bytes]
    records: list[Any]
    ids: list[bytes]
    requests: dict[str, tuple[dict[str, str], bytes, str | None, str]] = field(
        default_factory=dict
    )  # route name -> (path params, body, content type, query): valid requests of the victim
    captured: dict[str, tuple[str, str, bytes, dict[str, str]]] = field(default_factory=dict)


async def arrange(node: Node) -> tuple[Victim, Tenant]:
    victim = await make_tenant(node, grant=True)
    attacker = await make_tenant(node, grant=True)
    account, admin, now = victim.account, victim.admin_client, int(node.clock())

    team = b"victim-team"
    label = pre.label_for_group(team)
    group_capsule, group_kek = pre.create_key_capsule(account.secrets, label, 0, now=now)
    await admin.put_capsule(group_capsule)
    group_share = victim.grant(group_capsule)[0]
    await admin.put_grant(group_share)
    # the attacker has a label of the same name in its own account, and a grant for it
    b_capsule, _ = pre.create_key_capsule(attacker.account.secrets, label, 0, now=now)
    await attacker.admin_client.put_capsule(b_capsule)

    revoked = account.device(now, name="lost phone")
    await admin.put_device(revoked.cert)
    revoked_share = victim.grant(device=revoked)[0]
    await admin.put_grant(revoked_share)
    revocation = pre.revoke_device(account.secrets, revoked.secrets.device_id, now=now)
    await admin.revoke(revocation)

    groups = [b"victim-g1", b"victim-g2"]
    snapshots = [
        victim.seal(group=groups[0], epoch=1),
        victim.seal(author=victim.member, group=groups[1], epoch=4),
        pre.seal_snapshot(
            group_kek, account.admin.secrets, group_id=team, kind="group_state", mls_epoch=2,
            plaintext=b"team secrets", now=now,
        ),
    ]  # fmt: skip
    receipts = [r.receipt for r in (await admin.publish(snapshots)).results]
    await attacker.admin_client.publish([attacker.seal(group=groups[0], epoch=1)])

    records: list[Any] = [
        account.record, account.admin.cert, victim.member.cert, revoked.cert, victim.capsule,
        group_capsule, group_share, revoked_share, victim.grant()[0], revocation, *snapshots,
    ]  # fmt: skip
    ids = [account.account_id] + [
        d.secrets.device_id for d in (account.admin, victim.member, revoked)
    ]
    v = Victim(victim, revoked, label, group_capsule, group_share, [*groups, team], records, ids)

    # valid requests only the victim may make (their bodies are the attacker's "loot")
    newcomer = account.device(now, name="newcomer")
    rotation, _ = pre.create_key_capsule(
        account.secrets, "account", 1, now=now, previous=victim.kek
    )
    fresh = victim.seal(group=groups[0], epoch=10)
    member_revocation = pre.revoke_device(account.secrets, victim.member.secrets.device_id, now=now)
    v.records += [newcomer.cert, rotation, fresh, member_revocation]
    node_key = (await admin.node_info()).public_key
    # the victim's deployment has a second node, whose receipts the victim hands this one
    witness = pre.NodeSecrets.generate()
    manifest = pre.sign_manifest(
        account.secrets,
        victim.manifest(node_key).replace(
            nodes=tuple(
                pre.ManifestNode(node_key=k, share_index=i, url="http://127.0.0.1", operator="")
                for i, k in enumerate((node_key, witness.public_key), start=1)
            )
        ),
    )
    await admin.put_manifest(manifest)
    witness_receipts = [
        witness.sign_snapshot_receipt(account_id=account.account_id, digest=s.digest, stored_at=now)
        for s in snapshots
    ]
    confirmation = {
        "items": [
            {
                "group_id": b64(s.header.group_id),
                "kind": s.header.kind,
                "mls_epoch": s.header.mls_epoch,
                "digest": b64(s.digest),
                "receipts": [b64(r.to_bytes()), b64(own)],
            }
            for s, r, own in zip(snapshots, witness_receipts, receipts, strict=True)
            if own is not None  # those the node holds
        ]
    }
    assert confirmation["items"]
    next_manifest = victim.manifest(node_key, base=manifest, devices=(newcomer,))
    update = pre.manifest_update(manifest, next_manifest)
    purge = pre.purge_group(
        account.secrets, groups[0], revoked.secrets.device_id, from_epoch=0, now=now
    )
    v.records += [manifest, next_manifest, update, purge, *witness_receipts]
    member = victim.member.id_hex
    json_body = "application/json"
    v.requests = {
        "get_account": ({}, b"", None, ""),
        "list_devices": ({}, b"", None, ""),
        "list_device_grants": ({"device_id": member}, b"", None, ""),
        "list_capsules": ({}, b"", None, ""),
        "list_snapshots": ({}, b"", None, "limit=500"),
        "put_device": ({"device_id": newcomer.id_hex}, newcomer.cert.to_bytes(), OCTETS, ""),
        "revoke_device": ({"device_id": member}, member_revocation.to_bytes(), OCTETS, ""),
        "put_capsule": ({"label": "account", "key_epoch": "1"}, rotation.to_bytes(), OCTETS, ""),
        "put_grant": (
            {"device_id": member, "label": "account", "key_epoch": "0"},
            victim.grant()[0].to_bytes(),
            OCTETS,
            "",
        ),
        "publish_snapshots": (
            {},
            f'{{"snapshots":["{b64(fresh.to_bytes())}"]}}'.encode(),
            json_body,
            "",
        ),
        "put_snapshot": (
            {"group_id": b64(groups[0]), "kind": "group_state"},
            fresh.to_bytes(),
            OCTETS,
            "",
        ),
        "reencrypt": ({}, b"{}", json_body, ""),
        "get_manifest": ({}, b"", None, ""),
        "put_manifest": ({}, update.to_bytes(), OCTETS, ""),
        "purge_snapshots": ({}, purge.to_bytes(), OCTETS, ""),
        "confirm_snapshots": ({}, json.dumps(confirmation).encode(), json_body, ""),
    }
    assert set(v.requests) == {r.name for r in AUTHENTICATED}, "a new route needs its attacks"
    return v, attacker


def victim_path(v: Victim, route: Route) -> str:
    params = {"account_id": v.tenant.account.id_hex, **v.requests[route.name][0]}
    names = {n.split(":")[0].strip("{") for n in route.path.split("/") if n.startswith("{")}
    return fill(route, **{k: params[k] for k in names})


# what the victim owns, in every form an answer could carry it


def record_fields(record: Any) -> list[bytes]:
    out = [record.to_bytes()]
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if isinstance(value, bytes) and len(value) >= 16:
            out.append(value)
        elif dataclasses.is_dataclass(value) and hasattr(value, "to_bytes"):
            out.extend(record_fields(value))
    return out


def encodings(data: bytes) -> list[bytes]:
    return [
        data,
        b64(data).encode(),
        base64.b64encode(data),
        base64.b64encode(data).rstrip(b"="),
        data.hex().encode(),
    ]


def needles(v: Victim, *, with_ids: bool) -> list[bytes]:
    ids = set(v.ids)
    found = {piece for r in v.records for piece in record_fields(r) if piece not in ids}
    if with_ids:
        found |= ids
    return [e for piece in sorted(found) for e in encodings(piece)]


def victim_bytes(v: Victim, resp: RawResponse, sent: bytes, *, with_ids: bool = False) -> int:
    """Bytes of the victim's records in an answer (the attacker's own request excluded)."""
    text = resp.body + "\n".join(f"{k}: {x}" for k, x in resp.headers.items()).encode()
    return sum(len(n) for n in needles(v, with_ids=with_ids) if n in text and n not in sent)


# attempts


@dataclass
class Attack:
    node: Node
    victim: Victim
    routes: set[str] = field(default_factory=set)

    async def attempt(
        self,
        what: str,
        route: Route,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        query: str = "",
        device: Device | None = None,
        headers: dict[str, str] | None = None,
        must_refuse: bool = True,
        with_ids: bool = False,
    ) -> RawResponse:
        resp = await self.node.send(
            method, path, query=query, body=body, content_type=content_type,
            device=device, headers=headers,
        )  # fmt: skip
        self.routes.add(route.name)
        FIGURES.add(CHECK, "attempts")
        leaked = victim_bytes(self.victim, resp, body + path.encode(), with_ids=with_ids)
        refused_wrongly = must_refuse and 200 <= resp.status < 300
        if leaked:
            FIGURES.add(CHECK, "victim_bytes_returned", leaked)
        if leaked or refused_wrongly or resp.status >= 500:
            FIGURES.add(CHECK, "successes")
            FIGURES.note(CHECK, f"{what}: {method} {path}?{query} -> {resp.status} ({leaked} B)")
        return resp


async def victim_state(v: Victim) -> dict[str, Any]:
    admin = v.tenant.admin_client
    member = await v.tenant.member_client.reencrypt()
    return {
        "devices": (await admin.list_devices()).model_dump(),
        "capsules": (await admin.list_capsules()).model_dump(),
        "snapshots": [
            (i.seq, i.digest, i.receipts) for i in (await admin.list_snapshots(limit=500)).items
        ],
        "member_fragments": [(r.label, r.key_epoch, r.code) for r in member.results],
    }


def route_named(name: str) -> Route:
    return next(r for r in ROUTES if r.name == name)


def other_path(v: Victim, route: Route) -> str:
    prefix = f"/v1/accounts/{v.tenant.account.id_hex}"
    return prefix + ("/capsules" if route.name == "list_devices" else "/devices")


@pytest.mark.timeout(SIZE.test_timeout)
async def test_attacks_on_every_route(node: Node) -> None:
    v, b = await arrange(node)
    a = v.tenant
    attack = Attack(node, v)
    now = node.clock
    elsewhere = pre.NodeSecrets.generate().node_id.hex()  # another node of the deployment

    # captured requests of the victim (sent once, legitimately) for the replay attempts
    for route in AUTHENTICATED:
        if route.method == "GET" or route.name in ("reencrypt", "put_device"):
            _, body, ctype, query = v.requests[route.name]
            path = victim_path(v, route)
            headers = signed_headers(
                a.account.admin.secrets, route.method, path, query=query, body=body,
                created=now(), node_id=node.node_id,
            )  # fmt: skip
            if ctype:
                headers["Content-Type"] = ctype
            first = await node.send(route.method, path, query=query, body=body, headers=headers)
            assert first.status < 300, (route.name, first.status, first.body[:200])
            v.captured[route.name] = (path, query, body, headers)
    before = await victim_state(v)
    # the detector itself: the victim's own listing is full of the victim's bytes
    own = await node.send(
        "GET", f"/v1/accounts/{a.account.id_hex}/snapshots", device=a.account.admin
    )
    assert victim_bytes(v, own, b"") > 0

    for route in AUTHENTICATED:
        _, body, ctype, query = v.requests[route.name]
        path, method = victim_path(v, route), route.method
        kw: dict[str, Any] = {"body": body, "content_type": ctype, "query": query}
        for who, device in (("attacker admin", b.account.admin), ("attacker member", b.member)):
            resp = await attack.attempt(who, route, method, path, device=device, **kw)
            assert resp.status == 401, (route.name, who, resp.status)
        resp = await attack.attempt("unsigned", route, method, path, **kw)
        assert resp.status == 401
        resp = await attack.attempt("revoked device", route, method, path, device=v.revoked, **kw)
        assert resp.status == 403, (route.name, resp.status)

        # the victim's own signatures, made for something else
        admin = a.account.admin.secrets
        for what, (s_method, s_path) in {
            "signature for another path": (method, other_path(v, route)),
            "signature for another method": ("POST" if method == "GET" else "GET", path),
        }.items():
            headers = signed_headers(admin, s_method, s_path, query=query, body=body,
                                     created=now(), node_id=node.node_id)  # fmt: skip
            resp = await attack.attempt(what, route, method, path, headers=headers, **kw)
            assert resp.status == 401, (route.name, what, resp.status)
        headers = signed_headers(
            admin, method, path, query=query + "&x=1" if query else "x=1", body=body,
            created=now(), node_id=node.node_id,
        )  # fmt: skip
        resp = await attack.attempt("signature for another query", route, method, path,
                                    headers=headers, **kw)  # fmt: skip
        assert resp.status == 401
        # the victim's own signature over exactly this request, for another node (what
        # that node received, replayed here)
        headers = signed_headers(admin, method, path, query=query, body=body, created=now(),
                                 node_id=elsewhere)  # fmt: skip
        resp = await attack.attempt("signature for another node", route, method, path,
                                    headers=headers, **kw)  # fmt: skip
        assert resp.status == 421, (route.name, resp.status)
        # the attacker's signature under the victim admin's key id
        headers = signed_headers(b.account.admin.secrets, method, path, query=query, body=body,
                                 created=now(), node_id=node.node_id)  # fmt: skip
        headers["Signature-Input"] = headers["Signature-Input"].replace(
            b.account.admin.id_hex, a.account.admin.id_hex
        )
        resp = await attack.attempt("victim key id", route, method, path, headers=headers, **kw)
        assert resp.status == 401
        if route.name in v.captured:
            c_path, c_query, c_body, c_headers = v.captured[route.name]
            resp = await attack.attempt(
                "replayed", route, method, c_path, query=c_query, body=c_body, headers=c_headers
            )
            assert resp.status == 401, (route.name, resp.status)

    await attacks_from_inside_the_attacker_account(attack, v, b)
    assert attack.routes == {r.name for r in ROUTES}  # every route, public ones too

    after = await victim_state(v)
    if after != before:
        FIGURES.add(CHECK, "victim_state_changed")
        FIGURES.note(
            CHECK, "victim state changed: " + str([k for k in before if before[k] != after[k]])
        )
    FIGURES.set(CHECK, "routes_attacked", len(attack.routes))
    assert after == before
    # the detector again: the victim's own confirmation, refused above, changes its state
    _, body, ctype, _ = v.requests["confirm_snapshots"]
    resp = await node.send("POST", victim_path(v, route_named("confirm_snapshots")), body=body,
                           content_type=ctype, device=a.account.admin)  # fmt: skip
    assert {x["status"] for x in resp.json()["results"]} == {"stored"}, resp.body[:300]
    assert await victim_state(v) != before
    assert FIGURES.get(CHECK, "successes") == 0, FIGURES.report(CHECK)["notes"]


async def attacks_from_inside_the_attacker_account(attack: Attack, v: Victim, b: Tenant) -> None:
    """Signed by the attacker's devices, on the attacker's own account path, aimed at the
    victim's data by its ids and with its records."""
    a, now = v.tenant, int(attack.node.clock())
    route = {r.name: r for r in ROUTES}
    mine = {"account_id": b.account.id_hex}
    member = a.member.id_hex

    def path(name: str, **params: str) -> str:
        return fill(route[name], **mine, **params)

    async def read(name: str, device: Device, query: str = "", body: bytes = b"") -> RawResponse:
        r = route[name]
        ctype = "application/json" if body else None
        return await attack.attempt(
            f"{name} by id", r, r.method, path(name), query=query, body=body,
            content_type=ctype, device=device, must_refuse=False,
        )  # fmt: skip

    for device in (b.account.admin, b.member):
        for group in v.groups:
            resp = await read("list_snapshots", device, f"group={b64(group)}&limit=500")
            assert resp.status == 200
        for query in ("limit=500", "order=desc&limit=500", "after=0&data=true"):
            await read("list_snapshots", device, query)
        await read("list_devices", device)
        await read("list_capsules", device)
        await read("get_account", device)
        # re-encrypt the victim's labels: only the attacker's own capsule may come back
        items = f'{{"items":[{{"label":"{v.group_label}","key_epoch":0}},' \
                f'{{"label":"account","key_epoch":0}}]}}'  # fmt: skip
        for body in (items.encode(), b"{}"):
            resp = await read("reencrypt", device, body=body)
            assert resp.status == 200
            for result in resp.json()["results"]:
                if result.get("fragment"):
                    assert_not_victims_fragment(v, result["fragment"], device)

    admin = b.account.admin
    foreign_share = b.grant(device=b.member)[0]
    revocation_by_b = pre.revoke_device(b.account.secrets, a.member.secrets.device_id, now=now)
    member_revocation = next(
        r for r in v.records if isinstance(r, pre.Revocation) and r.device_id.hex() == member
    )
    writes = [
        ("put_grant", {"device_id": member, "label": "account", "key_epoch": "0"},
         foreign_share.to_bytes()),
        ("put_grant", {"device_id": b.member.id_hex, "label": v.group_label, "key_epoch": "0"},
         v.group_share.to_bytes()),  # the victim's share, for the attacker's member
        ("revoke_device", {"device_id": member}, revocation_by_b.to_bytes()),
        ("revoke_device", {"device_id": member}, member_revocation.to_bytes()),
        ("put_device", {"device_id": member}, a.member.cert.to_bytes()),
        ("put_capsule", {"label": v.group_label, "key_epoch": "0"}, v.group_capsule.to_bytes()),
        ("put_capsule", {"label": "account", "key_epoch": "1"},
         next(r for r in v.records if isinstance(r, pre.KeyCapsule) and r.key_epoch == 1)
         .to_bytes()),
    ]  # fmt: skip
    snapshots = [r for r in v.records if isinstance(r, pre.SealedSnapshot)]
    for snap in snapshots:
        writes.append(
            ("put_snapshot", {"group_id": b64(snap.header.group_id), "kind": snap.header.kind},
             snap.to_bytes())
        )  # fmt: skip
    for name, params, body in writes:
        r = route[name]
        for device in (admin, b.member):
            resp = await attack.attempt(
                f"{name} with the victim's ids or records", r, r.method, path(name, **params),
                body=body, content_type=OCTETS, device=device,
            )  # fmt: skip
            assert resp.status >= 400, (name, resp.status, resp.body[:200])
    batch = ",".join(f'"{b64(s.to_bytes())}"' for s in snapshots)
    for device in (admin, b.member):
        resp = await attack.attempt(
            "publish the victim's snapshots", route["publish_snapshots"], "POST",
            path("publish_snapshots"), body=f'{{"snapshots":[{batch}]}}'.encode(),
            content_type="application/json", device=device, must_refuse=False,
        )  # fmt: skip
        assert {x["status"] for x in resp.json()["results"]} == {"rejected"}
    # receipts for the victim's snapshots kept on the attacker's account: the victim's own
    # (they name the victim), and a node's of the attacker's choosing for the victim's
    # snapshots named in either account (the attacker holds other bytes at groups[0] 1)
    fake = pre.NodeSecrets.generate()
    forged = [
        {
            "group_id": b64(snap.header.group_id),
            "kind": snap.header.kind,
            "mls_epoch": snap.header.mls_epoch,
            "digest": b64(snap.digest),
            "receipts": [b64(fake.sign_snapshot_receipt(
                account_id=account_id, digest=snap.digest, stored_at=now
            ).to_bytes())],
        }
        for snap in snapshots
        for account_id in (a.account.account_id, b.account.account_id)
    ]  # fmt: skip
    for body, statuses in (
        (v.requests["confirm_snapshots"][1], {"rejected"}),
        (json.dumps({"items": forged}).encode(), {"rejected", "not_found"}),
    ):
        for device in (admin, b.member):
            resp = await attack.attempt(
                "keep receipts of the victim's snapshots", route["confirm_snapshots"], "POST",
                path("confirm_snapshots"), body=body, content_type="application/json",
                device=device, must_refuse=False,
            )  # fmt: skip
            assert resp.status == 200, resp.body[:200]
            assert {x["status"] for x in resp.json()["results"]} == statuses, resp.body[:300]

    # account registration with the victim's record and the attacker's certificate, and back
    register = route["register_account"]
    for account_record, certificate in (
        (a.account.record, b.account.admin.cert),
        (b.account.record, a.account.admin.cert),
        (a.account.record, a.member.cert),
    ):
        body = (
            f'{{"account":"{b64(account_record.to_bytes())}",'
            f'"admin_certificate":"{b64(certificate.to_bytes())}"}}'
        ).encode()
        resp = await attack.attempt(
            "register with the victim's record", register, "POST", "/v1/accounts", body=body,
            content_type="application/json",
        )  # fmt: skip
        assert resp.status in (400, 409), resp.status
    # public routes: nothing of the victim, not even its ids
    for r in PUBLIC:
        if r.method == "GET":
            resp = await attack.attempt(
                "public route", r, "GET", r.path, must_refuse=False, with_ids=True
            )
            assert resp.status == 200
    # account deletion: its authority is the root signature in the body, so the attacker
    # tries its own root's orders on the victim's account, and the victim's record under them
    deletion = route["delete_account"]
    victim_path_ = fill(deletion, account_id=a.account.id_hex)
    own_order = pre.delete_account(b.account.secrets, b.account.record, now=now)
    forged_order = pre.AccountDeletion(
        account=a.account.record, deleted_at=now, signature=own_order.signature
    )
    for what, body in (
        ("delete with the attacker's own order", own_order.to_bytes()),
        ("delete with the victim's record, signed by the attacker", forged_order.to_bytes()),
        ("delete with no order", b""),
    ):
        for device in (None, admin):
            resp = await attack.attempt(
                what, deletion, "POST", victim_path_, body=body, content_type=OCTETS,
                device=device,
            )  # fmt: skip
            assert resp.status == 400, (what, resp.status, resp.body[:200])
    # the attacker deletes its own account: the victim's stays whole (checked by the caller)
    resp = await attack.attempt(
        "delete the attacker's own account", deletion, "POST",
        fill(deletion, account_id=b.account.id_hex), body=own_order.to_bytes(),
        content_type=OCTETS, must_refuse=False,
    )  # fmt: skip
    assert resp.status == 200, resp.body[:200]


def assert_not_victims_fragment(v: Victim, fragment: str, receiver: Device) -> None:
    data = base64.urlsafe_b64decode(fragment + "=" * (-len(fragment) % 4))
    cfrag = pre.CapsuleFragment.from_bytes(data)
    for capsule in (v.tenant.capsule, v.group_capsule):
        try:
            pre.verify_capsule_fragment(
                cfrag, capsule=capsule, account=v.tenant.account.record, receiver=receiver.secrets
            )
        except pre.PreError:
            continue
        FIGURES.add(CHECK, "successes")
        FIGURES.note(CHECK, f"a re-encryption of the victim's {capsule.label} capsule")
        raise AssertionError("the attacker got a re-encryption of the victim's capsule")


# enumeration: existing and absent accounts (and devices) must look alike


@pytest.mark.timeout(SIZE.test_timeout)
async def test_existing_and_absent_accounts_answer_alike(node: Node) -> None:
    v, b = await arrange(node)
    a = v.tenant
    stranger = new_account(node.clock())  # never registered
    absent_account, absent_device = secrets.token_hex(32), secrets.token_hex(16)

    def garbage_signature(keyid: str, path: str, query: str, body: bytes) -> dict[str, str]:
        headers = signed_headers(b.account.admin.secrets, "GET", path, query=query, body=body,
                                 created=node.clock(), node_id=node.node_id)  # fmt: skip
        headers["Signature-Input"] = headers["Signature-Input"].replace(
            b.account.admin.id_hex, keyid
        )
        return headers

    def signed_by(device: Device) -> Any:
        def make(method: str, path: str, query: str, body: bytes, keyid: str) -> dict[str, str]:
            return signed_headers(
                device.secrets, method, path, query=query, body=body, created=node.clock(),
                node_id=node.node_id,
            )  # fmt: skip

        return make

    callers: dict[str, Any] = {
        "unsigned": lambda method, path, query, body, keyid: {},
        "attacker's device": signed_by(b.account.admin),
        "unregistered device": signed_by(stranger.admin),
        "victim key id, bad signature": lambda method, path, query, body, keyid: garbage_signature(
            keyid, path, query, body
        ),
    }
    for route in AUTHENTICATED:
        _, body, ctype, query = v.requests[route.name]
        present = victim_path(v, route)
        absent = present.replace(a.account.id_hex, absent_account).replace(
            a.member.id_hex, absent_device
        )
        for caller, make in callers.items():
            answers = {}
            for side, path, keyid in (
                ("existing", present, a.account.admin.id_hex),
                ("absent", absent, absent_device),
            ):
                headers = make(route.method, path, query, body, keyid)
                if ctype:
                    headers["Content-Type"] = ctype
                resp = await node.send(route.method, path, query=query, body=body, headers=headers)
                FIGURES.add(CHECK, "enumeration_probes")
                answers[side] = (resp.status, resp.content_type, resp.body)
            if answers["existing"] != answers["absent"]:
                FIGURES.add(CHECK, "enumeration_distinguishable")
                FIGURES.note(CHECK, f"enumeration: {route.name} {caller}: {answers}"[:400])
            assert answers["existing"] == answers["absent"], (route.name, caller, answers)
            assert answers["existing"][0] == 401

    # timing of the refusal, with many probes: reported (see docs/SECURITY.md), not judged
    timing: dict[str, list[float]] = {}
    path = "/v1/accounts/{}/snapshots"
    for _ in range(SIZE.enumeration_probes):
        for side, account_id, keyid in (
            ("existing", a.account.id_hex, a.account.admin.id_hex),
            ("absent", absent_account, absent_device),
        ):
            for caller, headers in (
                ("unknown_device", None),
                ("known_device_bad_signature", garbage_signature(
                    keyid, path.format(account_id), "", b""
                )),
            ):  # fmt: skip
                started = time.perf_counter()
                await node.send(
                    "GET", path.format(account_id), headers=headers,
                    device=b.account.admin if headers is None else None,
                )  # fmt: skip
                timing.setdefault(f"{caller}_{side}", []).append(time.perf_counter() - started)
                FIGURES.add(CHECK, "timing_probes")
    for key, values in sorted(timing.items()):
        FIGURES.set(CHECK, f"refusal_median_ms_{key}", round(statistics.median(values) * 1e3, 3))

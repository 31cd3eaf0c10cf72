"""Keeping every node in step with the admin's records.

`next_manifest` derives the next manifest version from the admin's records (labels and
their newest capsules, devices and revocations, current grants, purges, the node set).
`Steward.converge` delivers to every node what it has not acknowledged, in order, then the
manifest versions it lacks (an update when it holds the previous version, else whole), and
says per node what happened. An admin operation converges once it has written its records,
and `account repair` converges alone: a node that was down catches up on both."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pre
from cache_service.protocol.codes import Code

from .admin_records import AdminRecords, Delivery
from .errors import ForkError, NodeError, StatecacheError, VerificationFailed, outcome_of
from .node_client import NodeClient
from .outcomes import OK, LocalCode, NodeOutcome, NodeState
from .session import Session

__all__ = ["Convergence", "Steward", "next_manifest"]


def next_manifest(
    records: AdminRecords,
    account: pre.AccountSecrets,
    nodes: list[tuple[bytes, str]],
    *,
    threshold: int,
    generation: int,
    now: int,
) -> pre.AccountManifest | None:
    """The version after the newest, signed; None when it would say nothing new."""
    newest: dict[str, tuple[int, bytes]] = {}
    for (label, epoch), data in records.capsules.items():
        if epoch >= newest.get(label, (-1, b""))[0]:
            newest[label] = (epoch, data)
    labels = tuple(
        pre.LabelEntry(
            label=label,
            key_epoch=epoch,
            capsule_hash=pre.capsule_hash(pre.KeyCapsule.from_bytes(data)),
        )
        for label, (epoch, data) in sorted(newest.items())
    )
    devices = []
    for device_id in sorted(records.certificates):
        cert = pre.DeviceCertificate.from_bytes(records.certificates[device_id])
        revocation = records.revocations.get(device_id)
        revoked_at = 0 if revocation is None else pre.Revocation.from_bytes(revocation).revoked_at
        devices.append(
            pre.ManifestDevice(
                device_id=device_id,
                certificate_hash=pre.certificate_hash(cert),
                revoked_at=revoked_at,
            )
        )
    grants = []
    for (device_id, label), shares in sorted(records.grants.items()):
        share = pre.GrantShare.from_bytes(shares[0])
        grants.append(
            pre.GrantEntry(
                device_id=device_id,
                label=label,
                key_epoch=share.key_epoch,
                expires_at=share.expires_at,
                generation=generation,
            )
        )
    purges: dict[tuple[bytes, bytes], pre.PurgeEntry] = {}
    for raw in records.purges:
        entry = pre.Purge.from_bytes(raw).entry
        held = purges.get(entry.key)
        if held is None or entry.from_epoch < held.from_epoch:
            purges[entry.key] = entry
    previous = records.manifest
    unsigned = pre.AccountManifest(
        account_id=account.account_id,
        version=1 if previous is None else previous.version + 1,
        previous=bytes(32) if previous is None else previous.digest,
        issued_at=now,
        threshold=threshold,
        grant_generation=generation,
        nodes=tuple(
            pre.ManifestNode(node_key=key, share_index=i, url=url, operator="")
            for i, (key, url) in enumerate(nodes, start=1)
        ),
        labels=labels,
        devices=tuple(devices),
        grants=tuple(grants),
        purges=tuple(purges[k] for k in sorted(purges)),
        signature=bytes(64),
    )
    if previous is not None and _same(previous, unsigned):
        return None
    return pre.sign_manifest(account, unsigned)


def _same(a: pre.AccountManifest, b: pre.AccountManifest) -> bool:
    keep = {"version": 1, "previous": bytes(32), "issued_at": 0, "signature": bytes(64)}
    return a.replace(**keep) == b.replace(**keep)


@dataclass
class Convergence:
    """Per node: what it answered to each record delivered now (by record id), the
    manifest version it holds, and its outcome."""

    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    nodes: dict[str, NodeOutcome] = field(default_factory=dict)


class Steward:
    def __init__(self, session: Session) -> None:
        self._session = session

    async def converge(self, records: AdminRecords) -> Convergence:
        """Bring every node up to the admin's records, all nodes at once."""
        result = Convergence()
        nodes = self._session.nodes
        outcomes = await asyncio.gather(*(self._node(n, i, records, result)
                                          for i, n in enumerate(nodes, start=1)))  # fmt: skip
        for node, outcome in zip(nodes, outcomes, strict=True):
            result.nodes[node.base_url] = outcome
            self._session.outcomes.note(node.base_url, outcome)
        return result

    async def _node(
        self, node: NodeClient, index: int, records: AdminRecords, result: Convergence
    ) -> NodeOutcome:
        fan = self._session.fan
        answers = result.answers.setdefault(node.base_url, {})
        try:
            key = await fan.ask(node, lambda n: n.identity())
            for delivery in records.outbox(key, index):
                answers[delivery.id] = await self._deliver(node, delivery)
                records.acknowledge(key, delivery)
            version = await self._manifests(node, key, records)
        except StatecacheError as exc:
            return outcome_of(exc)
        result.versions[node.base_url] = version
        newest = records.manifest
        if newest is not None and version < newest.version:
            return NodeOutcome(
                NodeState.BEHIND, LocalCode.MISSING, f"holds manifest version {version}"
            )
        return OK

    async def _deliver(self, node: NodeClient, delivery: Delivery) -> Any:
        """Send one record; a refusal that means the node is past it (a newer key epoch,
        a revoked device's certificate) counts as delivered."""
        send = _SENDERS[delivery.kind]
        try:
            return await self._session.fan.ask(
                node, lambda n: send(n, delivery.data), expected=_superseded
            )
        except NodeError as exc:
            if _superseded(exc):
                return exc  # the node is past it: nothing left to deliver
            raise

    async def _their_version(self, node: NodeClient, records: AdminRecords) -> int:
        """The version `node` holds, if it is one this admin signed (else a fork: another
        admin home signed that version, or the node lies)."""
        try:
            info = await self._session.fan.ask(node, lambda n: n.get_manifest())
        except NodeError as exc:
            if exc.status == 404:
                return 0
            raise
        ours = records.manifests
        if info.version > len(ours) or records.version(info.version).digest != info.digest:
            raise ForkError(
                f"holds a manifest version {info.version} this admin home did not sign "
                "(another admin home, or a lie)",
                node.base_url,
            )
        return info.version

    async def _manifests(self, node: NodeClient, key: bytes, records: AdminRecords) -> int:
        """Send the versions `node` lacks; the version it holds afterwards."""
        newest = records.manifest
        if newest is None:
            return 0
        # What the node holds now, not what it once acknowledged: a node restored from
        # a backup is behind again.
        held = await self._their_version(node, records)
        fan = self._session.fan
        while held < newest.version:
            target = records.version(held + 1) if held else newest
            body: pre.AccountManifest | pre.ManifestUpdate = target
            if held:
                body = pre.manifest_update(records.version(held), target)
            try:
                info = await fan.ask(node, lambda n, body=body: n.put_manifest(body))  # type: ignore[misc]
            except NodeError as exc:
                if exc.status != 409:
                    raise
                now_held = await self._their_version(node, records)
                if now_held <= held:
                    raise VerificationFailed(
                        f"refuses manifest version {target.version} after the {held} it holds",
                        node.base_url,
                    ) from exc
                held = now_held
                continue
            held = info.version
        return held


# Not `conflict`: for a record that means a node at its limit, or another capsule at that
# key epoch (another admin home, or a lie): a refusal to report, not a delivery.
_PAST_IT = {Code.STALE_KEY_EPOCH, Code.DEVICE_REVOKED}


def _superseded(exc: StatecacheError) -> bool:
    """A refusal meaning the node already holds something newer: a later key epoch, the
    revocation of the device a certificate or grant is for."""
    return isinstance(exc, NodeError) and exc.status in (403, 409) and exc.code in _PAST_IT


def _put(record: type[Any], call: str) -> Any:
    async def send(node: NodeClient, data: bytes) -> Any:
        return await getattr(node, call)(record.from_bytes(data))

    return send


_SENDERS = {
    "certificate": _put(pre.DeviceCertificate, "put_device"),
    "revocation": _put(pre.Revocation, "revoke"),
    "capsule": _put(pre.KeyCapsule, "put_capsule"),
    "grant": _put(pre.GrantShare, "put_grant"),
    "purge": _put(pre.Purge, "purge"),
}

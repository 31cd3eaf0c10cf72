"""Admin actions (a device holding the account seed): certify and authorise devices,
create and rotate labels, revoke. Every write goes to every node; M must accept."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pre

from .directory import DeviceDirectory
from .enrolment import parse_enrollment
from .errors import AdminRequired, ThresholdNotMet, VerificationFailed
from .keyring import Keyring
from .node_client import NodeClient
from .outcomes import OK, LocalCode, NodeOutcome, NodeState
from .session import Session

__all__ = ["YEAR", "Admin", "Approval", "RevokeReport"]

YEAR = 365 * 86_400
ACCOUNT_LABEL = "account"


@dataclass(frozen=True)
class Approval:
    certificate: pre.DeviceCertificate
    upload_bytes: int  # what the admin sent all nodes to certify and authorise the device
    nodes: dict[str, NodeOutcome] = field(default_factory=dict)


@dataclass(frozen=True)
class RevokeReport:
    receipts: dict[str, pre.RevocationReceipt]
    failures: dict[str, NodeOutcome]
    rotated: dict[str, int]  # label -> new key epoch
    regranted: list[bytes]  # device ids
    nodes: dict[str, NodeOutcome] = field(default_factory=dict)


class Admin:
    def __init__(self, session: Session, keyring: Keyring, directory: DeviceDirectory) -> None:
        self._session = session
        self._keyring = keyring
        self._directory = directory

    def _account(self) -> pre.AccountSecrets:
        account = self._session.profile.account
        if account is None:
            raise AdminRequired("this needs an admin device (one holding the account seed)")
        return account

    async def _current(self) -> dict[str, int]:
        return await self._keyring.load_capsules(await self._directory.record())

    async def approve(
        self,
        blob: str,
        *,
        labels: Sequence[str] = (ACCOUNT_LABEL,),
        valid_for: int = YEAR,
        grant_for: int = 30 * 86_400,
    ) -> Approval:
        """Certify an enrolling device (a member) on every node and grant it `labels`.

        An admin device is one holding the account seed; that is moved with the keystore,
        never through the nodes, so approval only makes members."""
        account = self._account()
        keys, name = parse_enrollment(blob)
        current = await self._current()
        missing = sorted(set(labels) - set(current))
        if missing:  # before anything is uploaded
            raise ValueError(f"no key capsule for label(s) {', '.join(missing)}")
        now = self._session.now()
        cert = pre.certify_device(
            account,
            keys,
            role=pre.Role.MEMBER,
            not_before=now - 60,
            not_after=now + valid_for,
            name=name,
        )
        before = _sent(self._session)
        answers = await self._session.fan.call(lambda n: n.put_device(cert))
        answers.require(self._session.threshold, "certificate upload")
        await self.authorise(cert, labels=labels, grant_for=grant_for)
        return Approval(cert, _sent(self._session) - before, self._session.outcomes.snapshot())

    async def authorise(
        self,
        cert: pre.DeviceCertificate,
        *,
        labels: Sequence[str] = (ACCOUNT_LABEL,),
        grant_for: int = 30 * 86_400,
    ) -> None:
        """One M-of-N grant per label, share i to node i: constant size in the number of
        groups."""
        account = self._account()
        current = await self._current()
        nodes = self._session.nodes
        for label in labels:
            if label not in current:
                raise ValueError(f"label {label!r} has no key capsule")
            capsule = self._keyring.capsule(label, current[label])
            assert capsule is not None
            shares = pre.make_grant(
                account,
                capsule,
                cert,
                threshold=self._session.threshold,
                shares=len(nodes),
                expires_at=self._session.now() + grant_for,
            )
            answers = await self._session.fan.call(_put_share(nodes, shares))
            answers.require(self._session.threshold, f"grant of {label}")

    async def add_label(self, label: str) -> None:
        """Create a label's first key capsule (e.g. `group:<id>` for one group)."""
        capsule, kek = pre.create_key_capsule(self._account(), label, 0, now=self._session.now())
        answers = await self._session.fan.call(lambda n: n.put_capsule(capsule))
        answers.require(self._session.threshold, "key capsule")
        self._keyring.add(capsule, kek)

    async def rotate(self, label: str) -> int:
        """Start the label's next key epoch, chaining the previous KEK into it. Nodes then
        refuse snapshots sealed under older epochs."""
        account = self._account()
        current = await self._current()
        if label not in current:
            raise ValueError(f"label {label!r} has no key capsule")
        held = self._keyring.capsule(label, current[label])
        assert held is not None
        old = pre.open_key_capsule_as_owner(account, held)
        epoch = old.key_epoch + 1
        capsule, kek = pre.create_key_capsule(
            account, label, epoch, now=self._session.now(), previous=old
        )
        answers = await self._session.fan.call(lambda n: n.put_capsule(capsule))
        answers.require(self._session.threshold, "rotation")
        self._keyring.add(capsule, kek)  # the older epochs too: their snapshots are read
        return epoch

    async def revoke(self, device_id: bytes, *, grant_for: int = 30 * 86_400) -> RevokeReport:
        """Revoke on every node (each answers a signed receipt), rotate every label, and
        re-grant each remaining member device the labels it held, under the new key epochs,
        until the same expiry (at most `grant_for` from now)."""
        account = self._account()
        if device_id not in (await self._directory.load()).certificates:
            raise ValueError("no such device in this account")
        revocation = pre.revoke_device(account, device_id, now=self._session.now())
        answers = await self._session.fan.call(lambda n: _revoke(n, revocation))
        receipts = answers.results
        failures = dict(answers.failures)
        if len(receipts) < self._session.threshold:
            nodes = {url: OK for url in receipts} | failures
            raise ThresholdNotMet("revocation", self._session.threshold, nodes)
        current = await self._current()
        members = [
            cert
            for cert in (await self._directory.load()).active(self._session.now())
            if cert.role is pre.Role.MEMBER and cert.device_id != device_id
        ]
        held = {cert.device_id: await self._held_grants(cert, current) for cert in members}
        rotated = {label: await self.rotate(label) for label in sorted(current)}
        regranted = []
        for cert in members:
            for label, expires_at in sorted(held[cert.device_id].items()):
                remaining = min(expires_at - self._session.now(), grant_for)
                if remaining > 0:
                    await self.authorise(cert, labels=[label], grant_for=remaining)
            if held[cert.device_id]:
                regranted.append(cert.device_id)
        return RevokeReport(
            receipts, failures, rotated, regranted, self._session.outcomes.snapshot()
        )

    async def _held_grants(
        self, cert: pre.DeviceCertificate, current: Mapping[str, int]
    ) -> dict[str, int]:
        """Label -> expiry of the grants the device holds at each label's current key epoch,
        from the shares the nodes keep. Each share is verified (the account signed it), so
        a node can withhold one but not add one; of several, the earliest expiry counts."""
        record = await self._directory.record()
        now = self._session.now()
        answers = await self._session.fan.call(lambda n: n.device_grants(cert.device_id))
        held: dict[str, int] = {}
        for index, node in enumerate(self._session.nodes, start=1):
            for raw in answers.results.get(node.base_url, []):
                try:
                    share = pre.GrantShare.from_bytes(raw)
                    capsule = self._keyring.capsule(share.label, share.key_epoch)
                    if capsule is None or current.get(share.label) != share.key_epoch:
                        continue  # an older key epoch: not a grant of what is current
                    pre.verify_grant_share(
                        share,
                        account=record,
                        capsule=capsule,
                        device=cert,
                        share_index=index,
                        now=now,
                    )
                except pre.PreError:
                    self._session.outcomes.note(
                        node.base_url,
                        NodeOutcome(
                            NodeState.SUSPECT,
                            LocalCode.VERIFICATION_FAILED,
                            "served a grant share that fails",
                        ),
                    )
                    continue
                held[share.label] = min(share.expires_at, held.get(share.label, share.expires_at))
        return held

    async def pin_nodes(self) -> dict[str, bytes]:
        """Each node's identity key, pinned in the profile at first contact; a node that
        later shows another key, or another share index than its position, is refused."""
        answers = await self._session.fan.call(lambda n: n.identity())
        for url, outcome in answers.failures.items():
            if outcome.state is NodeState.SUSPECT:
                raise VerificationFailed(outcome.message or "node identity changed", url)
        self._session.keep_pins()
        return self._session.profile.node_keys


def _sent(session: Session) -> int:
    return sum(n.bytes_sent for n in session.nodes)


async def _revoke(node: NodeClient, revocation: pre.Revocation) -> pre.RevocationReceipt:
    """A node's receipt, verified against its pinned key and naming this revocation."""
    receipt = await node.revoke(revocation)
    try:
        assert node.node_key is not None  # a signed request pinned it
        verified = receipt.verify(node.node_key)
    except pre.PreError as exc:
        raise VerificationFailed(f"bad receipt: {exc}", node.base_url) from exc
    if (verified.account_id, verified.device_id) != (revocation.account_id, revocation.device_id):
        raise VerificationFailed("bad receipt: it names another device", node.base_url)
    return verified


def _put_share(
    nodes: Sequence[NodeClient], shares: Sequence[pre.GrantShare]
) -> Callable[[NodeClient], Awaitable[None]]:
    """Share i goes to node i, and only there."""
    by_node = {node.base_url: share for node, share in zip(nodes, shares, strict=True)}
    return lambda node: node.put_grant(by_node[node.base_url])

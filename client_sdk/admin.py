"""Admin actions (a device holding the account seed): certify and authorise devices,
create and rotate labels, revoke, purge, repair, replace a node.

Every decision here comes from the admin's own records (`admin_records`), never from a
node's listing: the admin made them. Each action adds its records, signs the next
manifest version, and converges every node (`steward`); M nodes must hold the action's
own records for it to succeed, and what a node missed waits in its outbox for the next
action or `repair`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pre

from .admin_records import AdminRecords, record_id
from .directory import DeviceDirectory
from .enrolment import check_request, parse_enrollment
from .errors import AdminRequired, BadAnswer, ThresholdNotMet, VerificationFailed
from .keyring import Keyring
from .outcomes import OK, NodeOutcome, NodeState
from .session import Session
from .steward import Convergence, Steward, next_manifest

__all__ = ["YEAR", "Admin", "Approval", "PurgeReport", "RepairReport", "RevokeReport"]

YEAR = 365 * 86_400
ACCOUNT_LABEL = "account"


@dataclass(frozen=True)
class Approval:
    certificate: pre.DeviceCertificate
    upload_bytes: int  # what the admin sent all nodes to certify and authorise the device
    nodes: dict[str, NodeOutcome] = field(default_factory=dict)
    renewed: bool = False  # the device was approved before: certificate and grants renewed
    grants_until: int = 0  # when the grants made now expire

    @property
    def fingerprint(self) -> str:
        return pre.device_fingerprint(self.certificate.keys)


@dataclass(frozen=True)
class RevokeReport:
    receipts: dict[str, pre.RevocationReceipt]
    failures: dict[str, NodeOutcome]
    rotated: dict[str, int]  # label -> new key epoch
    regranted: list[bytes]  # device ids
    nodes: dict[str, NodeOutcome] = field(default_factory=dict)
    already_revoked: bool = False  # revoked before: re-delivered only, nothing rotated


@dataclass(frozen=True)
class RepairReport:
    """Per node: its outcome and the manifest version it holds afterwards."""

    manifest_version: int
    versions: dict[str, int]
    nodes: dict[str, NodeOutcome]


@dataclass(frozen=True)
class PurgeReport:
    receipts: dict[str, pre.PurgeReceipt]
    nodes: dict[str, NodeOutcome]


class Admin:
    def __init__(self, session: Session, keyring: Keyring, directory: DeviceDirectory) -> None:
        self._session = session
        self._keyring = keyring
        self._directory = directory
        self._steward = Steward(session)

    def _account(self) -> pre.AccountSecrets:
        account = self._session.profile.account
        if account is None:
            raise AdminRequired("this needs an admin device (one holding the account seed)")
        return account

    # the records, and converging the nodes on them

    async def records(self) -> AdminRecords:
        """This admin's records; an admin home from before manifests builds them once from
        what M nodes verifiably hold (root-signed records only)."""
        self._account()
        profile = self._session.profile
        if profile.records is None:
            profile.records = await self._migrate()
        return profile.records

    async def _migrate(self) -> AdminRecords:
        records = AdminRecords()
        directory = await self._directory.load()
        for device_id, cert in directory.certificates.items():
            records.certificates[device_id] = cert.to_bytes()
        answers = await self._session.fan.call(lambda n: n.list_devices())
        for listing in answers.results.values():
            for entry in listing.devices:
                if entry.revocation is not None:
                    rev = pre.Revocation.from_bytes(entry.revocation)
                    if rev.device_id in directory.revoked_at:
                        records.revocations.setdefault(rev.device_id, entry.revocation)
        await self._keyring.load_capsules(directory.account)
        for (label, epoch), capsule in self._keyring.capsules().items():
            records.capsules[(label, epoch)] = capsule.to_bytes()
        return records

    async def _pins(self) -> list[tuple[bytes, str]]:
        nodes = []
        for node in self._session.nodes:
            key = node.node_key
            if key is None:
                key = await self._session.fan.ask(node, lambda n: n.identity())
            nodes.append((key, node.base_url))
        return nodes

    async def _converge(self, records: AdminRecords) -> Convergence:
        """Sign the next manifest if the records changed, and bring every node up."""
        nodes = await self._pins()
        manifest = next_manifest(
            records,
            self._account(),
            nodes,
            threshold=self._session.threshold,
            generation=records.generation,
            now=self._session.now(),
        )
        if manifest is not None:
            records.add_manifest(manifest)
        return await self._steward.converge(records)

    def _require(
        self, result: Convergence, records: AdminRecords, ids: list[str], what: str
    ) -> None:
        """M nodes must hold every record the action made (each node its own share)."""
        holding = 0
        for node in self._session.nodes:
            if result.nodes.get(node.base_url, OK).state is not NodeState.OK:
                continue  # behind on the manifest, forked, or unreachable
            key = node.node_key
            done = set() if key is None else records.delivered.get(key.hex(), set())
            own = [i for i in ids if not i.startswith("grant:") or i in _shares_for(records, node)]
            holding += all(i in done for i in own)
        if holding < self._session.threshold:
            raise ThresholdNotMet(what, self._session.threshold, self._session.outcomes.snapshot())

    async def repair(self) -> RepairReport:
        """Re-deliver to every node what it missed and bring its manifest up."""
        records = await self.records()
        result = await self._converge(records)
        newest = records.manifest
        return RepairReport(0 if newest is None else newest.version, result.versions, result.nodes)

    async def replace_node(self, share_index: int, url: str) -> RepairReport:
        """Put a new node at `share_index` (a node lost for good, an operator leaving).
        Umbral key fragments of separate generations do not combine, so every current
        grant is issued again as a full M-of-N set to all nodes, in the next grant
        generation; the new node gets the account and every record, then the manifest
        naming the new node set."""
        self._account()  # an admin action
        if not 1 <= share_index <= len(self._session.nodes):
            raise ValueError(f"no node {share_index} in this account")
        records = await self.records()
        record = await self._directory.record()
        old = self._session.nodes[share_index - 1]
        if old.node_key is not None:
            records.forget_node(old.node_key)
        node = self._session.replace_node(share_index, url)
        key = await self._session.fan.ask(node, lambda n: n.identity())
        records.forget_node(key)  # a new node holds nothing of this account yet
        admin_id = self._session.profile.device.device_id
        admin_cert = pre.DeviceCertificate.from_bytes(records.certificates[admin_id])
        await self._session.fan.ask(node, lambda n: n.register_account(record, admin_cert))
        records.generation += 1
        now = self._session.now()
        for (device_id, label), shares in sorted(records.grants.items()):
            expires_at = pre.GrantShare.from_bytes(shares[0]).expires_at
            cert = pre.DeviceCertificate.from_bytes(records.certificates[device_id])
            if expires_at <= now or device_id in records.revocations:
                del records.grants[(device_id, label)]
                continue
            self._grant(records, cert, [label], expires_at)
        return await self.repair()

    # devices

    async def approve(
        self,
        blob: str,
        *,
        labels: Sequence[str] = (ACCOUNT_LABEL,),
        valid_for: int = YEAR,
        grant_for: int = 30 * 86_400,
        expect: str | None = None,
    ) -> Approval:
        """Certify an enrolling device (a member) on every node and grant it `labels`.

        The request must carry its checksum and the device's signature, and name this
        account's id, node list and threshold; with `expect`, the device's fingerprint
        must be that one (`EnrolmentRefused` otherwise, before anything is sent).
        Approving a device again renews its certificate and grants (`renewed`).
        An admin device is one holding the account seed; that is moved with the keystore,
        never through the nodes, so approval only makes members."""
        account = self._account()
        request = parse_enrollment(blob)
        check_request(request, self._session.profile, expect)
        keys, name = request.keys, request.name
        records = await self.records()
        current = _current(records)
        missing = sorted(set(labels) - set(current))
        if missing:  # before anything is uploaded
            raise ValueError(f"no key capsule for label(s) {', '.join(missing)}")
        if keys.device_id in records.revocations:
            raise ValueError("this device was revoked; it enrols again with new keys")
        renewed = keys.device_id in records.certificates
        now = self._session.now()
        cert = pre.certify_device(
            account, keys, role=pre.Role.MEMBER, not_before=now - 60, not_after=now + valid_for,
            name=name,
        )  # fmt: skip
        # The grants first (they may fail), then the certificate: a failed approval
        # records nothing that a later admin command would deliver.
        ids = self._grant(records, cert, labels, now + grant_for)
        records.certificates[cert.device_id] = cert.to_bytes()
        ids.insert(0, record_id("certificate", cert.to_bytes()))
        before = _sent(self._session)
        result = await self._converge(records)
        self._require(result, records, ids, "approval")
        return Approval(
            cert,
            _sent(self._session) - before,
            self._session.outcomes.snapshot(),
            renewed,
            now + grant_for,
        )

    def _grant(
        self, records: AdminRecords, cert: pre.DeviceCertificate, labels: Sequence[str], until: int
    ) -> list[str]:
        """New M-of-N grants of `labels` at their current key epochs (records only: every
        grant is made before any is recorded, so a failure records nothing)."""
        current = _current(records)
        made: dict[tuple[bytes, str], list[bytes]] = {}
        for label in labels:
            if label not in current:
                raise ValueError(f"label {label!r} has no key capsule")
            capsule = pre.KeyCapsule.from_bytes(records.capsules[(label, current[label])])
            shares = pre.make_grant(
                self._account(), capsule, cert, threshold=self._session.threshold,
                shares=len(self._session.nodes), expires_at=until,
            )  # fmt: skip
            made[(cert.device_id, label)] = [s.to_bytes() for s in shares]
        records.grants.update(made)
        return [record_id("grant", s) for shares in made.values() for s in shares]

    async def authorise(
        self,
        cert: pre.DeviceCertificate,
        *,
        labels: Sequence[str] = (ACCOUNT_LABEL,),
        grant_for: int = 30 * 86_400,
    ) -> None:
        """One M-of-N grant per label, share i to node i: constant size in the number of
        groups."""
        records = await self.records()
        ids = self._grant(records, cert, labels, self._session.now() + grant_for)
        result = await self._converge(records)
        self._require(result, records, ids, "grant")

    async def revoke(
        self, device_id: bytes, *, grant_for: int = 30 * 86_400, force: bool = False
    ) -> RevokeReport:
        """Revoke on every node (each answers a signed receipt), rotate every label the
        manifest lists, and re-grant each remaining member the labels it held, under the
        new key epochs, until the same expiry (at most `grant_for` from now). Refused for
        the admin device and for this device: every label key derives from the seed they
        hold, so revoking them protects nothing.

        A device revoked before (`already_revoked`) is not rotated again unless `force`:
        its revocation is only re-delivered to nodes that missed it."""
        account = self._account()
        records = await self.records()
        raw = records.certificates.get(device_id)
        if raw is None:
            raise ValueError("no such device in this account")
        cert = pre.DeviceCertificate.from_bytes(raw)
        if cert.role is pre.Role.ADMIN or device_id == self._session.profile.device.device_id:
            raise ValueError(
                "refusing to revoke an admin device or this device: label keys derive from "
                "the account seed it holds (re-keying the account is not supported)"
            )
        now = self._session.now()
        revocation = records.revocations.get(device_id)
        already = revocation is not None
        if revocation is None:
            revocation = pre.revoke_device(account, device_id, now=now).to_bytes()
            records.revocations[device_id] = revocation
        rotated: dict[str, int] = {}
        regranted: set[bytes] = set()
        if force or not already:
            rotated, regranted = self._rotate_all(records, device_id, now, grant_for)
        result = await self._converge(records)
        rev_id = record_id("revocation", revocation)
        receipts: dict[str, pre.RevocationReceipt] = {}
        failures: dict[str, NodeOutcome] = {}
        for node in self._session.nodes:
            answer = result.answers.get(node.base_url, {}).get(rev_id)
            if isinstance(answer, pre.RevocationReceipt):
                try:
                    receipts[node.base_url] = _check_receipt(node.node_key, answer, revocation)
                except VerificationFailed as exc:
                    failures[node.base_url] = exc.outcome()
            elif result.nodes.get(node.base_url, OK) is not OK:
                failures[node.base_url] = result.nodes[node.base_url]
        self._require(result, records, [rev_id], "revocation")
        return RevokeReport(
            receipts,
            failures,
            rotated,
            sorted(regranted),
            self._session.outcomes.snapshot(),
            already_revoked=already,
        )

    def _rotate_all(
        self, records: AdminRecords, device_id: bytes, now: int, grant_for: int
    ) -> tuple[dict[str, int], set[bytes]]:
        """Drop the device's grants, rotate every label, re-grant the other members."""
        # what the others held, before the rotation replaces it
        held = {k: pre.GrantShare.from_bytes(v[0]).expires_at for k, v in records.grants.items()}
        for key in [k for k in records.grants if k[0] == device_id]:
            del records.grants[key]
        rotated = {label: self._rotate(records, label) for label in sorted(_current(records))}
        regranted: set[bytes] = set()
        for (member, label), expires_at in sorted(held.items()):
            if member == device_id or member in records.revocations:
                continue
            member_cert = pre.DeviceCertificate.from_bytes(records.certificates[member])
            until = min(expires_at, now + grant_for)
            if until > now:
                self._grant(records, member_cert, [label], until)
                regranted.add(member)
            else:
                records.grants.pop((member, label), None)
        return rotated, regranted

    # labels

    def _rotate(self, records: AdminRecords, label: str) -> int:
        current = _current(records)
        capsule = pre.KeyCapsule.from_bytes(records.capsules[(label, current[label])])
        old = pre.open_key_capsule_as_owner(self._account(), capsule)
        epoch = old.key_epoch + 1
        new, kek = pre.create_key_capsule(
            self._account(), label, epoch, now=self._session.now(), previous=old
        )
        records.capsules[(label, epoch)] = new.to_bytes()
        self._keyring.add(new, kek)
        return epoch

    async def add_label(self, label: str) -> None:
        """Create a label's first key capsule (e.g. `group:<id>` for one group)."""
        records = await self.records()
        if any(lb == label for lb, _ in records.capsules):
            raise ValueError(f"label {label!r} exists already")
        capsule, kek = pre.create_key_capsule(self._account(), label, 0, now=self._session.now())
        records.capsules[(label, 0)] = capsule.to_bytes()
        self._keyring.add(capsule, kek)
        result = await self._converge(records)
        self._require(result, records, [record_id("capsule", capsule.to_bytes())], "key capsule")

    async def rotate(self, label: str) -> int:
        """Start the label's next key epoch, chaining the previous KEK into it. Nodes then
        refuse snapshots sealed under older epochs."""
        records = await self.records()
        if label not in _current(records):
            raise ValueError(f"label {label!r} has no key capsule")
        epoch = self._rotate(records, label)
        result = await self._converge(records)
        ids = [record_id("capsule", records.capsules[(label, epoch)])]
        self._require(result, records, ids, "rotation")
        return epoch

    # purges

    async def purge(self, group_id: bytes, author: bytes, *, from_epoch: int = 0) -> PurgeReport:
        """Void a revoked author's snapshots of `group_id` from `from_epoch` on: nodes delete
        them (each answers a signed receipt) and the manifest lists the purge, so devices
        that accepted them drop them too."""
        records = await self.records()
        if author not in records.revocations:
            raise ValueError("only a revoked device's snapshots can be purged; revoke it first")
        purge = pre.purge_group(
            self._account(), group_id, author, from_epoch=from_epoch, now=self._session.now()
        )
        records.purges.append(purge.to_bytes())
        result = await self._converge(records)
        pid = record_id("purge", purge.to_bytes())
        receipts: dict[str, pre.PurgeReceipt] = {}
        for node in self._session.nodes:
            answer = result.answers.get(node.base_url, {}).get(pid)
            if isinstance(answer, pre.PurgeReceipt) and node.node_key is not None:
                try:
                    receipts[node.base_url] = answer.verify(node.node_key)
                except pre.PreError:
                    self._session.outcomes.note(
                        node.base_url,
                        BadAnswer("its purge receipt does not verify", node.base_url).outcome(),
                    )
        self._require(result, records, [pid], "purge")
        return PurgeReport(receipts, self._session.outcomes.snapshot())

    async def pin_nodes(self) -> dict[str, bytes]:
        """Each node's identity key, pinned in the profile at first contact; a node that
        later shows another key, or another share index than its position, is refused."""
        answers = await self._session.fan.call(lambda n: n.identity())
        for url, outcome in answers.failures.items():
            if outcome.state is NodeState.SUSPECT:
                raise VerificationFailed(outcome.message or "node identity changed", url)
        self._session.keep_pins()
        return self._session.profile.node_keys


def _current(records: AdminRecords) -> dict[str, int]:
    current: dict[str, int] = {}
    for label, epoch in records.capsules:
        current[label] = max(current.get(label, -1), epoch)
    return current


def _shares_for(records: AdminRecords, node: object) -> set[str]:
    index = getattr(node, "share_index", None) or 0
    return {
        record_id("grant", shares[index - 1])
        for shares in records.grants.values()
        if 0 < index <= len(shares)
    }


def _check_receipt(
    node_key: bytes | None, receipt: pre.RevocationReceipt, revocation: bytes
) -> pre.RevocationReceipt:
    rev = pre.Revocation.from_bytes(revocation)
    try:
        assert node_key is not None  # a signed request pinned it
        verified = receipt.verify(node_key)
    except pre.PreError as exc:
        raise VerificationFailed(f"bad receipt: {exc}", None) from exc
    if (verified.account_id, verified.device_id) != (rev.account_id, rev.device_id):
        raise VerificationFailed("bad receipt: it names another device")
    return verified


def _sent(session: Session) -> int:
    return sum(n.bytes_sent for n in session.nodes)

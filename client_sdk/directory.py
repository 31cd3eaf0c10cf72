"""The account as the nodes show it: its root record (checked against the self-certifying
account id) and its devices and revocations (every certificate and revocation verified
against the root; the union of M or more nodes' listings, so no single node hides a
revocation). `DeviceDirectory` fetches; `Directory` is the verified result."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pre
from cache_service.protocol import models as m

from .errors import BadAnswer, VerificationFailed
from .node_client import NodeClient
from .session import Session

__all__ = ["REVOCATION_GRACE", "DeviceDirectory", "Directory", "check_account"]

# Twice the nodes' default clock-skew window (300 s): the author's and the admin's clocks
# may each be that far from the nodes'.
REVOCATION_GRACE = 600


def check_account(account_id: bytes, info: m.AccountInfo, node: str) -> pre.AccountRecord:
    try:
        record = pre.AccountRecord.from_bytes(info.account).verify()
    except pre.PreError as exc:
        raise VerificationFailed("account record does not verify", node) from exc
    if record.account_id != account_id:
        raise VerificationFailed("node served another account's record", node)
    return record


@dataclass(frozen=True)
class Listed:
    """One node's device listing, verified."""

    certificates: dict[bytes, pre.DeviceCertificate]
    revoked_at: dict[bytes, int]


def verify_listing(account: pre.AccountRecord, listing: m.DeviceList, node: str) -> Listed:
    certs: dict[bytes, pre.DeviceCertificate] = {}
    revoked: dict[bytes, int] = {}
    for entry in listing.devices:
        try:
            cert = pre.DeviceCertificate.from_bytes(entry.certificate)
            # Signature and binding now; validity is judged per snapshot time.
            cert.verify(account, now=cert.not_before)
            if entry.revocation is not None:
                rev = pre.Revocation.from_bytes(entry.revocation).verify(account)
                if rev.device_id != cert.device_id:
                    raise BadAnswer("lists a revocation under another device", node)
                revoked[cert.device_id] = min(
                    rev.revoked_at, revoked.get(cert.device_id, rev.revoked_at)
                )
        except pre.PreError as exc:
            raise VerificationFailed("device list does not verify", node) from exc
        if cert.device_id.hex() != entry.device_id:
            raise VerificationFailed("device list entry mislabelled", node)
        # Several certificates for one device (renewals): keep the latest.
        known = certs.get(cert.device_id)
        if known is None or cert.not_after > known.not_after:
            certs[cert.device_id] = cert
    return Listed(certs, revoked)


@dataclass(frozen=True)
class Directory:
    """The account's devices, each certificate verified against the root; revocations
    verified too. Built from the union of what several nodes return, so one node cannot
    hide a revocation."""

    account: pre.AccountRecord
    certificates: Mapping[bytes, pre.DeviceCertificate]
    revoked_at: Mapping[bytes, int]

    @classmethod
    def build(
        cls, account: pre.AccountRecord, lists: Iterable[tuple[str, m.DeviceList]]
    ) -> Directory:
        """The union of listings (each must verify)."""
        return cls.merge(account, [verify_listing(account, listing, n) for n, listing in lists])

    @classmethod
    def merge(cls, account: pre.AccountRecord, listed: Iterable[Listed]) -> Directory:
        certs: dict[bytes, pre.DeviceCertificate] = {}
        revoked: dict[bytes, int] = {}
        for one in listed:
            for device_id, cert in one.certificates.items():
                known = certs.get(device_id)
                if known is None or cert.not_after > known.not_after:
                    certs[device_id] = cert
            for device_id, at in one.revoked_at.items():
                revoked[device_id] = min(at, revoked.get(device_id, at))
        return cls(account, certs, revoked)

    def certificate_at(
        self, device_id: bytes, when: int, grace: int = REVOCATION_GRACE
    ) -> pre.DeviceCertificate:
        """The author's certificate, if it was valid and unrevoked at `when` (a snapshot's
        time). A revocation is timed by the admin's clock and a snapshot by its author's,
        so a snapshot nodes accepted just before the revocation can carry the same second
        or a later one (nodes allow each clock `REVOCATION_GRACE / 2` of skew). Such times
        are the author's claim: refusing them would protect nothing (a revoked key could
        as well claim an earlier time; the nodes' refusal is what stops it) and would make
        the acknowledged snapshot unreadable for every device."""
        cert = self.certificates.get(device_id)
        if cert is None:
            raise VerificationFailed("snapshot author is not a device of this account")
        revoked_at = self.revoked_at.get(device_id)
        # Every certificate here was verified against the root when its listing was
        # (`verify_listing`): only its window is left to check, several times per snapshot.
        if not cert.not_before <= when < cert.not_after or (
            revoked_at is not None and when >= revoked_at + grace
        ):
            raise VerificationFailed("snapshot author was not certified at that time")
        return cert

    def active(self, now: int) -> list[pre.DeviceCertificate]:
        out = []
        for device_id, cert in self.certificates.items():
            try:
                out.append(
                    cert.verify(self.account, now=now, revoked_at=self.revoked_at.get(device_id))
                )
            except pre.PreError:
                continue
        return out


class DeviceDirectory:
    """Fetches and verifies the account record (once) and the device directory."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._record: pre.AccountRecord | None = None

    async def record(self) -> pre.AccountRecord:
        """Any one node's copy: the record must hash to the pinned account id."""
        if self._record is not None:
            return self._record
        account_id = self._session.profile.account_id

        async def fetch(node: NodeClient) -> pre.AccountRecord:
            return check_account(account_id, await node.get_account(), node.base_url)

        _, record = await self._session.fan.first(fetch, "account record")
        self._record = record
        return record

    async def load(self, manifest: pre.AccountManifest | None = None) -> Directory:
        """Devices from M or more nodes, each listing verified on its own and merged: a
        node whose listing fails is a suspect and does not count. The manifest's
        revocations count whether or not a node lists them."""
        record = await self.record()

        async def fetch(node: NodeClient) -> Listed:
            return verify_listing(record, await node.list_devices(), node.base_url)

        threshold = self._session.threshold
        answers = await self._session.fan.call(fetch, quorum=threshold)
        listed = answers.require(threshold, "device list")
        directory = Directory.merge(record, listed.values())
        if manifest is None:
            return directory
        revoked = dict(directory.revoked_at)
        for entry in manifest.devices:
            if entry.revoked_at:
                revoked[entry.device_id] = min(
                    entry.revoked_at, revoked.get(entry.device_id, entry.revoked_at)
                )
        return Directory(record, directory.certificates, revoked)

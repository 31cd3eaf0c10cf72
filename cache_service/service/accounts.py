"""Accounts, device certificates and revocations."""

from __future__ import annotations

import pre

from ..errors import Code, ServiceError
from ..protocol import models as m
from ..storage import Storage
from .auth import Caller
from .records import Clock, decode, verifying

REGISTRATION_WINDOW = 3600  # seconds: `Settings.register_per_hour`


class AccountService:
    def __init__(
        self, storage: Storage, node: pre.NodeSecrets, *, clock: Clock, max_devices: int
    ) -> None:
        self._storage = storage
        self._node = node
        self._clock = clock
        self._max_devices = max_devices

    async def count_registration(self, address: str, *, per_hour: int) -> None:
        """Count a registration attempt from `address` (`api.client_address`); refuse it
        (429, Retry-After) beyond `per_hour` in the address's current window."""
        count, retry_after = await self._storage.count_registration(
            address, window=REGISTRATION_WINDOW
        )
        if count > per_hour:
            raise ServiceError(
                Code.RATE_LIMITED,
                f"at most {per_hour} account registrations per hour from one address; "
                f"retry in {retry_after} s",
                retry_after=retry_after,
            )

    async def register(self, body: m.RegisterAccountRequest) -> tuple[m.AccountInfo, bool]:
        """Self-certifying: the record's root key names the account, the first admin
        certificate must chain to it. Returns the account and whether it is new."""
        now = int(self._clock())
        record = decode(pre.AccountRecord.from_bytes, body.account, "account")
        cert = decode(pre.DeviceCertificate.from_bytes, body.admin_certificate, "certificate")
        with verifying("account record"):
            record.verify()
        with verifying("admin certificate"):
            cert.verify(record, now=now)
        if cert.role is not pre.Role.ADMIN:
            raise ServiceError(Code.INVALID_RECORD, "the first device must be an admin")
        account_id = record.account_id.hex()
        created = await self._storage.create_account(
            account_id, body.account, cert.device_id.hex(), body.admin_certificate
        )
        return m.AccountInfo(account_id=account_id, account=body.account), created

    def account_info(self, caller: Caller) -> m.AccountInfo:
        return m.AccountInfo(account_id=caller.account_id, account=caller.account_bytes)

    async def put_device(
        self, caller: Caller, device_id: str, body: m.DeviceCertificateBody
    ) -> bool:
        caller.require_admin()
        cert = decode(pre.DeviceCertificate.from_bytes, body.certificate, "certificate")
        with verifying("certificate"):
            cert.verify(caller.account, now=int(self._clock()))
        if cert.device_id.hex() != device_id:
            raise ServiceError(Code.INVALID_RECORD, "certificate is for another device id")
        return await self._storage.put_device(
            caller.account_id, device_id, body.certificate, self._max_devices
        )

    async def list_devices(self, caller: Caller) -> m.DeviceList:
        devices = await self._storage.list_devices(caller.account_id)
        return m.DeviceList(
            devices=[
                m.DeviceEntry(device_id=did, certificate=d.certificate, revocation=d.revocation)
                for did, d in devices.items()
            ]
        )

    async def revoke(
        self, caller: Caller, device_id: str, body: m.RevocationBody
    ) -> m.RevocationReceiptBody:
        """Record the revocation, delete the device's shares in the same atomic step, and
        answer with this node's signed receipt naming what it deleted."""
        caller.require_admin()
        revocation = decode(pre.Revocation.from_bytes, body.revocation, "revocation")
        with verifying("revocation"):
            revocation.verify(caller.account)
        if revocation.device_id.hex() != device_id:
            raise ServiceError(Code.INVALID_RECORD, "revocation is for another device id")
        devices = await self._storage.list_devices(caller.account_id)
        if device_id not in devices:
            raise ServiceError(Code.NOT_FOUND, "no such device")
        in_force, deleted = await self._storage.revoke_device(
            caller.account_id, device_id, body.revocation
        )
        # A repeated revocation is answered with the time of the one already in force.
        revoked_at = decode(pre.Revocation.from_bytes, in_force, "stored revocation").revoked_at
        receipt = self._node.sign_receipt(
            account_id=revocation.account_id,
            device_id=revocation.device_id,
            revoked_at=revoked_at,
            deleted=tuple(pre.ShareRef(label, epoch) for label, epoch in deleted),
            now=int(self._clock()),
        )
        return m.RevocationReceiptBody(receipt=receipt.to_bytes())

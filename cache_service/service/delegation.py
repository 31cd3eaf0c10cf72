"""Key capsules (one per label and key epoch) and this node's grant shares."""

from __future__ import annotations

import pre

from ..crypto_pool import ATTESTATION_SIZE
from ..errors import Code, ServiceError
from ..protocol import models as m
from ..storage import Storage
from .auth import Caller
from .records import Clock, decode, verifying


class DelegationService:
    def __init__(
        self,
        storage: Storage,
        node: pre.NodeSecrets,
        *,
        clock: Clock,
        share_index: int,
        max_labels: int,
        max_grant_seconds: int,
    ) -> None:
        self._storage = storage
        self._node = node
        self._clock = clock
        self._share_index = share_index
        self._max_labels = max_labels
        self._max_grant_seconds = max_grant_seconds

    async def put_capsule(
        self, caller: Caller, label: str, key_epoch: int, body: m.KeyCapsuleBody
    ) -> tuple[m.CapsuleEntry, bool]:
        """Epoch 0 creates a label's key; epoch e+1 rotates it, after which snapshots sealed
        under older epochs are refused. Returns the entry and whether it is new (an
        identical retry of an older epoch answers `current=False`)."""
        caller.require_admin()
        capsule = decode(pre.KeyCapsule.from_bytes, body.capsule, "key capsule")
        with verifying("key capsule"):
            capsule.verify(caller.account)
        if (capsule.label, capsule.key_epoch) != (label, key_epoch):
            raise ServiceError(Code.INVALID_RECORD, "capsule is for another label or key epoch")
        created, current = await self._storage.put_capsule(
            caller.account_id, label, key_epoch, body.capsule, self._max_labels
        )
        entry = m.CapsuleEntry(
            label=label, key_epoch=key_epoch, current=current == key_epoch, capsule=body.capsule
        )
        return entry, created

    async def granted_labels(self, caller: Caller) -> set[str] | None:
        """Labels the caller may read; None means all (admins hold the account seed)."""
        if caller.is_admin:
            return None
        grants = await self._unexpired(caller.account_id, caller.device_id)
        return {label for label, _ in grants}

    async def device_grants(self, caller: Caller, device_id: str) -> m.GrantList:
        """This node's unexpired shares for a device (admin): a revocation carries each
        remaining device's grants, and only those, over to the next key epoch."""
        caller.require_admin()
        grants = await self._unexpired(caller.account_id, device_id)
        return m.GrantList(grants=[share for _, share in grants])

    async def _unexpired(self, account_id: str, device_id: str) -> list[tuple[str, bytes]]:
        """(label, share) of the device's stored grants still valid by this node's clock:
        the Redis TTL runs on Redis's clock, re-encryption on the node's, and listing and
        publishing must agree with re-encryption."""
        now = int(self._clock())
        out = []
        for grant in await self._storage.list_grants(account_id, device_id):
            share = grant.share[ATTESTATION_SIZE:]
            if decode(pre.GrantShare.from_bytes, share, "stored grant share").expires_at > now:
                out.append((grant.label, share))
        return out

    async def list_capsules(self, caller: Caller) -> m.CapsuleList:
        allowed = await self.granted_labels(caller)
        capsules = await self._storage.list_capsules(caller.account_id)
        return m.CapsuleList(
            capsules=[
                m.CapsuleEntry(
                    label=c.label, key_epoch=c.key_epoch, current=c.current, capsule=c.capsule
                )
                for c in capsules
                if allowed is None or c.label in allowed
            ]
        )

    async def put_grant(
        self,
        caller: Caller,
        device_id: str,
        label: str,
        key_epoch: int,
        body: m.GrantShareBody,
    ) -> None:
        """Verify this node's share for exactly that device and label-epoch, then keep it
        until its expiry, with this node's attestation of the verification."""
        caller.require_admin()
        share = decode(pre.GrantShare.from_bytes, body.share, "grant share")
        if (share.label, share.key_epoch, share.device_id.hex()) != (label, key_epoch, device_id):
            raise ServiceError(Code.INVALID_RECORD, "share is for another label, epoch or device")
        now = int(self._clock())
        capsule_bytes = await self._storage.get_capsule(caller.account_id, label, key_epoch)
        if capsule_bytes is None:
            raise ServiceError(Code.NOT_FOUND, "no key capsule for this label and key epoch")
        devices = await self._storage.list_devices(caller.account_id)
        target = devices.get(device_id)
        if target is None:
            raise ServiceError(Code.NOT_FOUND, "no such device")
        if target.revocation is not None:
            raise ServiceError(Code.DEVICE_REVOKED, "the device is revoked")
        capsule = decode(pre.KeyCapsule.from_bytes, capsule_bytes, "stored key capsule")
        device = decode(pre.DeviceCertificate.from_bytes, target.certificate, "certificate")
        with verifying("grant share"):
            device.verify(caller.account, now=now)
            verified = pre.verify_grant_share(
                share,
                account=caller.account,
                capsule=capsule,
                device=device,
                share_index=self._share_index,
                now=now,
            )
        ttl = min(share.expires_at - now, self._max_grant_seconds)
        stored = pre.attest_grant_share(self._node, verified) + body.share
        await self._storage.put_grant(
            caller.account_id, device_id, label, key_epoch, share=stored, ttl=ttl
        )

"""The account manifest: stored with a compare-and-set, served to the account's devices.

The node checks the root's signature and the version chain, never the content: the admin
is the authority for what the manifest says (devices check it against what nodes serve).
An update (`pre.ManifestUpdate`) is applied to the stored version and its signature
checked over the result, so an admin sends the changes, not the whole account."""

from __future__ import annotations

import pre

from ..errors import Code, ServiceError
from ..protocol import models as m
from ..storage import ManifestOutcome, Storage, StoredManifest
from .auth import Caller
from .records import decode, verifying

_UPDATE_TAG = pre.ManifestUpdate.TAG.to_bytes(1, "big")


class ManifestService:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def get(self, caller: Caller) -> m.ManifestInfo:
        stored = await self._storage.get_manifest(caller.account_id)
        if stored is None:
            raise ServiceError(Code.NOT_FOUND, "this account has no manifest here")
        return m.ManifestInfo(version=stored.version, digest=stored.digest, manifest=stored.data)

    async def put(self, caller: Caller, body: m.ManifestBody) -> tuple[m.ManifestInfo, bool]:
        """Store the next version (whole, or as an update of the stored one). Returns the
        stored manifest and whether it is new; 409 `conflict` with `current_version`
        when it does not follow the stored version."""
        caller.require_admin()
        stored = await self._storage.get_manifest(caller.account_id)
        if body.manifest[:1] == _UPDATE_TAG:
            update = decode(pre.ManifestUpdate.from_bytes, body.manifest, "manifest update")
            if stored is None:
                raise ServiceError(
                    Code.CONFLICT, "no manifest stored here: send it whole", current_version=0
                )
            base = decode(pre.AccountManifest.from_bytes, stored.data, "stored manifest")
            try:
                manifest = pre.apply_update(base, update)
            except pre.BindingError as exc:
                raise ServiceError(
                    Code.CONFLICT,
                    "the update does not follow the stored version",
                    current_version=stored.version,
                ) from exc
            except ValueError as exc:
                raise ServiceError(
                    Code.INVALID_RECORD, "the update makes no valid manifest"
                ) from exc
        else:
            manifest = decode(pre.AccountManifest.from_bytes, body.manifest, "manifest")
        with verifying("manifest"):
            manifest.verify(caller.account)
        data = manifest.to_bytes()
        outcome, version = await self._storage.put_manifest(
            caller.account_id,
            StoredManifest(data, manifest.version, manifest.digest),
            manifest.previous,
        )
        if outcome is ManifestOutcome.CONFLICT:
            raise ServiceError(
                Code.CONFLICT,
                f"version {manifest.version} does not follow the stored version {version}",
                current_version=version,
            )
        info = m.ManifestInfo(version=manifest.version, digest=manifest.digest, manifest=data)
        return info, outcome is ManifestOutcome.STORED

"""The account manifest as a device sees it.

An admin reads its own (the records it signed). Any other device reads it from M or more
nodes: each copy must verify against the account root; the highest version wins; two
different manifests at one version are a fork (the admin's signature on both); a node
holding an older version is behind; the result may never be older than the version this
device verified before (`SyncState.manifest_version`). With M answering and at most M - 1
lying, a version every node holds is always seen."""

from __future__ import annotations

import pre

from .errors import ForkError, NodeError, RollbackError, VerificationFailed
from .node_client import NodeClient
from .outcomes import LocalCode, NodeOutcome, NodeState
from .session import Session
from .state import SyncState

__all__ = ["ManifestView"]


class ManifestView:
    def __init__(self, session: Session) -> None:
        self._session = session

    async def current(
        self, record: pre.AccountRecord, state: SyncState
    ) -> pre.AccountManifest | None:
        """The newest manifest this device can trust; None for an account that has none
        (one from before manifests) and of which this device never saw one."""
        records = self._session.profile.records
        if self._session.profile.account is not None and records is not None:
            return records.manifest  # an admin home never learns its manifest from nodes

        async def fetch(node: NodeClient) -> pre.AccountManifest | None:
            try:
                info = await node.get_manifest()
            except NodeError as exc:
                if exc.status == 404:
                    return None
                raise
            try:
                manifest = pre.AccountManifest.from_bytes(info.manifest).verify(record)
            except pre.PreError as exc:
                raise VerificationFailed("its manifest does not verify", node.base_url) from exc
            if (manifest.version, manifest.digest) != (info.version, info.digest):
                raise VerificationFailed("its manifest's version or digest is mislabelled")
            return manifest

        threshold = self._session.threshold
        answers = await self._session.fan.call(fetch, quorum=threshold)
        answers.require(threshold, "account manifest")
        return self._decide(answers.results, state)

    def _decide(
        self, held: dict[str, pre.AccountManifest | None], state: SyncState
    ) -> pre.AccountManifest | None:
        by_version: dict[int, dict[bytes, list[str]]] = {}
        for url, manifest in held.items():
            if manifest is not None:
                by_version.setdefault(manifest.version, {}).setdefault(manifest.digest, []).append(
                    url
                )
        for version, digests in by_version.items():
            if len(digests) > 1:
                urls = ", ".join(u for us in digests.values() for u in us)
                raise ForkError(f"two manifests claim version {version} ({urls})")
        manifests = [m for m in held.values() if m is not None]
        best = max(manifests, key=lambda m: m.version, default=None)
        known, known_digest = state.manifest_version, state.manifest_digest
        newest = 0 if best is None else best.version
        if newest < known:
            raise RollbackError(
                f"the nodes serve manifest version {newest}, below the {known} this device verified"
            )
        if best is None:
            return None
        if best.version == known and known_digest and best.digest != known_digest:
            raise ForkError(f"another manifest claims version {known}, which this device holds")
        for url, manifest in held.items():
            if manifest is None or manifest.version < best.version:
                version = 0 if manifest is None else manifest.version
                self._session.outcomes.note(
                    url,
                    NodeOutcome(
                        NodeState.BEHIND, LocalCode.MISSING, f"holds manifest version {version}"
                    ),
                )
        state.manifest_version, state.manifest_digest = best.version, best.digest
        return best

"""The KEKs a device holds: verified key capsules, and each label's KEK opened as owner
(admin) or from M verified re-encryptions, then down the chain of earlier key epochs.

Re-encryption asks every node at once. A node's answer must come from the node it was
asked (its id and share index); one fragment per node and capsule, each verified against
the capsule and this device. A key opens from any M verified fragments: when one subset
does not open (a node returned another node's fragment, say), others are tried."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import pre
from cache_service.protocol import models as m

from .errors import BadAnswer, ThresholdNotMet, VerificationFailed
from .node_client import NodeClient
from .outcomes import OK, NodeOutcome, NodeState
from .session import Session

__all__ = ["Keyring"]

KeyId = tuple[str, int]  # (label, key epoch)
MAX_SUBSETS = 64  # subsets of fragments tried per capsule before giving up


class Keyring:
    def __init__(self, session: Session) -> None:
        self._session = session
        self._keks: dict[KeyId, pre.Kek] = {}
        self._capsules: dict[KeyId, pre.KeyCapsule] = {}
        self.labels: set[str] = set()  # the labels of the last capsule listing
        self.reencryptions = 0

    @property
    def keks(self) -> Mapping[KeyId, pre.Kek]:
        return self._keks

    def _expected(self, manifest: pre.AccountManifest | None) -> list[pre.LabelEntry]:
        """The labels a node must list to this device: all (admin), or those it holds
        an unexpired grant of."""
        if manifest is None:
            return []
        if self._session.profile.account is not None:
            return list(manifest.labels)
        now = self._session.now()
        granted = {
            g.label
            for g in manifest.grants_of(self._session.profile.device.device_id)
            if g.expires_at > now
        }
        return [entry for entry in manifest.labels if entry.label in granted]

    def capsules(self) -> dict[KeyId, pre.KeyCapsule]:
        return dict(self._capsules)

    def capsule(self, label: str, key_epoch: int) -> pre.KeyCapsule | None:
        return self._capsules.get((label, key_epoch))

    def add(self, capsule: pre.KeyCapsule, kek: pre.Kek) -> None:
        """A capsule this (admin) device just made, with its KEK and the chain below."""
        self._capsules[(capsule.label, capsule.key_epoch)] = capsule
        self._chain_down(kek)

    def forget(self) -> None:
        self._keks.clear()
        self._capsules.clear()

    async def load_capsules(
        self, record: pre.AccountRecord, manifest: pre.AccountManifest | None = None
    ) -> dict[str, int]:
        """Verified key capsules from the first node that serves a listing the manifest
        does not contradict (every label this device is granted, at the manifest's key
        epoch, with the capsule it names); each label's newest key epoch."""
        expected = self._expected(manifest)

        async def fetch(node: NodeClient) -> list[pre.KeyCapsule]:
            capsules = _verified_capsules(await node.list_capsules(), record, node.base_url)
            held = {(c.label, c.key_epoch): c for c in capsules}
            for entry in expected:
                capsule = held.get((entry.label, entry.key_epoch))
                if capsule is None:
                    raise BadAnswer(
                        f"hides {entry.label} at key epoch {entry.key_epoch}, which the "
                        f"manifest (version {manifest.version if manifest else 0}) lists",
                        node.base_url,
                    )
                if pre.capsule_hash(capsule) != entry.capsule_hash:
                    raise BadAnswer(f"serves another capsule of {entry.label}", node.base_url)
            return capsules

        _, capsules = await self._session.fan.first(fetch, "key capsules")
        current: dict[str, int] = {}
        for capsule in capsules:
            self._capsules[(capsule.label, capsule.key_epoch)] = capsule
            current[capsule.label] = max(current.get(capsule.label, -1), capsule.key_epoch)
        self.labels = set(current)
        return current

    async def refresh(
        self, record: pre.AccountRecord, manifest: pre.AccountManifest | None = None
    ) -> None:
        """Re-encrypt only when a node lists a key epoch this device holds no KEK for
        (first use, or after a rotation): a sync costs one small listing, not M
        re-encryptions."""
        if not self._keks:
            await self.load(record, manifest)
            return
        current = await self.load_capsules(record, manifest)
        if any((label, epoch) not in self._keks for label, epoch in current.items()):
            await self.load(record, manifest)

    async def load(
        self, record: pre.AccountRecord, manifest: pre.AccountManifest | None = None
    ) -> Mapping[KeyId, pre.Kek]:
        """Every KEK this device may hold: as owner (admin), or from M verified
        re-encryptions of each label's newest granted capsule, then down the chain."""
        current = await self.load_capsules(record, manifest)
        account = self._session.profile.account
        if account is not None:
            for key, owned in self._capsules.items():
                self._keks[key] = pre.open_key_capsule_as_owner(account, owned)
            return self._keks
        threshold = self._session.threshold
        answers = await self._session.fan.call(
            lambda n: self._fragments(n, record), quorum=len(self._session.nodes)
        )
        failures = dict(answers.failures)
        fragments: dict[KeyId, list[pre.VerifiedCapsuleFragment]] = {}
        seen: dict[bytes, str] = {}  # cfrag bytes -> the node that sent them
        for url, (held, refused) in answers.results.items():
            for key, fragment in held.items():
                first = seen.setdefault(fragment.fragment.cfrag, url)
                if first != url:  # one node copied the other's: either may be the liar
                    why = f"sent the same capsule fragment as {first}"
                    for who in (url, first):
                        self._session.outcomes.note(who, BadAnswer(why, who).outcome())
                    continue
                fragments.setdefault(key, []).append(fragment)
            if refused:
                failures.setdefault(url, refused)
        if not current:  # no capsule is listed for this device: it holds no grant
            raise ThresholdNotMet("re-encryption (no grant)", threshold, failures)
        for label in current:
            epochs = sorted((e for (lb, e) in fragments if lb == label), reverse=True)
            for epoch in epochs:
                kek = self._open(label, epoch, fragments[(label, epoch)])
                if kek is not None:
                    self._chain_down(kek)
                    break
            else:  # fail closed: no grant (expired?) or too few valid fragments
                nodes = {url: OK for url in answers.results} | failures
                raise ThresholdNotMet(f"re-encryption of {label}", threshold, nodes)
        return self._keks

    async def _fragments(
        self, node: NodeClient, record: pre.AccountRecord
    ) -> tuple[dict[KeyId, pre.VerifiedCapsuleFragment], NodeOutcome | None]:
        """This node's verified fragments, and why it gave none for some capsule."""
        answer = await node.reencrypt()
        if answer.node_id != node.node_id or answer.share_index != node.share_index:
            raise BadAnswer("answered as another node", node.base_url)
        held: dict[KeyId, pre.VerifiedCapsuleFragment] = {}
        refused: NodeOutcome | None = None
        for result in answer.results:
            key = (result.label, result.key_epoch)
            if key in held:
                raise BadAnswer("answered twice for one key capsule", node.base_url)
            capsule = self._capsules.get(key)
            if result.fragment is None or capsule is None:
                code = result.error_code
                refused = NodeOutcome(NodeState.UNAVAILABLE, code, f"{key[0]}@{key[1]}: {code}")
                continue
            try:
                fragment = pre.CapsuleFragment.from_bytes(result.fragment)
                held[key] = pre.verify_capsule_fragment(
                    fragment, capsule=capsule, account=record, receiver=self._session.profile.device
                )
            except pre.PreError as exc:
                raise VerificationFailed(
                    f"capsule fragment rejected: {exc}", node.base_url
                ) from exc
            self.reencryptions += 1
        return held, refused

    def _open(
        self, label: str, epoch: int, fragments: list[pre.VerifiedCapsuleFragment]
    ) -> pre.Kek | None:
        threshold = self._session.threshold
        subsets = itertools.islice(itertools.combinations(fragments, threshold), MAX_SUBSETS)
        for subset in subsets:
            try:
                return pre.open_key_capsule(
                    self._session.profile.device, self._capsules[(label, epoch)], list(subset)
                )
            except pre.PreError:
                continue  # a repeated or foreign fragment in this subset: try another
        return None

    def _chain_down(self, kek: pre.Kek) -> None:
        self._keks[(kek.label, kek.key_epoch)] = kek
        while kek.key_epoch > 0:
            record = self._capsules.get((kek.label, kek.key_epoch))
            if record is None or record.previous_kek is None:
                return
            kek = kek.open_previous(record)
            self._keks[(kek.label, kek.key_epoch)] = kek

    def newest(self, label: str) -> pre.Kek | None:
        epochs = [e for (lb, e) in self._capsules if lb == label]
        return self._keks.get((label, max(epochs))) if epochs else None

    async def current(
        self,
        label: str,
        record: pre.AccountRecord,
        manifest: pre.AccountManifest | None = None,
    ) -> pre.Kek:
        kek = self.newest(label)
        if kek is None:  # not loaded yet: `rotate` and `add_label` cache only their own KEK
            await self.refresh(record, manifest)
            kek = self.newest(label)
        if kek is None:
            raise VerificationFailed(f"this device holds no key for label {label!r}")
        return kek


def _verified_capsules(
    listing: m.CapsuleList, record: pre.AccountRecord, node: str
) -> list[pre.KeyCapsule]:
    out: dict[KeyId, pre.KeyCapsule] = {}
    for entry in listing.capsules:
        try:
            capsule = pre.KeyCapsule.from_bytes(entry.capsule).verify(record)
        except pre.PreError as exc:
            raise VerificationFailed("key capsule does not verify", node) from exc
        key = (capsule.label, capsule.key_epoch)
        if key != (entry.label, entry.key_epoch):
            raise VerificationFailed("key capsule mislabelled", node)
        if key in out and out[key] != capsule:
            raise BadAnswer(f"lists two capsules for {key[0]}@{key[1]}", node)
        out[key] = capsule
    return list(out.values())

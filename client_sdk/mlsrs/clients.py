"""mls-rs clients for the demo, the bench and the tests: a client with basic credentials in
the one cipher suite the bindings offer, an in-memory store for users who do not use
statecache, and applying one's own commit (mls-rs only creates it)."""

from __future__ import annotations

import mls_rs_uniffi as mls

__all__ = ["MemoryStore", "apply", "new_client"]


class MemoryStore(mls.GroupStateStorage):
    """mls-rs storage in memory: the other users, who do not use statecache."""

    def __init__(self) -> None:
        self.states: dict[bytes, bytes] = {}
        self.records: dict[bytes, dict[int, bytes]] = {}

    def state(self, group_id: bytes) -> bytes | None:
        return self.states.get(group_id)

    def epoch(self, group_id: bytes, epoch_id: int) -> bytes | None:
        return self.records.get(group_id, {}).get(epoch_id)

    def write(
        self,
        group_id: bytes,
        group_state: bytes,
        epoch_inserts: list[mls.EpochRecord],
        epoch_updates: list[mls.EpochRecord],
    ) -> None:
        self.states[group_id] = group_state
        for record in [*epoch_inserts, *epoch_updates]:
            self.records.setdefault(group_id, {})[record.id] = record.data

    def max_epoch_id(self, group_id: bytes) -> int | None:
        held = self.records.get(group_id)
        return max(held) if held else None


def new_client(name: str, store: mls.GroupStateStorage) -> mls.Client:
    keys = mls.generate_signature_keypair(mls.CipherSuite.CURVE25519_AES128)
    config = mls.ClientConfig(group_state_storage=store, use_ratchet_tree_extension=False)
    return mls.Client(name.encode(), keys, config)


def apply(group: mls.Group, out: mls.CommitOutput) -> mls.CommitOutput:
    """mls-rs only creates a commit: its committer applies it by processing it."""
    group.process_incoming_message(out.commit_message)
    group.write_to_storage()
    return out

"""Real mls-rs clients for the store tests. Imported unguarded: without the pinned binding
these tests fail, they do not skip."""

from __future__ import annotations

import mls_rs_uniffi as mls

SUITE = mls.CipherSuite.CURVE25519_AES128


class MemoryStorage(mls.GroupStateStorage):
    """The other members' storage: a dict, every write kept, records never deleted."""

    def __init__(self) -> None:
        self.states: dict[bytes, bytes] = {}
        self.records: dict[bytes, dict[int, bytes]] = {}
        self.writes: list[tuple[bytes, bytes, list[int]]] = []  # (group, state, inserted ids)

    def state(self, group_id: bytes) -> bytes | None:
        return self.states.get(group_id)

    def epoch(self, group_id: bytes, epoch_id: int) -> bytes | None:
        return self.records.get(group_id, {}).get(epoch_id)

    def write(self, group_id, group_state, epoch_inserts, epoch_updates) -> None:
        self.states[group_id] = group_state
        for r in [*epoch_inserts, *epoch_updates]:
            self.records.setdefault(group_id, {})[r.id] = r.data
        self.writes.append((group_id, group_state, [r.id for r in epoch_inserts]))

    def max_epoch_id(self, group_id: bytes) -> int | None:
        held = self.records.get(group_id)
        return max(held) if held else None


def client(name: bytes, storage: mls.GroupStateStorage) -> mls.Client:
    config = mls.ClientConfig(group_state_storage=storage, use_ratchet_tree_extension=False)
    return mls.Client(name, mls.generate_signature_keypair(SUITE), config)


def apply(group: mls.Group, message: mls.Message) -> mls.ReceivedMessage:
    received = group.process_incoming_message(message)
    group.write_to_storage()
    return received


def add(group: mls.Group, joiner: mls.Client, *others: mls.Group) -> mls.Group:
    """`joiner` added by `group`'s member (the Welcome sent without the tree, the tree
    handed over beside it); `others` process the commit. The joiner's group."""
    out = group.add_members([joiner.generate_key_package_message()])
    apply(group, out.commit_message)
    for other in others:
        apply(other, out.commit_message)
    joined = joiner.join_group(group.export_tree(), out.welcome_message).group
    joined.write_to_storage()
    return joined


def commit(group: mls.Group, *others: mls.Group) -> None:
    """An empty commit (a new epoch, the committer's leaf updated), applied everywhere."""
    out = group.commit()
    apply(group, out.commit_message)
    for other in others:
        apply(other, out.commit_message)


def send(group: mls.Group, data: bytes) -> mls.Message:
    message = group.encrypt_application_message(data)
    group.write_to_storage()
    return message


def read(group: mls.Group, message: mls.Message) -> bytes:
    received = apply(group, message)
    assert isinstance(received, mls.ReceivedMessage.APPLICATION_MESSAGE), received
    return bytes(received.data)

"""Real mls-rs clients for the store tests. Imported unguarded: without the pinned binding
these tests fail, they do not skip."""

from __future__ import annotations

import mls_rs_uniffi as mls

from client_sdk.mlsrs.clients import MemoryStore

SUITE = mls.CipherSuite.CURVE25519_AES128


class MemoryStorage(MemoryStore):
    """The other members' storage: a dict, records never deleted, every write logged."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[bytes, bytes, list[int]]] = []  # (group, state, inserted ids)

    def write(self, group_id, group_state, epoch_inserts, epoch_updates) -> None:
        super().write(group_id, group_state, epoch_inserts, epoch_updates)
        self.writes.append((group_id, group_state, [r.id for r in epoch_inserts]))


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

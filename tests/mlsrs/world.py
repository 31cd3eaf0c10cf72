"""Other users in the tests' groups: real mls-rs clients outside statecache."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import mls_rs_uniffi as mls

from client_sdk.mlsrs.clients import MemoryStore, apply, new_client

__all__ = ["MemoryStore", "User", "apply", "group_id", "new_client"]


@dataclass
class User:
    """Someone else in the groups: a real mls-rs client, one device, no statecache."""

    name: str
    store: MemoryStore = field(default_factory=MemoryStore)
    groups: dict[bytes, mls.Group] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.client = new_client(self.name, self.store)

    def key_package(self) -> mls.Message:
        return self.client.generate_key_package_message()

    def join(self, group_id: bytes, out: mls.CommitOutput, tree: mls.RatchetTree) -> None:
        info = self.client.join_group(tree, out.welcome_message)
        info.group.write_to_storage()
        self.groups[group_id] = info.group

    def receive(self, group_id: bytes, message: mls.Message) -> object:
        received = self.groups[group_id].process_incoming_message(message)
        self.groups[group_id].write_to_storage()
        return received

    def send(self, group_id: bytes, text: bytes) -> mls.Message:
        message = self.groups[group_id].encrypt_application_message(text)
        self.groups[group_id].write_to_storage()
        return message


def group_id() -> bytes:
    return os.urandom(32)

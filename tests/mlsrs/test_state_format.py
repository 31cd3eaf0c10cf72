"""The group id and epoch parsed from real mls-rs states (the pinned binding's layout)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from client_sdk.mlsrs import PINNED_BINDING, StateFormatError, parse_state
from tests.mlsrs.members import MemoryStorage, add, client, commit, read, send

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("group_id", [b"g", b"x" * 63, b"y" * 64, bytes(range(200))])
def test_parse_matches_every_write_over_several_epochs(group_id: bytes) -> None:
    """Ids of 1 and 2-byte varint lengths; epochs 0 to 5, writes within an epoch too, from
    the creator and from a member who joined."""
    alice_store, bob_store, carol_store = MemoryStorage(), MemoryStorage(), MemoryStorage()
    alice = client(b"alice", alice_store).create_group(group_id)
    alice.write_to_storage()
    bob = add(alice, client(b"bob", bob_store))
    read(bob, send(alice, b"hello"))
    carol = add(bob, client(b"carol", carol_store), alice)
    for _ in range(3):
        commit(carol, alice, bob)
    read(alice, send(carol, b"at epoch 5"))
    for storage in (alice_store, bob_store, carol_store):
        epochs = []
        for written_for, state, inserted in storage.writes:
            head = parse_state(state, written_for)
            assert head.mls_group_id == group_id
            if inserted:  # entering epoch E inserts the record of E - 1
                assert inserted == [head.epoch - 1]
            epochs.append(head.epoch)
        assert epochs == sorted(epochs)
        assert epochs[-1] == 5
    # created, added bob, sent, added carol, three commits, received
    assert [parse_state(s).epoch for _, s, _ in alice_store.writes] == [0, 1, 1, 2, 3, 4, 5, 5]


def _state() -> bytes:
    storage = MemoryStorage()
    group = client(b"alice", storage).create_group(b"group")
    group.write_to_storage()
    commit(group)
    return storage.states[b"group"]


def test_parse_refuses_another_layout_naming_the_pinned_binding() -> None:
    state = _state()
    assert parse_state(state, b"group") == (b"group", 1)
    bad = {
        "another group": (state, b"other"),
        "snapshot version": (b"\x00\x02" + state[2:], None),
        "cipher suite": (state[:4] + b"\x00\x02" + state[6:], None),
        "truncated in the epoch": (state[:15], None),
        "empty": (b"", None),
        "invalid varint": (state[:6] + b"\xc0" + state[7:], None),
        "non-minimal varint": (state[:6] + b"\x40\x05" + state[7:], None),
        "empty group id": (state[:6] + b"\x00" + state[12:], None),
    }
    for what, (data, expect) in bad.items():
        with pytest.raises(StateFormatError, match=PINNED_BINDING) as info:
            parse_state(data, expect)
        assert isinstance(info.value, ValueError), what


def test_the_sdk_never_imports_mls_rs() -> None:
    """The core and the SDK work without the extra: only client_sdk.mlsrs imports it."""
    code = (
        "import sys, client_sdk, client_sdk.cli, client_sdk.device, client_sdk.mls, pre;"
        "assert 'mls_rs_uniffi' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    importers = [
        p.relative_to(ROOT).as_posix()
        for top in ("pre", "client_sdk", "cache_service")
        for p in (ROOT / top).rglob("*.py")
        if "mls_rs_uniffi" in p.read_text()
    ]
    assert importers and all(p.startswith("client_sdk/mlsrs/") for p in importers), importers

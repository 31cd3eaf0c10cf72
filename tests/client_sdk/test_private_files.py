"""A device's own files (sync state, keystore, admin records) are written 0600 and whole:
a left-over temporary file or a link in its place is never written through."""

from __future__ import annotations

import stat
from pathlib import Path

from client_sdk.state import SyncState


def test_the_sync_state_is_private_and_replaces_a_planted_link(tmp_path: Path) -> None:
    path = tmp_path / "home" / "state.json"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("untouched")
    path.parent.mkdir()
    (path.parent / "state.json.tmp").symlink_to(elsewhere)  # planted where the write goes
    SyncState().save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert elsewhere.read_text() == "untouched"
    assert SyncState.load(path) == SyncState()

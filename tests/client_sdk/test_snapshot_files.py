"""`--out` files: a group directory that is a symbolic link is refused (the writes, the
chmod and the pruning of older epochs would land where it points), and a stray file name
with a non-ASCII digit is left alone rather than breaking the pruning."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from client_sdk.snapshot_files import write_snapshot

GROUP = bytes.fromhex("0a1b2c")


def test_a_symlinked_group_directory_is_refused(tmp_path: Path) -> None:
    victim, out = tmp_path / "victim", tmp_path / "out"
    victim.mkdir(mode=0o755)
    os.chmod(victim, 0o755)
    (victim / "group_state.1.bin").write_bytes(b"not ours")
    out.mkdir()
    (out / GROUP.hex()).symlink_to(victim)
    with pytest.raises(OSError, match="symbolic link"):
        write_snapshot(out, GROUP, "group_state", 43, b"state", keep_epochs=False)
    assert sorted(p.name for p in victim.iterdir()) == ["group_state.1.bin"]
    assert stat.S_IMODE(victim.stat().st_mode) == 0o755


def test_pruning_leaves_names_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_snapshot(out, GROUP, "group_state", 1, b"one", keep_epochs=False)
    stray = out / GROUP.hex() / "group_state.\u00b2.bin"  # "²".isdigit() is True
    stray.write_bytes(b"someone else's")
    write_snapshot(out, GROUP, "group_state", 2, b"two", keep_epochs=False)
    names = sorted(p.name for p in (out / GROUP.hex()).iterdir())
    assert names == ["group_state.2.bin", stray.name]

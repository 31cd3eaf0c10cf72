"""This node's Ed25519 identity, created on first start and kept in its data directory."""

from __future__ import annotations

import os
from pathlib import Path

import pre

__all__ = ["load_or_create_identity"]

FILE_NAME = "node.key"


def load_or_create_identity(data_dir: Path) -> pre.NodeSecrets:
    path = Path(data_dir) / FILE_NAME
    if path.exists():
        return pre.NodeSecrets.from_bytes(path.read_bytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    secrets = pre.NodeSecrets.generate()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.to_bytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return secrets

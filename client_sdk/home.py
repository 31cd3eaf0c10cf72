"""A device's home directory: its keystore and its sync state, side by side.

~/.statecache/        (or --home DIR, or $STATECACHE_HOME); created 0700
    keystore.json     secrets, account, nodes, pinned node keys (`keystore`; 0600)
    admin.json        an admin's records, manifests and what each node holds (0600)
    state.json        sync cursors and the newest epoch seen per group (`state`)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .admin_records import AdminRecords
from .errors import KeystoreError
from .keystore import Profile, is_sealed, load_profile, save_profile

__all__ = ["DEFAULT_HOME", "HOME_ENV", "Home"]

HOME_ENV = "STATECACHE_HOME"
DEFAULT_HOME = Path("~/.statecache")


@dataclass(frozen=True)
class Home:
    path: Path
    passphrase: str | None = field(default=None, repr=False)

    @classmethod
    def resolve(cls, path: Path | None, passphrase: str | None = None) -> Home:
        """`path`, else $STATECACHE_HOME, else ~/.statecache."""
        if path is None:
            from_env = os.environ.get(HOME_ENV)
            path = Path(from_env) if from_env else DEFAULT_HOME
        return cls(path.expanduser(), passphrase)

    @property
    def keystore_path(self) -> Path:
        return self.path / "keystore.json"

    @property
    def state_path(self) -> Path:
        return self.path / "state.json"

    @property
    def inbox_path(self) -> Path:
        """Snapshots a read delivered without `--out`, until a read with one moves them."""
        return self.path / "inbox"

    @property
    def admin_path(self) -> Path:
        return self.path / "admin.json"

    def ensure_new(self) -> None:
        """Refuse to overwrite a device: a keystore may hold the only copy of a seed."""
        if self.keystore_path.exists():
            raise KeystoreError(f"{self.keystore_path} exists already; choose another --home")
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def load(self) -> Profile:
        profile = self._load()
        if profile.account is not None:
            try:
                profile.records = AdminRecords.load(self.admin_path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise KeystoreError(f"{self.admin_path} is damaged") from exc
        return profile

    def save_records(self, profile: Profile) -> None:
        if profile.records is not None:
            profile.records.save(self.admin_path)

    def _load(self) -> Profile:
        try:
            return load_profile(self.keystore_path, self.passphrase)
        except KeystoreError as exc:
            if self.passphrase is None and self._is_locked():
                raise KeystoreError(
                    f"the keystore at {self.keystore_path} is locked; name the environment "
                    "variable holding its passphrase with --passphrase-env"
                ) from exc
            raise

    def save(self, profile: Profile) -> None:
        save_profile(self.keystore_path, profile, self.passphrase)
        self.save_records(profile)

    def _is_locked(self) -> bool:
        return is_sealed(self.keystore_path)

    @property
    def is_locked(self) -> bool:
        """Whether the keystore on disk has a passphrase."""
        return self._is_locked()

    @property
    def protection(self) -> str:
        """How this home saves its keystore: "passphrase" or "unencrypted"."""
        return "unencrypted" if self.passphrase is None else "passphrase"

    def unencrypted_warning(self, holds: str) -> list[str]:
        """The warning a command that wrote an unencrypted keystore prints (on stderr)."""
        if self.passphrase is not None:
            return []
        return [
            f"{self.keystore_path} holds {holds} unencrypted (no passphrase): anyone who "
            "can read it can act as this device; add one with `statecache keystore passphrase`"
        ]

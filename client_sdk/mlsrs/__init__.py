"""Real MLS clients on statecache: AWS mls-rs through its UniFFI bindings (the optional
`mls-rs` extra, pinned at agentvault-mls-rs-uniffi 0.1.1).

The only package that imports `mls_rs_uniffi`; `client_sdk` itself never does, so the SDK
works without the extra installed.

- `StatecacheStore`: mls-rs's `GroupStateStorage` on local disk, each group's state and
  newest epoch records backed up to statecache as this device's own sealed snapshot
  (`flush`), and restored from it (`restore`);
- `parse_state`: the MLS group id and epoch of a group state of the pinned binding.
"""

from .backups import OWN_STATE_KIND, BackupsBehind
from .errors import StateFormatError, StoreError
from .payload import OwnState
from .state_format import PINNED_BINDING, StateHead, parse_state
from .store import StatecacheStore

__all__ = [
    "OWN_STATE_KIND",
    "PINNED_BINDING",
    "BackupsBehind",
    "OwnState",
    "StateFormatError",
    "StateHead",
    "StatecacheStore",
    "StoreError",
    "parse_state",
]

"""Real MLS clients on statecache: AWS mls-rs through its UniFFI bindings (the optional
`mls-rs` extra, pinned at agentvault-mls-rs-uniffi 0.1.1).

The only package that imports `mls_rs_uniffi`; `client_sdk` itself never does, so the SDK
works without the extra installed.

- `StatecacheStore`: mls-rs's `GroupStateStorage` on local disk, each group's state and
  newest epoch records backed up to statecache as this device's own sealed snapshot
  (`flush`), and restored from it (`restore`);
- `parse_state`: the MLS group id and epoch of a group state of the pinned binding;
- `commit_tree`, `join_all` (`flows`): the committer publishes an epoch's tree, and a new
  device joins from Welcomes sent without it;
- `clients`, `demo`: mls-rs clients for `make demo-mls`, the bench and the tests.
"""

from .backups import OWN_STATE_KIND, BackupsBehind
from .errors import StateFormatError, StoreError
from .flows import JoinFailed, JoinReport, Welcome, commit_tree, join_all
from .payload import OwnState
from .state_format import PINNED_BINDING, StateHead, parse_state
from .store import StatecacheStore

__all__ = [
    "OWN_STATE_KIND",
    "PINNED_BINDING",
    "BackupsBehind",
    "JoinFailed",
    "JoinReport",
    "OwnState",
    "StateFormatError",
    "StateHead",
    "StatecacheStore",
    "StoreError",
    "Welcome",
    "commit_tree",
    "join_all",
    "parse_state",
]

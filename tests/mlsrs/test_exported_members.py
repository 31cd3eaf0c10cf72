"""The public surface of `client_sdk.mlsrs`: exactly these names, each importable and real.
Changing the list is an API change: update EXPECTED in the same commit, on purpose."""

from __future__ import annotations

import client_sdk.mlsrs as mlsrs

EXPECTED = [
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


def test_the_exported_names_are_exactly_these() -> None:
    assert sorted(mlsrs.__all__) == sorted(EXPECTED)
    for name in EXPECTED:
        assert getattr(mlsrs, name) is not None

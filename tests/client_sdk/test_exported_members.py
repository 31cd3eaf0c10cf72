"""The public surface of `client_sdk`: exactly these names, each importable and real.

Changing the list is an API change: update EXPECTED in the same commit, on purpose. The
CLI, the demo, the bench and the tests use these names.
"""

from __future__ import annotations

import inspect

import client_sdk
from client_sdk import errors

EXPECTED = [
    "ACCOUNT_LABEL",
    "AdminRequired",
    "Approval",
    "BadAnswer",
    "Commitments",
    "ContentConflict",
    "Directory",
    "EnrolmentRefused",
    "EpochConflict",
    "ForkError",
    "Incomplete",
    "KeystoreError",
    "LocalCode",
    "MissingSnapshot",
    "NoKey",
    "NodeError",
    "NodeOutcome",
    "NodeState",
    "NodeTimeout",
    "NodeUnavailable",
    "NotApproved",
    "DeviceRevoked",
    "Opened",
    "OpenedSnapshot",
    "OpenedTree",
    "Profile",
    "PublishReport",
    "PurgeReport",
    "Purged",
    "QuotaExceeded",
    "ReadReport",
    "RepairReport",
    "RetryPolicy",
    "RevokeReport",
    "RollbackError",
    "SnapshotInput",
    "StateTooLarge",
    "Statecache",
    "StatecacheError",
    "SyncState",
    "ThresholdNotMet",
    "TreeInput",
    "TreeMismatch",
    "TreePolicy",
    "TreeUnavailable",
    "Unconfirmed",
    "VerificationFailed",
    "create_account",
    "enrollment_request",
    "load_profile",
    "parse_enrollment",
    "save_profile",
]


def test_exported_names_are_exactly_the_expected_ones() -> None:
    assert sorted(client_sdk.__all__) == sorted(EXPECTED)
    for name in EXPECTED:
        assert getattr(client_sdk, name) is not None, name


def test_every_sdk_exception_is_exported_and_derives_from_the_base() -> None:
    classes = {
        name: cls
        for name, cls in vars(errors).items()
        if inspect.isclass(cls) and issubclass(cls, Exception) and cls.__module__ == errors.__name__
    }
    for name, cls in classes.items():
        assert getattr(client_sdk, name) is cls, name
        assert issubclass(cls, client_sdk.StatecacheError), name


def test_a_timeout_is_also_a_builtin_timeout_and_an_admin_refusal_a_permission_error() -> None:
    assert issubclass(client_sdk.NodeTimeout, TimeoutError)
    assert issubclass(client_sdk.NodeUnavailable, OSError)
    assert issubclass(client_sdk.AdminRequired, PermissionError)

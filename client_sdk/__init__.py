"""statecache device SDK: one device of an account on N cache nodes, threshold M.

from client_sdk import Statecache, SnapshotInput, load_profile

async with Statecache(load_profile(path)) as sc:
    await sc.publish([SnapshotInput(group_id, "group_state", epoch, state_bytes)])
    async for snap in sc.sync():
        ...
"""

from .admin import Approval, PurgeReport, RepairReport, RevokeReport
from .device import Statecache, create_account
from .directory import Directory
from .enrolment import enrollment_request, parse_enrollment
from .errors import (
    AdminRequired,
    BadAnswer,
    ContentConflict,
    DeviceRevoked,
    EnrolmentRefused,
    EpochConflict,
    ForkError,
    KeystoreError,
    MissingSnapshot,
    NodeError,
    NodeTimeout,
    NodeUnavailable,
    NoKey,
    NotApproved,
    Purged,
    QuotaExceeded,
    RollbackError,
    StatecacheError,
    StateTooLarge,
    ThresholdNotMet,
    TreeMismatch,
    TreeUnavailable,
    Unconfirmed,
    VerificationFailed,
)
from .keystore import Profile, load_profile, save_profile
from .outcomes import LocalCode, NodeOutcome, NodeState
from .policy import RetryPolicy
from .publisher import ACCOUNT_LABEL, PublishReport, SnapshotInput
from .read_report import Incomplete, ReadReport
from .reader import Opened
from .state import SyncState
from .tree_sync import TreePolicy
from .trees import OpenedTree, TreeInput
from .verify import Commitments, OpenedSnapshot

__all__ = [
    "ACCOUNT_LABEL",
    "AdminRequired",
    "Approval",
    "BadAnswer",
    "Commitments",
    "ContentConflict",
    "DeviceRevoked",
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

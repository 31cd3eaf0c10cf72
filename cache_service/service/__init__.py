"""The node's logic: authentication, authorisation, epochs, grants, re-encryption.

Handlers call these with parsed wire models and get wire models back; storage sits below
behind `cache_service.storage.Storage`. Every failure is a `ServiceError`.
"""

from .accounts import AccountService
from .auth import Authenticator, Caller
from .delegation import DelegationService
from .deletion import DeletionService
from .manifests import ManifestService
from .reencryption import ReencryptionService
from .snapshots import SnapshotService

__all__ = [
    "AccountService",
    "Authenticator",
    "Caller",
    "DelegationService",
    "DeletionService",
    "ManifestService",
    "ReencryptionService",
    "SnapshotService",
]

"""statecache's cryptographic core: pure functions and small immutable records, no I/O.

The only package that imports `umbral_pre` or `cryptography`. Every failure to decode,
verify or open raises a `PreError`; see `pre.errors` for the tree.
"""

from .capsules import KEK_SIZE, Kek, KeyCapsule, create_key_capsule, open_key_capsule_as_owner
from .certificates import (
    AccountRecord,
    DeviceCertificate,
    Revocation,
    Role,
    certify_device,
    register_account,
    revoke_device,
)
from .digests import content_digest
from .errors import (
    BindingError,
    CertificateError,
    DecodeError,
    DecryptionError,
    FragmentError,
    PreError,
    SignatureError,
)
from .grants import (
    MAX_SHARES,
    GrantShare,
    VerifiedGrantShare,
    attest_grant_share,
    make_grant,
    restore_grant_share,
    verify_grant_share,
)
from .keys import (
    ACCOUNT_ID_SIZE,
    DEVICE_ID_SIZE,
    LABEL_PATTERN,
    AccountSecrets,
    DeviceKeys,
    DeviceSecrets,
    account_id_for,
    device_id_for,
    label_for_group,
)
from .keystore import open_with_passphrase, seal_with_passphrase
from .nodes import NodeSecrets, RevocationReceipt, ShareRef, node_id_for
from .reencryption import (
    CapsuleFragment,
    VerifiedCapsuleFragment,
    open_key_capsule,
    reencrypt,
    verify_capsule_fragment,
)
from .snapshots import (
    MAX_GROUP_ID_SIZE,
    MAX_SNAPSHOT_PLAINTEXT,
    UNCHECKED,
    SealedSnapshot,
    SnapshotHeader,
    epoch_authenticator_hash,
    open_snapshot,
    seal_snapshot,
)

__all__ = [
    "ACCOUNT_ID_SIZE",
    "DEVICE_ID_SIZE",
    "KEK_SIZE",
    "LABEL_PATTERN",
    "MAX_GROUP_ID_SIZE",
    "MAX_SHARES",
    "MAX_SNAPSHOT_PLAINTEXT",
    "UNCHECKED",
    "AccountRecord",
    "AccountSecrets",
    "BindingError",
    "CapsuleFragment",
    "CertificateError",
    "DecodeError",
    "DecryptionError",
    "DeviceCertificate",
    "DeviceKeys",
    "DeviceSecrets",
    "FragmentError",
    "GrantShare",
    "Kek",
    "KeyCapsule",
    "NodeSecrets",
    "PreError",
    "Revocation",
    "RevocationReceipt",
    "Role",
    "SealedSnapshot",
    "ShareRef",
    "SignatureError",
    "SnapshotHeader",
    "VerifiedCapsuleFragment",
    "VerifiedGrantShare",
    "account_id_for",
    "attest_grant_share",
    "certify_device",
    "content_digest",
    "create_key_capsule",
    "device_id_for",
    "epoch_authenticator_hash",
    "label_for_group",
    "make_grant",
    "node_id_for",
    "open_key_capsule",
    "open_key_capsule_as_owner",
    "open_snapshot",
    "open_with_passphrase",
    "reencrypt",
    "register_account",
    "restore_grant_share",
    "revoke_device",
    "seal_snapshot",
    "seal_with_passphrase",
    "verify_capsule_fragment",
    "verify_grant_share",
]

"""Wire models of the `/v1` API (JSON bodies; bytes as unpadded base64url).

Every model is frozen and forbids unknown fields; every string, byte field and list is
bounded, so validation alone caps what a request can make a node hold or compute. The
records inside the byte fields are `pre` encodings, checked again by the service.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pre import LABEL_PATTERN, MAX_GROUP_ID_SIZE, MAX_SNAPSHOT_PLAINTEXT, SNAPSHOT_RECEIPT_SIZE

from .b64 import Base64Url
from .codes import Code, PublishStatus, parse_code

__all__ = [
    "MAX_BATCH",
    "MAX_GROUP_ID_SIZE",
    "AccountId",
    "AccountInfo",
    "CapsuleEntry",
    "CapsuleList",
    "ConfirmItem",
    "ConfirmRequest",
    "ConfirmResponse",
    "ConfirmResult",
    "DeviceCertificateBody",
    "DeviceEntry",
    "DeviceId",
    "DeviceList",
    "GrantList",
    "GrantShareBody",
    "KeyCapsuleBody",
    "Label",
    "ManifestBody",
    "ManifestInfo",
    "NodeInfo",
    "NodeLimits",
    "Problem",
    "PublishRequest",
    "PublishResponse",
    "PublishResult",
    "PublishStatus",
    "PurgeBody",
    "PurgeReceiptBody",
    "Receipt",
    "ReencryptItem",
    "ReencryptRequest",
    "ReencryptResponse",
    "ReencryptResult",
    "RegisterAccountRequest",
    "RevocationBody",
    "RevocationReceiptBody",
    "SnapshotBody",
    "SnapshotItem",
    "SnapshotPage",
    "SnapshotQuery",
]

MAX_BATCH = 256  # snapshots per publish, capsules per re-encryption request
MAX_PAGE = 500
# A page of snapshots carries at most this much sealed data (always at least one item), so
# an answer stays under what a device reads (64 MiB by default, with base64 and JSON).
MAX_PAGE_DATA_BYTES = 32 * 1024 * 1024
MAX_SNAPSHOT_BYTES = MAX_SNAPSHOT_PLAINTEXT + 4096  # ciphertext plus header and signature
# Receipts per snapshot a node keeps and serves: its own plus other nodes' (a confirmation
# needs M; more than this many nodes per account is not a use case).
MAX_RECEIPTS = 32

AccountId = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="hex account id")]
DeviceId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="hex device id")]
Label = Annotated[str, Field(pattern=f"^(?:{LABEL_PATTERN})$", max_length=180)]
KeyEpoch = Annotated[int, Field(ge=0, lt=1 << 32)]
Kind = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
Seq = Annotated[int, Field(ge=0, lt=1 << 53)]


class _Model(BaseModel):
    # strict: a JSON integer field takes only a JSON integer (not `true`, `1.0` or "1"),
    # as its schema says; one accepted form, like the base64url fields.
    model_config = ConfigDict(frozen=True, extra="forbid", str_max_length=4096, strict=True)


class Problem(_Model):
    """RFC 9457 problem details, plus a stable machine `code`."""

    model_config = ConfigDict(frozen=True, extra="allow")
    type: str
    title: str
    status: int
    detail: str | None = None
    code: str
    current_epoch: int | None = None
    # 410 account_deleted: the admin's signed order, the proof a device believes
    deletion: Annotated[bytes, Base64Url(1024, 1)] | None = None


# accounts and devices


class RegisterAccountRequest(_Model):
    account: Annotated[bytes, Base64Url(512)]
    admin_certificate: Annotated[bytes, Base64Url(1024)]


class AccountInfo(_Model):
    account_id: AccountId
    account: Annotated[bytes, Base64Url(512)]


class DeviceEntry(_Model):
    device_id: DeviceId
    certificate: Annotated[bytes, Base64Url(1024)]
    revocation: Annotated[bytes, Base64Url(512)] | None = None


class DeviceList(_Model):
    devices: list[DeviceEntry]


class DeviceCertificateBody(_Model):
    certificate: Annotated[bytes, Base64Url(1024)]


class RevocationBody(_Model):
    revocation: Annotated[bytes, Base64Url(512)]


class RevocationReceiptBody(_Model):
    receipt: Annotated[bytes, Base64Url(256 * 1024)]


class AccountDeletionBody(_Model):
    deletion: Annotated[bytes, Base64Url(1024, 1)]


class DeletionReceiptBody(_Model):
    receipt: Annotated[bytes, Base64Url(1024, 1)]
    deletion: Annotated[bytes, Base64Url(1024, 1)]  # the deletion in force, which it names


# key capsules and grants


class KeyCapsuleBody(_Model):
    capsule: Annotated[bytes, Base64Url(1024)]


class CapsuleEntry(_Model):
    label: Label
    key_epoch: KeyEpoch
    current: bool
    capsule: Annotated[bytes, Base64Url(1024)]


class CapsuleList(_Model):
    capsules: list[CapsuleEntry]


class GrantShareBody(_Model):
    share: Annotated[bytes, Base64Url(2048)]


class GrantList(_Model):
    """GrantShare records, as their admin signed them (the admin verifies each)."""

    grants: list[Annotated[bytes, Base64Url(2048)]]


# the account manifest and purges

MAX_MANIFEST_BYTES = 8 * 1024 * 1024


class ManifestBody(_Model):
    """An `AccountManifest` (whole) or a `ManifestUpdate` (the changes from the stored
    version), as the admin signed it."""

    manifest: Annotated[bytes, Base64Url(MAX_MANIFEST_BYTES, 1)]


class ManifestInfo(_Model):
    version: Annotated[int, Field(ge=1, lt=1 << 64)]
    digest: Annotated[bytes, Base64Url(32, 32)]
    manifest: Annotated[bytes, Base64Url(MAX_MANIFEST_BYTES, 1)]


class PurgeBody(_Model):
    purge: Annotated[bytes, Base64Url(1024, 1)]


class PurgeReceiptBody(_Model):
    receipt: Annotated[bytes, Base64Url(1024, 1)]


# snapshots


class PublishRequest(_Model):
    snapshots: Annotated[
        list[Annotated[bytes, Base64Url(MAX_SNAPSHOT_BYTES, 1)]],
        Field(min_length=1, max_length=MAX_BATCH),
    ]


class SnapshotBody(_Model):
    snapshot: Annotated[bytes, Base64Url(MAX_SNAPSHOT_BYTES, 1)]


Receipt = Annotated[bytes, Base64Url(SNAPSHOT_RECEIPT_SIZE, SNAPSHOT_RECEIPT_SIZE)]
"""A `pre.SnapshotReceipt`: a node's signed statement that it holds a snapshot."""


class PublishResult(_Model):
    status: PublishStatus
    seq: Seq | None = None
    receipt: Receipt | None = None  # stored or duplicate: the node's receipt
    code: str | None = None
    detail: str | None = None
    current_epoch: int | None = None
    # quota_exceeded: which quota (a `codes.Quota` value) and its value on this node
    quota: Annotated[str, Field(max_length=32)] | None = None
    limit: Annotated[int, Field(ge=0, lt=1 << 63)] | None = None

    @property
    def error_code(self) -> Code | None:
        return None if self.code is None else parse_code(self.code)


class PublishResponse(_Model):
    results: list[PublishResult]


class SnapshotQuery(_Model):
    """`order=asc` pages up from `after` (a sync cursor, default 0); `order=desc` pages down
    from `before` (default: the newest), as onboarding does. `data=false` lists metadata
    and digests only, for cross-checking one node's listing against another's."""

    model_config = ConfigDict(strict=False)  # query values arrive as text: "100", "false"

    order: Literal["asc", "desc"] = "asc"
    after: Seq | None = None
    before: Seq | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 100
    group: Annotated[bytes, Base64Url(MAX_GROUP_ID_SIZE, 1)] | None = None
    data: bool = True
    receipts: bool = True  # false: items without their receipts (a cross-check's listing)

    @model_validator(mode="after")
    def _cursor_matches_order(self) -> SnapshotQuery:
        if (self.order == "asc" and self.before is not None) or (
            self.order == "desc" and self.after is not None
        ):
            raise ValueError("use `after` with order=asc and `before` with order=desc")
        return self


class SnapshotItem(_Model):
    seq: Seq
    label: Label
    key_epoch: KeyEpoch
    group_id: Annotated[bytes, Base64Url(MAX_GROUP_ID_SIZE, 1)]
    kind: Kind
    mls_epoch: Annotated[int, Field(ge=0, lt=1 << 64)]
    digest: Annotated[bytes, Base64Url(32, 32)]
    snapshot: Annotated[bytes, Base64Url(MAX_SNAPSHOT_BYTES, 1)] | None = None
    # The serving node's receipt, then the other nodes' receipts it was given.
    receipts: Annotated[list[Receipt], Field(max_length=MAX_RECEIPTS)] = []


class SnapshotPage(_Model):
    items: list[SnapshotItem]
    next_cursor: Seq | None = Field(
        description="pass as `after` (ascending) or `before` (newest first); null: no more"
    )
    head: Seq = Field(description="the account's newest sequence number: a sync cursor")


class ConfirmItem(_Model):
    """Other nodes' receipts for one snapshot this node holds, named by its address."""

    group_id: Annotated[bytes, Base64Url(MAX_GROUP_ID_SIZE, 1)]
    kind: Kind
    mls_epoch: Annotated[int, Field(ge=0, lt=1 << 53)]
    digest: Annotated[bytes, Base64Url(32, 32)]
    receipts: Annotated[list[Receipt], Field(min_length=1, max_length=MAX_RECEIPTS)]


class ConfirmRequest(_Model):
    items: Annotated[list[ConfirmItem], Field(min_length=1, max_length=MAX_BATCH)]


class ConfirmResult(_Model):
    status: Literal["stored", "kept", "not_found", "rejected"]
    code: str | None = None
    detail: str | None = None


class ConfirmResponse(_Model):
    results: list[ConfirmResult]


# re-encryption


class ReencryptItem(_Model):
    label: Label
    key_epoch: KeyEpoch


class ReencryptRequest(_Model):
    """Omit `items` to re-encrypt every capsule the calling device holds a grant for."""

    items: Annotated[list[ReencryptItem], Field(max_length=MAX_BATCH)] | None = None


class ReencryptResult(_Model):
    label: Label
    key_epoch: KeyEpoch
    fragment: Annotated[bytes, Base64Url(2048)] | None = None
    code: str | None = None
    detail: str | None = None

    @property
    def error_code(self) -> Code | None:
        return None if self.code is None else parse_code(self.code)


class ReencryptResponse(_Model):
    node_id: str
    share_index: int
    results: list[ReencryptResult]


Count = Annotated[int, Field(ge=1, lt=1 << 53)]


class NodeLimits(_Model):
    """What this node takes, so a device checks before it uploads. A newer node may name
    more limits: unknown members are ignored, not refused."""

    model_config = ConfigDict(frozen=True, extra="ignore", str_max_length=4096, strict=True)

    max_body_bytes: Count
    largest_state: Count = Field(
        description="the largest plaintext state a publish carries (`protocol.limits`)"
    )
    max_batch: Count
    quota_groups: Count = Field(description="groups with stored snapshots per account")
    quota_stored_bytes: Count = Field(
        description="bytes stored per account: each snapshot's sealed bytes, the receipts "
        "kept with it and `SNAPSHOT_OVERHEAD` (`protocol.limits`)"
    )
    register_per_hour: Count = Field(description="registrations per client address and hour")


class NodeInfo(_Model):
    node_id: str
    public_key: Annotated[bytes, Base64Url(32, 32)]
    share_index: int
    version: str
    limits: NodeLimits | None = None  # absent from nodes before limits were advertised

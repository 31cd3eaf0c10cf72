"""What `statecache device approve` and `device revoke` print beyond their fields."""

from __future__ import annotations

from collections.abc import Sequence

from .admin import Approval
from .output import Result, timestamp

__all__ = ["ALREADY_REVOKED", "approval_result"]

ALREADY_REVOKED = (
    "Already revoked: nothing was rotated (its revocation was only re-sent to any node "
    "that missed it). --force rotates every label again."
)


def approval_result(approval: Approval, labels: Sequence[str], *, checked: bool) -> Result:
    cert = approval.certificate
    until = timestamp(approval.grants_until)
    notes = []
    if approval.renewed:
        notes.append(f"Renewed: this device was approved before; its grants now run to {until}.")
    if not checked:
        notes.append(
            f"Check that the new device shows the fingerprint {approval.fingerprint}; if it "
            f"does not, revoke it now: statecache device revoke {cert.device_id.hex()}"
        )
    return Result(
        nodes=approval.nodes,
        fields={
            "device_id": cert.device_id.hex(),
            "name": cert.name,
            "fingerprint": approval.fingerprint,
            "role": cert.role.name.lower(),
            "labels": sorted(labels),
            "renewed": approval.renewed,
            "valid_until": timestamp(cert.not_after),
            "grants_until": until,
            "upload_bytes": approval.upload_bytes,
        },
        notes=notes,
    )

"""Domain errors of the node. Each carries a stable machine code and an HTTP status; the
one middleware in `middleware.py` turns them into RFC 9457 problem+json. Storage and the
service layer raise these, never HTTP exceptions."""

from __future__ import annotations

from typing import Any

from .protocol.b64 import encode_b64url
from .protocol.codes import STATUS, TITLES, Code

__all__ = ["Code", "ServiceError", "deleted_error"]


class ServiceError(Exception):
    """A refusal the caller can act on. `detail` must be safe to show the caller."""

    def __init__(self, code: Code, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or TITLES[code])
        self.code = code
        self.detail = detail
        self.extra = extra

    @property
    def status(self) -> int:
        return STATUS[self.code]

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"urn:statecache:problem:{self.code.value}",
            "title": TITLES[self.code],
            "status": self.status,
            "code": self.code.value,
        }
        if self.detail:
            body["detail"] = self.detail
        body.update(self.extra)
        return body


def deleted_error(order: bytes) -> ServiceError:
    """410 for a deleted account, carrying the admin's signed order as proof: a device
    believes "deleted" only with it."""
    return ServiceError(
        Code.ACCOUNT_DELETED,
        "this account was deleted from this node",
        deletion=encode_b64url(order),
    )

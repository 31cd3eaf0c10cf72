"""Request authentication (the statecache RFC 9421 profile) and the `Caller` it yields."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

import pre

from ..errors import Code, ServiceError, deleted_error
from ..protocol.httpsig import SignatureFormatError, parse_signature_headers, signature_base
from ..storage import Storage
from .records import Clock


@dataclass(frozen=True)
class Caller:
    """An authenticated, certified, unrevoked device of `account_id`."""

    account_id: str
    account: pre.AccountRecord
    device: pre.DeviceCertificate
    account_bytes: bytes
    certificate_bytes: bytes

    @property
    def device_id(self) -> str:
        return self.device.device_id.hex()

    @property
    def is_admin(self) -> bool:
        return self.device.role is pre.Role.ADMIN

    def require_admin(self) -> None:
        if not self.is_admin:
            raise ServiceError(Code.FORBIDDEN, "this action needs an admin device")


@dataclass(frozen=True)
class SignedRequest:
    method: str
    path: str
    query: str
    body: bytes
    content_digest: str | None
    signature_input: str | None
    signature: str | None


class Authenticator:
    def __init__(
        self,
        storage: Storage,
        *,
        clock: Clock,
        skew_seconds: int,
        rate_per_minute: int,
        node_id: str,
    ) -> None:
        self._storage = storage
        self._node_id = node_id
        self._clock = clock
        self._skew = skew_seconds
        self._rate = rate_per_minute

    async def authenticate(self, account_id: str, request: SignedRequest) -> Caller:
        try:
            parsed = parse_signature_headers(
                request.signature_input, request.signature, request.content_digest
            )
        except SignatureFormatError as exc:
            raise ServiceError(Code.UNAUTHENTICATED, str(exc)) from exc
        if not hmac.compare_digest(parsed.node_id, self._node_id):
            # Signed for another node: a replay of what that node received, or a device
            # that pinned another key for this address.
            raise ServiceError(
                Code.WRONG_NODE,
                f"this request is signed for node {parsed.node_id}; this node is {self._node_id}",
            )
        assert request.content_digest is not None  # checked by the parser
        if not hmac.compare_digest(pre.content_digest(request.body), request.content_digest):
            raise ServiceError(Code.UNAUTHENTICATED, "Content-Digest does not match the body")
        now = int(self._clock())
        if abs(now - parsed.created) > self._skew:
            raise ServiceError(Code.CLOCK_SKEW, f"created must be within {self._skew} s of now")

        state = await self._storage.auth_state(account_id, parsed.keyid)
        if state.deleted is not None:
            raise deleted_error(state.deleted)
        # One answer for unknown account, unknown device and bad signature: no oracle.
        if state.account is None or state.device is None:
            raise ServiceError(Code.UNAUTHENTICATED, "signature does not verify")
        try:
            account = pre.AccountRecord.from_bytes(state.account)
            device = pre.DeviceCertificate.from_bytes(state.device.certificate)
            values = {
                "@method": request.method,
                "@path": request.path,
                "@query": request.query,
                "content-digest": request.content_digest,
            }
            base = signature_base(parsed.profile, values, parsed.params)
            device.verify_request(base, parsed.signature)
        except (pre.PreError, SignatureFormatError) as exc:
            raise ServiceError(Code.UNAUTHENTICATED, "signature does not verify") from exc
        if state.device.revocation is not None:
            raise ServiceError(Code.DEVICE_REVOKED, "this device is revoked")
        try:
            device.verify(account, now=now)
        except pre.PreError as exc:
            raise ServiceError(Code.FORBIDDEN, "device certificate is not valid now") from exc

        # The nonce must outlive the request's acceptance: `created` passes while
        # int(now) <= created + skew, i.e. until created + skew + 1; one second of margin.
        ttl = max(1, parsed.created + self._skew + 2 - now)
        if not await self._storage.claim_nonce(account_id, parsed.keyid, parsed.nonce, ttl):
            raise ServiceError(Code.REPLAYED, "this request was already received")
        if (
            await self._storage.count_request(account_id, parsed.keyid, window=60, now=now)
            > self._rate
        ):
            raise ServiceError(
                Code.RATE_LIMITED, "per-device request rate exceeded", retry_after=60
            )
        return Caller(account_id, account, device, state.account, state.device.certificate)

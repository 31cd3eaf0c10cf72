"""A typed client for one node's `/v1` API, signing every request as one device.

Threshold logic across nodes lives above this; here is one node, one device, the wire
models, and the mapping of problem responses to `client_sdk.errors`. Every signed request
is bound to the node's id (signature profile 2), learnt from `GET /v1/node` and checked
against the key pinned for this address; an answer is read only up to `max_answer_bytes`
and must match its wire model, else the node is a suspect (`BadAnswer`).
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import aiohttp
from pydantic import BaseModel, ValidationError

import pre
from cache_service.protocol import models as m
from cache_service.protocol.b64 import encode_b64url
from cache_service.protocol.codes import Code, parse_code
from cache_service.protocol.httpsig import sign_request_headers

from .errors import BadAnswer, EpochConflict, NodeError, NodeTimeout, NodeUnavailable
from .output import escape
from .policy import RetryPolicy

__all__ = ["NodeClient"]

M = TypeVar("M", bound=BaseModel)
_CONFLICT_CODES = {Code.STALE_EPOCH, Code.STALE_KEY_EPOCH, Code.CONFLICT, Code.EPOCH_TOO_FAR}
_CHUNK = 1 << 16


class NodeClient:
    """One node, one device of one account. `clock` and `nonce` are injectable for tests.

    Bodies that are a single `pre` record go as the raw record (application/octet-stream);
    the rest as JSON."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        account_id: bytes | None = None,
        device: pre.DeviceSecrets | None = None,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        nonce: Callable[[], str] = lambda: secrets.token_urlsafe(18),
        pinned_key: bytes | None = None,
        share_index: int | None = None,
        keys_in_use: dict[bytes, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._account = None if account_id is None else account_id.hex()
        self._device = device
        self.policy = policy or RetryPolicy()
        self._timeout = aiohttp.ClientTimeout(
            total=self.policy.timeout,
            sock_connect=self.policy.connect_timeout,
            sock_read=self.policy.idle_timeout,
        )
        self._clock = clock
        self._nonce = nonce
        self.node_key = pinned_key  # the node's identity key: pinned, or learnt at first use
        self.share_index = share_index  # the share this node must hold (its position)
        self._identity_checked = False
        self.limits: m.NodeLimits | None = None  # as its `GET /v1/node` advertised them
        # Keys the other nodes of this session showed (key -> URL): one key, one position.
        self._keys_in_use = {} if keys_in_use is None else keys_in_use
        self._identity_lock = asyncio.Lock()
        self.bytes_sent = 0  # request bodies, for the cost reports of demo and bench
        self.bytes_received = 0

    @property
    def node_id(self) -> str | None:
        return None if self.node_key is None else pre.node_id_for(self.node_key).hex()

    async def identity(self) -> bytes:
        """The node's key, checked once per client: `GET /v1/node` must show the pinned key
        (or pins it, at first contact) and this node's share index."""
        async with self._identity_lock:
            if self._identity_checked and self.node_key is not None:
                return self.node_key
            info = await self.node_info()
            if pre.node_id_for(info.public_key).hex() != info.node_id:
                raise BadAnswer("its node id is not derived from its key", self.base_url)
            if self.node_key is not None and not hmac.compare_digest(
                self.node_key, info.public_key
            ):
                raise BadAnswer(
                    "shows another identity key than the one pinned for it", self.base_url
                )
            if self.share_index is not None and info.share_index != self.share_index:
                raise BadAnswer(
                    f"holds share {info.share_index}, not share {self.share_index}",
                    self.base_url,
                )
            holder = self._keys_in_use.setdefault(info.public_key, self.base_url)
            if holder != self.base_url:
                # One of the two poses as the other, and nothing says which: neither is
                # used with that key.
                self._keys_in_use[info.public_key] = ""
                raise BadAnswer("shows the same identity key as another node", self.base_url)
            self.node_key, self._identity_checked = info.public_key, True
            self.limits = info.limits
            return info.public_key

    def _check_deleted(self, error: NodeError) -> None:
        """ "Deleted" is believed only with the admin's signed order for this account: a
        node saying so without it is lying (a stranger cannot make a device drop its
        home)."""
        order = error.problem.get("deletion")
        try:
            if not isinstance(order, bytes):
                raise BadAnswer("says the account was deleted, without the admin's order")
            deletion = pre.AccountDeletion.from_bytes(order).verify()
            if self._account is not None and deletion.account_id.hex() != self._account:
                raise BadAnswer("says the account was deleted, with another account's order")
        except pre.PreError as exc:
            raise BadAnswer(
                "says the account was deleted, with an order that does not verify",
                self.base_url,
            ) from exc
        except BadAnswer as exc:
            raise BadAnswer(exc.what, self.base_url) from None

    @property
    def _prefix(self) -> str:
        if self._account is None:
            raise ValueError("this client has no account")
        return f"/v1/accounts/{self._account}"

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: BaseModel | None = None,
        record: bytes | None = None,
        query: Mapping[str, str | int] | None = None,
        response: type[M] | None = None,
        signed: bool = True,
    ) -> M | None:
        payload = b"" if body is None else body.model_dump_json(exclude_none=True).encode()
        content_type = "application/json"
        if record is not None:
            payload, content_type = record, "application/octet-stream"
        query_string = urlencode(query or {})
        headers = {"Accept": "application/json"}
        if payload:
            headers["Content-Type"] = content_type
        if signed:
            if self._device is None:
                raise ValueError("this client has no device to sign with")
            node_key = await self.identity()
            if self._keys_in_use.get(node_key, self.base_url) != self.base_url:
                raise BadAnswer("another node showed this node's identity key", self.base_url)
            headers.update(
                sign_request_headers(
                    method=method,
                    path=path,
                    query=query_string,
                    content_digest=pre.content_digest(payload),
                    keyid=self._device.device_id.hex(),
                    created=int(self._clock()),
                    nonce=self._nonce(),
                    node_id=pre.node_id_for(node_key).hex(),
                    sign=self._device.sign_request,
                )
            )
        url = self.base_url + path + ("?" + query_string if query_string else "")
        try:
            async with self._session.request(
                method,
                url,
                data=payload or None,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,  # a node answers for itself
            ) as resp:
                raw = await self._read_capped(resp)
                status = resp.status
            self.bytes_sent += len(payload)
            self.bytes_received += len(raw)
        except TimeoutError as exc:
            raise NodeTimeout(
                self.base_url, f"timed out (no answer within {self.policy.idle_timeout:g} s)"
            ) from exc
        except aiohttp.ClientError as exc:
            raise NodeUnavailable(self.base_url, _reason(exc)) from exc
        if status >= 400:
            error = _problem(self.base_url, status, raw)
            if error.code is Code.ACCOUNT_DELETED:
                self._check_deleted(error)
            raise error
        if response is None:
            return None
        try:
            return response.model_validate_json(raw)
        except ValidationError as exc:
            raise BadAnswer(f"its answer to {method} {path} is off the API", self.base_url) from exc

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        cap = self.policy.max_answer_bytes
        if resp.content_length is not None and resp.content_length > cap:
            raise BadAnswer(
                f"announced an answer of {resp.content_length:,} bytes, more than {cap:,}",
                self.base_url,
            )
        body = bytearray()
        while chunk := await resp.content.read(_CHUNK):
            body += chunk
            if len(body) > cap:
                raise BadAnswer(f"sent an answer of more than {cap:,} bytes", self.base_url)
        return bytes(body)

    async def _call(self, method: str, path: str, response: type[M], **kw: Any) -> M:
        result = await self.request(method, path, response=response, **kw)
        assert result is not None
        return result

    # public

    async def node_info(self) -> m.NodeInfo:
        return await self._call("GET", "/v1/node", m.NodeInfo, signed=False)

    async def register_account(
        self, account: pre.AccountRecord, admin: pre.DeviceCertificate
    ) -> m.AccountInfo:
        body = m.RegisterAccountRequest(
            account=account.to_bytes(), admin_certificate=admin.to_bytes()
        )
        return await self._call("POST", "/v1/accounts", m.AccountInfo, body=body, signed=False)

    # accounts and devices

    async def get_account(self) -> m.AccountInfo:
        return await self._call("GET", self._prefix, m.AccountInfo)

    async def list_devices(self) -> m.DeviceList:
        return await self._call("GET", self._prefix + "/devices", m.DeviceList)

    async def put_device(self, certificate: pre.DeviceCertificate) -> m.DeviceEntry:
        path = f"{self._prefix}/devices/{certificate.device_id.hex()}"
        return await self._call("PUT", path, m.DeviceEntry, record=certificate.to_bytes())

    async def revoke(self, revocation: pre.Revocation) -> pre.RevocationReceipt:
        path = f"{self._prefix}/devices/{revocation.device_id.hex()}/revocation"
        answer = await self._call(
            "POST", path, m.RevocationReceiptBody, record=revocation.to_bytes()
        )
        try:
            return pre.RevocationReceipt.from_bytes(answer.receipt)
        except pre.PreError as exc:
            raise BadAnswer("its revocation receipt does not decode", self.base_url) from exc

    # the account manifest and purges

    async def get_manifest(self) -> m.ManifestInfo:
        return await self._call("GET", self._prefix + "/manifest", m.ManifestInfo)

    async def put_manifest(
        self, manifest: pre.AccountManifest | pre.ManifestUpdate
    ) -> m.ManifestInfo:
        """A whole manifest, or an update of the version this node holds."""
        path = self._prefix + "/manifest"
        return await self._call("PUT", path, m.ManifestInfo, record=manifest.to_bytes())

    async def purge(self, purge: pre.Purge) -> pre.PurgeReceipt:
        answer = await self._call(
            "POST", self._prefix + "/purges", m.PurgeReceiptBody, record=purge.to_bytes()
        )
        try:
            return pre.PurgeReceipt.from_bytes(answer.receipt)
        except pre.PreError as exc:
            raise BadAnswer("its purge receipt does not decode", self.base_url) from exc

    async def delete_account(
        self, deletion: pre.AccountDeletion
    ) -> tuple[pre.DeletionReceipt, pre.AccountDeletion]:
        """Unsigned: the root-signed deletion is the authority. Returns the node's receipt
        and the deletion in force there, decoded (the caller verifies them)."""
        answer = await self._call(
            "POST", self._prefix + "/deletion", m.DeletionReceiptBody,
            record=deletion.to_bytes(), signed=False,
        )  # fmt: skip
        try:
            receipt = pre.DeletionReceipt.from_bytes(answer.receipt)
            return receipt, pre.AccountDeletion.from_bytes(answer.deletion)
        except pre.PreError as exc:
            raise BadAnswer("its deletion receipt does not decode", self.base_url) from exc

    # key capsules and grants

    async def put_capsule(self, capsule: pre.KeyCapsule) -> m.CapsuleEntry:
        path = f"{self._prefix}/capsules/{quote(capsule.label, safe=':')}/{capsule.key_epoch}"
        return await self._call("PUT", path, m.CapsuleEntry, record=capsule.to_bytes())

    async def list_capsules(self) -> m.CapsuleList:
        return await self._call("GET", self._prefix + "/capsules", m.CapsuleList)

    async def device_grants(self, device_id: bytes) -> list[bytes]:
        """This node's unexpired grant shares for a device (admin), as encoded records:
        the caller decodes and verifies them."""
        path = f"{self._prefix}/devices/{device_id.hex()}/grants"
        return (await self._call("GET", path, m.GrantList)).grants

    async def put_grant(self, share: pre.GrantShare) -> None:
        path = (
            f"{self._prefix}/grants/{share.device_id.hex()}/"
            f"{quote(share.label, safe=':')}/{share.key_epoch}"
        )
        await self.request("PUT", path, record=share.to_bytes())

    # snapshots

    async def publish(self, snapshots: list[pre.SealedSnapshot]) -> m.PublishResponse:
        body = m.PublishRequest(snapshots=[s.to_bytes() for s in snapshots])
        return await self._call("POST", self._prefix + "/snapshots", m.PublishResponse, body=body)

    async def confirm(self, items: list[m.ConfirmItem]) -> m.ConfirmResponse:
        body = m.ConfirmRequest(items=items)
        return await self._call(
            "POST", self._prefix + "/confirmations", m.ConfirmResponse, body=body
        )

    async def put_snapshot(self, snapshot: pre.SealedSnapshot) -> m.PublishResult:
        header = snapshot.header
        path = f"{self._prefix}/groups/{encode_b64url(header.group_id)}/{header.kind}"
        return await self._call("PUT", path, m.PublishResult, record=snapshot.to_bytes())

    async def list_snapshots(
        self,
        *,
        order: str = "asc",
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
        group_id: bytes | None = None,
        data: bool = True,
        receipts: bool = True,
    ) -> m.SnapshotPage:
        query: dict[str, str | int] = {"order": order, "limit": limit}
        if not data:
            query["data"] = "false"
        if not receipts:
            query["receipts"] = "false"
        if after is not None:
            query["after"] = after
        if before is not None:
            query["before"] = before
        if group_id is not None:
            query["group"] = encode_b64url(group_id)
        return await self._call("GET", self._prefix + "/snapshots", m.SnapshotPage, query=query)

    async def list_metadata(
        self, *, after: int = 0, page_size: int = m.MAX_PAGE
    ) -> tuple[list[m.SnapshotItem], int]:
        """Every snapshot's metadata and digest after `after` (no data), and the head."""
        items: list[m.SnapshotItem] = []
        cursor: int | None = after
        head = after
        while cursor is not None:
            page = await self.list_snapshots(after=cursor, limit=page_size, data=False)
            items.extend(page.items)
            head, cursor = max(head, page.head), page.next_cursor
        return items, head

    async def reencrypt(self, items: list[tuple[str, int]] | None = None) -> m.ReencryptResponse:
        body = m.ReencryptRequest(
            items=None
            if items is None
            else [m.ReencryptItem(label=label, key_epoch=epoch) for label, epoch in items]
        )
        return await self._call("POST", self._prefix + "/reencrypt", m.ReencryptResponse, body=body)


def _problem(node: str, status: int, raw: bytes) -> NodeError:
    try:
        parsed = m.Problem.model_validate_json(raw)
        problem = parsed.model_dump()
        problem["deletion"] = parsed.deletion  # bytes, for `_check_deleted`
    except ValidationError:
        problem = {"code": Code.UNKNOWN.value, "detail": None}
    detail = problem.get("detail")
    if isinstance(detail, str):  # a node's words: one line, bounded, nothing invisible
        problem["detail"] = escape(" ".join(detail.split())[:300])
    if status == 409 and parse_code(problem.get("code")) in _CONFLICT_CODES:
        return EpochConflict(node, status, problem)
    return NodeError(node, status, problem)


def _reason(exc: aiohttp.ClientError) -> str:
    """What went wrong, in words (not aiohttp's class names)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):  # e.g. a private CA not
        detail = getattr(exc.certificate_error, "verify_message", None)  # trusted here
        return f"TLS certificate not trusted: {detail}" if detail else "TLS certificate not trusted"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS handshake failed"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "unknown host"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if exc.os_error.errno == errno.ECONNREFUSED:
            return "connection refused"
        return exc.os_error.strerror or "cannot connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "closed the connection without answering"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "broke off its answer"
    return "connection failed"

"""A reverse proxy in front of one real node that lies in its answers (tests only).

It forwards every request unchanged (it cannot re-sign one: it holds no device key) and
rewrites what the node answers, as a compromised node or a network attacker would. Each
attack is an attribute a test switches on; `tampered` counts the answers it altered, so a
test can check that the attack really happened before asserting it was detected.

Attacks:
- `cfrags`: "flip" one byte of each capsule fragment (at `flip_at`), replace it with
  "garbage", or "duplicate" each fragment entry in `/reencrypt` answers;
- `swap_snapshots`: swap the sealed snapshots of two items in a listing (headers included),
  `swap_ciphertexts`: swap only the ciphertexts inside them (headers and signatures kept);
- `roll_back`: serve, in place of each listed snapshot, the oldest one of the same
  (group, kind) this proxy saw earlier; `replay_listing`: answer every data listing with
  that stale listing, captured earlier from `listings`;
- `drop`: leave out listed items for which it returns True;
- `fake_digests`: list every snapshot with a made-up digest (a fork claim, unsigned);
- `inflate_epochs`: in metadata listings (`data=false`) only, claim each snapshot is that
  many MLS epochs newer (unsigned: a newer snapshot of every (group, kind) it lists, to
  make the real ones read as retained history);
- `hang`: accept the request and never answer (until the proxy is closed);
- `replay_reencrypt_to`: send the device's signed `/reencrypt` request, unchanged, to
  another node as well and answer with that node's fragments as its own (a cross-node
  replay); `foreign_fragments`: answer `/reencrypt` with the fragments of a captured
  answer of another node (`reencrypt_answers` keeps this node's), posing as this node;
- `endless`: page forever: "stuck" answers every page with a cursor that does not move,
  "forever" answers empty pages whose cursor creeps up by one (down, newest first);
- `pad_answers`: append that many bytes of white space to every JSON answer (still valid
  JSON: only a cap on answer sizes stops it);
- `extra_publish_result`: add one result to every publish answer;
- `fail_group_listing`: answer this status to every group listing (`?group=`);
- `pose_as_share`: with `upstream` set to another node, relay everything there and claim
  this share index (a node posing as another at a device's first contact);
  `close_after`: wait that long, then drop the connection unanswered;
- `hide_capsules`: leave out of `/capsules` listings every capsule whose label it returns
  True for; `hide_grants`: list no grant shares; `hide_revocations`: list devices without
  their revocations;
- `fake_deletion`: answer an account deletion with a receipt the node did not sign (its
  key named, another key's signature): a node claiming a deletion it cannot prove;
  `claim_deleted`: answer every account request 410 `account_deleted`, with this order
  (bytes) as its proof, or none (b"");
- `refuse_with`: answer every account request with this problem (its `status` the HTTP
  status): a node's words and codes of its choosing.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

import pre
from cache_service.protocol.b64 import decode_b64url, encode_b64url

__all__ = ["MaliciousProxy"]

_FORWARDED = ("Accept", "Content-Type", "Content-Digest", "Signature-Input", "Signature")
_MAX = 64 * 1024 * 1024

Item = dict[str, Any]


def _b(text: str) -> bytes:
    return decode_b64url(text, max_bytes=_MAX)


class MaliciousProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.url = ""
        # attacks, off by default
        self.cfrags: str | None = None
        self.flip_at = -1
        self.swap_snapshots = False
        self.swap_ciphertexts = False
        self.roll_back = False
        self.replay_listing: bytes | None = None
        self.drop: Callable[[Item], bool] | None = None
        self.fake_digests = False
        self.inflate_epochs = 0
        self.hang = False
        self.replay_reencrypt_to: str | None = None
        self.foreign_fragments: bytes | None = None
        self.endless: str | None = None
        self.pad_answers = 0
        self.stream_answers = False  # send answers chunked, with no length announced
        self.extra_publish_result = False
        self.fail_group_listing: int | None = None
        self.hide_capsules: Callable[[str], bool] | None = None
        self.hide_grants = False
        self.hide_revocations = False
        self.fake_deletion = False
        self.claim_deleted: bytes | None = None
        self.refuse_with: dict[str, Any] | None = None
        self.pose_as_share: int | None = None  # relay to `upstream`, claiming this share
        self.close_after: float | None = None  # wait, then drop the connection unanswered
        # what it saw and did
        self.tampered = 0
        self.hanging = 0
        self.listings: list[bytes] = []  # every data listing the node answered, in order
        self.reencrypt_answers: list[bytes] = []  # every /reencrypt answer, as the node sent it
        self.seen: dict[tuple[str, str], dict[int, Item]] = {}  # (group, kind) -> epoch -> item
        self._release = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application(client_max_size=_MAX)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def close(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def honest(self) -> None:
        """Switch every attack off."""
        self.cfrags = None
        self.swap_snapshots = self.swap_ciphertexts = self.roll_back = self.hang = False
        self.fake_digests = self.extra_publish_result = False
        self.inflate_epochs = 0
        self.replay_listing = self.replay_reencrypt_to = self.foreign_fragments = None
        self.drop = self.endless = self.fail_group_listing = self.hide_capsules = None
        self.pad_answers = 0
        self.hide_grants = self.hide_revocations = self.fake_deletion = False
        self.claim_deleted = self.refuse_with = None

    # forwarding

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.hang:
            self.hanging += 1
            await self._release.wait()
            return web.Response(status=503)
        if self.fail_group_listing is not None and "group" in request.query:
            self.tampered += 1
            return web.Response(status=self.fail_group_listing)
        body = await request.read()
        if self.refuse_with is not None and request.path.startswith("/v1/accounts/"):
            self.tampered += 1
            problem = {"type": "about:blank", "title": "no", **self.refuse_with}
            return web.json_response(
                problem, status=problem["status"], content_type="application/problem+json"
            )
        if self.claim_deleted is not None and request.path.startswith("/v1/accounts/"):
            self.tampered += 1
            problem = {"type": "urn:statecache:problem:account_deleted", "status": 410,
                       "title": "Account deleted", "code": "account_deleted"}  # fmt: skip
            if self.claim_deleted:
                problem["deletion"] = encode_b64url(self.claim_deleted)
            return web.json_response(problem, status=410, content_type="application/problem+json")
        if self.close_after is not None and request.path != "/v1/node":
            self.tampered += 1
            await asyncio.sleep(self.close_after)
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        if self.endless == "forever" and request.path.endswith("/snapshots"):
            # A lying node pages forever on its own: the node behind it (and its rate
            # limit) is never asked.
            self.tampered += 1
            if request.query.get("order") == "desc":  # creeping down instead
                cursor = int(request.query.get("before") or (1 << 53)) - 1
            else:
                cursor = int(request.query.get("after") or 0) + 1
            page = {"items": [], "next_cursor": cursor, "head": (1 << 53) - 1}
            return web.json_response(page)
        status, content_type, raw = await self._forward(self.upstream, request, body)
        if request.path.endswith("/reencrypt") and status == 200:
            self.reencrypt_answers.append(raw)
            if self.replay_reencrypt_to is not None:  # the same signed bytes, elsewhere
                self.tampered += 1
                status, content_type, other = await self._forward(
                    self.replay_reencrypt_to, request, body
                )
                raw = _as_answer_of(raw, other) if status == 200 else other
        posing = request.path == "/v1/node" or request.path.endswith("/reencrypt")
        if status == 200 and content_type == "application/json" and self.pose_as_share and posing:
            self.tampered += 1
            raw = json.dumps({**json.loads(raw), "share_index": self.pose_as_share}).encode()
        if status == 200 and content_type == "application/json":
            raw = self._rewrite(request, raw)
            if self.pad_answers:
                self.tampered += 1
                raw += b" " * self.pad_answers
        if self.stream_answers:
            response = web.StreamResponse(status=status, headers={"Content-Type": content_type})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for i in range(0, len(raw), 65536):
                await response.write(raw[i : i + 65536])
            await response.write_eof()
            return response
        return web.Response(body=raw, status=status, headers={"Content-Type": content_type})

    async def _forward(
        self, upstream: str, request: web.Request, body: bytes
    ) -> tuple[int, str, bytes]:
        assert self._session is not None
        headers = {k: request.headers[k] for k in _FORWARDED if k in request.headers}
        url = URL(upstream.rstrip("/") + request.raw_path, encoded=True)
        async with self._session.request(
            request.method, url, data=body or None, headers=headers, allow_redirects=False
        ) as answer:
            return answer.status, answer.content_type, await answer.read()

    def _rewrite(self, request: web.Request, raw: bytes) -> bytes:
        path = request.path
        if request.method == "POST" and path.endswith("/reencrypt"):
            return self._reencrypt(raw)
        if request.method == "GET" and path.endswith("/snapshots"):
            if self.endless is not None:
                return self._endless(request, raw)
            return self._listing(raw, data=request.query.get("data") != "false")
        if request.method == "GET" and path.endswith("/capsules") and self.hide_capsules:
            doc = json.loads(raw)
            kept = [c for c in doc["capsules"] if not self.hide_capsules(c["label"])]
            self.tampered += len(kept) != len(doc["capsules"])
            return json.dumps({**doc, "capsules": kept}).encode()
        if request.method == "GET" and path.endswith("/grants") and self.hide_grants:
            self.tampered += 1
            return json.dumps({"grants": []}).encode()
        if request.method == "GET" and path.endswith("/devices") and self.hide_revocations:
            doc = json.loads(raw)
            self.tampered += any(d.get("revocation") for d in doc["devices"])
            devices = [{**d, "revocation": None} for d in doc["devices"]]
            return json.dumps({"devices": devices}).encode()
        if request.method == "POST" and path.endswith("/deletion") and self.fake_deletion:
            doc = json.loads(raw)
            real = pre.DeletionReceipt.from_bytes(_b(doc["receipt"]))
            forged = pre.NodeSecrets.generate().sign_deletion_receipt(
                account_id=real.account_id, deletion=_b(doc["deletion"]),
                deleted=real.deleted, now=real.processed_at,
            )  # fmt: skip
            self.tampered += 1
            fake = forged.replace(node_key=real.node_key).to_bytes()
            return json.dumps({**doc, "receipt": encode_b64url(fake)}).encode()
        if request.method == "POST" and path.endswith("/snapshots") and self.extra_publish_result:
            doc = json.loads(raw)
            doc["results"].append(dict(doc["results"][-1]))
            self.tampered += 1
            return json.dumps(doc).encode()
        return raw

    def _endless(self, request: web.Request, raw: bytes) -> bytes:
        doc = json.loads(raw)
        self.tampered += 1
        if self.endless == "stuck":  # the same page, and a cursor that stays put
            start = request.query.get("after") or request.query.get("before")
            if start is not None:
                doc["next_cursor"] = int(start)
            elif doc["items"]:
                doc["next_cursor"] = doc["items"][-1]["seq"]
            else:
                doc["next_cursor"] = 1
        else:  # "forever": empty pages, always more
            after = int(request.query.get("after") or 0)
            doc.update(items=[], next_cursor=after + 1, head=(1 << 53) - 1)
        return json.dumps(doc).encode()

    # /reencrypt

    def _reencrypt(self, raw: bytes) -> bytes:
        if self.foreign_fragments is not None:
            self.tampered += 1
            raw = _as_answer_of(raw, self.foreign_fragments)
        if self.cfrags is None:
            return raw
        doc = json.loads(raw)
        results: list[Item] = []
        for result in doc["results"]:
            if result.get("fragment") is None:
                results.append(result)
                continue
            if self.cfrags == "duplicate":
                results += [result, dict(result)]
            else:
                results.append({**result, "fragment": encode_b64url(self._corrupt(result))})
        doc["results"] = results
        self.tampered += 1
        return json.dumps(doc).encode()

    def _corrupt(self, result: Item) -> bytes:
        fragment = pre.CapsuleFragment.from_bytes(_b(result["fragment"]))
        cfrag = bytearray(fragment.cfrag)
        if self.cfrags == "garbage":
            cfrag = bytearray(os.urandom(len(cfrag)))
        else:
            cfrag[self.flip_at] ^= 0x01
        # Still a well-formed record: only the Umbral proof can tell.
        return fragment.replace(cfrag=bytes(cfrag)).to_bytes()

    # /snapshots

    def _listing(self, raw: bytes, *, data: bool) -> bytes:
        doc = json.loads(raw)
        items: list[Item] = doc["items"]
        if data:
            self.listings.append(raw)
            for item in items:
                if item.get("snapshot") is not None:
                    key = (item["group_id"], item["kind"])
                    self.seen.setdefault(key, {}).setdefault(item["mls_epoch"], dict(item))
            if self.replay_listing is not None:
                self.tampered += 1
                return self.replay_listing
        before = json.dumps(doc)
        if self.drop is not None:
            items = [i for i in items if not self.drop(i)]
        full = [i for i in items if i.get("snapshot") is not None]
        if self.roll_back:
            items = [self._older(i) for i in items]
        if self.fake_digests:
            items = [{**i, "digest": encode_b64url(os.urandom(32))} for i in items]
            full = [i for i in items if i.get("snapshot") is not None]
        if self.inflate_epochs and not data:
            items = [{**i, "mls_epoch": i["mls_epoch"] + self.inflate_epochs} for i in items]
        if (self.swap_snapshots or self.swap_ciphertexts) and len(full) >= 2:
            a, b = full[0], full[1]
            if self.swap_snapshots:
                a["snapshot"], b["snapshot"] = b["snapshot"], a["snapshot"]
            else:
                sa = pre.SealedSnapshot.from_bytes(_b(a["snapshot"]))
                sb = pre.SealedSnapshot.from_bytes(_b(b["snapshot"]))
                a["snapshot"] = encode_b64url(sa.replace(ciphertext=sb.ciphertext).to_bytes())
                b["snapshot"] = encode_b64url(sb.replace(ciphertext=sa.ciphertext).to_bytes())
        doc["items"] = items
        after = json.dumps(doc)
        if after != before:
            self.tampered += 1
        return after.encode()

    def _older(self, item: Item) -> Item:
        seen = self.seen.get((item["group_id"], item["kind"]), {})
        older = [e for e in seen if e < item["mls_epoch"]]
        if not older:
            return item
        stale = seen[min(older)]
        if item.get("snapshot") is None:
            return {**stale, "seq": item["seq"], "snapshot": None}
        return {**stale, "seq": item["seq"]}


def _as_answer_of(own: bytes, other: bytes) -> bytes:
    """`other`'s re-encryption results under `own`'s node id and share index."""
    mine, theirs = json.loads(own), json.loads(other)
    return json.dumps(
        {**theirs, "node_id": mine["node_id"], "share_index": mine["share_index"]}
    ).encode()

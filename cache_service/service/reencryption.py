"""Re-encrypting, in one request, every key capsule the calling device holds a grant for."""

from __future__ import annotations

from ..crypto_pool import ReencryptPool
from ..errors import Code
from ..protocol import models as m
from ..storage import Storage
from .auth import Caller
from .records import Clock


class ReencryptionService:
    def __init__(
        self,
        storage: Storage,
        pool: ReencryptPool,
        *,
        clock: Clock,
        share_index: int,
        node_id: str,
    ) -> None:
        self._storage = storage
        self._pool = pool
        self._clock = clock
        self._share_index = share_index
        self._node_id = node_id

    async def reencrypt(self, caller: Caller, body: m.ReencryptRequest) -> m.ReencryptResponse:
        """Only the caller's own unexpired grants are used; one result per item."""
        grants = {
            (g.label, g.key_epoch): g.share
            for g in await self._storage.list_grants(caller.account_id, caller.device_id)
        }
        wanted = (
            sorted(grants)
            if body.items is None
            else list(dict.fromkeys((i.label, i.key_epoch) for i in body.items))
        )
        capsules = await self._storage.get_capsules(
            caller.account_id, [key for key in wanted if key in grants]
        )
        work = {key: (grants[key], c) for key, c in capsules.items() if c is not None}
        done = await self._pool.run(
            caller.certificate_bytes, self._share_index, int(self._clock()), list(work.values())
        )
        by_key = dict(zip(work, done, strict=True))

        results = []
        for label, epoch in wanted:
            fragment, code = by_key.get((label, epoch), (None, Code.NO_GRANT))
            results.append(
                m.ReencryptResult(
                    label=label,
                    key_epoch=epoch,
                    fragment=fragment,
                    code=code,
                    detail=None if code is None else _DETAILS.get(code),
                )
            )
        return m.ReencryptResponse(
            node_id=self._node_id, share_index=self._share_index, results=results
        )


_DETAILS = {
    Code.NO_GRANT: "this device holds no unexpired grant for this label and key epoch here",
    Code.GRANT_NOT_APPLICABLE: "the grant has expired or does not match the stored capsule",
    Code.GRANT_INVALID: "the stored grant could not be used",
}

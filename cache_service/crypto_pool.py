"""Re-encryption off the event loop.

umbral-pre holds the GIL while it computes, so threads would not add throughput: batches
go to a process pool sized to the cores. Each worker holds the node's attestation key
(given once, at start) and re-checks every stored share's attestation and binding before
re-encrypting with it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor
from functools import lru_cache

import pre

from .protocol.codes import Code

__all__ = ["ReencryptPool", "WorkItem", "WorkResult"]

# (stored share: attestation || GrantShare, KeyCapsule) -> (CapsuleFragment, error code)
WorkItem = tuple[bytes, bytes]
WorkResult = tuple[bytes | None, Code | None]

ATTESTATION_SIZE = 32  # stored grant values: this node's attestation, then the share
_MIN_CHUNK = 8

_node: pre.NodeSecrets | None = None


def _init_worker(node_seed: bytes) -> None:
    global _node  # noqa: PLW0603 - per-process state set once by the pool initializer
    _node = pre.NodeSecrets(node_seed)


def reencrypt_batch(
    certificate: bytes, share_index: int, now: int, items: list[WorkItem]
) -> list[WorkResult]:
    """Runs in a worker, with the node key its initializer set."""
    assert _node is not None, "worker not initialised"
    return _reencrypt_batch(_node, certificate, share_index, now, items)


def _reencrypt_batch(
    node: pre.NodeSecrets, certificate: bytes, share_index: int, now: int, items: list[WorkItem]
) -> list[WorkResult]:
    """Each item fails on its own, as a short error code."""
    device = _certificate(certificate)
    out: list[WorkResult] = []
    for stored, capsule_bytes in items:
        try:
            share = _share(stored[ATTESTATION_SIZE:])
            capsule = _capsule(capsule_bytes)
            verified = pre.restore_grant_share(
                node,
                share,
                stored[:ATTESTATION_SIZE],
                capsule=capsule,
                device=device,
                share_index=share_index,
                now=now,
            )
            out.append((pre.reencrypt(capsule, verified).to_bytes(), None))
        except pre.BindingError:
            out.append((None, Code.GRANT_NOT_APPLICABLE))
        except pre.PreError:
            out.append((None, Code.GRANT_INVALID))
    return out


# Decoded records by their bytes. Records are immutable, and each caches its parsed Umbral
# object, so a capsule that many devices ask for (one per label) is parsed once per worker.
# Every check that depends on the caller or the time still runs on every request.
_certificate = lru_cache(maxsize=1024)(pre.DeviceCertificate.from_bytes)
_share = lru_cache(maxsize=8192)(pre.GrantShare.from_bytes)
_capsule = lru_cache(maxsize=8192)(pre.KeyCapsule.from_bytes)


class ReencryptPool:
    """`workers` processes; 0 runs batches inline (tests and tiny deployments), with this
    pool's own node key: several nodes can then share one process."""

    def __init__(self, node: pre.NodeSecrets, workers: int) -> None:
        self._node = node
        self._workers = workers
        self._executor: Executor | None = None
        if workers > 0:
            self._executor = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(node.seed,),
            )

    async def run(
        self, certificate: bytes, share_index: int, now: int, items: list[WorkItem]
    ) -> list[WorkResult]:
        if not items:
            return []
        if self._executor is None:
            return _reencrypt_batch(self._node, certificate, share_index, now, items)
        loop = asyncio.get_running_loop()
        size = max(_MIN_CHUNK, -(-len(items) // self._workers))
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(
                    self._executor, reencrypt_batch, certificate, share_index, now, chunk
                )
                for chunk in chunks
            )
        )
        return [result for part in parts for result in part]

    async def warm_up(self) -> None:
        """Start every worker now rather than on the first request."""
        if self._executor is None:
            return
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._executor, _noop) for _ in range(self._workers))
        )

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)


def _noop() -> None:
    return None

"""What this process last saw of an account's snapshots, to forecast the keys its next
publish touches: the new snapshot (the account's next sequence numbers), the top of its
(group, kind) (a duplicate is checked against it) and those retention and pruning will
delete. Declared up front, they spare the script a second run (a script that finds a key
undeclared names it and runs again: see `redis_scripts`). A forecast is a guess that
costs nothing when wrong but that second run: publishes of other processes or nodes in
between, an account this process has not seen yet."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

from .redis_scripts import SEQ_WINDOW

__all__ = ["Flight", "KeyForecast"]

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class _Top:
    seq: int
    mls_epoch: int
    ahead: tuple[int, ...]  # what the next publish deletes (the script's forecast)


@dataclass
class _Account:
    seq: int  # the last sequence number seen
    gap: int  # how many others stored during a publish of this process lately (the
    # last count, or one less each time than the one before if more)
    flying: int = 0  # publishes in flight here
    started: int = 0  # publishes started here


@dataclass(frozen=True)
class Flight:
    """One publish: the account's last sequence number it counts from (None if unseen)
    and its reach, how many sequence numbers past it the publish declares: SEQ_WINDOW,
    plus one for every other publish expected in between (those in flight in this
    process, or as many as came in between last time, whichever is more)."""

    account_id: str
    base: int | None
    reach: int
    others: int  # publishes of the account in flight here when it started
    started: int


class KeyForecast:
    """Bounded: the accounts and (group, kind) addresses stored to least recently are
    forgotten first."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._accounts: OrderedDict[str, _Account] = OrderedDict()
        self._tops: OrderedDict[tuple[str, str, str], _Top] = OrderedDict()

    @contextlib.contextmanager
    def publishing(self, account_id: str) -> Iterator[Flight]:
        account = self._accounts.get(account_id)
        if account is None:
            account = _Account(seq=-1, gap=0)
        _put(self._accounts, account_id, account, self._size)
        base = None if account.seq < 0 else account.seq
        others = account.flying
        account.flying += 1
        account.started += 1
        reach = SEQ_WINDOW + max(others, account.gap)
        try:
            yield Flight(account_id, base, reach, others, account.started)
        finally:
            account.flying -= 1

    def keys(self, flight: Flight, group: str, kind: str) -> list[int]:
        """The sequence numbers of the snapshots this publish will likely touch."""
        seqs: list[int] = []
        if flight.base is not None:
            seqs += range(flight.base + 1, flight.base + 1 + flight.reach)
        top = self._tops.get((flight.account_id, group, kind))
        if top is not None:
            seqs.append(top.seq)
            seqs += top.ahead
        return list(dict.fromkeys(seqs))

    def at_epoch(self, account_id: str, group: str, kind: str, mls_epoch: int) -> int | None:
        """The sequence number of the snapshot at this address and MLS epoch, if known."""
        top = self._tops.get((account_id, group, kind))
        return top.seq if top is not None and top.mls_epoch == mls_epoch else None

    def stored(
        self, flight: Flight, group: str, kind: str, *, seq: int, mls_epoch: int,
        ahead: tuple[int, ...],
    ) -> None:  # fmt: skip
        account = self._accounts.get(flight.account_id)
        if account is not None:
            if flight.base is not None:
                account.gap = max(seq - flight.base - 1, account.gap - 1)
            # replies of concurrent publishes may come in any order: only one alone in
            # flight may take the counter back (it went back: Redis lost writes)
            alone = flight.others == 0 and account.started == flight.started
            account.seq = seq if alone else max(seq, account.seq)
            self._accounts.move_to_end(flight.account_id)
        self.found(flight.account_id, group, kind, seq=seq, mls_epoch=mls_epoch, ahead=ahead)

    def found(
        self, account_id: str, group: str, kind: str, *, seq: int, mls_epoch: int,
        ahead: tuple[int, ...] | None = None,
    ) -> None:  # fmt: skip
        """The top of an address (stored now, or held already: `ahead` then kept)."""
        key = (account_id, group, kind)
        if ahead is None:
            held = self._tops.get(key)
            ahead = held.ahead if held is not None and held.seq == seq else ()
        _put(self._tops, key, _Top(seq, mls_epoch, ahead), self._size)


def _put(cache: OrderedDict[K, V], key: K, value: V, size: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    if len(cache) > size:
        cache.popitem(last=False)

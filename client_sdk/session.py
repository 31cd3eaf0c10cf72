"""A device's connection to its account's nodes: the HTTP session, one `NodeClient` per
node (node i holds share i, its identity key pinned in the profile), and the command
scope every SDK call runs in (deadline, per-node outcomes, nodes that timed out)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import aiohttp

from .fanout import Command, FanOut
from .keystore import Profile
from .node_client import NodeClient
from .outcomes import NodeOutcome, Outcomes
from .policy import RetryPolicy

__all__ = ["Session"]


class Session:
    def __init__(
        self, profile: Profile, policy: RetryPolicy, clock: Callable[[], float] = time.time
    ) -> None:
        self.profile = profile
        self.policy = policy
        self.clock = clock
        self._http: aiohttp.ClientSession | None = None
        self.nodes: list[NodeClient] = []
        self._command: Command | None = None
        self.last_outcomes: dict[str, NodeOutcome] = {}

    async def open(self) -> None:
        self._http = aiohttp.ClientSession()
        keys_in_use = {
            key: url for url, key in self.profile.node_keys.items() if url in self.profile.nodes
        }
        self.nodes = [
            NodeClient(
                self._http,
                url,
                account_id=self.profile.account_id,
                device=self.profile.device,
                policy=self.policy,
                clock=self.clock,
                pinned_key=self.profile.node_keys.get(url),
                share_index=index,
                keys_in_use=keys_in_use,
            )
            for index, url in enumerate(self.profile.nodes, start=1)
        ]

    def replace_node(self, share_index: int, url: str) -> NodeClient:
        """Node `share_index` is now at `url`, with a key learnt at first contact."""
        assert self._http is not None
        old = self.nodes[share_index - 1]
        self.profile.node_keys.pop(old.base_url, None)
        self.profile.nodes[share_index - 1] = url
        keys_in_use = {
            key: u for u, key in self.profile.node_keys.items() if u in self.profile.nodes
        }
        for node in self.nodes:
            node._keys_in_use = keys_in_use
        client = NodeClient(
            self._http, url, account_id=self.profile.account_id, device=self.profile.device,
            policy=self.policy, clock=self.clock, share_index=share_index,
            keys_in_use=keys_in_use,
        )  # fmt: skip
        self.nodes[share_index - 1] = client
        return client

    async def close(self) -> None:
        self.keep_pins()
        if self._http is not None:
            await self._http.close()
            self._http = None

    def keep_pins(self) -> None:
        """Node keys learnt at first contact join the profile (the caller saves it)."""
        for node in self.nodes:
            if node.node_key is not None:
                self.profile.node_keys.setdefault(node.base_url, node.node_key)

    @property
    def threshold(self) -> int:
        return self.profile.threshold

    def now(self) -> int:
        return int(self.clock())

    @asynccontextmanager
    async def command(self, timeout: float | None = None) -> AsyncIterator[Command]:
        """The scope of one SDK call; a call made inside another shares its scope."""
        if self._command is not None:
            yield self._command
            return
        command = self.begin(timeout)
        try:
            with self.use(command):
                await self.identify()
                yield command
        finally:
            self.finish(command)

    async def identify(self) -> None:
        """First contact: every node not pinned yet shows its key at once, before any
        request is signed for it, so a node posing as another is caught whichever
        answers first (both are then refused). Failures surface on first use."""
        unpinned = [n for n in self.nodes if n.node_key is None]
        if unpinned:
            limit = self.policy.connect_timeout + self.policy.idle_timeout
            if self._command is not None:
                limit = max(0.0, min(limit, self._command.remaining()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(n.identity() for n in unpinned), return_exceptions=True),
                    limit,
                )

    def begin(self, timeout: float | None = None) -> Command:
        """A new scope, for a call that runs in steps (a read that yields)."""
        limit = self.policy.command_timeout if timeout is None else timeout
        return Command(Outcomes(self.profile.nodes), time.monotonic() + limit)

    @contextmanager
    def use(self, command: Command) -> Iterator[Command]:
        """`command` is the current scope while one step of its call runs; between steps
        (while a read has yielded to its caller) the caller's own calls get theirs."""
        outer, self._command = self._command, command
        try:
            yield command
        finally:
            self._command = outer

    def finish(self, command: Command) -> None:
        self.last_outcomes = command.outcomes.snapshot()
        self.keep_pins()

    @property
    def fan(self) -> FanOut:
        if self._command is None:
            raise RuntimeError("node requests run inside `Session.command()`")
        return FanOut(self.nodes, self.policy, self._command, self.threshold)

    @property
    def outcomes(self) -> Outcomes:
        if self._command is None:
            raise RuntimeError("outcomes exist inside `Session.command()`")
        return self._command.outcomes

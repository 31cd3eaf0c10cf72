"""Record what a real redis-server executes (MONITOR), split into named operations, with
each command's keys resolved by the server itself (`COMMAND GETKEYS`).

MONITOR shows a command a Lua script issues with the client `lua` (`[0 lua]`), right
after the EVAL/EVALSHA that runs it (Redis 6.2 feeds monitors before executing a
command, and a script runs atomically: nothing else comes in between).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

__all__ = ["Command", "Operation", "RedisMonitor", "ScriptCall", "parse_line", "script_calls"]

MARK = b"op:"  # ECHO op:<name> starts an operation
_ESCAPES = {"n": 10, "r": 13, "t": 9, "a": 7, "b": 8, "\\": 92, '"': 34}


@dataclass
class Command:
    client: str  # "lua" for a command a script issued
    args: list[bytes]
    keys: list[bytes] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.args[0].decode().upper()


@dataclass
class Operation:
    name: str
    commands: list[Command] = field(default_factory=list)


@dataclass
class ScriptCall:
    operation: str
    sha: str
    keys: list[bytes]  # its KEYS
    issued: list[Command]  # what the script ran


def parse_line(line: bytes) -> Command:
    """`+<time> [<db> <client>] "arg" "arg" ...`, each argument quoted as sdscatrepr
    writes it (backslash escapes, \\xHH for other bytes)."""
    text = line.decode("latin-1").rstrip("\r\n")
    open_at = text.index("[")
    close_at = text.index("]", open_at)
    client = text[open_at + 1 : close_at].split(" ", 1)[1]
    args: list[bytes] = []
    i, rest = 0, text[close_at + 1 :]
    while i < len(rest):
        if rest[i] != '"':
            i += 1
            continue
        out = bytearray()
        i += 1
        while rest[i] != '"':
            if rest[i] == "\\":
                code = rest[i + 1]
                if code == "x":
                    out.append(int(rest[i + 2 : i + 4], 16))
                    i += 4
                    continue
                out.append(_ESCAPES[code])
                i += 2
                continue
            out.append(ord(rest[i]))
            i += 1
        args.append(bytes(out))
        i += 1
    return Command(client, args)


class RedisMonitor:
    """A MONITOR connection to the server at `socket`; `mark(client, name)` starts an
    operation, `stop(client)` ends the recording."""

    def __init__(self, socket: str) -> None:
        self._socket = socket
        self._lines: list[bytes] = []
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._seen = asyncio.Event()

    async def start(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(self._socket, limit=1 << 26)
        self._writer.write(b"MONITOR\r\n")
        assert await reader.readline() == b"+OK\r\n"
        self._task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            self._lines.append(line)
            if b'"ECHO" "op:.end"' in line:
                self._seen.set()

    @staticmethod
    async def mark(client: Any, name: str) -> None:
        await client.echo(MARK + name.encode())

    async def stop(self, client: aioredis.Redis) -> list[Operation]:
        """End the recording (once MONITOR has shown everything before it); the commands,
        by operation, with their keys."""
        await self.mark(client, ".end")
        await asyncio.wait_for(self._seen.wait(), 10)
        assert self._task is not None and self._writer is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._writer.close()
        operations: list[Operation] = []
        for line in self._lines:
            command = parse_line(line)
            if command.name == "ECHO" and command.args[1].startswith(MARK):
                operations.append(Operation(command.args[1][len(MARK) :].decode()))
            elif operations:
                command.keys = await _keys(client, command.args)
                operations[-1].commands.append(command)
        return [op for op in operations if op.name != ".end"]


async def _keys(client: aioredis.Redis, args: list[bytes]) -> list[bytes]:
    try:
        keys = await client.command_getkeys(*args)
    except redis.exceptions.ResponseError:  # a command without keys
        return []
    return [k.encode() if isinstance(k, str) else bytes(k) for k in keys]


def script_calls(operations: list[Operation]) -> list[ScriptCall]:
    """Every EVAL/EVALSHA with the commands its script issued."""
    calls: list[ScriptCall] = []
    for op in operations:
        current: ScriptCall | None = None
        for command in op.commands:
            if command.client == "lua":
                assert current is not None, f"{op.name}: a script command before any script"
                current.issued.append(command)
            elif command.name in ("EVAL", "EVALSHA"):
                current = ScriptCall(op.name, command.args[1].decode(), command.keys, [])
                calls.append(current)
            else:
                current = None
    return calls

"""Node configuration: command-line options, each with a `STATECACHE_*` environment twin."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from redis.asyncio.connection import parse_url

from .protocol.limits import DEFAULT_MAX_BODY_BYTES

__all__ = ["Settings"]

_MiB = 1024 * 1024


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8700
    data_dir: Path = Path("var/node")
    redis_url: str | None = Field(
        default=None, description="external Redis; unset: embedded redis-server in data_dir"
    )
    redis_cluster: bool = False
    redis_wait: Annotated[float, Field(ge=0, le=86_400)] = Field(
        default=30.0,
        description="an external Redis unreachable at start is retried with backoff this "
        "many seconds, then the node exits 1",
    )
    redis_timeout: Annotated[float, Field(gt=0, le=300)] = Field(
        default=3.0,
        description="bound on each Redis connect and command: a hung Redis costs a request "
        "this long, then a 503",
    )
    node_key: Path | None = Field(
        default=None,
        description="read the node key from this file (read only) instead of data_dir/node.key",
    )
    tls_cert: Path | None = Field(
        default=None,
        description="serve HTTPS with this PEM certificate (chain after the leaf); needs tls_key",
    )
    tls_key: Path | None = Field(
        default=None, description="the unencrypted PEM private key of tls_cert"
    )
    appendfsync: Literal["always", "everysec"] = "always"
    share_index: Annotated[int, Field(ge=1, le=255)] = 1
    skew_seconds: Annotated[int, Field(ge=1, le=3600)] = 300
    max_body_bytes: Annotated[int, Field(ge=1024, lt=2**40)] = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        description="largest request body; the largest state a device can publish follows "
        "from it (`protocol.limits.largest_state`: about 3/4 of it, for base64 in JSON)",
    )
    max_batch: Annotated[int, Field(ge=1, le=256)] = 256
    max_labels: Annotated[int, Field(ge=1)] = 10_000
    max_devices: Annotated[int, Field(ge=1)] = 256
    max_grant_seconds: Annotated[int, Field(ge=60)] = 400 * 86_400
    max_epoch_jump: Annotated[int, Field(ge=1, le=2**53)] = Field(
        default=65_536,
        description="how far above the newest stored MLS epoch of a (group, kind) a "
        "snapshot may be (409 epoch_too_far beyond); the first is bounded by 2^53 - 1 only",
    )
    rate_limit_per_minute: Annotated[int, Field(ge=1)] = 6_000
    register_per_hour: Annotated[int, Field(ge=1, lt=2**31)] = Field(
        default=20,
        description="account registrations and deletions (POST /v1/accounts, POST "
        ".../deletion: unsigned, each may leave state) per client address and hour, counted "
        "in Redis (429 rate_limited with Retry-After beyond)",
    )
    trusted_proxies: tuple[str, ...] = Field(
        default=(),
        description="addresses or CIDRs of reverse proxies whose X-Forwarded-For names the "
        "client (comma-separated in STATECACHE_TRUSTED_PROXIES); none: the socket peer",
    )
    quota_groups: Annotated[int, Field(ge=1, lt=2**31)] = Field(
        default=10_000,
        description="groups with stored snapshots per account (403 quota_exceeded beyond)",
    )
    quota_stored_bytes: Annotated[int, Field(ge=1024, lt=2**50)] = Field(
        default=1024 * _MiB,
        description="bytes stored per account: each snapshot's sealed bytes, the receipts "
        "kept with it and SNAPSHOT_OVERHEAD (403 quota_exceeded beyond)",
    )
    idle_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=60.0,
        description="close a connection whose next request head is not complete this long "
        "after it opened or after its last response (idle keep-alive and slow-loris alike)",
    )
    body_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=120.0, description="a request body must arrive within this (408 beyond)"
    )
    max_inflight_body_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=256 * _MiB,
        description="request body bytes held at once across all connections; a body that "
        "does not fit is refused unread (429, Retry-After: 1)",
    )
    retain: dict[str, Annotated[int, Field(ge=1, le=1000)]] = Field(
        default_factory=lambda: {"group_state": 1},
        description="snapshots kept per (group, kind); kinds not named keep `retain_default`",
    )
    retain_default: Annotated[int, Field(ge=1, le=1000)] = 1
    retain_tree_bases: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=8,
        description="ratchet_tree snapshots (tree bases) kept per group unless `retain` names "
        "the kind: every epoch from the oldest kept base on can be rebuilt (at least this "
        "many epochs), so a Welcome that arrives late still finds its tree",
    )
    retain_tree_patches: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=4000,
        description="ratchet_tree_patch snapshots kept per group unless `retain` names the "
        "kind: a new base deletes its group's patches below the oldest base still kept, so "
        "this bounds the window's chains (the SDK starts a new base after at most 500 "
        "patches: 8 bases x 500)",
    )
    processes: Annotated[int, Field(ge=1, le=64)] = Field(
        default=1,
        description="worker processes serving the node's port (SO_REUSEPORT); more than one "
        "needs an external Redis",
    )
    workers: Annotated[int, Field(ge=0, le=64)] = Field(
        default_factory=lambda: os.cpu_count() or 1,  # shared among `processes`: see below
        description="re-encryption processes per node process (default: cores / processes, at "
        "least 1); 0 re-encrypts on the event loop (tests only)",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="before")
    @classmethod
    def _workers_per_process(cls, data: Any) -> Any:
        """`workers` unset: the cores shared among the node's processes, at least 1 each."""
        if isinstance(data, dict) and data.get("workers") is None:
            try:
                processes = max(1, int(data.get("processes") or 1))
            except (TypeError, ValueError):  # the field's own validation says what is wrong
                processes = 1
            data = {**data, "workers": max(1, (os.cpu_count() or 1) // processes)}
        return data

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parse_url(value)  # ValueError: an unknown scheme or a bad query argument
        if "://" not in value:
            raise ValueError("expected redis://HOST[:PORT][/DB], rediss://... or unix://PATH")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            ipaddress.ip_network(item, strict=False)  # a ValueError names the bad entry
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            given, missing = ("cert", "key") if self.tls_key is None else ("key", "cert")
            raise ValueError(
                f"--tls-{given} (STATECACHE_TLS_{given.upper()}) is set but --tls-{missing} "
                f"(STATECACHE_TLS_{missing.upper()}) is not: give both or neither"
            )
        return self

    @model_validator(mode="after")
    def _processes_share_redis(self) -> Settings:
        if self.processes > 1 and self.redis_url is None:
            raise ValueError(
                f"--processes {self.processes} (STATECACHE_PROCESSES) needs an external Redis "
                "(--redis-url): the embedded redis-server belongs to one process"
            )
        return self

    def retention(self, kind: str) -> int:
        if kind in self.retain:
            return self.retain[kind]
        tree = {
            "ratchet_tree": self.retain_tree_bases,
            "ratchet_tree_patch": self.retain_tree_patches,
        }
        return tree.get(kind, self.retain_default)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from `STATECACHE_<FIELD>` variables, then explicit overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = env.get(f"STATECACHE_{name.upper()}")
            if raw:  # set and not empty: `STATECACHE_DATA_DIR=` means unset, not "."
                if name == "retain":
                    values[name] = _parse_retain(raw)
                elif name == "trusted_proxies":
                    values[name] = tuple(filter(None, (p.strip() for p in raw.split(","))))
                else:
                    values[name] = raw
        if env.get("REDIS_URL") and "redis_url" not in values:
            values["redis_url"] = env["REDIS_URL"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)


def _parse_retain(raw: str) -> dict[str, str]:
    """`group_state=1,ratchet_tree=4`."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        kind, _, count = item.partition("=")
        out[kind.strip()] = count.strip()
    return out

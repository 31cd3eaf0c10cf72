"""Node configuration: command-line options, each with a `STATECACHE_*` environment twin."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

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
    appendfsync: Literal["always", "everysec"] = "always"
    share_index: Annotated[int, Field(ge=1, le=255)] = 1
    skew_seconds: Annotated[int, Field(ge=1, le=3600)] = 300
    max_body_bytes: Annotated[int, Field(ge=1024)] = 16 * _MiB
    max_batch: Annotated[int, Field(ge=1, le=256)] = 256
    max_labels: Annotated[int, Field(ge=1)] = 10_000
    max_devices: Annotated[int, Field(ge=1)] = 256
    max_grant_seconds: Annotated[int, Field(ge=60)] = 400 * 86_400
    rate_limit_per_minute: Annotated[int, Field(ge=1)] = 6_000
    retain: dict[str, Annotated[int, Field(ge=1, le=1000)]] = Field(
        default_factory=lambda: {"group_state": 1},
        description="snapshots kept per (group, kind); kinds not named keep `retain_default`",
    )
    retain_default: Annotated[int, Field(ge=1, le=1000)] = 1
    workers: Annotated[int, Field(ge=0, le=64)] = Field(
        default_factory=lambda: os.cpu_count() or 1,
        description="re-encryption processes; 0 re-encrypts on the event loop (tests only)",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    def retention(self, kind: str) -> int:
        return self.retain.get(kind, self.retain_default)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from `STATECACHE_<FIELD>` variables, then explicit overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = env.get(f"STATECACHE_{name.upper()}")
            if raw is not None:
                values[name] = _parse_retain(raw) if name == "retain" else raw
        if "REDIS_URL" in env and "redis_url" not in values:
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

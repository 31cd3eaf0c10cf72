"""What an admin device keeps in its home: every record it made (certificates,
revocations, key capsules, grant shares, purges), every manifest version it signed, and
what each node has acknowledged. The manifest is derived from these records, never learnt
from nodes; what a node has not acknowledged is its outbox, re-delivered by the next admin
operation and by `account repair`.

Stored as `admin.json` beside the keystore (0600): records are public or signed, but the
grant shares are key fragments, kept only until their grant is replaced.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pre
from cache_service.protocol.b64 import decode_b64url, encode_b64url

from .private_files import write_private

__all__ = ["AdminRecords", "Delivery"]

FORMAT = "statecache-admin/1"
_MAX = 64 * 1024 * 1024


def record_id(kind: str, data: bytes) -> str:
    return f"{kind}:{hashlib.sha256(data).hexdigest()[:32]}"


@dataclass(frozen=True)
class Delivery:
    """One record for one node, in the order nodes must take them."""

    kind: str  # certificate | revocation | capsule | grant | purge
    data: bytes

    @property
    def id(self) -> str:
        return record_id(self.kind, self.data)


@dataclass
class AdminRecords:
    manifests: list[bytes] = field(default_factory=list)  # every signed version, in order
    certificates: dict[bytes, bytes] = field(default_factory=dict)  # device -> newest cert
    revocations: dict[bytes, bytes] = field(default_factory=dict)  # device -> revocation
    capsules: dict[tuple[str, int], bytes] = field(default_factory=dict)  # every epoch
    # (device, label) -> the shares of its current grant, share i for node i
    grants: dict[tuple[bytes, str], list[bytes]] = field(default_factory=dict)
    purges: list[bytes] = field(default_factory=list)
    generation: int = 0  # grant generation: a node replacement re-issues every grant
    # node key (hex) -> ids of the records it acknowledged (its manifest version is asked
    # of the node itself each time: a node restored from a backup is behind again)
    delivered: dict[str, set[str]] = field(default_factory=dict)

    # the manifest

    @property
    def manifest(self) -> pre.AccountManifest | None:
        return pre.AccountManifest.from_bytes(self.manifests[-1]) if self.manifests else None

    def version(self, number: int) -> pre.AccountManifest:
        return pre.AccountManifest.from_bytes(self.manifests[number - 1])

    def add_manifest(self, manifest: pre.AccountManifest) -> None:
        if manifest.version != len(self.manifests) + 1:
            raise ValueError("manifest versions are kept in order")
        self.manifests.append(manifest.to_bytes())

    def grants_until(self) -> dict[bytes, int]:
        """Each device's earliest grant expiry, over the labels it holds grants for: when
        it first loses a label unless the admin renews (`device approve` again)."""
        until: dict[bytes, int] = {}
        for (device_id, _), shares in self.grants.items():
            expires_at = pre.GrantShare.from_bytes(shares[0]).expires_at
            until[device_id] = min(until.get(device_id, expires_at), expires_at)
        return until

    # what each node still lacks

    def outbox(self, node_key: bytes, share_index: int) -> list[Delivery]:
        """Every record `node_key` has not acknowledged, in the order nodes take them:
        certificates, revocations, capsules (each label's epochs in turn), this node's
        grant shares, purges."""
        done = self.delivered.get(node_key.hex(), set())
        items = [
            *(Delivery("certificate", c) for c in self.certificates.values()),
            *(Delivery("revocation", r) for r in self.revocations.values()),
            *(Delivery("capsule", self.capsules[k]) for k in sorted(self.capsules)),
            *(
                Delivery("grant", shares[share_index - 1])
                for _, shares in sorted(self.grants.items())
                if len(shares) >= share_index
            ),
            *(Delivery("purge", p) for p in self.purges),
        ]
        return [d for d in items if d.id not in done]

    def acknowledge(self, node_key: bytes, delivery: Delivery) -> None:
        self.delivered.setdefault(node_key.hex(), set()).add(delivery.id)

    def forget_node(self, node_key: bytes) -> None:
        self.delivered.pop(node_key.hex(), None)

    # persistence

    def to_json(self) -> str:
        def b(x: bytes) -> str:
            return encode_b64url(x)

        return json.dumps(
            {
                "format": FORMAT,
                "manifests": [b(m) for m in self.manifests],
                "certificates": {k.hex(): b(v) for k, v in self.certificates.items()},
                "revocations": {k.hex(): b(v) for k, v in self.revocations.items()},
                "capsules": [[lb, e, b(v)] for (lb, e), v in sorted(self.capsules.items())],
                "grants": [
                    [d.hex(), lb, [b(s) for s in shares]]
                    for (d, lb), shares in sorted(self.grants.items())
                ],
                "purges": [b(p) for p in self.purges],
                "generation": self.generation,
                "delivered": {k: sorted(v) for k, v in self.delivered.items()},
            }
        )

    @classmethod
    def from_json(cls, text: str) -> AdminRecords:
        doc: dict[str, Any] = json.loads(text)
        if doc.get("format") != FORMAT:
            raise ValueError("not a statecache admin record file")

        def u(x: str) -> bytes:
            return decode_b64url(x, max_bytes=_MAX)

        return cls(
            manifests=[u(m) for m in doc["manifests"]],
            certificates={bytes.fromhex(k): u(v) for k, v in doc["certificates"].items()},
            revocations={bytes.fromhex(k): u(v) for k, v in doc["revocations"].items()},
            capsules={(str(lb), int(e)): u(v) for lb, e, v in doc["capsules"]},
            grants={
                (bytes.fromhex(d), str(lb)): [u(s) for s in shares]
                for d, lb, shares in doc["grants"]
            },
            purges=[u(p) for p in doc["purges"]],
            generation=int(doc.get("generation", 0)),
            delivered={str(k): set(v) for k, v in doc["delivered"].items()},
        )

    def save(self, path: Path) -> None:
        write_private(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> AdminRecords | None:
        return cls.from_json(path.read_text()) if path.exists() else None

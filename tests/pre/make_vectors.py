"""Write the known-answer vectors tests/pre/vectors/kat.json from fixed inputs.

    .venv/bin/python tests/pre/make_vectors.py

Run it only when an encoding or derivation changes on purpose, and say so in the commit:
test_vectors.py exists to notice when they change by accident. Most outputs follow from
the inputs alone (Ed25519 signatures are deterministic, and a snapshot sealed with a fixed
salt under a fixed KEK is too). Key capsules are not: Umbral encapsulation and the chained
KEK's nonce are random, so their bytes are stored as generated and the test opens them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pre import (
    AccountSecrets,
    DeviceSecrets,
    Role,
    certify_device,
    create_key_capsule,
    epoch_authenticator_hash,
    register_account,
    revoke_device,
    seal_snapshot,
)

OUT = Path(__file__).parent / "vectors" / "kat.json"

INPUTS: dict[str, Any] = {
    "account_seed": bytes(range(32)).hex(),
    "devices": {
        "admin": {"signing_seed": (b"\x01" * 32).hex(), "pre_secret": (b"\x07" * 32).hex()},
        "member": {"signing_seed": (b"\x02" * 32).hex(), "pre_secret": (b"\x08" * 32).hex()},
    },
    "now": 1_700_000_000,
    "label_keys": [["account", 0], ["group:Zzk", 1]],
    "certificate": {
        "device": "member",
        "role": "MEMBER",
        "not_before": 1_700_000_000,
        "not_after": 1_700_086_400,
        "name": "member phone",
    },
    "revocation": {"device": "member", "revoked_at": 1_700_000_100},
    "key_capsules": {
        "label": "account",
        "kek_secrets": [(b"\xa0" * 32).hex(), (b"\xa1" * 32).hex()],
    },
    "snapshot": {
        "key_epoch": 0,
        "author": "member",
        "group_id": b"KAT group".hex(),
        "kind": "state",
        "mls_epoch": 42,
        "created_at": 1_700_000_050,
        "tree_hash": (b"\x33" * 32).hex(),
        "epoch_authenticator": (b"\x44" * 32).hex(),
        "salt": bytes(range(16)).hex(),
        "plaintext": b"known-answer MLS group state".hex(),
    },
}


def build(inputs: dict[str, Any]) -> dict[str, Any]:
    account = AccountSecrets(bytes.fromhex(inputs["account_seed"]))
    devices = {
        name: DeviceSecrets(bytes.fromhex(d["signing_seed"]), bytes.fromhex(d["pre_secret"]))
        for name, d in inputs["devices"].items()
    }
    now = inputs["now"]
    record = register_account(account, now=now)
    cert_in = inputs["certificate"]
    cert = certify_device(
        account,
        devices[cert_in["device"]].public_keys,
        role=Role[cert_in["role"]],
        not_before=cert_in["not_before"],
        not_after=cert_in["not_after"],
        name=cert_in["name"],
    )
    rev_in = inputs["revocation"]
    revocation = revoke_device(
        account, devices[rev_in["device"]].device_id, now=rev_in["revoked_at"]
    )

    caps_in = inputs["key_capsules"]
    capsules, keks = [], []
    for epoch, secret in enumerate(caps_in["kek_secrets"]):
        capsule, kek = create_key_capsule(
            account,
            caps_in["label"],
            epoch,
            now=now,
            previous=keks[-1] if keks else None,
            kek_secret=bytes.fromhex(secret),
        )
        capsules.append(capsule)
        keks.append(kek)

    snap_in = inputs["snapshot"]
    snapshot = seal_snapshot(
        keks[snap_in["key_epoch"]],
        devices[snap_in["author"]],
        group_id=bytes.fromhex(snap_in["group_id"]),
        kind=snap_in["kind"],
        mls_epoch=snap_in["mls_epoch"],
        plaintext=bytes.fromhex(snap_in["plaintext"]),
        now=snap_in["created_at"],
        tree_hash=bytes.fromhex(snap_in["tree_hash"]),
        epoch_authenticator=bytes.fromhex(snap_in["epoch_authenticator"]),
        salt=bytes.fromhex(snap_in["salt"]),
    )

    return {
        "deterministic": {
            "root_public_key": account.root_public.hex(),
            "account_id": account.account_id.hex(),
            "kfrag_verifying_key": account.kfrag_verifying_key.hex(),
            "label_public_keys": {
                f"{label}#{epoch}": account.label_public_key(label, epoch).hex()
                for label, epoch in inputs["label_keys"]
            },
            "devices": {
                name: {
                    "device_id": d.device_id.hex(),
                    "signing_key": d.public_keys.signing_key.hex(),
                    "pre_key": d.public_keys.pre_key.hex(),
                    "device_keys": d.public_keys.to_bytes().hex(),
                }
                for name, d in devices.items()
            },
            "account_record": record.to_bytes().hex(),
            "device_certificate": cert.to_bytes().hex(),
            "revocation": revocation.to_bytes().hex(),
            "epoch_authenticator_hash": epoch_authenticator_hash(
                bytes.fromhex(snap_in["epoch_authenticator"])
            ).hex(),
            "sealed_snapshot": snapshot.to_bytes().hex(),
            "snapshot_digest": snapshot.digest.hex(),
        },
        "randomized": {"key_capsules": [c.to_bytes().hex() for c in capsules]},
    }


def main() -> None:
    document = {
        "description": "statecache pre known-answer vectors; written by tests/pre/make_vectors.py",
        "inputs": INPUTS,
        **build(INPUTS),
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

"""`make demo`: the statecache flow end to end.

Today this walks the cryptographic core through the whole onboarding story in one process:
an admin device seals state for many groups, authorises a new device with one constant-size
grant, three node roles re-encrypt the key capsule, and the new device verifies and opens
everything. Later work runs the same story against three local cache nodes.
"""

from __future__ import annotations

import os
import sys
import time

import pre

GROUPS = 1_000
THRESHOLD, NODES = 2, 3


def main() -> int:
    now = int(time.time())
    account = pre.AccountSecrets.generate()
    record = pre.register_account(account, now=now).verify()
    phone, laptop = pre.DeviceSecrets.generate(), pre.DeviceSecrets.generate()
    year = 365 * 86_400
    phone_cert = pre.certify_device(
        account, phone.public_keys, role=pre.Role.ADMIN, not_before=now, not_after=now + year
    )
    laptop_cert = pre.certify_device(
        account, laptop.public_keys, role=pre.Role.MEMBER, not_before=now, not_after=now + year
    )
    capsule, kek = pre.create_key_capsule(account, "account", 0, now=now)

    started = time.perf_counter()
    sealed = []
    state_bytes = 0
    for g in range(GROUPS):
        state = os.urandom(2048 + (g * 61) % 6144)  # group_state of 2-8 KiB
        state_bytes += len(state)
        sealed.append(
            pre.seal_snapshot(
                kek,
                phone,
                group_id=g.to_bytes(8, "big"),
                kind="group_state",
                mls_epoch=1 + g % 17,
                plaintext=state,
                now=now,
            )
        )
    seal_s = time.perf_counter() - started

    shares = pre.make_grant(
        account, capsule, laptop_cert, threshold=THRESHOLD, shares=NODES, expires_at=now + 3600
    )
    grant_bytes = sum(len(s.to_bytes()) for s in shares) + len(laptop_cert.to_bytes())

    started = time.perf_counter()
    fragments = []
    for share in shares[:THRESHOLD]:  # any M of the N nodes
        verified = pre.verify_grant_share(
            share,
            account=record,
            capsule=capsule,
            device=laptop_cert,
            share_index=share.share_index,
            now=now,
        )
        fragments.append(pre.reencrypt(capsule, verified))
    checked = [
        pre.verify_capsule_fragment(
            f, capsule=capsule.verify(record), account=record, receiver=laptop
        )
        for f in fragments
    ]
    laptop_kek = pre.open_key_capsule(laptop, capsule, checked)
    phone_cert.verify(record, now=now)
    opened = sum(len(pre.open_snapshot(s, laptop_kek, phone_cert)) for s in sealed)
    onboard_s = time.perf_counter() - started

    ok = opened == state_bytes
    rows = [
        ("groups", f"{GROUPS:,}"),
        ("grant upload to authorise the laptop", f"{grant_bytes:,} B"),
        ("re-uploading every group's state instead", f"{state_bytes:,} B"),
        ("seal all groups (admin)", f"{seal_s:.2f} s"),
        ("re-encrypt, verify, open everything (laptop)", f"{onboard_s:.2f} s"),
        ("re-encryptions", str(len(fragments))),
        ("every snapshot verified and opened", "yes" if ok else "NO"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""`make demo-mls`: the multi-device story with real mls-rs clients, three local nodes.

1. Alice's phone is in DEMO_GROUPS groups (default 50) of 2-50 members with other users,
   each a real mls-rs client; the phone backs its own MLS state up to statecache;
2. Alice's laptop enrols and the phone approves it;
3. the phone adds the laptop to every group: one commit each, the new epoch's tree
   published to statecache, the Welcome sent without the tree;
4. the laptop onboards, joins every group with the cached trees and reads a message in each;
5. the phone loses its MLS data, restores it from statecache, reads a message of an
   earlier epoch delivered late, commits an update and sends; the others read it.

Prints what was joined and how long each step took; exits non-zero if any check fails.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mls_rs_uniffi as mls

import pre
from client_sdk.demo import run_in_scratch
from client_sdk.device import Statecache, create_account, enrollment_request
from client_sdk.errors import StatecacheError
from client_sdk.keystore import Profile
from client_sdk.local_nodes import start_nodes, stop_nodes

from .clients import MemoryStore, apply, new_client
from .flows import Welcome, commit_tree, join_all
from .store import StatecacheStore

__all__ = ["World", "main"]

THRESHOLD, NODES = 2, 3
MIN_MEMBERS, MAX_MEMBERS = 2, 50
LATE = b"sent before the phone lost its data"


@dataclass
class Member:
    client: mls.Client
    groups: dict[bytes, mls.Group] = field(default_factory=dict)

    def receive(self, group_id: bytes, message: mls.Message) -> mls.ReceivedMessage:
        group = self.groups[group_id]
        received = group.process_incoming_message(message)
        group.write_to_storage()
        return received

    def send(self, group_id: bytes, text: bytes) -> mls.Message:
        group = self.groups[group_id]
        message = group.encrypt_application_message(text)
        group.write_to_storage()
        return message


class World:
    """Alice's phone in `groups` groups of 2-50 members with up to 49 other users."""

    def __init__(
        self, phone_store: StatecacheStore, groups: int, *, seed: int = 5, join: bool = True
    ) -> None:
        """`join=False`: the others' leaves are in the tree, but they never process their
        Welcomes (the bench, which only measures the phone's new device)."""
        rng = random.Random(seed)  # noqa: S311 - demo data, reproducible
        self.store = phone_store
        self.phone = Member(new_client("alice-phone", phone_store))
        self.users = [Member(new_client(f"user{i}", MemoryStore())) for i in range(49)]
        self.members: dict[bytes, list[Member]] = {}
        for _ in range(groups):
            group_id = os.urandom(32)
            others = rng.sample(self.users, rng.randint(MIN_MEMBERS, MAX_MEMBERS) - 1)
            group = self.phone.client.create_group(group_id)
            group.write_to_storage()
            kps = [u.client.generate_key_package_message() for u in others]
            out = apply(group, group.add_members(kps))
            tree = group.export_tree()
            for user in others if join else ():
                joined = user.client.join_group(tree, out.welcome_message).group
                joined.write_to_storage()
                user.groups[group_id] = joined
            self.phone.groups[group_id] = group
            self.members[group_id] = others

    def deliver(self, group_id: bytes, message: mls.Message) -> None:
        """A commit or message to every other member who joined (the phone sent it)."""
        for user in self.members[group_id]:
            if group_id in user.groups:
                user.receive(group_id, message)

    def add_device(self, device: mls.Client) -> Iterator[tuple[Welcome, mls.CommitOutput]]:
        """The phone commits `device` into every group and yields each Welcome."""
        for group_id, group in self.phone.groups.items():
            out = apply(group, group.add_members([device.generate_key_package_message()]))
            self.deliver(group_id, out.commit_message)
            epoch = self.store.epoch_of(group_id)
            assert epoch is not None
            yield Welcome(group_id, epoch, out.welcome_message.to_bytes()), out


class Demo:
    def __init__(self, urls: list[str], groups: int, base: Path) -> None:
        self.urls = urls
        self.groups = groups
        self.base = base
        self.checks: list[tuple[str, bool]] = []
        self.summary: list[tuple[str, str]] = []

    def check(self, what: str, ok: bool) -> None:
        self.checks.append((what, ok))
        print(("  ok    " if ok else "  FAIL  ") + what, flush=True)

    def note(self, what: str, value: str) -> None:
        self.summary.append((what, value))
        print(f"  {what}: {value}", flush=True)

    async def run(self) -> None:
        profile = await create_account(self.urls, THRESHOLD, name="phone")
        async with Statecache(profile) as sc:
            started = time.perf_counter()
            world = World(StatecacheStore(self.base / "phone", profile.device), self.groups)
            sizes = [len(m) + 1 for m in world.members.values()]
            self.note(
                "groups made with real mls-rs clients",
                f"{len(sizes)} groups of {min(sizes)}-{max(sizes)} members, "
                f"{time.perf_counter() - started:.2f} s",
            )
            await world.store.flush(sc)
            laptop_profile = await self.enrol(sc)
            laptop_store = StatecacheStore(self.base / "laptop", laptop_profile.device)
            laptop = new_client("alice-laptop", laptop_store)
            welcomes = await self.add_laptop(sc, world, laptop)
            async with Statecache(laptop_profile) as lap:
                await self.join(lap, laptop, world, welcomes)
            await self.restore(sc, profile, world)

    async def enrol(self, sc: Statecache) -> Profile:
        device, blob = enrollment_request(
            "laptop", account_id=sc.profile.account_id, nodes=self.urls, threshold=THRESHOLD
        )
        await sc.approve(blob, expect=pre.device_fingerprint(device.public_keys))
        self.check("the phone approved the laptop (fingerprint compared)", True)
        return Profile(sc.profile.account_id, device, self.urls, THRESHOLD)

    async def add_laptop(self, sc: Statecache, world: World, laptop: mls.Client) -> list[Welcome]:
        started = time.perf_counter()
        pairs = list(world.add_device(laptop))
        trees = [commit_tree(world.store, world.phone.groups[w.group_id], w.group_id)
                 for w, _ in pairs]  # fmt: skip
        committed = time.perf_counter() - started
        started = time.perf_counter()
        report = await sc.publish(trees)
        await world.store.flush(sc)
        published = time.perf_counter() - started
        bare = sum(len(w.message) for w, _ in pairs)
        tree_bytes = sum(len(out.ratchet_tree.bytes) for _, out in pairs if out.ratchet_tree)
        self.note("phone: commits adding the laptop", f"{len(pairs)} in {committed:.2f} s")
        self.note("phone: trees published", f"{report.stored} in {published:.2f} s")
        self.note(
            "Welcome bytes without the tree",
            f"{bare:,} B (the trees they leave out: {tree_bytes:,} B)",
        )
        self.check(f"{report.stored} trees stored, one per group", report.stored == len(pairs))
        return [w for w, _ in pairs]

    async def join(self, lap: Statecache, laptop: mls.Client, world: World,
                   welcomes: list[Welcome]) -> None:  # fmt: skip
        started = time.perf_counter()
        opened = [s async for s in lap.onboard()]
        onboarded = time.perf_counter() - started
        report = await join_all(lap, laptop, welcomes)
        self.note("laptop: onboarding", f"{len(opened)} items in {onboarded:.2f} s")
        self.note(
            "laptop: trees fetched and verified",
            f"{len(welcomes)} ({report.tree_bytes:,} B) in {report.tree_seconds:.2f} s",
        )
        self.note("laptop: mls-rs joins", f"{len(report.groups)} in {report.join_seconds:.2f} s")
        self.check(
            f"the laptop joined all {len(welcomes)} groups",
            len(report.groups) == len(welcomes) and report.complete,
        )
        read = 0
        for group_id, group in report.groups.items():
            sender = world.members[group_id][0]
            text = b"welcome, laptop " + group_id[:4].hex().encode()
            received = group.process_incoming_message(sender.send(group_id, text))
            read += getattr(received, "data", None) == text
        self.check(f"the laptop read the next message in all {read} groups", read == len(welcomes))

    async def restore(self, sc: Statecache, profile: Profile, world: World) -> None:
        """The phone's MLS data is lost; statecache gives it back."""
        group_id = next(iter(world.phone.groups))
        sender = world.members[group_id][0]
        late = sender.send(group_id, LATE)
        out = apply(sender.groups[group_id], sender.groups[group_id].commit())
        world.phone.receive(group_id, out.commit_message)
        for user in world.members[group_id][1:]:
            user.receive(group_id, out.commit_message)
        await world.store.flush(sc)

        started = time.perf_counter()
        store = StatecacheStore(self.base / "phone-restored", profile.device)
        restored = await store.restore(sc)
        took = time.perf_counter() - started
        self.note("phone: MLS state restored", f"{len(restored)} groups in {took:.2f} s")
        self.check("every group's own state came back", set(restored) == set(world.phone.groups))
        phone = new_client("alice-phone", store)
        group = phone.load_group(group_id)
        received = group.process_incoming_message(late)
        self.check("the restored phone read a message of an earlier epoch delivered late",
                   getattr(received, "data", None) == LATE)  # fmt: skip
        out = apply(group, group.commit())  # an update before it sends
        for user in world.members[group_id]:
            user.receive(group_id, out.commit_message)
        message = group.encrypt_application_message(b"back again")
        group.write_to_storage()
        got = sender.receive(group_id, message)
        self.check("after an update commit, the others read the restored phone",
                   getattr(got, "data", None) == b"back again")  # fmt: skip

    def print_summary(self) -> None:
        passed = sum(ok for _, ok in self.checks)
        print(f"\nchecks passed: {passed} of {len(self.checks)}")


async def run(base: Path, groups: int) -> int:
    print(f"starting {NODES} nodes (threshold {THRESHOLD}) under {base}", flush=True)
    nodes = await start_nodes(base / "nodes", NODES)
    demo = Demo([n.url for n in nodes], groups, base)
    try:
        await demo.run()
    except (StatecacheError, mls.Error) as exc:
        demo.check(f"the demo ran to its end ({exc})", False)
    finally:
        await stop_nodes(nodes)
    demo.print_summary()
    return 0 if demo.checks and all(ok for _, ok in demo.checks) else 1


def main() -> int:
    return run_in_scratch(run, default_groups=50, prefix="statecache-demo-mls-")


if __name__ == "__main__":
    sys.exit(main())

"""A model of who may read what, checked against three real nodes (threshold 2) by a
hypothesis state machine over the whole device story: accounts, enrolment and approval,
publishing, authorising, onboarding, sync, revocation, rotation, and grants expiring as
the shared clock moves.

The model keeps, per account, the newest state of every (group, kind) and each label's key
epoch, and per device its grants (label -> key epoch, expiry), whether it is revoked, and
everything it has opened. Invariants:

- a device reads exactly what its grants allow: after every onboarding or sync, what it
  has opened equals the newest state of every group whose label it may read, and it never
  opens a snapshot of a label it may not read (or of another account);
- a revoked device gets no snapshot bytes once its revocation is acknowledged: every
  request it makes is refused (403 `device_revoked`) by every node;
- nothing sealed after a rotation opens with any KEK a revoked device kept, even posing as
  the new key epoch (tried on every node's copy, fetched by the admin);
- MLS epochs never go back for any device (what it opens, and what its state remembers).

Hypothesis drives the machine in a worker thread; each step runs its coroutines on the
test's event loop, where the SDK suite's `cluster` fixture lives.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import aiohttp
import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import pre
from cache_service.protocol.codes import Code
from client_sdk.device import SnapshotInput, Statecache, enrollment_request
from client_sdk.errors import NodeError, StatecacheError, ThresholdNotMet
from client_sdk.keystore import Profile
from client_sdk.node_client import NodeClient
from client_sdk.verify import OpenedSnapshot
from tests.client_sdk.conftest import THRESHOLD, Cluster
from tests.reliability.figures import record
from tests.reliability.sizes import SHRINK, SIZES

T = TypeVar("T")
HOUR, DAY = 3600, 86_400
MAX_ACCOUNTS, MAX_MEMBERS = 2, 3
# Two groups under the `account` label, two under their own `group:<id>` label. Every
# account uses the same group ids, so a cross-account leak would show as a wrong plaintext.
GROUPS = [hashlib.sha256(f"sm-group-{i}".encode()).digest()[:16] for i in range(4)]
GROUP_LABELS = ["account", "account", *(pre.label_for_group(g) for g in GROUPS[2:])]
LABELS = sorted(set(GROUP_LABELS))
KINDS = ("group_state", "group_info")  # not ratchet_tree: trees are read as chains
# Grants of 90 minutes or 30 days; the clock moves by an hour or a day: no expiry ever
# falls within seconds of a check.
GRANT_FOR = (90 * 60, 30 * DAY)
ADVANCE = (HOUR, DAY)

Key = tuple[bytes, str]  # (group id, kind)


def pick(data: st.DataObject, items: list[T], what: str) -> T:
    """One of `items`, drawn by index (so a failing example prints short)."""
    return items[data.draw(st.integers(0, len(items) - 1), label=what)]


class Violation(AssertionError):
    """The system disagreed with the model."""


def check(condition: bool, what: str) -> None:
    STATS["invariant_checks"] += 1
    if not condition:
        raise Violation(what)


STATS: Counter[str] = Counter()


@dataclass
class Grant:
    key_epoch: int
    expires_at: float


@dataclass
class Published:
    mls_epoch: int
    plaintext: bytes
    label: str


@dataclass(repr=False)
class DeviceModel:
    name: str
    account: AccountModel
    profile: Profile
    sc: Statecache
    cert: pre.DeviceCertificate | None = None  # members only
    grants: dict[str, Grant] = field(default_factory=dict)
    revoked: bool = False
    kept_keks: list[pre.Kek] = field(default_factory=list)  # what it held when revoked
    view: dict[Key, tuple[int, bytes]] = field(default_factory=dict)  # what it opened
    remembered: dict[Key, int] = field(default_factory=dict)  # its state's epochs, last seen

    @property
    def is_admin(self) -> bool:
        return self.cert is None

    def may_read(self, label: str, now: float) -> bool:
        if self.revoked:
            return False
        if self.is_admin:
            return True
        grant = self.grants.get(label)
        return (
            grant is not None
            and now < grant.expires_at
            and grant.key_epoch == self.account.key_epochs[label]
        )

    def __repr__(self) -> str:
        return f"<{self.name} of account {self.account.index}>"


@dataclass(repr=False)
class AccountModel:
    index: int
    profile: Profile
    key_epochs: dict[str, int]
    admin: DeviceModel = field(init=False)
    members: list[DeviceModel] = field(default_factory=list)
    latest: dict[Key, Published] = field(default_factory=dict)
    published: dict[tuple[bytes, str, int], bytes] = field(default_factory=dict)

    @property
    def live(self) -> list[DeviceModel]:
        return [m for m in self.members if not m.revoked]

    @property
    def revoked(self) -> list[DeviceModel]:
        return [m for m in self.members if m.revoked]

    @property
    def devices(self) -> list[DeviceModel]:
        return [self.admin, *self.live]


async def read(
    aiter: AsyncIterator[OpenedSnapshot],
) -> tuple[list[OpenedSnapshot], Exception | None]:
    got: list[OpenedSnapshot] = []
    try:
        async for snap in aiter:
            got.append(snap)
    except StatecacheError as exc:
        return got, exc
    return got, None


class DeviceStory(RuleBasedStateMachine):
    # Set by the test: the cluster, its event loop, and a session for raw probes.
    cluster: ClassVar[Cluster]
    loop: ClassVar[asyncio.AbstractEventLoop]
    session: ClassVar[aiohttp.ClientSession]

    def __init__(self) -> None:
        super().__init__()
        STATS["examples"] += 1
        self.accounts: list[AccountModel] = []
        self.statecaches: list[Statecache] = []

    # plumbing

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def step(self, name: str) -> None:
        STATS["steps"] += 1
        STATS[f"rule:{name}"] += 1

    @property
    def now(self) -> float:
        return self.cluster.clock()

    def open(self, profile: Profile, **kw: Any) -> Statecache:
        sc = self.cluster.statecache(profile, **kw)
        self.run(sc.__aenter__())
        self.statecaches.append(sc)
        return sc

    def teardown(self) -> None:
        for sc in self.statecaches:
            self.run(sc.__aexit__(None, None, None))

    def new_account(self) -> None:
        profile = self.run(self.cluster.account())
        account = AccountModel(len(self.accounts), profile, {label: 0 for label in LABELS})
        account.admin = DeviceModel("admin", account, profile, self.open(profile))
        for label in LABELS:
            if label != "account":
                self.run(account.admin.sc.add_label(label))
        self.accounts.append(account)

    # rules

    @initialize()
    def first_account(self) -> None:
        self.step("create_account")
        self.new_account()

    @precondition(lambda self: len(self.accounts) < MAX_ACCOUNTS)
    @rule()
    def create_account(self) -> None:
        self.step("create_account")
        self.new_account()

    @precondition(lambda self: any(len(a.members) < MAX_MEMBERS for a in self.accounts))
    @rule(
        data=st.data(),
        labels=st.sets(st.sampled_from(LABELS), min_size=1),
        grant_for=st.sampled_from(GRANT_FOR),
    )
    def approve(self, data: st.DataObject, labels: set[str], grant_for: int) -> None:
        self.step("approve")
        account = pick(data, [a for a in self.accounts if len(a.members) < MAX_MEMBERS], "account")
        name = f"member{len(account.members)}"
        secrets, blob = enrollment_request(
            name,
            account_id=account.admin.sc.profile.account_id,
            nodes=account.admin.sc.profile.nodes,
            threshold=account.admin.sc.profile.threshold,
        )
        approval = self.run(
            account.admin.sc.approve(blob, labels=sorted(labels), grant_for=grant_for)
        )
        profile = Profile(account.profile.account_id, secrets, list(self.cluster.urls), THRESHOLD)
        device = DeviceModel(name, account, profile, self.open(profile), cert=approval.certificate)
        expires = self.now + grant_for
        device.grants = {label: Grant(account.key_epochs[label], expires) for label in labels}
        account.members.append(device)

    @precondition(lambda self: any(a.live for a in self.accounts))
    @rule(
        data=st.data(),
        labels=st.sets(st.sampled_from(LABELS), min_size=1),
        grant_for=st.sampled_from(GRANT_FOR),
    )
    def authorise(self, data: st.DataObject, labels: set[str], grant_for: int) -> None:
        self.step("authorise")
        device = pick(data, [m for a in self.accounts for m in a.live], "member")
        account = device.account
        assert device.cert is not None
        self.run(
            account.admin.sc.authorise(device.cert, labels=sorted(labels), grant_for=grant_for)
        )
        for label in labels:  # a new share replaces the node's previous one
            device.grants[label] = Grant(account.key_epochs[label], self.now + grant_for)

    @rule(
        data=st.data(),
        group=st.integers(0, len(GROUPS) - 1),
        kind=st.sampled_from(KINDS),
        bump=st.integers(1, 2),
        size=st.integers(1, 400),
    )
    def publish(self, data: st.DataObject, group: int, kind: str, bump: int, size: int) -> None:
        self.step("publish")
        account = pick(data, self.accounts, "account")
        author = pick(data, account.devices, "author")
        self.publish_one(account, author, group, kind, bump, size)

    @rule(data=st.data(), groups=st.lists(st.integers(0, len(GROUPS) - 1), min_size=2, max_size=4))
    def publish_several(self, data: st.DataObject, groups: list[int]) -> None:
        """One author, one item after another (the model's latest moves each time)."""
        self.step("publish_several")
        account = pick(data, self.accounts, "account")
        author = pick(data, account.devices, "author")
        for group in groups:
            kind = data.draw(st.sampled_from(KINDS), label="kind")
            self.publish_one(account, author, group, kind, 1, data.draw(st.integers(1, 400)))

    def publish_one(
        self,
        account: AccountModel,
        author: DeviceModel,
        group: int,
        kind: str,
        bump: int,
        size: int,
    ) -> None:
        group_id, label = GROUPS[group], GROUP_LABELS[group]
        key = (group_id, kind)
        epoch = (account.latest[key].mls_epoch if key in account.latest else 0) + bump
        plaintext = os.urandom(size)
        allowed = author.may_read(label, self.now)
        item = SnapshotInput(group_id, kind, epoch, plaintext, label=label)
        try:
            report = self.run(author.sc.publish([item]))
        except StatecacheError as exc:
            check(not allowed, f"{author} may publish {label} but was refused: {exc!r}")
            STATS["publishes_refused"] += 1
            return
        check(allowed, f"{author} published under {label} without a grant ({author.grants})")
        check(report.stored == 1 and not report.per_node_failures, f"publish: {report}")
        STATS["publishes"] += 1
        account.latest[key] = Published(epoch, plaintext, label)
        account.published[(group_id, kind, epoch)] = plaintext
        author.view[key] = (epoch, plaintext)
        if account.revoked:
            self.run(self.revoked_keks_do_not_open(account, group_id, kind, epoch))

    @rule(data=st.data())
    def onboard(self, data: st.DataObject) -> None:
        self.step("onboard")
        self.read(pick(data, [d for a in self.accounts for d in a.devices], "device"), "onboard")

    @rule(data=st.data())
    def sync(self, data: st.DataObject) -> None:
        self.step("sync")
        self.read(pick(data, [d for a in self.accounts for d in a.devices], "device"), "sync")

    @precondition(lambda self: any(a.live for a in self.accounts))
    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        self.step("revoke")
        device = pick(data, [m for a in self.accounts for m in a.live], "member")
        account = device.account
        if any(device.may_read(label, self.now) for label in LABELS):
            self.run(device.sc.load_keys())  # it holds what a device that reads holds
        device.kept_keks = list(device.sc.keys.values())
        report = self.run(account.admin.sc.revoke(device.profile.device.device_id))
        check(set(report.receipts) == set(self.cluster.urls), f"receipts: {report.failures}")
        device.revoked = True
        STATS["revocations"] += 1
        # every label rotates; each remaining member keeps what it held, under the new epoch
        now = self.now
        for label in LABELS:
            old = account.key_epochs[label]
            account.key_epochs[label] = old + 1
            check(report.rotated.get(label) == old + 1, f"rotated {report.rotated}")
            for member in account.live:
                grant = member.grants.get(label)
                if grant is not None and grant.key_epoch == old and now < grant.expires_at:
                    member.grants[label] = Grant(old + 1, grant.expires_at)
        self.run(self.revoked_gets_nothing(device))
        # what the admin seals next, under every label, opens for no revoked device
        for group in (1, 2, 3):
            self.publish_one(account, account.admin, group, "group_state", 1, 100)

    @precondition(lambda self: any(a.revoked for a in self.accounts))
    @rule(data=st.data())
    def revoked_tries_again(self, data: st.DataObject) -> None:
        """Later (rotations, grants, time have passed): still nothing, from any node."""
        self.step("revoked_tries_again")
        device = pick(data, [m for a in self.accounts for m in a.revoked], "revoked")
        self.run(self.revoked_gets_nothing(device))

    @rule(data=st.data(), label=st.sampled_from(LABELS))
    def rotate(self, data: st.DataObject, label: str) -> None:
        """A rotation as an admin does it: the next key epoch, and every member holding
        the label granted it again, until the same expiry."""
        self.step("rotate")
        account = pick(data, self.accounts, "account")
        old = account.key_epochs[label]
        new = self.run(account.admin.sc.rotate(label))
        check(new == old + 1, f"rotation of {label} gave key epoch {new}, not {old + 1}")
        account.key_epochs[label] = new
        now = self.now
        for member in account.live:
            grant = member.grants.get(label)
            if grant is None or grant.key_epoch != old or now >= grant.expires_at:
                continue
            assert member.cert is not None
            remaining = int(grant.expires_at - now)
            self.run(account.admin.sc.authorise(member.cert, labels=[label], grant_for=remaining))
            member.grants[label] = Grant(new, grant.expires_at)

    @rule(seconds=st.sampled_from(ADVANCE))
    def advance_clock(self, seconds: int) -> None:
        self.step("advance_clock")
        self.cluster.clock.advance(seconds)

    @rule(data=st.data())
    def restart_device(self, data: st.DataObject) -> None:
        """The device's process restarts: it keeps its sync state, not its KEKs."""
        self.step("restart_device")
        device = pick(data, [d for a in self.accounts for d in a.devices], "device")
        old = device.sc
        self.run(old.__aexit__(None, None, None))
        self.statecaches.remove(old)
        device.sc = self.open(device.profile, state=old.state)

    @precondition(lambda self: len(self.accounts) >= 2)
    @rule(data=st.data())
    def cross_account(self, data: st.DataObject) -> None:
        """A device of one account asks for another account's data: refused."""
        self.step("cross_account")
        victim, other = pick(data, [self.accounts[:2], self.accounts[1::-1]], "pair")
        device = pick(data, other.devices, "device")
        self.run(self.refused(device, victim.profile.account_id, {(401, "unauthenticated")}))

    # invariants

    @invariant()
    def epochs_never_go_back(self) -> None:
        for account in self.accounts:
            for device in [account.admin, *account.members]:
                for key, known in device.sc.state.known.items():
                    before = device.remembered.get(key, -1)
                    check(known.mls_epoch >= before, f"{device}: epoch went back on {key}")
                    device.remembered[key] = known.mls_epoch

    # checks

    def read(self, device: DeviceModel, how: str) -> None:
        account = device.account
        now = self.now
        readable = {label for label in LABELS if device.may_read(label, now)}
        got, error = self.run(read(device.sc.onboard() if how == "onboard" else device.sc.sync()))
        STATS["reads"] += 1
        for snap in got:
            key = (snap.group_id, snap.kind)
            check(snap.label in readable, f"{device} opened {snap.label}, not in {readable}")
            check(
                account.published.get((snap.group_id, snap.kind, snap.mls_epoch)) == snap.plaintext,
                f"{device} opened a plaintext its account never published",
            )
            seen = device.view.get(key, (-1, b""))[0]
            check(snap.mls_epoch > seen, f"{device}: epoch {snap.mls_epoch} after {seen}")
            device.view[key] = (snap.mls_epoch, snap.plaintext)
            STATS["snapshots_opened"] += 1
        if error is not None:
            # only a device that may read nothing is told so; every node is up and honest
            check(
                not readable and isinstance(error, ThresholdNotMet),
                f"{device} {how} failed, may read {readable}: {error!r}",
            )
            return
        for key, latest in account.latest.items():
            if latest.label in readable:
                STATS["latest_compared"] += 1
                check(
                    device.view.get(key) == (latest.mls_epoch, latest.plaintext),
                    f"{device} after {how}: {key} at {device.view.get(key, (None,))[0]}, "
                    f"newest is {latest.mls_epoch} ({latest.label})",
                )

    async def refused(
        self, device: DeviceModel, account_id: bytes, expected: set[tuple[int, str]]
    ) -> int:
        """Every read or write of `device` against `account_id` is refused by every node;
        returns the bytes it received (problem documents only)."""
        received = 0
        for url in self.cluster.urls:
            client = NodeClient(
                self.session,
                url,
                account_id=account_id,
                device=device.profile.device,
                clock=self.cluster.clock,
            )
            calls = (
                client.list_snapshots(order="desc", limit=500),
                client.list_snapshots(after=0, limit=500, data=False),
                client.list_capsules(),
                client.reencrypt(),
                client.list_devices(),
            )
            for call in calls:
                STATS["refusal_probes"] += 1
                before = client.bytes_received
                try:
                    await call
                except NodeError as exc:
                    check((exc.status, exc.code) in expected, f"{device}: {exc}")
                    # a problem document, nothing else
                    check(client.bytes_received - before <= 512, f"{device}: a large refusal")
                    continue
                raise Violation(f"{device} was answered by {url}")
            received += client.bytes_received
        return received

    async def revoked_gets_nothing(self, device: DeviceModel) -> None:
        """Right after the revocation is acknowledged: no node serves the device."""
        account_id = device.account.profile.account_id
        received = await self.refused(device, account_id, {(403, "device_revoked")})
        STATS["revoked_problem_bytes"] += received
        # and through the SDK: its read and its publish fail, having opened nothing
        before = device.sc.bytes_received
        got, error = await read(device.sc.sync())
        check(got == [] and isinstance(error, ThresholdNotMet), f"{device} sync: {error!r}")
        assert isinstance(error, ThresholdNotMet)
        check(
            all(o.code is Code.DEVICE_REVOKED for o in error.failures.values()),
            f"revoked read failed otherwise: {error}",
        )
        item = SnapshotInput(GROUPS[0], "group_state", 2**40, b"after revocation")
        try:
            await device.sc.publish([item])
        except ThresholdNotMet:
            pass
        else:
            raise Violation(f"{device} published after its revocation")
        requests = 2 * len(self.cluster.urls)  # at most: a listing and a publish per node
        received = device.sc.bytes_received - before
        STATS["revoked_problem_bytes"] += received
        check(received <= 512 * requests, f"{device} received {received} bytes")

    async def revoked_keks_do_not_open(
        self, account: AccountModel, group_id: bytes, kind: str, epoch: int
    ) -> None:
        """The snapshot just published, as every node holds it, does not open with any KEK a
        revoked device kept, however it is presented."""
        admin = account.admin.sc
        authors = (await admin.directory()).certificates
        for node in admin.nodes:
            page = await node.list_snapshots(order="desc", group_id=group_id, limit=10)
            items = [i for i in page.items if (i.kind, i.mls_epoch) == (kind, epoch)]
            check(len(items) == 1, f"{node.base_url} does not hold the new snapshot")
            snapshot = pre.SealedSnapshot.from_bytes(items[0].snapshot or b"")
            h = snapshot.header
            check(h.key_epoch == account.key_epochs[h.label], "sealed under an old key epoch")
            for device in account.revoked:
                for kek in device.kept_keks:
                    check(kek.key_epoch < h.key_epoch or kek.label != h.label, "kept a new KEK")
                    posing = pre.Kek(kek.account_id, h.label, h.key_epoch, kek.secret)
                    for candidate in (kek, posing):
                        STATS["revoked_kek_attempts"] += 1
                        try:
                            pre.open_snapshot(snapshot, candidate, authors[h.author])
                        except pre.PreError:
                            continue
                        raise Violation(f"{device}'s old KEK opens a snapshot after rotation")


@pytest.mark.slow
@pytest.mark.timeout(SIZES.timeout)
async def test_devices_read_exactly_what_their_grants_allow(cluster: Cluster) -> None:
    STATS.clear()
    DeviceStory.cluster = cluster
    DeviceStory.loop = asyncio.get_running_loop()
    config = settings(
        max_examples=SIZES.machine_examples,
        stateful_step_count=SIZES.machine_steps,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=not SIZES.machine_random,
        database=None,
        # Shrinking re-runs whole stories against real nodes (NO_SHRINK=1 skips it).
        phases=[p for p in Phase if p is not Phase.explain] if SHRINK else [Phase.generate],
        report_multiple_bugs=False,
    )
    violation: str | None = None
    async with aiohttp.ClientSession() as session:
        DeviceStory.session = session
        try:
            await asyncio.to_thread(run_state_machine_as_test, DeviceStory, settings=config)
        except BaseException as exc:
            violation = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            figures = {
                "nodes": len(cluster.nodes),
                "threshold": THRESHOLD,
                "max_examples": SIZES.machine_examples,
                "steps_per_example": SIZES.machine_steps,
                "examples_run": STATS["examples"],
                "steps_run": STATS["steps"],
                "invariant_checks": STATS["invariant_checks"],
                "invariant_violations": 0 if violation is None else 1,
                "violation": violation,
                "snapshots_opened": STATS["snapshots_opened"],
                "device_views_compared_with_model": STATS["latest_compared"],
                "reads": STATS["reads"],
                "publishes": STATS["publishes"],
                "publishes_refused_as_expected": STATS["publishes_refused"],
                "revocations": STATS["revocations"],
                "revoked_device_requests_refused": STATS["refusal_probes"],
                "revoked_device_snapshot_bytes": 0 if violation is None else None,
                "revoked_device_problem_bytes": STATS["revoked_problem_bytes"],
                "revoked_kek_open_attempts": STATS["revoked_kek_attempts"],
                "rules": {k[5:]: v for k, v in sorted(STATS.items()) if k.startswith("rule:")},
            }
            record(
                "state_machine",
                f"{figures['examples_run']} examples, {figures['steps_run']} steps, "
                f"{figures['invariant_checks']} checks, "
                f"{figures['invariant_violations']} invariant violations",
                figures,
            )

"""How big each reliability check runs: small inside `make test`, large with SOAK=1.

The one place that reads the environment; each check takes its numbers from `SIZES`.
NO_SHRINK=1 (debugging) reports a failing state-machine example without shrinking it,
which against real nodes can take minutes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["SHRINK", "SIZES", "SOAK", "Sizes"]

SOAK = os.environ.get("SOAK", "") == "1"
SHRINK = os.environ.get("NO_SHRINK", "") != "1"


@dataclass(frozen=True)
class Sizes:
    name: str
    timeout: int  # seconds, per test
    # 1. the state machine: examples, steps per example; CI runs a fixed (derandomized)
    # set of examples so that it is repeatable, the soak fresh random ones
    machine_examples: int
    machine_steps: int
    machine_random: bool
    # 2. crash durability, per appendfsync mode and kind of crash: acknowledged writes,
    # kills, concurrent writers
    crash_writes: int
    crash_kills: int
    crash_writers: int
    # 3. node faults: groups published before onboarding (two snapshots each), the page
    # size of the onboarding read, every position and pair of faulty nodes or only the
    # primary (and the primary with its successor), and repetitions of each scenario
    fault_groups: int
    fault_page: int
    fault_every_position: bool
    fault_repeats: int
    # 4. the lying-nodes machine, per (M, N): examples, steps per example
    liar_examples: int
    liar_steps: int


CI = Sizes(
    name="ci",
    timeout=300,
    machine_examples=30,
    machine_steps=20,
    machine_random=False,
    crash_writes=300,
    crash_kills=3,
    crash_writers=6,
    fault_groups=12,
    fault_page=4,
    fault_every_position=False,
    fault_repeats=1,
    liar_examples=20,
    liar_steps=25,
)

FULL = Sizes(
    name="soak",
    timeout=3600,
    machine_examples=250,
    machine_steps=50,
    machine_random=True,
    crash_writes=4000,
    crash_kills=20,
    crash_writers=12,
    fault_groups=200,
    fault_page=25,
    fault_every_position=True,
    fault_repeats=3,
    liar_examples=150,
    liar_steps=40,
)

SIZES = FULL if SOAK else CI

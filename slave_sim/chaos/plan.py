"""The chaos drill's configuration and its plan: every fault and heal of a run, drawn from the seed
alone. Pure."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .faults import FAULTS, KINDS, Fault


@dataclass
class ChaosConfig:
    seed: int
    seconds: float = 30.0
    sites: int = 3
    pbxs_per_site: int = 2
    users: int = 8  # per PBX: the holders it checks Ports out for
    installed: int = 30  # Ports: fewer than PBXs x users, so the pool runs dry
    lease_ttl_ms: int = 2000
    heartbeat_ms: int = 400
    faults: tuple[str, ...] = FAULTS


@dataclass(frozen=True)
class Step:
    at: float  # seconds from the start of the faults
    fault: Fault
    heal: bool


def plan(config: ChaosConfig) -> list[Step]:
    """Every fault and heal of a run, drawn from the seed alone, in virtual time: the same seed
    gives the same steps, whatever the machine. A fault every 1-3 s, each healed 1-5 s later (a
    long cut of a site: 2-4 lease TTLs), at most two at a time, one process fault per master and one fault per etcd member at a time;
    at the end (`seconds`) whatever is still faulted is healed, etcd first."""
    rng = random.Random(config.seed)
    steps: list[Step] = []
    active: dict[Fault, float] = {}
    t = rng.uniform(1.0, 3.0)
    while t < config.seconds:
        for fault, heal_at in sorted(active.items(), key=lambda kv: kv[1]):
            if heal_at <= t:
                steps.append(Step(heal_at, fault, True))
                del active[fault]
        fault = KINDS[rng.choice(config.faults)].draw(rng, config.sites)
        if len(active) < 2 and _free(fault, active):
            active[fault] = min(t + fault.lasts(rng, config.lease_ttl_ms / 1000), config.seconds)
            steps.append(Step(t, fault, False))
        t += rng.uniform(1.0, 3.0)
    for fault, heal_at in sorted(active.items(), key=lambda kv: (not kv[0].kind.startswith("etcd"), kv[1])):
        steps.append(Step(min(heal_at, config.seconds), fault, True))
    return sorted(steps, key=lambda step: step.at)


def _free(fault: Fault, active: dict[Fault, float]) -> bool:
    """Not already faulted, and nothing it holds is held by an active fault: one process fault per
    master, one fault per etcd member, one cut per link (cuts of one link do not stack)."""
    return fault not in active and all(not fault.holds() & other.holds() for other in active)

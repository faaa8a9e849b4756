"""What a simulation is asked (SimConfig), what it derives from its seed (`derived`), and what it
found (SimResult). Pure."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

from ..availability import HOLD_RULE
from ..chaos.check import BELIEF_RULE, GRANT_RULE, OVER_RULE, SERVED_RULE

FAULTS = ("kill-master", "pause-master", "pause-pbx", "cut-pbx", "cut-pbx-one-way", "cut-masters", "cut-masters-one-way",
          "crash-pbx", "clock-jump")
ETCD_FAULTS = (*FAULTS, "quorum-lost", "cut-etcd", "cut-etcd-one-way")
# Two masters cut apart without etcd both serve: a limit the design states (README, "Two masters,
# one pool"), not a hole. Two-node draws them only when asked (--faults): each finds it at once.
SPLIT_BRAIN = ("cut-masters", "cut-masters-one-way")
# Shorter and longer than every timeout of the defaults: heartbeat 1 s, connect 2 s, etcd TTL 2 s,
# lease TTL 3 s, a request's 30 s; far shorter than the 72 h hold.
PAUSES_S = (0.3, 1.5, 2.5, 4.0, 10.0, 45.0, 120.0)
CUTS_S = (1.5, 5.0, 30.0, 600.0)
QUORUM_LOSSES_S = (1.0, 5.0, 30.0, 600.0)
CLOCK_JUMPS_S = (-100 * 86400.0, -3600.0, -60.0, 60.0, 3600.0, 100 * 86400.0)  # stepped back after 1 to 10 min
LATENCIES_S = (0.0002, 0.0005, 0.002, 0.01)


@dataclass(frozen=True)
class SimConfig:
    seed: int
    hours: float = 24.0
    pbxs: int = 10
    phones: int = 14  # per PBX: about 70 held at a time for 60 Ports, so the pool runs out
    ports: int = 60  # installed: fewer than the phones, so that some are refused
    fault_every_s: float = 60.0  # a fault every simulated minute on average: days of them in a wall minute
    etcd: bool = False  # leadership in a model of etcd (else two-node: standby_of and peers)
    faults: tuple[str, ...] = ()  # only these kinds (default: every kind)

    def problems(self) -> list[str]:
        out = []
        if not 0 <= self.seed < 2**32:
            out.append(f"--seed {self.seed}: from 0 to {2**32 - 1}")
        if not 0 < self.hours <= 24 * 365:
            out.append(f"--hours {self.hours:g}: more than 0, at most a year")
        if not 1 <= self.pbxs <= 50:
            out.append(f"--pbxs {self.pbxs}: from 1 to 50")
        if not 1 <= self.phones <= 100:
            out.append(f"--phones {self.phones}: from 1 to 100")
        if not 1 <= self.ports <= 10_000:
            out.append(f"--ports {self.ports}: from 1 to 10,000")
        if not self.fault_every_s >= 10:
            out.append(f"--fault-every {self.fault_every_s:g}: at least 10 s")
        unknown = [kind for kind in self.faults if kind not in self.kinds_known()]
        if unknown:
            out.append(f"--faults {','.join(unknown)}: unknown; known: {', '.join(self.kinds_known())}")
        return out

    def kinds_known(self) -> tuple[str, ...]:
        return ETCD_FAULTS if self.etcd else FAULTS

    def derived(self) -> dict[str, Any]:
        """Every option the seed decides, beside what was asked: printed at the start of a run.
        The network's latency, and each kind of fault's weight (1 to 4; some seeds lean on
        pauses, others on cuts)."""
        rng = random.Random(f"options {self.seed}")
        kinds = self.faults or (self.kinds_known() if self.etcd else tuple(k for k in FAULTS if k not in SPLIT_BRAIN))
        return {"latency_s": rng.choice(LATENCIES_S), "weights": {kind: rng.randint(1, 4) for kind in kinds},
                "pauses_s": PAUSES_S, "cuts_s": CUTS_S, "clock_jumps_s": CLOCK_JUMPS_S,
                **({"quorum_losses_s": QUORUM_LOSSES_S} if self.etcd else {})}

    def replay(self) -> str:
        """The one command that runs this simulation again."""
        return (f"slave-sim sim --seed {self.seed} --hours {self.hours:g} --pbxs {self.pbxs} --phones {self.phones} "
                f"--ports {self.ports} --fault-every {self.fault_every_s:g}" + (" --etcd" if self.etcd else "")
                + (f" --faults {','.join(self.faults)}" if self.faults else ""))


@dataclass
class SimResult:
    config: SimConfig
    history: list[tuple[Any, ...]] = field(default_factory=list)
    faults: list[tuple[float, str, str]] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)  # slave_sim/chaos/check.py's, each with its rule
    by_rule: dict[str, int] = field(default_factory=dict)
    stalled: str | None = None  # every task waited and no timer was due: a liveness violation
    simulated_s: float = 0.0
    cpu_s: float = 0.0
    peak_believed: int = 0
    audits: int = 0
    leases_audited: int = 0

    @property
    def safety(self) -> list[str]:
        return [v["detail"] for v in self.violations if v["rule"] in (OVER_RULE, GRANT_RULE, BELIEF_RULE)]

    @property
    def availability(self) -> list[str]:
        return [v["detail"] for v in self.violations if v["rule"] == HOLD_RULE]

    @property
    def liveness(self) -> list[str]:
        return [v["detail"] for v in self.violations if v["rule"] == SERVED_RULE] + \
            ([f"stalled: {self.stalled}"] if self.stalled else [])

    @property
    def passed(self) -> bool:
        return not (self.violations or self.stalled)

    @property
    def history_sha256(self) -> str:
        return hashlib.sha256(repr(self.history).encode()).hexdigest()

    def first_violation_t(self) -> float | None:
        """When the first violation happened (a stall: when it stalled), simulated seconds."""
        times = [v["t"] for v in self.violations if v.get("t") is not None]
        if self.stalled is not None:
            times.append(self.simulated_s)
        return min(times) if times else (self.simulated_s if self.violations else None)

    def trace(self, around_s: float = 30.0, limit: int = 400) -> list[tuple[Any, ...]]:
        """The history's events within `around_s` of the first violation (at most `limit`, those
        nearest it kept)."""
        t = self.first_violation_t()
        if t is None:
            return []
        near = [event for event in self.history if abs(event[0] - t) <= around_s]
        if len(near) > limit:
            near = sorted(sorted(near, key=lambda event: abs(event[0] - t))[:limit], key=lambda event: event[0])
        return near

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        return {"seed": c.seed, "hours": c.hours, "pbxs": c.pbxs, "phones": c.phones, "ports": c.ports, "etcd": c.etcd,
                "fault_every_s": c.fault_every_s, "derived": c.derived(), "passed": self.passed,
                "simulated_s": round(self.simulated_s, 3), "cpu_s": round(self.cpu_s, 2), "faults": len(self.faults),
                "faults_by_kind": _count(f[1] for f in self.faults), "peak_believed": self.peak_believed,
                "audits": self.audits, "leases_audited": self.leases_audited, "violations_by_rule": self.by_rule,
                "safety": self.safety[:20], "availability": self.availability[:20], "liveness": self.liveness[:20],
                "violations": self.violations[:20], "history_events": len(self.history),
                "history_sha256": self.history_sha256, "replay": c.replay()}


def _count(kinds: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for kind in kinds:
        out[kind] = out.get(kind, 0) + 1
    return out

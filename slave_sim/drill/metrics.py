"""What a run measured: every operation's latency and outcome, denials by code and rule, the
faults and what followed, the master's usage over time, and the auditor's findings."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from ..availability import Availability


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


TOP_PBXS = 10


@dataclass
class Recorder:
    start: float = field(default_factory=time.perf_counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (op, "ok" | code)
    denials: Counter[tuple[str, str]] = field(default_factory=Counter)  # (code, rule)
    denied_pbxs: Counter[str] = field(default_factory=Counter)  # refusals per PBX (the report shows the top ones)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)  # {t, in_use: {family: n}, installed: {...}}
    violations: list[dict[str, Any]] = field(default_factory=list)
    audits: list[dict[str, Any]] = field(default_factory=list)
    takeover_ms: list[float] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)  # per step: units of work, seconds, rate
    # every master at once: {t, over (in use beyond installed, summed over the serving masters), roles}
    across_masters: list[dict[str, Any]] = field(default_factory=list)
    # per site, as the devices saw it: (t, site, Ports held +/-, users waiting for a Port +/-)
    site_events: list[tuple[float, str, int, int]] = field(default_factory=list)
    site_refused: Counter[tuple[str, str]] = field(default_factory=Counter)  # (site, code)
    # refused failover steps (slave_sim.drill.scenario.failover_steps): {t, step, action, pbx, failed, code, rule, message, text}
    failover_refusals: list[dict[str, Any]] = field(default_factory=list)
    # devices that lost service because of licensing: leases lapsed, or lost at a re-sync
    availability: Availability = field(default_factory=Availability)
    # PBXs the master counted absent (silent past the lease TTL, their leases held for hold_s), as
    # the auditor saw them: one row per absence, {node, from_t, to_t, since, back_at, leases, held}
    absences: list[dict[str, Any]] = field(default_factory=list)
    hold_s: float | None = None  # the master's, as its usage says
    _last_absent_t: float = -1.0  # the auditor's last sample

    def now(self) -> float:
        return time.perf_counter() - self.start

    def op(self, op: str, pbx: str, seconds: float, error: str | None = None, rule: str | None = None) -> None:
        if error is None:
            self.latencies[op].append(seconds)
        self.outcomes[(op, error or "ok")] += 1

    def denial(self, op: str, pbx: str, code: str, rule: str | None, site: str | None = None) -> None:
        self.denials[(code, rule or "-")] += 1
        self.denied_pbxs[pbx] += 1
        if site is not None:
            self.site_refused[(site, code)] += 1

    def failover_refused(self, step: str, action: str, pbx: str, failed: str, code: str, rule: str | None,
                         message: str, text: str) -> None:
        """A failover step that did not go through: `pbx` (the standby) did not take over from
        `failed`, with the code and rule it was refused with. `text` says it in a sentence."""
        self.failover_refusals.append({"t": round(self.now(), 3), "step": step, "action": action, "pbx": pbx, "failed": failed,
                                       "code": code, "rule": rule, "message": message, "text": text})
        self.fault(text)

    def demand(self, site: str | None, held: int, waiting: int) -> None:
        """A site's users: one more (or fewer) holding a Port, or waiting for one it was refused."""
        if site is not None:
            self.site_events.append((self.now(), site, held, waiting))

    def saw_absent(self, t: float, absent: dict[str, Any]) -> None:
        """The master's usage `absent` at a sample: each PBX it lists extends the row of its
        absence under way (listed at the last sample too, absent since the same moment), or opens
        a row; the most leases it held meanwhile is kept."""
        if "hold_s" in absent:
            self.hold_s = absent["hold_s"]
        ongoing = {row["node"]: row for row in self.absences if row["to_t"] == self._last_absent_t}
        for pbx in absent.get("shown", []):
            row = ongoing.get(pbx["node"])
            if row is None or abs(row["since"] - pbx["since"]) > 1.0:  # (`since` is recomputed at each usage)
                row = {"node": pbx["node"], "from_t": t, "since": pbx["since"], "leases": 0, "held": {}}
                self.absences.append(row)
            row.update(to_t=t, back_at=pbx["back_at"])
            if pbx["leases"] >= row["leases"]:
                row.update(leases=pbx["leases"], held=dict(pbx["held"]))
        self._last_absent_t = t

    def fault(self, what: str) -> None:
        self.timeline.append({"t": round(self.now(), 3), "event": what})

    def step(self, what: str) -> None:
        self.timeline.append({"t": round(self.now(), 3), "step": what})

    def step_done(self, what: str, action: str, units: int, seconds: float) -> None:
        self.steps.append({"step": what, "action": action, "units": units, "seconds": round(seconds, 3),
                           "per_s": round(units / seconds, 1) if units and seconds > 0 else None})

    def registrations(self) -> dict[str, float]:
        """Device registrations over every register step: how many, how long, how fast."""
        done = [s for s in self.steps if s["action"] == "register"]
        units = sum(s["units"] for s in done)
        seconds = sum(s["seconds"] for s in done)
        return {"devices": units, "seconds": round(seconds, 3), "per_s": round(units / seconds, 1) if seconds else 0.0}

    @property
    def grants(self) -> int:
        return sum(n for (op, outcome), n in self.outcomes.items() if outcome == "ok" and op in ("checkout", "local-checkout"))

    @property
    def denial_total(self) -> int:
        return sum(self.denials.values())

    def denials_by_code(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (code, _), n in self.denials.items():
            out[code] += n
        return dict(out)

    def denials_by_rule(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (_, rule), n in self.denials.items():
            out[rule] += n
        return dict(out)

    def most_refused(self, most: int = TOP_PBXS) -> dict[str, Any]:
        """The PBXs refused most (a city has a thousand: a report lists the top ones), and how many
        PBXs were refused anything at all."""
        return {"top": [{"pbx": pbx, "count": n} for pbx, n in self.denied_pbxs.most_common(most)],
                "pbxs": len(self.denied_pbxs)}

    def latency_table(self) -> dict[str, dict[str, float]]:
        return {op: {"count": len(v), "p50_ms": round(percentile(v, 0.5) * 1000, 3),
                     "p90_ms": round(percentile(v, 0.9) * 1000, 3), "p99_ms": round(percentile(v, 0.99) * 1000, 3),
                     "max_ms": round(max(v) * 1000, 3)}
                for op, v in sorted(self.latencies.items()) if v}

    def merge(self, other: Recorder) -> None:
        """Add a worker process's measurements (same clock: perf_counter is system-wide here)."""
        for op, values in other.latencies.items():
            self.latencies[op].extend(values)
        self.outcomes.update(other.outcomes)
        self.denials.update(other.denials)
        self.denied_pbxs.update(other.denied_pbxs)
        self.site_events.extend(other.site_events)
        self.site_refused.update(other.site_refused)
        self.takeover_ms.extend(other.takeover_ms)
        self.failover_refusals = sorted(self.failover_refusals + other.failover_refusals, key=lambda item: item["t"])
        self.availability.merge(other.availability)
        self.timeline = sorted(self.timeline + other.timeline, key=lambda item: item["t"])

    def sites(self) -> dict[str, Any]:
        """Per site: the most Ports held at once, requests refused, and the most users waiting for
        a Port at once (the shortfall); and, over the installation, the most Ports wanted at once
        (held + waiting): what would have served everyone."""
        held: Counter[str] = Counter()
        waiting: Counter[str] = Counter()
        peak: Counter[str] = Counter()
        short: Counter[str] = Counter()
        wanted = 0
        for _, site, d_held, d_waiting in sorted(self.site_events):
            held[site] += d_held
            waiting[site] += d_waiting
            peak[site] = max(peak[site], held[site])
            short[site] = max(short[site], waiting[site])
            wanted = max(wanted, sum(held.values()) + sum(waiting.values()))
        names = sorted({*held, *(site for site, _ in self.site_refused)})
        rows = []
        for site in names:
            by_code = {code: n for (s, code), n in sorted(self.site_refused.items()) if s == site}
            rows.append({"site": site, "peak_ports": peak[site], "refused": sum(by_code.values()), "refused_by_code": by_code,
                         "short": short[site]})
        return {"sites": rows, "ports_wanted_at_peak": wanted}

    def peak_in_use(self) -> dict[str, int]:
        peak: dict[str, int] = {}
        for sample in self.samples:
            for family, n in sample["in_use"].items():
                peak[family] = max(peak.get(family, 0), n)
        return peak

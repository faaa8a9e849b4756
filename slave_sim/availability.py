"""Availability: the devices that lost service because of licensing, as the PBXs were told it.
Shared by the scripted drills (drill/metrics.Recorder) and the chaos drill (chaos/runner.History).

A device loses service because of licensing when its PBX is
- told to stop using what it holds: the client's `lapsed` event, once no master confirmed its
  leases within the hold (`hold_s`, from the hello reply);
- told a lease is gone: the client's `lost` event (a sync's refused entry, a lease an operator
  took back), or a re-sync the master refused as a whole (each lease it brought).

The two clocks (docs/operations.md, "Two clocks") promise that no PBX loses a lease within its
hold: a loss is allowed only once the PBX's leases have lapsed (its hold ran out first), and a
lapse only after a whole hold without a confirmation. `within_hold()` names what broke that.
Pure: times are handed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Availability:
    # each `lapsed` a PBX was told: {t, pbx, leases, silent_s (since its last confirmation), hold_s}
    lapses: list[dict[str, Any]] = field(default_factory=list)
    # each lease a PBX was told it lost: {t, pbx, holder, why, lapsed (its leases had lapsed before)}
    losses: list[dict[str, Any]] = field(default_factory=list)
    lapsed_pbxs: set[str] = field(default_factory=set)  # told `lapsed`, not served again since

    def seen(self, t: float, pbx: str, event: dict[str, Any], *, silent_s: float = 0.0, hold_s: float = 0.0) -> None:
        """A client event of `pbx` (`on_event`): `lapsed` and `lost` are counted; `reconnected`
        (re-synced on a master) ends a lapse. `silent_s`, `hold_s`: the client's, with a lapse."""
        name = event.get("event")
        if name == "lapsed":
            self.lapsed(t, pbx, int(event.get("leases", 0)), silent_s, hold_s)
        elif name == "lost":
            self.lost(t, pbx, str(event.get("holder")), str(event.get("error") or "?"))
        elif name == "reconnected":
            self.served(pbx)

    def lapsed(self, t: float, pbx: str, leases: int, silent_s: float, hold_s: float) -> None:
        silent_s = min(silent_s, NEVER_S)  # never confirmed (a lease adopted, then cut off): as long as can be
        self.lapses.append({"t": t, "pbx": pbx, "leases": leases, "silent_s": round(silent_s, 3), "hold_s": hold_s})
        self.lapsed_pbxs.add(pbx)

    def lost(self, t: float, pbx: str, holder: str, why: str) -> None:
        self.losses.append({"t": t, "pbx": pbx, "holder": holder, "why": why, "lapsed": pbx in self.lapsed_pbxs})

    def served(self, pbx: str) -> None:
        """`pbx` re-synced on a master: what it holds now is confirmed again."""
        self.lapsed_pbxs.discard(pbx)

    def merge(self, other: Availability) -> None:
        """Another process's PBXs (`--workers`): the same clock."""
        self.lapses = sorted(self.lapses + other.lapses, key=lambda item: item["t"])
        self.losses = sorted(self.losses + other.losses, key=lambda item: item["t"])

    def summary(self) -> dict[str, int]:
        leases_lapsed = sum(int(lapse["leases"]) for lapse in self.lapses)
        return {"lapses": len(self.lapses), "leases_lapsed": leases_lapsed, "leases_lost": len(self.losses),
                "out_of_service": leases_lapsed + len(self.losses)}

    def within_hold(self) -> list[dict[str, Any]]:
        """Violations of "no PBX loses a lease within its hold": a lapse told before a whole hold
        without a confirmation, and a lease lost while its PBX's hold still ran (not lapsed)."""
        found = []
        for lapse in self.lapses:
            if lapse["silent_s"] < lapse["hold_s"]:
                found.append({"rule": HOLD_RULE, "t": lapse["t"], "pbx": lapse["pbx"],
                              "detail": f"{lapse['pbx']} was told its {lapse['leases']} leases lapsed at t={lapse['t']:.2f} s, "
                                        f"{lapse['silent_s']:g} s after its last confirmation (hold {lapse['hold_s']:g} s)"})
        for loss in self.losses:
            if not loss.get("lapsed", False):
                found.append({"rule": HOLD_RULE, "t": loss["t"], "pbx": loss["pbx"],
                              "detail": f"{loss['pbx']} lost {loss['holder']!r} at t={loss['t']:.2f} s ({loss['why']}) "
                                        "within its hold"})
        return sorted(found, key=lambda v: v["t"])


HOLD_RULE = "no PBX loses a lease within its hold"
NEVER_S = 1e9  # seconds: what a lapse of leases never confirmed counts as their silence


def describe(summary: dict[str, int]) -> str:
    """The figures in a sentence (the drill's check, the chaos drill's console line)."""
    return (f"{summary['lapses']} time(s) a PBX was told its leases lapsed ({summary['leases_lapsed']} leases it had to "
            f"stop using), {summary['leases_lost']} lease(s) lost at a re-sync")

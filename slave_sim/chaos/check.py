"""The chaos drill's checker: what must hold of a recorded history, whatever the faults. Pure.

A history is what the drill saw (runner.py):
- `samples`: every ~100 ms, `believed` (the leases the PBXs may use now, summed: each PBX's
  `MasterClient.believed()`), `acting` (in use summed over every master that answered and
  serves, slave_sim/masters.py: a suspended one only while none grants, a Port two of them count
  for one phone, one adopted from the other, counted once), `installed`;
- `grants`, `checkins`, `losses`: per PBX and holder, each `ok` checkout, each check-in the PBX
  made, each loss the PBX was told of (`lost`, with `lapsed`: its hold had run out before);
- `lapses`: each `lapsed` a PBX was told, with how long it had gone without a confirmation
  (`silent_s`) and its hold (`hold_s`);
- `held`: what each PBX holds at the end, after every fault was healed;
- `last_heal` and `served`: when the last fault was healed, and when each PBX was first
  confirmed by a master after it.

- `audits`: after every failover, once the PBXs re-synced and with the workload paused, what
  each PBX believes it holds, lease by lease with its ids, beside what the acting master counts
  for it (`belief_violations`).

The rules (issue 16): never more believed nor in use than installed, at any sample; every `ok`
grant still held at the end, or given back, or its loss told to its PBX; every PBX served again
within `SERVED_WITHIN_S` of the last heal. And (issue 27) every lease a PBX believes is counted
by the acting master for that PBX, under the id the PBX holds, for the same holder: the
pool's count is what the phones believe, not only what the master thinks it gave. And (issue 22)
no PBX loses a lease within its hold: no `lost` while its hold runs, no `lapsed` before a whole
hold without a confirmation (slave_sim/availability.py).
"""

from __future__ import annotations

from typing import Any

from ..availability import HOLD_RULE, Availability

SERVED_WITHIN_S = 5.0
OVER_RULE = "never over installed"
GRANT_RULE = "every grant held, given back or its loss told"
SERVED_RULE = f"served within {SERVED_WITHIN_S:g} s of the last heal"
BELIEF_RULE = "every lease a PBX believes is the master's count for it"
RULES = (OVER_RULE, GRANT_RULE, SERVED_RULE, BELIEF_RULE, HOLD_RULE)


def by_rule(violations: list[dict[str, Any]]) -> dict[str, int]:
    """How many violations of each rule, every rule named (0 where it held)."""
    return {rule: sum(1 for v in violations if v["rule"] == rule) for rule in RULES}


def check(history: dict[str, Any]) -> list[dict[str, Any]]:
    """The violations, first of each kind first; [] when the history is sound."""
    violations: list[dict[str, Any]] = []
    over = next((s for s in history["samples"] if s["believed"] > s["installed"] or s["acting"] > s["installed"]), None)
    if over is not None:
        what = "believed" if over["believed"] > over["installed"] else "acting"
        violations.append({"rule": OVER_RULE, "t": over["t"], "sample": over,
                           "detail": f"{what} {over[what]} > installed {over['installed']} at t={over['t']:.2f} s"})
    violations += unaccounted(history)
    violations += Availability(lapses=history.get("lapses", []), losses=history["losses"]).within_hold()
    for audit in history.get("audits", []):
        violations += belief_violations(audit["believed"], audit["counted"], audit["t"])
    last_heal = history["last_heal"]
    for pbx, at in sorted(history["served"].items()):
        if at is None or at - last_heal > SERVED_WITHIN_S:
            late = "never" if at is None else f"after {at - last_heal:.2f} s"
            violations.append({"rule": SERVED_RULE, "t": at, "pbx": pbx,
                               "detail": f"{pbx} served again {late} (last heal at t={last_heal:.2f} s)"})
    return violations


def unaccounted(history: dict[str, Any]) -> list[dict[str, Any]]:
    """Grants the PBX neither holds at the end, nor gave back, nor was told it lost."""
    last: dict[tuple[str, str], tuple[float, str]] = {}  # (pbx, holder) -> (t, what happened last)
    for kind in ("grants", "checkins", "losses"):
        for item in history[kind]:
            key = (item["pbx"], item["holder"])
            if key not in last or item["t"] >= last[key][0]:
                last[key] = (item["t"], kind)
    found = []
    for (pbx, holder), (t, kind) in sorted(last.items()):
        if kind == "grants" and holder not in history["held"].get(pbx, ()):
            found.append({"rule": GRANT_RULE, "t": t, "pbx": pbx,
                          "detail": f"{pbx} was granted {holder!r} at t={t:.2f} s: not held at the end, never given back, "
                                    "no loss told"})
    return found


Ids = dict[str, list[list[str]]]  # per PBX (node): [resource, holder, lease id] of each lease


def belief_violations(believed: Ids, counted: Ids, t: float | None = None) -> list[dict[str, Any]]:
    """Each lease a PBX believes (`believed`: per PBX, what its client holds and may use) must be
    counted by the acting master for that PBX (`counted`: its leases per node, with its ids)
    under the same id, for the same resource and holder. A lease believed and not counted is
    one the master may give to another phone; one counted under another id, or that id counted
    for another holder, is one a check-in frees wrongly. A lease counted and not believed is a
    leak, not a violation: nobody uses it, and the next re-sync gives it back."""
    found: list[dict[str, Any]] = []
    for pbx in sorted(believed):
        by_id = {lease_id: (resource, holder) for resource, holder, lease_id in counted.get(pbx, [])}
        by_key = {(resource, holder): lease_id for resource, holder, lease_id in counted.get(pbx, [])}
        for resource, holder, lease_id in sorted(believed[pbx]):
            if by_id.get(lease_id) == (resource, holder):
                continue
            if lease_id in by_id:
                why = f"the master counts id {lease_id} for {by_id[lease_id][0]} {by_id[lease_id][1]!r}"
            elif (resource, holder) in by_key:
                why = f"the master counts it under id {by_key[(resource, holder)]}"
            else:
                why = "the master does not count it"
            found.append({"rule": BELIEF_RULE, "t": t, "pbx": pbx,
                          "detail": f"{pbx} believes {resource} {holder!r} as lease {lease_id}: {why}"})
    return found

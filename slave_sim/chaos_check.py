"""The chaos drill's checker: what must hold of a recorded history, whatever the faults. Pure.

A history is what the drill saw (slave_sim/chaos.py):
- `samples`: every ~100 ms, `believed` (the leases the PBXs may use now, summed: each PBX's
  `MasterClient.believed()`), `acting` (in use summed over every master that answered and
  serves), `installed`;
- `grants`, `checkins`, `losses`: per PBX and holder, each `ok` checkout, each check-in the PBX
  made, each loss the PBX was told of (`lost`);
- `held`: what each PBX holds at the end, after every fault was healed;
- `last_heal` and `served`: when the last fault was healed, and when each PBX was first
  confirmed by a master after it.

The rules (issue 16): never more believed nor in use than installed, at any sample; every `ok`
grant still held at the end, or given back, or its loss told to its PBX; every PBX served again
within `SERVED_WITHIN_S` of the last heal.
"""

from __future__ import annotations

from typing import Any

SERVED_WITHIN_S = 5.0


def check(history: dict[str, Any]) -> list[dict[str, Any]]:
    """The violations, first of each kind first; [] when the history is sound."""
    violations: list[dict[str, Any]] = []
    over = next((s for s in history["samples"] if s["believed"] > s["installed"] or s["acting"] > s["installed"]), None)
    if over is not None:
        what = "believed" if over["believed"] > over["installed"] else "acting"
        violations.append({"rule": "never over installed", "t": over["t"], "sample": over,
                           "detail": f"{what} {over[what]} > installed {over['installed']} at t={over['t']:.2f} s"})
    violations += unaccounted(history)
    last_heal = history["last_heal"]
    for pbx, at in sorted(history["served"].items()):
        if at is None or at - last_heal > SERVED_WITHIN_S:
            late = "never" if at is None else f"after {at - last_heal:.2f} s"
            violations.append({"rule": f"served within {SERVED_WITHIN_S:g} s of the last heal", "t": at, "pbx": pbx,
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
            found.append({"rule": "every grant held, given back or its loss told", "t": t, "pbx": pbx,
                          "detail": f"{pbx} was granted {holder!r} at t={t:.2f} s: not held at the end, never given back, "
                                    "no loss told"})
    return found

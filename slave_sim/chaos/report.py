"""The chaos drill's report: a text verdict for the terminal, JSON, and a self-contained HTML page
(no script) with the seed, the fault timeline, the samples against installed, and, on a failure,
the first violating sample."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ..availability import describe
from ..reports import write_pair
from .faults import FAULTS


def console(r: dict[str, Any]) -> str:
    lines = [f"Chaos drill, seed {r['seed']}: {'PASSED' if r['passed'] else 'FAILED'} ({r['seconds']:g} s of faults)",
             f"  faults injected: {r['faults_injected']}; grants {r['grants']}, check-ins {r['checkins']}, losses told {r['losses']}"
             + (", refused: " + ", ".join(f"{k} {v}" for k, v in sorted(r["refusals"].items())) if r["refusals"] else ""),
             f"  peaks: believed by the PBXs {r['peak_believed']}, in use on serving masters {r['peak_acting']}, "
             f"installed {r['config']['installed']}"]
    served = [v - r["last_heal"] for v in r["served"].values() if v is not None]
    if served:
        lines.append(f"  served again after the last heal: slowest PBX {max(served):.2f} s")
    if "availability" in r:  # what a phone would notice: within the hold, none (check.py)
        hold = f" (hold {r['hold_s']:g} s)" if r.get("hold_s") is not None else ""
        lines.append(f"  availability{hold}: {describe(r['availability'])}")
    if "audits" in r:
        lines.append(f"  beliefs audited against the serving master: {r['audits']} time(s) (after each failover and at the end), "
                     f"{r['leases_audited']} leases compared by id")
    if "violations_by_rule" in r:
        lines.append("  violations by rule: " + ", ".join(f"{rule} {n}" for rule, n in r["violations_by_rule"].items()))
    if r["violations"]:
        lines.append(f"  reproduce: {reproduce(r)}")
        lines.append("  violations:")
        lines += [f"    [{v['rule']}] {v['detail']}" for v in r["violations"]]
        first = r["violations"][0]
        lines.append("  fault timeline up to the first violation:")
        for event in r["timeline"]:
            if first.get("t") is not None and event["t"] > first["t"]:
                break
            lines.append(f"    {event['t']:7.2f} s  {event['what']}" + (f": {event['fault']}" if "fault" in event else ""))
    return "\n".join(lines)


def reproduce(r: dict[str, Any]) -> str:
    """The command that draws the same plan again."""
    c = r["config"]
    return (f"slave-sim chaos --seed {r['seed']} --seconds {r['seconds']:g} --sites {c['sites']} --pbxs {c['pbxs_per_site']}"
            + (f" --faults {','.join(c['faults'])}" if len(c["faults"]) < len(FAULTS) else ""))


def write_reports(r: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    return write_pair(directory, f"chaos-seed{r['seed']}", r, render_html(r))


def render_html(r: dict[str, Any]) -> str:
    e = html.escape
    verdict = "PASSED" if r["passed"] else "FAILED"
    timeline = "".join(f'<li><span class="t">{ev["t"]:.2f} s</span> {e(ev["what"])}'
                       + (f": {e(ev['fault'])}" if "fault" in ev else "") + "</li>" for ev in r["timeline"])
    violations = "".join(f"<li><b>{e(v['rule'])}</b>: {e(v['detail'])}</li>" for v in r["violations"]) or "<li>none</li>"
    first = ""
    if r["violations"] and "sample" in r["violations"][0]:
        first = f"<h2>First violating sample</h2><pre>{e(json.dumps(r['violations'][0]['sample'], indent=1))}</pre>"
    repro = f"<p>Reproduce: <code>{e(reproduce(r))}</code></p>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>chaos seed {r['seed']}: {verdict}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;max-width:70em}} .t{{font-family:ui-monospace,monospace;color:#666}}
.verdict{{color:{'#2a7d2a' if r['passed'] else '#b22222'}}} ul.timeline{{list-style:none;padding-left:0}}
svg text{{font:11px system-ui,sans-serif;fill:#444}}</style></head><body>
<h1>Chaos drill, seed {r['seed']} <span class="verdict">{verdict}</span></h1>
{repro}
<p>{r['faults_injected']} faults in {r['seconds']:g} s; {r['grants']} grants, {r['checkins']} check-ins, {r['losses']} losses
told to their PBXs. Availability: {e(describe(r['availability']))}. Peaks: believed by the PBXs {r['peak_believed']}, in use on the serving masters {r['peak_acting']},
installed {r['config']['installed']}.</p>
<h2>Violations</h2><ul>{violations}</ul>
{first}
<h2>Licenses over time</h2>{chart(r)}
<h2>Faults and heals</h2><ul class="timeline">{timeline}</ul>
</body></html>
"""


def chart(r: dict[str, Any], width: int = 1000, height: int = 260) -> str:
    samples = r["samples"]
    if not samples:
        return "<p>No samples.</p>"
    installed = r["config"]["installed"]
    t_max = max(s["t"] for s in samples) or 1.0
    y_max = max([installed] + [max(s["believed"], s["acting"]) for s in samples]) * 1.1 or 1
    left, bottom, top = 45, 25, 10
    w, h = width - left - 10, height - bottom - top

    def x(t: float) -> float:
        return left + t / t_max * w

    def y(v: float) -> float:
        return top + h - v / y_max * h

    spans, open_faults = [], {}
    for event in r["timeline"]:
        if event["what"] == "fault":
            open_faults[event["fault"]] = event["t"]
        elif event["what"] == "heal" and event["fault"] in open_faults:
            start = open_faults.pop(event["fault"])
            spans.append(f'<rect x="{x(start):.1f}" y="{top}" width="{max(1.0, x(event["t"]) - x(start)):.1f}" height="{h}" '
                         f'fill="#f3d9d9" opacity="0.5"><title>{html.escape(event["fault"])}</title></rect>')
    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="believed and in use against installed">',
             *spans,
             f'<line x1="{left}" y1="{y(installed):.1f}" x2="{left + w}" y2="{y(installed):.1f}" stroke="#b22222" stroke-dasharray="4 3"/>',
             f'<text x="{left + w - 60}" y="{y(installed) - 4:.1f}">installed {installed}</text>',
             f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" stroke="#999"/>',
             f'<text x="{left}" y="{height - 6}">0 s</text><text x="{left + w - 40}" y="{height - 6}">{t_max:.0f} s</text>']
    for key, colour in (("believed", "#1f77b4"), ("acting", "#2ca02c")):
        points = " ".join(f"{x(s['t']):.1f},{y(s[key]):.1f}" for s in samples)
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
    parts.append(f'<text x="{left + 5}" y="{top + 12}" fill="#1f77b4">believed by the PBXs</text>'
                 f'<text x="{left + 150}" y="{top + 12}" fill="#2ca02c">in use on serving masters</text>')
    parts.append("</svg>")
    return "".join(parts)

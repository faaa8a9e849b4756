"""Reports of a run: a console summary, a JSON document, and a self-contained HTML page
(inline CSS and SVG, no script, no font, nothing fetched: it opens offline)."""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

from ..availability import describe as describe_availability
from ..reports import write_pair
from .runner import RunResult

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]


def to_dict(result: RunResult) -> dict[str, Any]:
    r, s = result.recorder, result.scenario
    return {
        "scenario": s.name, "description": s.description, "size": s.size, "passed": result.passed,
        "seconds": round(result.seconds, 3), "master": result.master,
        "network": {"pbxs": len(s.pbxs), "devices": s.device_count,
                    "standbys": sum(1 for p in s.pbxs if p.standby)},
        "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail, "kind": c.kind} for c in result.checks],
        "sites": sites_figures(result),
        "grants": r.grants, "denials": {"total": r.denial_total, "by_code": r.denials_by_code(), "by_rule": r.denials_by_rule(),
                                        "most_refused": r.most_refused()},
        "latency": r.latency_table(), "steps": r.steps, "registrations": r.registrations(), "takeover_ms": [round(t, 3) for t in r.takeover_ms],
        "failover_refused": r.failover_refusals,
        "peak_in_use": r.peak_in_use(), "installed": result.installed, "final_in_use": result.final_in_use,
        "timeline": r.timeline, "audits": r.audits, "violations": r.violations, "samples": r.samples,
        "journal": result.journal, "undone_user_licenses": result.undone,
        "availability": {**r.availability.summary(), "lapse_events": r.availability.lapses,
                         "loss_events": r.availability.losses},
        "absent": {"hold_s": r.hold_s, "pbxs": r.absences},
        "across_masters": across_masters(r.across_masters),
    }


def across_masters(samples: list[dict[str, Any]]) -> dict[str, int] | None:
    """With several masters: the most in use beyond installed over the serving ones at a sample,
    a Port both count for one phone counted once (`most_over`) and twice (`most_over_summed`)."""
    if not samples:
        return None
    return {"samples": len(samples), "most_over": max(s["over"] for s in samples),
            "most_over_summed": max(s["over_summed"] for s in samples),
            "most_counted_twice": max(s["counted_twice"] for s in samples)}


SHOWN_ABSENT = 10  # a city's absent PBXs are counted, the first ones listed


def when(wall: float) -> str:
    """A wall-clock time of the master's, in UTC."""
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(wall))


def absent_rows(d: dict[str, Any]) -> list[str]:
    """Each absence the auditor saw, in a line: the PBX, what it held, for how long it was absent
    in the run, and when its hold would have run out."""
    rows = []
    for row in d["absent"]["pbxs"]:
        held = ", ".join(f"{resource} {n}" for resource, n in sorted(row["held"].items()))
        rows.append(f"{row['node']}: {row['leases']} lease(s) held ({held or 'none'}), absent from {row['from_t']:.1f} s to "
                    f"{row['to_t']:.1f} s of the run; held until {when(row['back_at'])} unless it speaks")
    return rows


def absent_title(d: dict[str, Any]) -> str:
    hold = d["absent"]["hold_s"]
    return ("absent PBXs (silent past the lease TTL; the master keeps their leases for hold_s"
            + (f" = {hold:g} s" if hold is not None else "") + f"): {len(d['absent']['pbxs'])}")


def sites_figures(result: RunResult) -> dict[str, Any] | None:
    """Per site, when the scenario names sites: peak Ports held, refused, the shortfall, each in a
    sentence too; kept apart from the checks of the master's correctness."""
    if not any(p.site for p in result.scenario.pbxs):
        return None
    figures = result.recorder.sites()
    ports = result.installed.get("PBX-Port", 0) + result.installed.get("Port", 0)
    wanted = figures["ports_wanted_at_peak"]
    for row in figures["sites"]:
        if row["short"]:
            row["verdict"] = (f"{row['site']}: {row['short']} user(s) without a Port at peak; "
                              f"{max(wanted, ports)} Ports would have served everyone ({ports} installed)")
        else:
            row["verdict"] = f"{row['site']}: everyone served, {row['peak_ports']} Ports at its peak"
    figures["ports_installed"] = ports
    return figures


def console(result: RunResult) -> str:
    d = to_dict(result)
    lines = [f"Scenario {d['scenario']} ({d['size']}): {'PASSED' if d['passed'] else 'FAILED'} in {d['seconds']:.1f} s",
             f"  network: {d['network']['pbxs']} PBXs, {d['network']['devices']} devices, {d['network']['standbys']} standbys",
             f"  grants: {d['grants']}   denials: {d['denials']['total']}"
             + (" (" + ", ".join(f"{k} {v}" for k, v in sorted(d['denials']['by_code'].items())) + ")" if d['denials']['total'] else ""),
             ]
    if d["denials"]["by_rule"]:
        lines.append("  denials by rule: " + ", ".join(f"{k} {v}" for k, v in sorted(d["denials"]["by_rule"].items())))
    if d["denials"]["most_refused"]["top"]:
        lines.append("  refused most: " + most_refused_text(d))
    peak = ", ".join(f"{f} {n}/{d['installed'].get(f, 0)}" for f, n in sorted(d["peak_in_use"].items()) if n)
    if peak:
        lines.append(f"  peak in use / installed at the end: {peak}")
    reg = d["registrations"]
    if reg["devices"]:
        lines.append(f"  device registrations attempted: {reg['devices']} in {reg['seconds']:.2f} s ({reg['per_s']:.0f}/s sustained)")
    for op, lat in d["latency"].items():
        lines.append(f"  {op:<15} {lat['count']:>7}  p50 {lat['p50_ms']:.2f} ms  p99 {lat['p99_ms']:.2f} ms")
    if d["takeover_ms"]:
        lines.append(f"  takeovers answered in: {', '.join(f'{t:.1f} ms' for t in d['takeover_ms'])}")
    absent = absent_rows(d)
    if absent:
        lines.append(f"  {absent_title(d)}")
        lines += [f"    {row}" for row in absent[:SHOWN_ABSENT]]
        if len(absent) > SHOWN_ABSENT:
            lines.append(f"    and {len(absent) - SHOWN_ABSENT} more")
    if d["undone_user_licenses"] is not None:
        lines.append(f"  left as found: the {d['undone_user_licenses']} user(s) given user licenses by the run had them unassigned")
    if d["sites"] is not None:
        lines.append("  sizing per site (as the simulated users saw it):")
        for row in d["sites"]["sites"]:
            refused = f", refused {row['refused']} (" + ", ".join(f"{c} {n}" for c, n in row["refused_by_code"].items()) + ")" \
                if row["refused"] else ""
            lines.append(f"    {row['verdict']}{refused}")
    lines.append("  checks:")
    for kind, title in (("correctness", "checks"), ("sizing", "sizing expectations")):
        shown = [c for c in d["checks"] if c["kind"] == kind]
        if kind == "sizing" and shown:
            lines.append(f"  {title}:")
        for c in shown:
            lines.append(f"    [{'ok' if c['passed'] else 'FAIL'}] {c['name']}: {c['detail']}")
    return "\n".join(lines)


def most_refused_text(d: dict[str, Any]) -> str:
    """The top refused PBXs in a line: "site12 40, site7 38, ... (310 PBXs refused in all)"."""
    most = d["denials"]["most_refused"]
    text = ", ".join(f"{t['pbx']} {t['count']}" for t in most["top"])
    return text + (f" ({most['pbxs']} PBXs refused in all)" if most["pbxs"] > len(most["top"]) else "")


def write_reports(result: RunResult, directory: Path) -> tuple[Path, Path]:
    d = to_dict(result)
    return write_pair(directory, f"{d['scenario']}-{d['size']}", d, render_html(d))


# ---------------------------------------------------------------- HTML

def render_html(d: dict[str, Any]) -> str:
    e = html.escape
    verdict = "PASSED" if d["passed"] else "FAILED"
    checks = "".join(f"<tr class={'ok' if c['passed'] else 'fail'}><td>{'✔' if c['passed'] else '✘'}</td>"
                     f"<td>{e(c['name'])}</td><td>{e(c['detail'])}</td></tr>" for c in d["checks"] if c["kind"] == "correctness")
    sizing_checks = "".join(f"<tr class={'ok' if c['passed'] else 'fail'}><td>{'✔' if c['passed'] else '✘'}</td>"
                            f"<td>{e(c['name'])}</td><td>{e(c['detail'])}</td></tr>" for c in d["checks"] if c["kind"] == "sizing")
    sites = ""
    if d["sites"] is not None:
        rows = "".join(f"<tr class={'fail' if r['short'] else 'ok'}><td>{e(r['site'])}</td><td>{r['peak_ports']}</td><td>{r['refused']}</td>"
                       f"<td>{r['short']}</td><td>{e(r['verdict'])}</td></tr>" for r in d["sites"]["sites"])
        sites = (f"<h2>Sizing per site</h2><p>As the simulated users saw it: {d['sites']['ports_wanted_at_peak']} Ports wanted at "
                 f"once at the peak, {d['sites']['ports_installed']} installed.</p><table><tr><th>site</th><th>peak Ports held</th>"
                 f"<th>refused</th><th>without a Port at once</th><th>verdict</th></tr>{rows}</table>"
                 + (f"<table>{sizing_checks}</table>" if sizing_checks else ""))
    lat = "".join(f"<tr><td>{e(op)}</td><td>{v['count']}</td><td>{v['p50_ms']:.2f}</td><td>{v['p90_ms']:.2f}</td>"
                  f"<td>{v['p99_ms']:.2f}</td><td>{v['max_ms']:.2f}</td></tr>" for op, v in d["latency"].items())
    timeline = "".join(f"<li><span class=t>{item['t']:8.3f} s</span> "
                       + (f"<b>{e(item['step'])}</b>" if "step" in item else e(item["event"])) + "</li>" for item in d["timeline"])
    audits = "".join(f"<tr class={'ok' if a['agrees'] else 'fail'}><td>{a['t']:.2f} s</td><td>{e(a['at'])}</td>"
                     f"<td>{e(json.dumps(a['master']))}</td><td>{e(json.dumps(a['network']))}</td></tr>" for a in d["audits"])
    steps = "".join(f"<tr><td>{e(x['step'])}</td><td>{x['units']}</td><td>{x['seconds']:.3f}</td>"
                    f"<td>{x['per_s'] if x['per_s'] is not None else ''}</td></tr>" for x in d["steps"])
    violations = "".join(f"<li>{e(json.dumps(v))}</li>" for v in d["violations"][:50]) or "<li>none</li>"
    availability = availability_html(d)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>slave-sim: {e(d['scenario'])} {verdict}</title>
<style>
body{{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}}
h1{{font-size:1.5em}} h2{{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}}
.verdict{{display:inline-block;padding:.1em .6em;border-radius:4px;color:#fff;background:{'#2a7d2a' if d['passed'] else '#b22222'}}}
table{{border-collapse:collapse}} td,th{{padding:.25em .7em;border-bottom:1px solid #eee;text-align:left;vertical-align:top}}
tr.fail td{{color:#b22222;font-weight:600}} tr.ok td:first-child{{color:#2a7d2a}}
.t{{font-family:ui-monospace,monospace;color:#666}} ul.timeline{{list-style:none;padding-left:0;max-height:28em;overflow:auto}}
.legend span{{margin-right:1.2em;white-space:nowrap}} .legend i{{display:inline-block;width:1em;height:.6em;margin-right:.3em}}
svg text{{font:11px system-ui,sans-serif;fill:#444}}
</style></head><body>
<h1>{e(d['scenario'])} <span class="verdict">{verdict}</span></h1>
<p>{e(d['description'])}</p>
<p>Size <b>{e(d['size'])}</b>: {d['network']['pbxs']} PBXs, {d['network']['devices']} devices, {d['network']['standbys']} standbys;
ran {d['seconds']:.1f} s against {e(str(d['master']))}. {d['grants']} grants, {d['denials']['total']} denials.</p>
<h2>Expectations</h2><table>{checks}</table>
{sites}
{availability}
<h2>Licenses in use over time</h2>{usage_chart(d)}
<h2>Denials by reason and rule</h2>{denial_chart(d)}
{f"<p>Refused most: {e(most_refused_text(d))}</p>" if d["denials"]["most_refused"]["top"] else ""}
<h2>Steps</h2><table><tr><th>step</th><th>units of work</th><th>seconds</th><th>per second</th></tr>{steps}</table>
<h2>Latency (ms)</h2><table><tr><th>operation</th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr>{lat}</table>
<h2>Timeline: faults and what followed</h2><ul class="timeline">{timeline}</ul>
<h2>Audits at quiet points</h2><table><tr><th>time</th><th>after</th><th>master in use</th><th>network believes</th></tr>{audits}</table>
<h2>Violations</h2><ul>{violations}</ul>
</body></html>
"""


def availability_html(d: dict[str, Any]) -> str:
    """Devices that lost service because of licensing, and the absent PBXs with what they held."""
    e = html.escape
    told = [*(f"<li>{lapse['t']:.2f} s: {e(lapse['pbx'])} told its {lapse['leases']} leases lapsed</li>"
              for lapse in d["availability"]["lapse_events"]),
            *(f"<li>{loss['t']:.2f} s: {e(loss['pbx'])} lost {e(str(loss['holder']))} ({e(str(loss['why']))})</li>"
              for loss in d["availability"]["loss_events"])]
    rows = "".join(f"<tr><td>{e(row['node'])}</td><td>{row['leases']}</td>"
                   f"<td>{e(', '.join(f'{k} {n}' for k, n in sorted(row['held'].items())))}</td>"
                   f"<td>{row['from_t']:.1f}–{row['to_t']:.1f} s</td><td>{e(when(row['back_at']))}</td></tr>"
                   for row in d["absent"]["pbxs"][:100])
    absent = (f"<p>{e(absent_title(d))}.</p><table><tr><th>PBX</th><th>leases held</th><th>by resource</th>"
              f"<th>absent in the run</th><th>held until (UTC)</th></tr>{rows}</table>" if rows
              else "<p>No PBX was absent (silent past the lease TTL).</p>")
    return (f"<h2>Availability</h2><p>{e(describe_availability(d['availability']))}.</p>"
            + (f"<ul>{''.join(told[:50])}</ul>" if told else "") + absent)


def usage_chart(d: dict[str, Any], width: int = 1000, height: int = 300) -> str:
    samples = d["samples"]
    families = sorted({f for s in samples for f, n in s["in_use"].items() if n})  # what was ever in use
    if not samples or not families:
        return "<p>No license was in use.</p>"
    pad_l, pad_b, pad_t = 50, 30, 10
    t_max = max(s["t"] for s in samples) or 1.0
    y_max = max([max((s["in_use"].get(f, 0) for s in samples), default=0) for f in families] +
                [d["installed"].get(f, 0) for f in families] + [1])
    w, h = width - pad_l - 10, height - pad_b - pad_t

    def x(t: float) -> float:
        return pad_l + t / t_max * w

    def y(v: float) -> float:
        return pad_t + h - v / y_max * h

    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="licenses in use over time">',
             f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" stroke="#999"/>',
             f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + h}" stroke="#999"/>']
    for k in range(5):
        v = y_max * k / 4
        parts.append(f'<text x="{pad_l - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>')
        parts.append(f'<line x1="{pad_l}" y1="{y(v):.1f}" x2="{pad_l + w}" y2="{y(v):.1f}" stroke="#eee"/>')
    for k in range(6):
        t = t_max * k / 5
        parts.append(f'<text x="{x(t):.1f}" y="{pad_t + h + 18}" text-anchor="middle">{t:.1f} s</text>')
    legend = []
    for i, family in enumerate(families):
        color = PALETTE[i % len(PALETTE)]
        points = " ".join(f"{x(s['t']):.1f},{y(s['in_use'].get(family, 0)):.1f}" for s in samples)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{points}"/>')
        inst = d["installed"].get(family, 0)
        if inst:
            parts.append(f'<line x1="{pad_l}" y1="{y(inst):.1f}" x2="{pad_l + w}" y2="{y(inst):.1f}" stroke="{color}" '
                         f'stroke-dasharray="5,4" stroke-width="1"/>')
        legend.append(f'<span><i style="background:{color}"></i>{html.escape(family)} (dashed: {inst} installed)</span>')
    for item in d["timeline"]:
        if "event" in item and any(w_ in item["event"] for w_ in ("killed", "cut off", "took over", "master killed", "refused")):
            parts.append(f'<line x1="{x(item["t"]):.1f}" y1="{pad_t}" x2="{x(item["t"]):.1f}" y2="{pad_t + h}" '
                         f'stroke="#b22222" stroke-dasharray="2,3"><title>{html.escape(item["event"])}</title></line>')
    parts.append("</svg>")
    return "".join(parts) + '<p class="legend">' + "".join(legend) + " <span>red dotted: faults</span></p>"


def denial_chart(d: dict[str, Any]) -> str:
    rows = sorted(d["denials"]["by_code"].items(), key=lambda kv: -kv[1])
    if not rows:
        return "<p>No denial.</p>"
    top = max(n for _, n in rows)
    bars = []
    for i, (code, n) in enumerate(rows):
        y0 = 10 + i * 26
        bars.append(f'<text x="0" y="{y0 + 14}">{html.escape(code)}</text>'
                    f'<rect x="140" y="{y0}" width="{max(2, n / top * 700):.1f}" height="18" fill="{PALETTE[i % len(PALETTE)]}"/>'
                    f'<text x="{146 + n / top * 700:.1f}" y="{y0 + 14}">{n}</text>')
    rules = ", ".join(f"{html.escape(rule)}: {n}" for rule, n in sorted(d["denials"]["by_rule"].items()))
    return (f'<svg viewBox="0 0 1000 {20 + 26 * len(rows)}" width="100%" role="img" aria-label="denials by reason">'
            + "".join(bars) + f"</svg><p>By rule: {rules}</p>")

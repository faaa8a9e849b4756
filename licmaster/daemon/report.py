"""A usage report from the journal: what an operator reads before buying more licenses.

Peak in use per family per hour and per day, replayed from grants and their returns; when a
family ran out and who was refused (by rule and node); the top holders. As JSON, as text, or as
one self-contained HTML page with charts (no script, no external file), like slave_sim's reports.
`usage_report` is pure: rows in, report out.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from licmaster.wire import events

_TOOK = re.compile(r"([A-Za-z()\-]+?)(\d+)?(?: bound to [0-9a-f:]+)?:(\d+)")
EXHAUSTED = "exhausted"


def took_families(label: str | None) -> dict[str, int]:
    """A grant row's `took` label ("PBX-Port13:1 PBX-IPVA13 bound to 00:..:1") by family."""
    out: dict[str, int] = {}
    for family, _version, count in _TOOK.findall(label or ""):
        name = "Port" if family == "Port" else family
        out[name] = out.get(name, 0) + int(count)
    return out


def _hour(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:00Z")


def usage_report(rows: Iterable[dict[str, Any]], since: float, until: float,
                 installed: dict[str, int] | None = None, site_of: Callable[[str], str | None] | None = None) -> dict[str, Any]:
    """Rows: the journal's events oldest first (from the start of the run that was live at
    `since`, so that what was held then is known); counts are for [since, until]. User licenses
    count as in use while assigned (they are durable: a new run does not end them). With
    `installed` (per family), each day's peak comes with the headroom left. With `site_of` (the
    site policy's node -> site), peaks of floating licenses and refusals per site too; a lease
    taken over by a standby PBX stays its first node's site's, as the master counts it."""
    held: dict[str, tuple[str, dict[str, int], str | None]] = {}  # lease -> (node, families, site)
    site_use: dict[tuple[str, str], int] = defaultdict(int)  # (site, family) -> in use now
    site_peak: dict[str, dict[str, int]] = defaultdict(dict)
    site_refused: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    assigned: set[tuple[str, str]] = set()  # (user, family)
    in_use: dict[str, int] = defaultdict(int)
    by_node: dict[str, int] = defaultdict(int)
    hours: dict[str, dict[str, int]] = defaultdict(dict)
    node_peak: dict[str, int] = defaultdict(int)
    grants: dict[str, int] = defaultdict(int)
    refused: dict[tuple[str, str, str], int] = defaultdict(int)
    ran_out: dict[tuple[str, str], int] = defaultdict(int)

    def note(ts: float) -> None:
        if ts < since:
            return
        bucket = hours[_hour(ts)]
        for family, n in in_use.items():
            if n > bucket.get(family, 0):
                bucket[family] = n

    def give_back(lease: str | None) -> None:
        entry = held.pop(lease or "", None)
        if entry is None:
            return
        node, families, site = entry
        by_node[node] -= sum(families.values())
        for family, n in families.items():
            in_use[family] -= n
            if site is not None:
                site_use[(site, family)] -= n

    current_hour = ""
    for row in rows:
        ts, name, node = row["ts"], row["event"], row["node"] or "-"
        if ts > until:
            break
        if ts >= since and _hour(ts) != current_hour:
            current_hour = _hour(ts)
            note(ts)  # what was held as this hour began counts for it
        if name == events.START:  # a new run: the previous run's leases are gone, its user licenses stay
            held.clear()
            in_use.clear()
            by_node.clear()
            site_use.clear()
            for _, family in assigned:
                in_use[family] += 1
        elif name == events.ASSIGN and row["resource"] and (row["holder"], row["resource"]) not in assigned:
            assigned.add((row["holder"], row["resource"]))
            in_use[row["resource"]] += 1
            note(ts)
        elif name == events.UNASSIGN and (row["holder"], row["resource"]) in assigned:
            assigned.discard((row["holder"], row["resource"]))
            in_use[row["resource"]] -= 1
        elif name == events.GRANT and row["lease"]:
            families = took_families(row["detail"])
            site = site_of(node) if site_of is not None else None
            held[row["lease"]] = (node, families, site)
            for family, n in families.items():
                in_use[family] += n
                if site is not None:
                    site_use[(site, family)] += n
                    if ts >= since and site_use[(site, family)] > site_peak[site].get(family, 0):
                        site_peak[site][family] = site_use[(site, family)]
            by_node[node] += sum(families.values())
            if ts >= since:
                grants[node] += 1
                node_peak[node] = max(node_peak[node], by_node[node])
            note(ts)
        elif name in (events.CHECKIN, events.RELEASE):
            give_back(row["lease"])
        elif name in (events.EXPIRE, events.BYE):
            for lease in [lid for lid, (owner, _, _) in held.items() if owner == node]:
                give_back(lease)
        elif name == events.TAKEOVER and row["detail"]:
            for lease, (owner, families, site) in list(held.items()):
                if owner == row["detail"]:
                    held[lease] = (node, families, site)
        elif name in (events.DENY, events.DENY_REPEATED) and ts >= since:
            if name == events.DENY:
                code, count = row["detail"] or "?", 1
            else:
                code, _, times = (row["detail"] or "? x0").rpartition(" x")
                count = int(times) if times.isdigit() else 0
            refused[(code, row["rule"] or "", node)] += count
            refused_site = site_of(node) if site_of is not None else None
            if refused_site is not None:
                site_refused[refused_site][code] += count
            if code == EXHAUSTED:
                ran_out[(_hour(ts), row["rule"] or "")] += count
    days: dict[str, dict[str, int]] = defaultdict(dict)
    for hour, peaks in hours.items():
        day = days[hour[:10]]
        for family, n in peaks.items():
            day[family] = max(day.get(family, 0), n)

    def headroom(peak: dict[str, int]) -> dict[str, int] | None:
        return None if installed is None else {f: installed.get(f, 0) - n for f, n in sorted(peak.items())}

    shown = [(d, {f: n for f, n in p.items() if n}) for d, p in sorted(days.items())]  # a day with nothing in use is not a peak
    return {
        "since": since, "until": until, "installed": dict(sorted(installed.items())) if installed is not None else None,
        "hours": [{"hour": h, "peak": dict(sorted(p.items()))} for h, p in sorted(hours.items()) if any(p.values())],
        "days": [{"day": d, "peak": dict(sorted(p.items())), "headroom": headroom(p)} for d, p in shown if p],
        "ran_out": [{"hour": h, "rule": r or None, "refused": n} for (h, r), n in sorted(ran_out.items())],
        "refused": [{"code": c, "rule": r or None, "node": n, "count": k}
                    for (c, r, n), k in sorted(refused.items(), key=lambda kv: -kv[1])],
        "top_holders": [{"node": n, "peak_leases": p, "grants": grants[n]}
                        for n, p in sorted(node_peak.items(), key=lambda kv: (-kv[1], kv[0]))[:10]],
        "sites": [{"site": site, "peak": dict(sorted(site_peak.get(site, {}).items())),
                   "refused": sum(site_refused.get(site, {}).values()), "refused_by_code": dict(sorted(site_refused.get(site, {}).items()))}
                  for site in sorted({*site_peak, *site_refused})] if site_of is not None else None,
    }


def from_journal(path: Any, since: float, until: float | None = None, installed: dict[str, int] | None = None,
                 site_of: Callable[[str], str | None] | None = None) -> dict[str, Any]:
    """The report over [since, until] from a journal file. It replays from the journal's start
    (bounded by its retention, journal_keep_days), so what was held at `since` is known."""
    from licmaster.daemon.journal import read_journal

    until = until if until is not None else dt.datetime.now(dt.UTC).timestamp()
    return usage_report(read_journal(path), since, until, installed, site_of)


def parse_age(text: str, now: float) -> float:
    """`7d`, `12h`, `30m`, `90s` ago, or epoch seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units:
        return now - float(text[:-1]) * units[text[-1]]
    return float(text)


def render_text(report: dict[str, Any]) -> str:
    span = f"{_hour(report['since'])} to {_hour(report['until'])}"
    lines = [f"Usage report, {span}", "", "Peak in use per day" + (" (of installed; headroom left)" if report.get("installed") else "")
             + ", floating and user licenses:"]
    installed = report.get("installed") or {}
    for day in report["days"]:
        lines.append(f"  {day['day']}  " + ", ".join(
            f"{f} {n}" + (f" of {installed.get(f, 0)} ({day['headroom'][f]} left)" if day.get("headroom") else "")
            for f, n in day["peak"].items()))
    if not report["days"]:
        lines.append("  (nothing in use in the period)")
    lines += ["", "Ran out (exhausted), per hour:"]
    lines += [f"  {r['hour']}  {r['refused']} refused ({r['rule'] or '-'})" for r in report["ran_out"]] or ["  never"]
    lines += ["", "Refused, by code, rule and node:"]
    lines += [f"  {r['count']:>6}  {r['code']} {r['rule'] or ''} {r['node']}" for r in report["refused"]] or ["  nothing"]
    lines += ["", "Top holders (most leases at once):"]
    lines += [f"  {h['node']}: {h['peak_leases']} floating licenses at once at its peak, {h['grants']} grants in the period"
              for h in report["top_holders"]] or ["  none"]
    if report.get("sites") is not None:
        lines += ["", "Per site (the site policy's sites; peak of floating licenses in the period, refusals by code):"]
        lines += [f"  {s['site']}: peak " + (", ".join(f"{f} {n}" for f, n in s["peak"].items()) or "nothing")
                  + f"; refused {s['refused']}" + (" (" + ", ".join(f"{c} {n}" for c, n in s["refused_by_code"].items()) + ")"
                                                   if s["refused"] else "")
                  for s in report["sites"]] or ["  nothing held or refused by any site"]
    return "\n".join(lines)


def render_html(report: dict[str, Any], title: str = "licmaster usage report") -> str:
    """One page, no script, no external file: SVG bars of each day's peak per family, tables."""
    families = sorted({f for d in report["days"] for f in d["peak"]})
    colors = ["#2f6fde", "#d14343", "#2aa876", "#e8a33d", "#8e5bd6", "#1aa3b8"]
    peak = max([n for d in report["days"] for n in d["peak"].values()] + [1])
    width, bar = 760, max(4, min(40, 700 // max(1, len(report["days"]) * max(1, len(families)))))
    bars = []
    x = 40
    for day in report["days"]:
        for i, family in enumerate(families):
            n = day["peak"].get(family, 0)
            h = 160 * n / peak
            bars.append(f'<rect x="{x}" y="{180 - h:.1f}" width="{bar - 1}" height="{h:.1f}" fill="{colors[i % len(colors)]}">'
                        f"<title>{html.escape(day['day'])} {html.escape(family)}: {n}</title></rect>")
            x += bar
        bars.append(f'<text x="{x - bar * len(families) / 2:.0f}" y="195" font-size="10" text-anchor="middle">{day["day"][5:]}</text>')
        x += 8
    legend = "".join(f'<span><i style="background:{colors[i % len(colors)]}"></i>{html.escape(f)}</span>' for i, f in enumerate(families))

    def table(headers: list[str], rows: list[list[Any]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><tr>{head}</tr>{body or '<tr><td colspan=9>none</td></tr>'}</table>"

    span = f"{_hour(report['since'])} to {_hour(report['until'])}"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body{{font:14px system-ui,sans-serif;margin:2rem;color:#1d2330}} table{{border-collapse:collapse;margin:.5rem 0 1.5rem}}
td,th{{border-bottom:1px solid #e5e7eb;padding:.2rem .6rem;text-align:left}} th{{color:#6b7280;font-weight:normal}}
.legend span{{margin-right:1rem}} .legend i{{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem}}
</style></head><body><h1>{html.escape(title)}</h1><p>{span}</p>
<h2>Peak in use per day</h2><svg width="{max(width, x + 20)}" height="200" role="img">{''.join(bars)}
<line x1="36" y1="180" x2="{max(width, x + 20)}" y2="180" stroke="#999"/><text x="0" y="24" font-size="10">{peak}</text></svg>
<div class="legend">{legend}</div>
<h2>Peak in use per hour</h2>{table(["hour", *families], [[h["hour"], *[h["peak"].get(f, 0) for f in families]] for h in report["hours"]])}
<h2>When a family ran out</h2>{table(["hour", "rule", "refused"], [[r["hour"], r["rule"] or "-", r["refused"]] for r in report["ran_out"]])}
<h2>Who was refused</h2>{table(["code", "rule", "node", "count"], [[r["code"], r["rule"] or "-", r["node"], r["count"]] for r in report["refused"]])}
<h2>Top holders</h2>{table(["node", "leases at peak", "grants"], [[h["node"], h["peak_leases"], h["grants"]] for h in report["top_holders"]])}
{_sites_html(report, table)}</body></html>"""


def _sites_html(report: dict[str, Any], table: Callable[[list[str], list[list[Any]]], str]) -> str:
    if report.get("sites") is None:
        return ""
    rows = [[s["site"], ", ".join(f"{f} {n}" for f, n in s["peak"].items()) or "-", s["refused"],
             ", ".join(f"{c} {n}" for c, n in s["refused_by_code"].items()) or "-"] for s in report["sites"]]
    return f"<h2>Per site</h2>{table(['site', 'peak', 'refused', 'by code'], rows)}"

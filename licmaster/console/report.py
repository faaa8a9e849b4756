"""A usage report from the journal: what an operator reads before buying more licenses.

Peak in use per family per hour and per day, replayed from grants and their returns, and per
node and day; when a family ran out and who was refused (by rule and node); the top holders. As
JSON, as text, as one self-contained HTML page with charts (no script, no external file), like
slave_sim's reports, or as CSV for a spreadsheet. `usage_report` is pure: rows in, report out.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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


HOUR, DAY = 3600, 86400
NODE_ROWS_ALL = "*"  # the CSV's node for the installation's pool (every node together, user licenses too)


def _hour(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:00Z")


def _minute(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%MZ")


def period(report: dict[str, Any]) -> str:
    """The period, to the minute: `--since 30m` is not an hour that begins and ends at 14:00."""
    since, until = report["since"], report["until"]
    end = _minute(until)
    if end[:10] == _minute(since)[:10]:
        end = end[11:]  # the same day: "2025-11-24T14:07Z to 14:37Z"
    return f"{_minute(since)} to {end}"


@dataclass(slots=True)
class _Lease:
    node: str
    key: tuple[str | None, str | None]  # (resource, holder): taken over by a standby that holds the same, it goes back
    families: dict[str, int]
    site: str | None


def usage_report(rows: Iterable[dict[str, Any]], since: float, until: float,
                 installed: dict[str, int] | None = None, site_of: Callable[[str], str | None] | None = None) -> dict[str, Any]:
    """Rows: the journal's events oldest first (from the start of the run that was live at
    `since`, so that what was held then is known); counts are for [since, until]. What is held
    when the period begins, and as each hour and day of it begins, counts for it, events or not.
    User licenses count as in use while assigned (they are durable: a new run does not end them).
    A takeover moves the failed node's leases, and their count, to the standby PBX, as the master
    does (model/leases.py `move`, daemon/ha/recovery.py `Holdings`): a lease the standby holds
    already (same resource and holder) goes back. With `installed` (per family), each day's peak
    comes with the headroom left. With `site_of` (the site policy's node -> site), peaks of
    floating licenses and refusals per site too; a lease taken over by a standby PBX stays its
    first node's site's, as the master counts it. Lease ids are opaque strings."""
    held: dict[str, _Lease] = {}
    node_leases: dict[str, dict[str, None]] = defaultdict(dict)  # node -> its lease ids, in grant order
    in_use: dict[str, int] = defaultdict(int)  # family -> in use now, floating and user licenses
    node_use: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))  # node -> family -> floating in use now
    by_node: dict[str, int] = defaultdict(int)  # node -> floating licenses it holds now
    site_use: dict[tuple[str, str], int] = defaultdict(int)  # (site, family) -> in use now
    assigned: set[tuple[str, str]] = set()  # (user, family)
    hours: dict[int, dict[str, int]] = defaultdict(dict)  # hour (epoch hours) -> family -> peak
    node_days: dict[int, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))  # day -> node -> family -> peak
    node_peak: dict[str, int] = {}
    site_peak: dict[str, dict[str, int]] = defaultdict(dict)
    site_refused: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    grants: dict[str, int] = defaultdict(int)
    refused: dict[tuple[str, str, str], int] = defaultdict(int)
    ran_out: dict[tuple[int, str], int] = defaultdict(int)

    def note_pool(hour: int) -> None:
        bucket = hours[hour]
        for family, n in in_use.items():
            if n > bucket.get(family, 0):
                bucket[family] = n

    def note_node(day: int, node: str) -> None:
        if by_node[node] > node_peak.get(node, 0):
            node_peak[node] = by_node[node]
        peaks = node_days[day][node]
        for family, n in node_use[node].items():
            if n > peaks.get(family, 0):
                peaks[family] = n

    def note_site(site: str, family: str) -> None:
        if site_use[(site, family)] > site_peak[site].get(family, 0):
            site_peak[site][family] = site_use[(site, family)]

    noted: int | None = None  # the last hour of the period whose beginning is noted

    def advance(hour: int) -> None:
        """Note what is held as the period, and each hour and day of it up to `hour`, begins."""
        nonlocal noted
        if noted is None:
            noted = int(since // HOUR)
            note_pool(noted)
            for node in [n for n, k in by_node.items() if k]:
                note_node(noted // 24, node)
            for site, family in [sf for sf, k in site_use.items() if k]:
                note_site(site, family)
        if hour <= noted:
            return
        if any(in_use.values()):  # nothing changes between two events: each hour between begins with it
            for h in range(noted + 1, hour + 1):
                note_pool(h)
                if h % 24 == 0:
                    for node in [n for n, k in by_node.items() if k]:
                        note_node(h // 24, node)
        noted = hour

    def give_back(lease: str | None) -> None:
        entry = held.pop(lease or "", None)
        if entry is None:
            return
        node_leases[entry.node].pop(lease or "", None)
        by_node[entry.node] -= sum(entry.families.values())
        for family, n in entry.families.items():
            in_use[family] -= n
            node_use[entry.node][family] -= n
            if entry.site is not None:
                site_use[(entry.site, family)] -= n

    def reset() -> None:
        """A run ends or begins: its leases are gone from the master, its user licenses stay."""
        held.clear()
        node_leases.clear()
        in_use.clear()
        node_use.clear()
        by_node.clear()
        site_use.clear()
        for _, family in assigned:
            in_use[family] += 1

    for row in rows:
        ts, name, node = row["ts"], row["event"], row["node"] or "-"
        if ts > until:
            break
        in_period = ts >= since
        if in_period:
            advance(int(ts // HOUR))
        if name in (events.START, events.STOP):
            reset()
        elif name == events.ASSIGN and row["resource"] and (row["holder"], row["resource"]) not in assigned:
            assigned.add((row["holder"], row["resource"]))
            in_use[row["resource"]] += 1
            if in_period:
                note_pool(int(ts // HOUR))
        elif name == events.UNASSIGN and (row["holder"], row["resource"]) in assigned:
            assigned.discard((row["holder"], row["resource"]))
            in_use[row["resource"]] -= 1
        elif name == events.GRANT and row["lease"]:
            give_back(row["lease"])  # the same lease granted again is not two
            lease = _Lease(node, (row["resource"], row["holder"]), took_families(row["detail"]),
                           site_of(node) if site_of is not None else None)
            held[row["lease"]] = lease
            node_leases[node][row["lease"]] = None
            for family, n in lease.families.items():
                in_use[family] += n
                node_use[node][family] += n
                if lease.site is not None:
                    site_use[(lease.site, family)] += n
                    if in_period:
                        note_site(lease.site, family)
            by_node[node] += sum(lease.families.values())
            if in_period:
                grants[node] += 1
                note_pool(int(ts // HOUR))
                note_node(int(ts // DAY), node)
        elif name in (events.CHECKIN, events.RELEASE):
            give_back(row["lease"])
        elif name in (events.EXPIRE, events.BYE):
            for lid in list(node_leases.pop(node, {})):
                give_back(lid)
        elif name == events.TAKEOVER and row["detail"] and row["detail"] != node:
            failed = row["detail"]
            keys = {held[lid].key for lid in node_leases.get(node, {})}
            for lid in list(node_leases.pop(failed, {})):
                entry = held[lid]
                if None not in entry.key and entry.key in keys:  # the standby holds it already: this one goes back
                    give_back(lid)
                    continue
                entry.node = node
                node_leases[node][lid] = None
                n = sum(entry.families.values())
                by_node[failed] -= n
                by_node[node] += n
                for family, k in entry.families.items():
                    node_use[failed][family] -= k
                    node_use[node][family] += k
            node_leases.pop(failed, None)
            if in_period:
                note_node(int(ts // DAY), node)
        elif name in (events.DENY, events.DENY_REPEATED) and in_period:
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
                ran_out[(int(ts // HOUR), row["rule"] or "")] += count
    if until >= since:  # what is still held counts up to the period's end: each hour that begins before it
        advance(max(int(since // HOUR), math.ceil(until / HOUR) - 1))
    days: dict[int, dict[str, int]] = defaultdict(dict)
    for hour, peaks in hours.items():
        day = days[hour // 24]
        for family, n in peaks.items():
            day[family] = max(day.get(family, 0), n)

    def headroom(peak: dict[str, int]) -> dict[str, int] | None:
        return None if installed is None else {f: installed.get(f, 0) - n for f, n in sorted(peak.items())}

    def label(day: int) -> str:
        return _hour(day * DAY)[:10]

    shown = [(d, {f: n for f, n in p.items() if n}) for d, p in sorted(days.items())]  # a day with nothing in use is not a peak
    return {
        "since": since, "until": until, "installed": dict(sorted(installed.items())) if installed is not None else None,
        "hours": [{"hour": _hour(h * HOUR), "peak": dict(sorted(p.items()))} for h, p in sorted(hours.items()) if any(p.values())],
        "days": [{"day": label(d), "peak": dict(sorted(p.items())), "headroom": headroom(p)} for d, p in shown if p],
        "node_days": [{"day": label(d), "node": n, "peak": dict(sorted((f, k) for f, k in p.items() if k))}
                      for d, per_node in sorted(node_days.items()) for n, p in sorted(per_node.items()) if any(p.values())],
        "ran_out": [{"hour": _hour(h * HOUR), "rule": r or None, "refused": n} for (h, r), n in sorted(ran_out.items())],
        "refused": [{"code": c, "rule": r or None, "node": n, "count": k}
                    for (c, r, n), k in sorted(refused.items(), key=lambda kv: -kv[1])],
        "top_holders": [{"node": n, "peak_leases": p, "grants": grants[n]}
                        for n, p in sorted(node_peak.items(), key=lambda kv: (-kv[1], kv[0]))[:10]],
        "sites": [{"site": site, "peak": dict(sorted((f, n) for f, n in site_peak.get(site, {}).items() if n)),
                   "refused": sum(site_refused.get(site, {}).values()), "refused_by_code": dict(sorted(site_refused.get(site, {}).items()))}
                  for site in sorted({*(s for s, p in site_peak.items() if any(p.values())), *site_refused})] if site_of is not None else None,
    }


def from_journal(path: Any, since: float, until: float | None = None, installed: dict[str, int] | None = None,
                 site_of: Callable[[str], str | None] | None = None) -> dict[str, Any]:
    """The report over [since, until] from a journal file. It replays from the journal's start
    (bounded by its retention, journal_keep_days), so what was held at `since` is known."""
    from licmaster.daemon.storage.journal import read_journal

    until = until if until is not None else dt.datetime.now(dt.UTC).timestamp()
    return usage_report(read_journal(path), since, until, installed, site_of)


def parse_age(text: str, now: float) -> float:
    """`7d`, `12h`, `30m`, `90s` ago, or epoch seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units:
        return now - float(text[:-1]) * units[text[-1]]
    return float(text)


def render_text(report: dict[str, Any]) -> str:
    lines = [f"Usage report, {period(report)}", "", "Peak in use per day" + (" (of installed; headroom left)" if report.get("installed") else "")
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
    if report.get("whatif") is not None:
        from licmaster.console.whatif import render_text as whatif_text  # one writer of the what-if words

        lines += ["", "What if (the period's demand replayed against the candidate licenses):"]
        lines += ["  " + line for line in whatif_text(report["whatif"]).splitlines()]
    return "\n".join(lines)


def render_html(report: dict[str, Any], title: str = "licmaster usage report") -> str:
    """One page, no script, no external file: SVG bars of each day's peak per family (with the
    installed count marked on each bar when it is known), tables."""
    families = sorted({f for d in report["days"] for f in d["peak"]})
    installed: dict[str, int] = report.get("installed") or {}
    colors = ["#2f6fde", "#d14343", "#2aa876", "#e8a33d", "#8e5bd6", "#1aa3b8"]
    peak = max([n for d in report["days"] for n in d["peak"].values()] + [installed.get(f, 0) for f in families] + [1])
    width, bar = 760, max(4, min(40, 700 // max(1, len(report["days"]) * max(1, len(families)))))
    bars = []
    x = 40
    for day in report["days"]:
        for i, family in enumerate(families):
            n = day["peak"].get(family, 0)
            h = 160 * n / peak
            bars.append(f'<rect x="{x}" y="{180 - h:.1f}" width="{bar - 1}" height="{h:.1f}" fill="{colors[i % len(colors)]}">'
                        f"<title>{html.escape(day['day'])} {html.escape(family)}: {n}</title></rect>")
            if family in installed:
                y = 180 - 160 * installed[family] / peak
                bars.append(f'<line x1="{x - 1}" y1="{y:.1f}" x2="{x + bar}" y2="{y:.1f}" stroke="#1d2330" stroke-width="2">'
                            f"<title>{html.escape(family)}: {installed[family]} installed</title></line>")
            x += bar
        bars.append(f'<text x="{x - bar * len(families) / 2:.0f}" y="195" font-size="10" text-anchor="middle">{day["day"][5:]}</text>')
        x += 8
    legend = "".join(f'<span><i style="background:{colors[i % len(colors)]}"></i>{html.escape(f)}</span>' for i, f in enumerate(families))
    if installed:
        legend += '<span><i style="background:#1d2330;height:2px;vertical-align:middle"></i>installed</span>'

    def table(headers: list[str], rows: list[list[Any]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><tr>{head}</tr>{body or '<tr><td colspan=9>none</td></tr>'}</table>"

    if installed:
        day_table = table(["day", "family", "peak", "installed", "headroom"],
                          [[d["day"], f, n, installed.get(f, 0), d["headroom"][f]] for d in report["days"] for f, n in d["peak"].items()])
        day_heading = "Peak in use per day, of installed, and the headroom left"
    else:
        day_table = table(["day", *families], [[d["day"], *[d["peak"].get(f, 0) for f in families]] for d in report["days"]])
        day_heading = "Peak in use per day (give the license files for the headroom)"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body{{font:14px system-ui,sans-serif;margin:2rem;color:#1d2330}} table{{border-collapse:collapse;margin:.5rem 0 1.5rem}}
td,th{{border-bottom:1px solid #e5e7eb;padding:.2rem .6rem;text-align:left}} th{{color:#6b7280;font-weight:normal}}
.legend span{{margin-right:1rem}} .legend i{{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem}}
</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(period(report))}</p>
<h2>Peak in use per day</h2><svg width="{max(width, x + 20)}" height="200" role="img">{''.join(bars)}
<line x1="36" y1="180" x2="{max(width, x + 20)}" y2="180" stroke="#999"/><text x="0" y="24" font-size="10">{peak}</text></svg>
<div class="legend">{legend}</div>
<h2>{day_heading}</h2>{day_table}
<h2>Peak in use per hour</h2>{table(["hour", *families], [[h["hour"], *[h["peak"].get(f, 0) for f in families]] for h in report["hours"]])}
<h2>When a family ran out</h2>{table(["hour", "rule", "refused"], [[r["hour"], r["rule"] or "-", r["refused"]] for r in report["ran_out"]])}
<h2>Who was refused</h2>{table(["code", "rule", "node", "count"], [[r["code"], r["rule"] or "-", r["node"], r["count"]] for r in report["refused"]])}
<h2>Top holders</h2>{table(["node", "leases at peak", "grants"], [[h["node"], h["peak_leases"], h["grants"]] for h in report["top_holders"]])}
{_sites_html(report, table)}{_whatif_html(report, table)}</body></html>"""


def _whatif_html(report: dict[str, Any], table: Callable[[list[str], list[list[Any]]], str]) -> str:
    """The what-if section: per family the candidate count, its peak, headroom, refusals, and the
    count that would have served everyone (console/whatif.py)."""
    doc = report.get("whatif")
    if doc is None:
        return ""
    rows = [[f["family"], f["installed"], f["peak_in_use"], f["headroom_at_peak"], f["refused"], f["would_serve_everyone"],
             f"{f['traffic']['erlangs']:g} E, Erlang-B {f['traffic']['erlang_b']:.1%}" if f.get("traffic") else "-"]
            for f in doc["families"] if f["installed"] or f["peak_in_use"] or f["refused"]]
    return ("<h2>What if (the period's demand against the candidate licenses)</h2>"
            + table(["family", "candidate", "peak in use", "headroom", "refused", "would serve everyone", "busiest hour"], rows))


def _sites_html(report: dict[str, Any], table: Callable[[list[str], list[list[Any]]], str]) -> str:
    if report.get("sites") is None:
        return ""
    rows = [[s["site"], ", ".join(f"{f} {n}" for f, n in s["peak"].items()) or "-", s["refused"],
             ", ".join(f"{c} {n}" for c, n in s["refused_by_code"].items()) or "-"] for s in report["sites"]]
    return f"<h2>Per site</h2>{table(['site', 'peak', 'refused', 'by code'], rows)}"


CSV_COLUMNS = ("day", "family", "node", "peak", "installed", "headroom")
CSV_HELP = (f"one row per day (UTC), family and node, columns {','.join(CSV_COLUMNS)}; node {NODE_ROWS_ALL} is the whole "
            "pool (every node together, user licenses too: compare it with installed), any other node its floating "
            "licenses; peak: the most in use at once that day; installed and headroom (installed - peak): on the "
            f"{NODE_ROWS_ALL} rows, with --licenses, for every installed family")


def _cell(text: str) -> str:
    """A node name as a spreadsheet takes it as text: one that begins like a formula gets a quote."""
    return "'" + text if len(text) > 1 and text[0] in "=+-@\t\r" else text


def render_csv(report: dict[str, Any]) -> str:
    """The day peaks for a spreadsheet (CSV_COLUMNS; no trailing newline). Per day: each family's
    peak over the whole pool (node `*`: floating and user licenses, as in `days`), with installed
    and headroom when the license files are known, and every installed family, 0 when unused;
    then each node's peak of floating licenses (`node_days`). A node's peaks are at different
    moments from the others', so node rows do not add up to the `*` row: compare `*` with
    installed."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    installed: dict[str, int] | None = report.get("installed")
    per_day: dict[str, dict[str, list[tuple[str, int]]]] = defaultdict(lambda: defaultdict(list))
    for entry in report.get("node_days", []):
        for family, n in entry["peak"].items():
            per_day[entry["day"]][family].append((entry["node"], n))
    for day in report["days"]:
        peaks: dict[str, int] = day["peak"]
        for family in sorted({*peaks, *(installed or {}), *per_day[day["day"]]}):
            n = peaks.get(family, 0)
            if installed is None:
                writer.writerow([day["day"], family, NODE_ROWS_ALL, n, "", ""])
            else:
                writer.writerow([day["day"], family, NODE_ROWS_ALL, n, installed.get(family, 0), installed.get(family, 0) - n])
            for node, k in sorted(per_day[day["day"]][family]):
                writer.writerow([day["day"], family, _cell(node), k, "", ""])
    return out.getvalue().rstrip("\n")

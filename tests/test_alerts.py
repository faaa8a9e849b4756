"""The shipped alerting rules (examples/prometheus/alerts.yml) and Grafana dashboard
(examples/grafana/licmaster.json), on what a real master's /metrics gives.

A real master, with a standby master following it, goes through a timeline: quiet; Ports at 90%
and one VM's PBX-IPVA licenses used up while the other VM's are free; a PBX gone silent (absent,
its hold of 30 minutes ending within the hour) and a reload that takes standby cover away and
brings an SSA term ending in 10 days; the standby master killed; the master stopped. /metrics is scraped at each step, and the scrapes become a `promtool test rules` file's
input series, one 20-minute window per step: each alert is expected where it must fire and
nowhere else. The docs' metric table and the Grafana dashboard's queries are checked against the
same scrapes. Skipped, with the reason, where promtool is missing (Debian's prometheus package:
scripts/setup-test-host installs it)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from licmaster.client import LicenseError, MasterClient

from .daemon import Daemon

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "examples" / "prometheus" / "alerts.yml"
GRAFANA = ROOT / "examples" / "grafana" / "licmaster.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="needs promtool (Debian's prometheus package; "
                                                             "scripts/setup-test-host installs it)")

VM_A, VM_B = "00:90:33:00:00:0a", "00:90:33:00:00:0b"
LICENSES = ('[[license]]\ntype = "PBX-Port13"\ncount = 10\n[[license]]\ntype = "PBX-Standby13"\ncount = {standby}\n'
            f'[[license]]\ntype = "PBX-IPVA13"\ncount = 10\nbind = "{VM_A}"\n'
            f'[[license]]\ntype = "PBX-IPVA13"\ncount = 5\nbind = "{VM_B}"\n'
            '[[license]]\ntype = "PBX-Operator13"\ncount = 2\nssa_until = {ssa}\n')
POLICY = '[site.hq]\nnodes = ["pbx*"]\nmax = { "PBX-Port" = 10 }\n'  # so that the site metrics are there too
MASTER, STANDBY = "master:4461", "standby:4461"  # the instance labels Prometheus would give them
WINDOW = 20  # minutes of series per step of the timeline
ALERTS = ("LicmasterPoolNearlyExhausted", "LicmasterPoolExhausted", "LicmasterStandbyCoverLost", "LicmasterReplicationDegraded",
          "LicmasterSSAEndingSoon", "LicmasterAbsentHoldEnding", "LicmasterDown", "LicmasterNoServingMaster")
HOLD_S = 1800  # the master's hold: an absent PBX's ends within the hour from the start (LicmasterAbsentHoldEnding)

Scrape = dict[str, Any]  # the metric families, by name, as prometheus_client parses /metrics


@dataclass
class Timeline:
    master: list[str]  # /metrics text at each step: quiet, full, reloaded, degraded
    standby: str  # the standby master's, while it followed


def scrape(d: Daemon) -> str:
    with urllib.request.urlopen(f"http://{d.http}/metrics", timeout=10) as response:
        return str(response.read().decode())


def value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


async def until(check: Callable[[], object], timeout: float = 20.0) -> None:
    """Polls until `check()` holds (a failure after `timeout`: nothing is asserted on the time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(check):
        if loop.time() > deadline:
            raise AssertionError("not seen in time")
        await asyncio.sleep(0.1)


async def play(workdir: Path) -> Timeline:
    today = dt.date.today()
    policy = workdir / "sites.toml"
    workdir.mkdir(parents=True, exist_ok=True)
    policy.write_text(POLICY)
    master = Daemon(workdir / "master", LICENSES.format(standby=10, ssa=today + dt.timedelta(days=400)), policy=str(policy),
                    hold_s=HOLD_S).start()
    standby: Daemon | None = None
    clients: list[MasterClient] = []
    try:
        standby = Daemon(workdir / "standby", LICENSES.format(standby=10, ssa=today + dt.timedelta(days=400))
                         , standby_of=master.master).start()
        await until(lambda: value(scrape(master), "licmaster_replication_standbys") == 1)
        await until(lambda: value(scrape(standby), "licmaster_replication_attached") == 1)
        quiet, followed = scrape(master), scrape(standby)

        pbx, vm_b = MasterClient([master.master], "pbx1"), MasterClient([master.master], "vm-b", platform="ipva", mac=VM_B)
        clients += [pbx, vm_b]
        for client in clients:
            await client.connect()
        for n in range(4):
            await pbx.checkout("port", f"user{n}")
        for n in range(5):  # VM B's own 5 PBX-IPVA licenses (and 5 Ports): 9 of 10 Ports in all
            await vm_b.checkout("port", f"vm-user{n}")
        with pytest.raises(LicenseError, match="exhausted"):  # VM A's 10 are free, and not VM B's (R-IPVA-2)
            await vm_b.checkout("port", "vm-user5")
        full = scrape(master)

        # pbx1 cut off (the connection stays open, nothing comes): absent after the lease TTL, its
        # 4 Ports still counted (the pool alerts stay as they were) until its hold ends
        pbx.freeze()
        await until(lambda: value(scrape(master), "licmaster_absent_pbxs") == 1)
        # 5 Standby for 10 Ports (no standby PBX is connected: the reload is taken), an SSA ending in 10 days
        master.license_file.write_text(LICENSES.format(standby=5, ssa=today + dt.timedelta(days=10)))
        master.signal(signal.SIGHUP)
        await until(lambda: value(scrape(master), "licmaster_standby_cover", reason="standby_short") == 0)
        reloaded = scrape(master)

        standby.kill9()
        await until(lambda: value(scrape(master), "licmaster_replication_degraded") == 1)
        degraded = scrape(master)
        assert value(quiet, "licmaster_replication_in_sync") == 1 and value(degraded, "licmaster_replication_in_sync") == 0
        for client in clients:
            await client.close()
        pbx.abort()  # frozen: close() sends nothing; drop its socket
    finally:
        if standby is not None:
            standby.stop()
        master.stop()
    return Timeline([quiet, full, reloaded, degraded], followed)


@pytest.fixture(scope="module")
def timeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Timeline]:
    yield asyncio.run(play(tmp_path_factory.mktemp("alerts")))


def series_of(text: str, instance: str) -> dict[str, float]:
    """Each sample of a scrape as a series name with labels, as Prometheus would store it."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {**{k: v for k, v in sample.labels.items() if v != ""}, "instance": instance, "job": "licmaster"}
            text_labels = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            out[f"{sample.name}{{{text_labels}}}"] = float(sample.value)
    return out


def input_series(steps: dict[str, list[str | None]], up: dict[str, list[int]]) -> list[dict[str, str]]:
    """promtool's input_series: per instance, its scrape of each step for WINDOW minutes (missing
    where it gave none: Prometheus then sees the series go stale), and `up` as Prometheus sets it."""
    windows: dict[str, list[float | None]] = {}
    for instance, texts in steps.items():
        scraped = [series_of(t, instance) if t is not None else {} for t in texts]
        for name in sorted({n for s in scraped for n in s}):
            windows[name] = [s.get(name) for s in scraped]
        windows[f'up{{instance="{instance}",job="licmaster"}}'] = [float(u) for u in up[instance]]
    return [{"series": name, "values": " ".join(("_" if v is None else repr(v)) for v in values for _ in range(WINDOW))}
            for name, values in windows.items()]


def expect(at_step: int, alerts: dict[str, list[tuple[dict[str, str], str]]]) -> list[dict[str, Any]]:
    """Every alert of the file at the end of a step's window: those given fire (labels, summary), no other."""
    return [{"eval_time": f"{at_step * WINDOW + WINDOW - 2}m", "alertname": name,
             "exp_alerts": [{"exp_labels": labels, "exp_annotations": {"summary": summary}} for labels, summary in alerts.get(name, [])]}
            for name in ALERTS]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)


@needs_promtool
def test_the_rules_file_is_valid() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0 and "SUCCESS: 8 rules found" in checked.stdout, checked.stdout + checked.stderr


def humanize_duration(seconds: float) -> str:
    """Prometheus's `humanizeDuration` template function, for one second or more."""
    whole = int(seconds)
    days, hours, minutes, secs = whole // 86400, whole // 3600 % 24, whole // 60 % 60, whole % 60
    if days:
        return f"{days}d {hours}h {minutes}m {secs}s"
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{seconds:.4g}s"


@needs_promtool
def test_each_alert_fires_on_a_real_masters_series_where_it_must_and_nowhere_else(timeline: Timeline, tmp_path: Path) -> None:
    quiet, full, reloaded, degraded = timeline.master
    days = value(reloaded, "licmaster_ssa_days_left", family="PBX-Operator", version="13")
    assert days is not None and 9 <= days <= 10
    m = {"instance": MASTER, "job": "licmaster"}
    nearly = [({**m, "family": "PBX-IPVA", "bound": VM_B, "severity": "warning"},
               f"PBX-IPVA bound to {VM_B} at 100% of its usable licenses on {MASTER}"),
              ({**m, "family": "PBX-Port", "severity": "warning"}, f"PBX-Port at 90% of its usable licenses on {MASTER}")]
    # the one that is full, although PBX-IPVA in all has 5 of 15 in use: `bound` tells them apart
    exhausted = [({**m, "family": "PBX-IPVA", "bound": VM_B, "severity": "critical"},
                  f"PBX-IPVA bound to {VM_B} exhausted on {MASTER}: 5 in use, none left")]
    cover = [({**m, "reason": "standby_short", "severity": "critical"},
              f"Standby cover lost on {MASTER}: standby_short, a standby PBX could not take over")]
    ssa = [({**m, "family": "PBX-Operator", "version": "13", "severity": "warning"},
            f"SSA of PBX-Operator V13 on {MASTER} ends in {days:g} days")]
    replication = [({**m, "severity": "warning"}, f"Replication degraded on {MASTER}: a failover now would find no standby master")]

    def hold_ending(text: str) -> list[tuple[dict[str, str], str]]:
        left = value(text, "licmaster_absent_hold_left_seconds")
        assert left is not None and HOLD_S - 120 < left < HOLD_S  # pbx1's hold, less the seconds since it went silent
        return [({**m, "severity": "warning"}, f"The hold of an absent PBX on {MASTER} ends in {humanize_duration(left)}: "
                 "its licenses then go back to the pool")]

    assert value(full, "licmaster_absent_pbxs") == 0 and value(full, "licmaster_absent_hold_left_seconds") is None
    assert (value(reloaded, "licmaster_absent_pbxs"), value(reloaded, "licmaster_absent_leases")) == (1, 4)
    assert value(reloaded, "licmaster_hold_seconds") == HOLD_S
    assert value(reloaded, "licmaster_licenses_in_use", family="PBX-Port") == 9  # pbx1's 4 are still counted: 90% still

    def down(instance: str) -> tuple[dict[str, str], str]:
        return {"instance": instance, "job": "licmaster", "severity": "critical"}, f"licmaster on {instance} is down"

    tests = [
        {"interval": "1m",
         "input_series": input_series({MASTER: [quiet, full, reloaded, degraded, None],
                                       STANDBY: [timeline.standby] * 3 + [None, None]},
                                      {MASTER: [1, 1, 1, 1, 0], STANDBY: [1, 1, 1, 0, 0]}),
         "alert_rule_test": [*expect(0, {}),
                             *expect(1, {"LicmasterPoolNearlyExhausted": nearly, "LicmasterPoolExhausted": exhausted}),
                             *expect(2, {"LicmasterPoolNearlyExhausted": nearly, "LicmasterPoolExhausted": exhausted,
                                         "LicmasterStandbyCoverLost": cover, "LicmasterSSAEndingSoon": ssa,
                                         "LicmasterAbsentHoldEnding": hold_ending(reloaded)}),
                             *expect(3, {"LicmasterPoolNearlyExhausted": nearly, "LicmasterPoolExhausted": exhausted,
                                         "LicmasterStandbyCoverLost": cover, "LicmasterSSAEndingSoon": ssa,
                                         "LicmasterAbsentHoldEnding": hold_ending(degraded),
                                         "LicmasterReplicationDegraded": replication, "LicmasterDown": [down(STANDBY)]}),
                             *expect(4, {"LicmasterDown": [down(MASTER), down(STANDBY)]})]},
        # the standby master alone answers: it serves nobody
        {"interval": "1m",
         "input_series": input_series({STANDBY: [timeline.standby]}, {STANDBY: [1]}),
         "alert_rule_test": expect(0, {"LicmasterNoServingMaster": [({"job": "licmaster", "severity": "critical"},
                                                                     "No licmaster of job licmaster serves the PBXs")]})},
    ]
    unit = tmp_path / "alerts_test.yml"
    unit.write_text(json.dumps({"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": tests}, indent=1))  # JSON is YAML
    tested = promtool("test", "rules", str(unit))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def documented_metrics() -> set[str]:
    text = (ROOT / "docs" / "admin-api.md").read_text()
    start = text.index("## Metrics")
    section = text[start:text.index("\n## ", start)]
    return set(re.findall(r"^\| `(licmaster_[a-z_]+)` \|", section, re.MULTILINE))


def test_the_docs_name_every_metric_a_master_gives_and_no_other(timeline: Timeline) -> None:
    documented = documented_metrics()
    given = {f.name for text in [*timeline.master, timeline.standby] for f in text_string_to_metric_families(text)}
    assert given, "nothing scraped"
    missing = {name for name in given if name not in documented and f"{name}_total" not in documented}
    assert not missing, f"not in docs/admin-api.md's metric table: {sorted(missing)}"
    source = (ROOT / "licmaster" / "console" / "metrics.py").read_text()
    unknown = {name for name in documented if f'"{name.removesuffix("_total")}"' not in source}
    assert not unknown, f"documented, but no master gives them: {sorted(unknown)}"


def dashboard_queries() -> list[str]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[str]:
        for p in panels:
            yield from (t["expr"] for t in p.get("targets", []))
            yield from walk(p.get("panels", []))
    board = json.loads(GRAFANA.read_text())
    return list(walk(board["panels"]))


def test_the_grafana_dashboard_asks_only_for_metrics_a_master_gives(timeline: Timeline) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 10
    given = {s.name for text in [*timeline.master, timeline.standby] for f in text_string_to_metric_families(text) for s in f.samples}
    asked = {name for q in queries for name in re.findall(r"\blicmaster_[a-z_]+", q)}
    assert asked - given == set(), sorted(asked - given)
    for family in ("licmaster_denials_total", "licmaster_standby_cover", "licmaster_ssa_days_left", "licmaster_replication_degraded"):
        assert family in asked


@needs_promtool
def test_the_grafana_dashboards_queries_parse(tmp_path: Path) -> None:
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": q.replace("$__rate_interval", "5m").replace("$instance", ".*")}
        for i, q in enumerate(dashboard_queries())]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps(rules))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr

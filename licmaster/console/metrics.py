"""Prometheus metrics of a running master, read from its state at each scrape (a collector, not
counters on the request path): licenses per family, version and bound MAC, grants and denials,
sessions, absent PBXs and what they hold, request latency per batch, journal and replication lag,
epoch and role.

Every label takes values from a bounded set (docs/admin-api.md, "Metrics"): families, versions
and bound MACs of the installed license files, error codes, rules, roles, site names of the
policy; no node name is a label."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from licmaster.daemon.cover import REASONS
from licmaster.daemon.role import Role
from licmaster.daemon.timing import BATCH_BOUNDS

if TYPE_CHECKING:
    from licmaster.daemon.master import Master



class MasterCollector(Collector):
    def __init__(self, master: Master) -> None:
        self.master = master

    def collect(self) -> Iterator[Metric]:
        master = self.master
        if not master.started:
            return
        status = master.status()
        # bound: the MAC a device-bound pool serves alone (R-IPVA-2, R-HW-1), "" for a pool any PBX draws
        labels = ["family", "version", "bound"]
        installed = GaugeMetricFamily("licmaster_licenses_installed", "Licenses installed", labels=labels)
        in_use = GaugeMetricFamily("licmaster_licenses_in_use", "Licenses in use now", labels=labels)
        serving = GaugeMetricFamily("licmaster_licenses_usable", "Licenses that serve the newest firmware connected", labels=labels)
        peak = GaugeMetricFamily("licmaster_licenses_peak", "Most in use at once since the master started", labels=labels)
        totals: dict[tuple[str, str, str], list[int]] = {}
        for pool in status.pools:
            key = (pool.family, "" if pool.version is None else str(pool.version), pool.bound or "")
            row = totals.setdefault(key, [0, 0, 0, 0])
            row[0] += pool.installed
            row[1] += pool.in_use
            row[2] += pool.usable
            row[3] = max(row[3], pool.peak)
        for key, (i, u, s, p) in sorted(totals.items()):
            installed.add_metric(list(key), i)
            in_use.add_metric(list(key), u)
            serving.add_metric(list(key), s)
            peak.add_metric(list(key), p)
        yield from (installed, in_use, serving, peak)
        yield CounterMetricFamily("licmaster_grants", "Floating licenses granted by this master's pool", value=status.grants)
        denials = CounterMetricFamily("licmaster_denials", "Requests refused, by the family they were about (\"\" for none), "
                                      "error code and rule", labels=["family", "code", "rule"])
        for (family, code, rule), n in sorted(status.denials_by_family.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")):
            denials.add_metric([family, code, rule or ""], n)
        yield denials
        sessions = GaugeMetricFamily("licmaster_sessions", "Sessions, by role", labels=["role"])
        for role_name, n in sorted({"pbx": 0, "standby": 0, "observer": 0, **status.sessions_by_role}.items()):
            sessions.add_metric([role_name], n)
        yield sessions
        yield GaugeMetricFamily("licmaster_connections", "Open connections", value=status.connections)
        timer = status.requests
        buckets = [(str(bound), sum(timer["counts"][: i + 1])) for i, bound in enumerate(BATCH_BOUNDS)] + [("+Inf", timer["count"])]
        yield HistogramMetricFamily("licmaster_request_batch_seconds", "Time to answer one read's requests (a batch)",
                                    buckets=buckets, sum_value=timer["sum"])
        yield CounterMetricFamily("licmaster_requests", "Requests answered", value=timer["requests"])
        yield GaugeMetricFamily("licmaster_journal_pending_rows", "Journal rows not yet written", value=status.journal_pending_rows)
        yield GaugeMetricFamily("licmaster_journal_lag_seconds", "Age of the oldest journal row not yet written",
                                value=status.journal_lag_s)
        yield GaugeMetricFamily("licmaster_replication_standbys", "Standby masters following this one", value=status.standbys)
        yield GaugeMetricFamily("licmaster_replication_in_sync", "Standby masters that acknowledged every grant before it "
                                "was answered (0: this master serves alone)", value=status.standbys)
        yield GaugeMetricFamily("licmaster_replication_degraded", "1 when the standby that followed is gone",
                                value=int(status.degraded))
        following = status.replica
        if following:  # a standby master: is it attached, and how often was it refused
            yield GaugeMetricFamily("licmaster_replication_attached", "1 when this standby holds the master's snapshot and stream",
                                    value=int(following["status"] == "attached"))
            yield CounterMetricFamily("licmaster_replication_failures", "Attaches to the master refused or broken",
                                      value=following["failures"])
            yield GaugeMetricFamily("licmaster_replication_leases", "Floating leases this standby knows of",
                                    value=following["leases"])
        if status.last_reload is not None:
            yield GaugeMetricFamily("licmaster_last_reload_success", "1 when the last reload of the license files was taken",
                                    value=int(status.last_reload["ok"]))
            yield GaugeMetricFamily("licmaster_last_reload_timestamp_seconds", "When the license files were last reloaded",
                                    value=status.last_reload["at"])
        cover = status.standby_cover
        standby = GaugeMetricFamily("licmaster_standby_cover", "1 when a standby PBX's takeover would be licensed, or nothing "
                                    "needs cover; 0 when it would be refused (R-STBY-2/3). reason: one of "
                                    + ", ".join(REASONS), labels=["reason"])
        standby.add_metric([cover["reason"]], int(cover["held"]))
        yield standby
        days = GaugeMetricFamily("licmaster_ssa_days_left", "Days to the end of an SSA term (R-SSA-1), per installed entry's "
                                 "family and version", labels=["family", "version"])
        soonest: dict[tuple[str, str], int] = {}  # two entries of one family and version: one series, the sooner end
        for term in status.terms:
            if term["days_left"] is not None:
                term_key = (term["family"], str(term["version"] or ""))
                soonest[term_key] = min(soonest.get(term_key, term["days_left"]), term["days_left"])
        for term_key, left in sorted(soonest.items()):
            days.add_metric(list(term_key), left)
        yield days
        sites = status.sites
        if sites:  # the site policy (docs/operations.md, "Sites")
            labels_site = ["site", "family"]
            held = GaugeMetricFamily("licmaster_site_in_use", "Licenses a site's PBXs hold now", labels=labels_site)
            reserve = GaugeMetricFamily("licmaster_site_reserve", "Licenses kept for a site by the policy", labels=labels_site)
            most = GaugeMetricFamily("licmaster_site_max", "The most a site may hold by the policy", labels=labels_site)
            refused = CounterMetricFamily("licmaster_site_refused", "Requests of a site's PBXs refused, by error code",
                                          labels=[*labels_site, "code"])
            for site_row in sites:
                site_key = [site_row["site"], site_row["family"]]
                held.add_metric(site_key, site_row["in_use"])
                reserve.add_metric(site_key, site_row["reserve"])
                if site_row["max"] is not None:
                    most.add_metric(site_key, site_row["max"])
                for code, n in site_row["refused_by_code"].items():
                    refused.add_metric([*site_key, code], n)
            yield from (held, reserve, most, refused)
        # Two clocks (docs/operations.md): a PBX silent for a lease TTL is absent, and its floating
        # licenses stay counted, given to nobody else, until its hold ends. Counts only: a node
        # name as a label would grow with every PBX (the API and the dashboard name them).
        yield GaugeMetricFamily("licmaster_absent_pbxs", "PBXs silent for a lease TTL that still hold floating licenses",
                                value=status.absent_pbxs)
        yield GaugeMetricFamily("licmaster_absent_leases", "Floating leases the absent PBXs hold (counted in use)",
                                value=status.absent_leases)
        yield GaugeMetricFamily("licmaster_hold_seconds", "How long an absent PBX keeps its floating licenses after its "
                                "last word (hold_s)", value=status.hold_s)
        if status.absent:  # the soonest hold to end, of the longest absent (status() lists those first)
            yield GaugeMetricFamily("licmaster_absent_hold_left_seconds", "Seconds until the soonest hold of an absent PBX "
                                    "ends: its leases then go back to the pool", value=max(0.0, min(
                                        a.back_at for a in status.absent) - time.time()))
        yield GaugeMetricFamily("licmaster_epoch", "This master's epoch", value=status.epoch)
        role = GaugeMetricFamily("licmaster_role", "1 for this master's role", labels=["role"])
        for state in Role:
            role.add_metric([state.value], int(status.role == state.value))
        yield role
        yield GaugeMetricFamily("licmaster_grace_seconds", "Left of the grace window", value=status.grace_ms / 1000)

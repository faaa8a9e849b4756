"""Denials into the journal, bounded whatever a client sends.

Every denial is answered in full on the wire; the journal keeps the history an operator reads,
and a flood of refusals must not turn into a flood of rows. Within a window (`window_s`), the
first denial of a kind from a node — kind: (code, rule, resource; every unknown resource name
counts as one) — is journaled as it comes,
with its holder; repeats of it are only counted, and one `deny_repeated` row carries the count
when the window closes. A node has at most `max_kinds` kinds per window; denials of further kinds
are counted together under `*`. Text is bounded: an unknown resource name is cut to 32 printable
characters. So one node adds at most 2 × (max_kinds + 1) rows per window to the journal — with
the defaults, 66 rows a second however many requests it sends (docs/protocol.md, "Bounds").

Every denial is also counted by (family, code, rule) since start, for `licmaster_denials_total`:
`family_of` names the catalog family a refusal is about, or "" when it is about none (a bad
request, not the master, grace); so the labels stay within the catalog's families, the error
codes and the rules whatever a client sends, and no node name is a label.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from licmaster.model import errors as E
from licmaster.model.catalog import FAMILIES, SMB_PORT
from licmaster.model.errors import Denial
from licmaster.wire.events import DENY, DENY_REPEATED
from licmaster.wire.requests import describe

KNOWN_RESOURCES = frozenset({"port", "conference", "isdn", "operator", "queue-monitor", "assign", "unassign", "takeover"})
MESSAGE_MOST = 240  # a deny row keeps the refusal's words (the MACs an R-IPVA-2 license is bound to), cut here
Kind = tuple[str, str | None, str]  # (code, rule, resource)

# The codes of refusals about a family's licenses (the others, a bad request or not the master, are about none).
FAMILY_CODES = frozenset({E.EXHAUSTED, E.VERSION, E.BOUND_ELSEWHERE, E.SMB, E.STANDBY_UNLICENSED, E.PREREQUISITE, E.POLICY})
RESOURCE_FAMILY = {"port": "PBX-Port", "conference": "PBX-Channels", "operator": "PBX-Operator",
                   "queue-monitor": "PBX-QueueMonitor", "takeover": "PBX-Standby"}
# A family named in a refusal's words ("not enough free PBX-Port for port ..."), a version suffix
# allowed (PBX-Port11); "Port" and "Fax" are also plain words, so they are not looked for.
_NAMED = re.compile(r"(?<![\w(-])(" + "|".join(re.escape(f) for f in sorted(FAMILIES, key=len, reverse=True)
                                               if f not in (SMB_PORT, "Fax")) + r")(?![A-Za-z(-])")


def family_of(code: str, resource: str | None, message: str | None, named: object = None) -> str:
    """The catalog family a refusal is about, or "" (not about a family's licenses). `named`: the
    denial's `details["family"]`, when the model said it; else the words, else the resource."""
    if code not in FAMILY_CODES:
        return ""
    if isinstance(named, str) and named in FAMILIES:
        return named
    if code == E.STANDBY_UNLICENSED:
        return "PBX-Standby"
    if code == E.SMB:
        return SMB_PORT
    found = _NAMED.search(message or "")
    if found:
        return found.group(1)
    return RESOURCE_FAMILY.get(resource or "", "")


def bounded(text: str | None, most: int = 32) -> str | None:
    if text is None or (len(text) <= most and text.isprintable()):
        return text
    return describe(text, most)


@dataclass(slots=True)
class _Window:
    counts: dict[Kind, int] = field(default_factory=dict)
    overflow: int = 0


class DenialJournal:
    def __init__(self, record: Callable[..., None], *, window_s: float = 1.0, max_kinds: int = 32) -> None:
        self.record = record
        self.window_s = window_s
        self.max_kinds = max_kinds
        self._windows: dict[str, _Window] = {}
        self._opened = 0.0
        self.totals: dict[tuple[str, str | None], int] = {}  # (code, rule) -> denials since start, every one
        self.by_family: dict[tuple[str, str, str | None], int] = {}  # (family or "", code, rule) -> the same, by family
        self.listeners: list[Callable[[str, Denial, str | None], None]] = []  # the console's live feed

    def deny(self, node: str, denial: Denial, resource: str | None, holder: str | None, now: float) -> None:
        if now - self._opened >= self.window_s:
            self.flush(now)
        total_key = (denial.code, denial.rule)
        self.totals[total_key] = self.totals.get(total_key, 0) + 1
        family_key = (family_of(denial.code, resource, denial.message, denial.details.get("family")), denial.code, denial.rule)
        self.by_family[family_key] = self.by_family.get(family_key, 0) + 1
        for listener in self.listeners:
            listener(node, denial, resource)
        known = resource in KNOWN_RESOURCES
        resource = resource if known else bounded(resource)
        kind: Kind = (denial.code, denial.rule, (resource or "-") if known else "?")  # unknown names: one kind, not one each
        window = self._windows.get(node)
        if window is None:
            window = self._windows[node] = _Window()
        seen = window.counts.get(kind)
        if seen is not None:
            window.counts[kind] = seen + 1
            return
        if len(window.counts) >= self.max_kinds:
            window.overflow += 1
            return
        window.counts[kind] = 1
        self.record(DENY, node, resource, bounded(holder, 64), None, denial.code, denial.rule, bounded(denial.message, MESSAGE_MOST))

    def tick(self, now: float) -> None:
        """Close the window if its time is up (the reaper calls this)."""
        if now - self._opened >= self.window_s:
            self.flush(now)

    def flush(self, now: float) -> None:
        """Close the window: one row per kind that repeated, with how many more times."""
        for node, window in self._windows.items():
            for (code, rule, resource), count in window.counts.items():
                if count > 1:
                    self.record(DENY_REPEATED, node, resource, None, None, f"{code} x{count - 1}", rule)
            if window.overflow:
                self.record(DENY_REPEATED, node, "*", None, None, f"other denials x{window.overflow}", None)
        self._windows.clear()
        self._opened = now

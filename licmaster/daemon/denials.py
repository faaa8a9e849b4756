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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from licmaster.model.errors import Denial
from licmaster.wire.events import DENY, DENY_REPEATED
from licmaster.wire.requests import describe

KNOWN_RESOURCES = frozenset({"port", "conference", "isdn", "operator", "queue-monitor", "assign", "unassign", "takeover"})
MESSAGE_MOST = 240  # a deny row keeps the refusal's words (the MACs an R-IPVA-2 license is bound to), cut here
Kind = tuple[str, str | None, str]  # (code, rule, resource)


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
        self.listeners: list[Callable[[str, Denial, str | None], None]] = []  # the console's live feed

    def deny(self, node: str, denial: Denial, resource: str | None, holder: str | None, now: float) -> None:
        if now - self._opened >= self.window_s:
            self.flush(now)
        total_key = (denial.code, denial.rule)
        self.totals[total_key] = self.totals.get(total_key, 0) + 1
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

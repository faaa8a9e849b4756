"""The site policy as the operator sees it: per site and family, what is held against the
reserve and the max, and how many requests of the site's PBXs were refused (by any rule: a
site that runs short shows it here, whether the pool or the policy said no). For `usage`, the
console, `/metrics` and the dashboard."""

from __future__ import annotations

from typing import Any

from licmaster.model.errors import Denial
from licmaster.model.sites import Enforcer, Policy

_MOST_NAMES = 10_000  # node -> site cache: cleared past this (names come and go with sessions)


class SiteUsage:
    def __init__(self) -> None:
        self.policy: Policy | None = None
        self.refused: dict[tuple[str, str, str], int] = {}  # (site, family or "-", code) -> refusals since the policy
        self._site_of: dict[str, str | None] = {}

    def set_policy(self, policy: Policy | None) -> None:
        if policy != self.policy:
            self.refused.clear()
        self.policy = policy
        self._site_of.clear()

    def site_of(self, node: str) -> str | None:
        if self.policy is None:
            return None
        if node not in self._site_of:
            if len(self._site_of) >= _MOST_NAMES:
                self._site_of.clear()
            site = self.policy.site_of(node)
            self._site_of[node] = site.name if site is not None else None
        return self._site_of[node]

    def on_denial(self, node: str, denial: Denial, resource: str | None) -> None:
        """A DenialJournal listener: every refusal, counted to its node's site."""
        if self.policy is None:
            return
        site = self.site_of(node)
        if site is not None:
            key = (site, str(denial.details.get("family", "-")), denial.code)
            self.refused[key] = self.refused.get(key, 0) + 1

    def rows(self, enforcer: Enforcer | None) -> list[dict[str, Any]]:
        """Per site and family of the policy: in_use, reserve, max, over, refused (by code too)."""
        if enforcer is None:
            return []
        out = []
        for row in enforcer.usage():
            by_code = {code: n for (site, family, code), n in sorted(self.refused.items())
                       if site == row["site"] and family == row["family"]}
            out.append({**row, "refused": sum(by_code.values()), "refused_by_code": by_code})
        return out

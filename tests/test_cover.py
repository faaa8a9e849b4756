"""Standby cover (daemon/cover.py): what /metrics, the console, the dashboard and a reload say of
a standby PBX's takeover, from the pool's own answer (R-STBY-2, R-STBY-3)."""

from __future__ import annotations

import pytest

from licmaster.daemon.cover import REASONS, lost_cover, standby_cover
from licmaster.model.types import Node

from .conftest import pool_of

PBX, OLD_PBX = Node("hq"), Node("hq", firmware=12)
STANDBY = Node("hq-standby", role="standby", standby_for="hq")
OLD_STANDBY = Node("hq-standby", role="standby", firmware=12, standby_for="hq")


@pytest.mark.parametrize(("entries", "nodes", "held", "reason", "rule"), [
    ([("PBX-Port13", 10), ("PBX-Standby13", 10)], [PBX, STANDBY], True, "covered", "R-STBY-2"),
    ([("PBX-Port13", 10)], [PBX], True, "no_standby", None),  # nothing installed to cover, nobody to cover
    ([("PBX-Port13", 10)], [PBX, STANDBY], False, "standby_short", "R-STBY-2"),  # a standby PBX, no Standby
    ([("PBX-Port13", 10), ("PBX-Standby13", 8)], [PBX], False, "standby_short", "R-STBY-2"),  # Standby meant to cover
    ([("PBX-Port12", 10), ("PBX-Standby12", 10)], [PBX, STANDBY], False, "standby_version", "R-STBY-2"),
    ([("PBX-Port12", 10), ("PBX-Standby12", 10)], [OLD_PBX, OLD_STANDBY], True, "covered", "R-STBY-2"),  # its own firmware
    ([("Port13$20", 1), ("PBX-Standby13", 1)], [PBX], False, "smb_port", "R-STBY-3"),
])
def test_the_cover_and_its_reason(entries: list[tuple[str, int]], nodes: list[Node], held: bool, reason: str,
                                  rule: str | None) -> None:
    cover = standby_cover(pool_of(*entries), nodes)
    assert (cover.held, cover.reason, cover.rule) == (held, reason, rule)
    assert (cover.reason in REASONS[:2]) == held and cover.reason in REASONS
    assert cover.standbys == (("hq-standby (for hq)",) if any(n.standby_for for n in nodes) else ())


def test_the_reason_names_the_numbers() -> None:
    cover = standby_cover(pool_of(("PBX-Port13", 140), ("PBX-Standby13", 120)), [PBX, STANDBY])
    assert cover.message.endswith("120 usable Standby for 140 Port")


def test_cover_is_lost_only_for_a_standby_that_had_it() -> None:
    before = pool_of(("PBX-Port13", 120), ("PBX-Standby13", 120))
    after = pool_of(("PBX-Port13", 140), ("PBX-Standby13", 120))
    [(node, denial)] = lost_cover(before, after, [PBX, STANDBY])
    assert node is STANDBY and denial.rule == "R-STBY-2" and "120 usable Standby for 140 Port" in denial.message
    assert lost_cover(before, after, [PBX]) == []  # no standby PBX there: nobody loses anything
    assert lost_cover(after, after, [PBX, STANDBY]) == []  # it had no cover to lose

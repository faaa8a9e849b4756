"""The site policy (licmaster/model/sites.py): a policy file read with every problem named;
reservations and maxima held exactly by the pool, whatever sequence of checkouts and checkins
many PBXs send (hypothesis); include/exclude; a standby PBX counts to the site it stands in for;
a re-sync of what was held is taken past a limit and shown."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from licmaster.model.errors import Denial
from licmaster.model.pool import Pool
from licmaster.model.sites import PolicyError, check_installed, parse_policy, reach
from licmaster.model.types import Node, SyncEntry

from .conftest import licenses

THREE_SITES = """
[site.hq]
nodes = ["hq", "hq-*"]
max = { "PBX-Port" = 80 }

[site.branch-a]
nodes = ["branch-a"]
reserve = { "PBX-Port" = 20 }

[site.branch-b]
nodes = ["branch-b"]
reserve = { "PBX-Port" = 10 }
max = { "PBX-Port" = 20 }
"""


def policy(text: str):  # type: ignore[no-untyped-def]
    return parse_policy(tomllib.loads(text), source="sites.toml")


def pool_with(text: str, ports: int = 100, *nodes: Node) -> Pool:
    pool = Pool(licenses(("PBX-Port13", ports)))
    for node in nodes:
        pool.set_node(node)
    assert pool.set_policy(policy(text)) == []
    return pool


def take(pool: Pool, node: str, n: int, prefix: str = "p") -> list[str]:
    """Checkouts of n phones on node; the codes of those refused."""
    refused = []
    for i in range(n):
        outcome = pool.checkout(node, "port", f"{prefix}{i}")
        if isinstance(outcome, Denial):
            refused.append(outcome.code)
    return refused


def test_a_rush_at_hq_cannot_take_what_the_branches_have_reserved() -> None:
    pool = pool_with(THREE_SITES, 100, Node("hq"), Node("hq-2"), Node("branch-a"), Node("branch-b"))
    assert take(pool, "hq", 50) == [] and take(pool, "hq-2", 30, "q") == ["policy"] * 10  # 70 = 100 - 20 - 10
    refusal = pool.checkout("hq-2", "port", "one-more")
    assert isinstance(refusal, Denial) and refusal.rule == "policy"
    assert str(refusal) == ("policy: not enough free PBX-Port for port on hq-2: 30 free, the last 30 reserved for site "
                            "branch-a, branch-b (policy)")
    assert take(pool, "branch-a", 20) == [] and take(pool, "branch-b", 10) == []  # each gets its reserve
    assert take(pool, "branch-b", 1, "x") == ["exhausted"]  # the pool is empty now: 70 + 20 + 10


def test_a_site_at_its_max_is_refused_and_the_rest_is_served() -> None:
    pool = pool_with(THREE_SITES, 100, Node("branch-b"), Node("nowhere"))
    assert take(pool, "branch-b", 25) == ["policy"] * 5
    refusal = pool.checkout("branch-b", "port", "again")
    assert isinstance(refusal, Denial) and str(refusal) == "policy: site branch-b at its max 20 of PBX-Port (policy)"
    assert refusal.details["limit"] == "max"
    assert take(pool, "nowhere", 60) == []  # a node in no site: only the reservations bind it (20 for branch-a)
    assert take(pool, "nowhere", 1, "x") == ["policy"]


def test_a_reserve_frees_what_the_site_holds_beyond_it_and_comes_back_on_checkin() -> None:
    pool = pool_with(THREE_SITES, 40, Node("hq"), Node("branch-a"))
    # 40 installed, 30 reserved (20 + 10): hq reaches 10; branch-a holding 15 leaves 5 owed to it
    leases = [pool.checkout("branch-a", "port", f"a{i}") for i in range(15)]
    assert take(pool, "hq", 12) == ["policy"] * 2
    for lease in leases:  # branch-a gives all back: it is owed 20 again, and hq may not take it
        assert not isinstance(lease, Denial)
        pool.checkin("branch-a", lease[0].id)
    assert take(pool, "hq", 1, "x") == ["policy"]
    usage = {(u["site"], u["family"]): u for u in pool.enforcer.usage()}  # type: ignore[union-attr]
    assert (usage["hq", "PBX-Port"]["in_use"], usage["branch-a", "PBX-Port"]["in_use"]) == (10, 0)


def test_include_and_exclude_decide_who_may_draw_a_family() -> None:
    text = THREE_SITES + '\n[family."PBX-Operator"]\ninclude = ["@hq", "desk-*"]\nexclude = ["hq-lab"]\n'
    pool = Pool(licenses(("PBX-Port13", 40), ("PBX-Operator13", 5)))
    pool.set_policy(policy(text))
    assert not isinstance(pool.checkout("hq-1", "operator", "d"), Denial)
    assert not isinstance(pool.checkout("desk-7", "operator", "d"), Denial)
    lab = pool.checkout("hq-lab", "operator", "d")
    assert isinstance(lab, Denial) and lab.message == "hq-lab may not draw PBX-Operator: excluded by 'hq-lab'"
    branch = pool.checkout("branch-a", "operator", "d")
    assert isinstance(branch, Denial) and branch.details["limit"] == "include"
    assert not isinstance(pool.checkout("branch-a", "port", "p"), Denial)  # other families: as before


def test_a_standby_pbx_counts_to_the_site_of_the_pbx_it_replaces() -> None:
    pool = Pool(licenses(("PBX-Port13", 100), ("PBX-Standby13", 100)))
    pool.set_node(Node("branch-b"))
    pool.set_node(Node("spare-7", role="standby", standby_for="branch-b"))
    pool.set_policy(policy(THREE_SITES))
    assert take(pool, "branch-b", 15) == []
    assert not isinstance(pool.takeover("spare-7", "branch-b"), Denial)
    assert take(pool, "spare-7", 10, "n") == ["policy"] * 5  # 15 moved + 5 new = branch-b's max 20
    usage = {(u["site"], u["family"]): u["in_use"] for u in pool.enforcer.usage()}  # type: ignore[union-attr]
    assert usage["branch-b", "PBX-Port"] == 20


def test_a_decentral_pbx_still_draws_nothing_whatever_the_policy() -> None:
    pool = pool_with(THREE_SITES, 100, Node("branch-a", licensing="decentral"))
    refusal = pool.checkout("branch-a", "port", "p")
    assert isinstance(refusal, Denial) and refusal.rule == "R-MODE-2"


def test_a_resync_of_what_was_held_is_taken_past_the_max_and_shown() -> None:
    pool = pool_with(THREE_SITES, 100, Node("branch-b"))
    entries = [SyncEntry("port", f"p{i}") for i in range(25)]
    held_before = {("port", f"p{i}") for i in range(25)}
    result = pool.sync("branch-b", entries, held_before)
    assert len(result.granted) == 25 and not result.denied
    [row] = [u for u in pool.enforcer.usage() if u["site"] == "branch-b"]  # type: ignore[union-attr]
    assert (row["in_use"], row["max"], row["over"]) == (25, 20, 5)
    assert pool.enforcer.broken() == ["site branch-b holds 25 of PBX-Port, over its max 20"]  # type: ignore[union-attr]
    assert pool.enforcer.broken(["branch-b"]) == pool.enforcer.broken()  # type: ignore[union-attr]  # one site's view
    assert pool.enforcer.broken(["hq"]) == pool.enforcer.broken([]) == []  # type: ignore[union-attr]
    assert take(pool, "branch-b", 1, "new") == ["policy"]  # new checkouts wait until it is back under
    fresh = pool.sync("branch-b", entries + [SyncEntry("port", "new")], held_before)
    assert [d.code for _, _, d in fresh.denied] == ["policy"]  # what it did not hold before gets the policy


def test_a_policy_put_in_force_under_existing_leases_counts_them_and_revokes_nothing() -> None:
    pool = Pool(licenses(("PBX-Port13", 100)))
    for i in range(30):
        pool.checkout("branch-b", "port", f"p{i}")
    assert pool.set_policy(policy(THREE_SITES)) == ["site branch-b holds 30 of PBX-Port, over its max 20"]
    assert pool.lease_count == 30
    assert pool.set_policy(None) == [] and take(pool, "branch-b", 1, "x") == []


@pytest.mark.parametrize(("text", "problem"), [
    ('[site.a]\nnodes = ["a"]\nreserve = { "PBX-Port" = 30 }\nmax = { "PBX-Port" = 20 }\n',
     "site 'a': reserve 30 of PBX-Port is above its max 20"),
    ('[site.a]\nnodes = ["a"]\nreserve = { "PBX-Prot" = 3 }\n', "site 'a': reserve: unknown family 'PBX-Prot'"),
    ('[site.a]\nnodes = ["a"]\nmax = { "PBX-UC" = 3 }\n', "PBX-UC is a user license"),
    ('[site.a]\nnodes = ["a b"]\n', "'a b' matches no node name"),
    ('[site.a]\nnodes = ["[!a-zA-Z0-9._-]"]\n', "matches no node name"),
    ('[site.a]\nnodes = ["x"]\n[site.b]\nnodes = ["x"]\n', "node 'x' is in site 'a' already"),
    ('[site.a]\nnodes = ["x-*"]\n[site.b]\nnodes = ["x-1"]\n', "node 'x-1' is matched by site 'a' first"),
    ('[site.a]\nnodes = []\n', "nodes lists no node"),
    ('[site.a]\nnodes = ["a"]\nreserved = 3\n', "unknown key 'reserved'"),
    ('[sites.a]\nnodes = ["a"]\n', "unknown key 'sites'"),
    ('[site.a]\nnodes = ["a"]\n[family."PBX-Operator"]\ninclude = ["@b"]\n', "'@b' names no site of this policy"),
    ('[site.a]\nnodes = ["a"]\nmax = { "PBX-Port" = -1 }\n', "PBX-Port = '-1': a count, 0 or more"),
])
def test_a_policy_that_cannot_hold_is_refused_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(PolicyError) as refused:
        policy(text)
    assert any(problem in p for p in refused.value.problems), refused.value.problems


def test_every_problem_is_listed_at_once() -> None:
    text = '[site.a]\nnodes = ["a"]\nreserve = { "Nope" = 1, "PBX-UC" = 2 }\nmax = { "PBX-Port" = "x" }\n[site.b]\nnodes = []\n'
    with pytest.raises(PolicyError) as refused:
        policy(text)
    assert len(refused.value.problems) == 4


def test_reservations_past_installed_and_what_each_site_can_reach() -> None:
    p = policy(THREE_SITES)
    assert check_installed(p, {"PBX-Port": 25}) == [
        "sites.toml: reservations of PBX-Port sum to 30 (branch-a 20, branch-b 10), more than the 25 installed"]
    assert check_installed(p, {"PBX-Port": 100}) == []
    rows = {r["site"]: (r["guaranteed"], r["reach"]) for r in reach(p, {"PBX-Port": 100})}
    assert rows == {"hq": (0, 70), "branch-a": (20, 90), "branch-b": (10, 20)}


# ---------------------------------------------------------------- under any sequence

SITE_NAMES = ["s0", "s1", "s2"]
NODE_NAMES = ["s0-a", "s0-b", "s1-a", "s2-a", "loose"]


@st.composite
def policies(draw: st.DrawFn) -> str:
    lines = []
    budget = 12
    for name in SITE_NAMES:
        lines += [f"[site.{name}]", f'nodes = ["{name}-*"]']
        reserve = draw(st.integers(0, min(budget, 6)))
        budget -= reserve
        most = draw(st.none() | st.integers(reserve, 14))
        lines.append(f'reserve = {{ "PBX-Port" = {reserve} }}')
        if most is not None:
            lines.append(f'max = {{ "PBX-Port" = {most} }}')
    return "\n".join(lines)


class SitesMachine(RuleBasedStateMachine):
    """Random policies, nodes and checkout / checkin / release sequences: after every step, never
    more in use than installed, never a site over its max, never less free than the reservations
    still claim, and a site under its reserve (and its max) that asks is always served."""

    INSTALLED = 12

    def __init__(self) -> None:
        super().__init__()
        self.pool = Pool(licenses(("PBX-Port13", self.INSTALLED)))
        self.policy = None
        self.n = 0

    @rule(text=policies())
    def put_policy(self, text: str) -> None:
        if self.policy is None and not self.pool.lease_count:
            self.policy = policy(text)
            self.pool.set_policy(self.policy)

    @rule(node=st.sampled_from(NODE_NAMES), n=st.integers(1, 4))
    def checkout(self, node: str, n: int) -> None:
        for _ in range(n):
            self.n += 1
            self.pool.checkout(node, "port", f"h{self.n}")

    @rule(node=st.sampled_from(NODE_NAMES), data=st.data())
    def checkin(self, node: str, data: st.DataObject) -> None:
        held = self.pool.node_leases(node)
        if held:
            self.pool.checkin(node, data.draw(st.sampled_from(held)).id)

    @rule(node=st.sampled_from(NODE_NAMES))
    def release(self, node: str) -> None:
        self.pool.release_node(node)

    def held_by_site(self) -> dict[str, int]:
        out = dict.fromkeys(SITE_NAMES, 0)
        for lease in self.pool.leases.values():
            site = lease.node.split("-")[0]
            if site in out:
                out[site] += 1
        return out

    @invariant()
    def limits_hold(self) -> None:
        in_use = sum(b.in_use for b in self.pool.buckets())
        assert in_use == self.pool.lease_count <= self.INSTALLED
        if self.policy is None:
            return
        held = self.held_by_site()
        usage = {u["site"]: u for u in self.pool.enforcer.usage()}  # type: ignore[union-attr]
        owed = 0
        for site in self.policy.sites:
            assert usage[site.name]["in_use"] == held[site.name]  # the counts are the leases, exactly
            assert held[site.name] <= site.max.get("PBX-Port", self.INSTALLED)
            owed += max(0, site.reserve.get("PBX-Port", 0) - held[site.name])
        assert self.INSTALLED - in_use >= owed  # no reserve broken

    @invariant()
    def a_site_under_its_reserve_is_served(self) -> None:
        if self.policy is None:
            return
        held = self.held_by_site()
        for site in self.policy.sites:
            if held[site.name] < min(site.reserve.get("PBX-Port", 0), site.max.get("PBX-Port", 99)):
                probe = self.pool.checkout(f"{site.name}-a", "port", "probe")
                assert not isinstance(probe, Denial), (site, held, probe)
                self.pool.checkin(f"{site.name}-a", probe[0].id)


SitesMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestSitesInvariants = SitesMachine.TestCase


@given(st.text(max_size=20))
def test_no_text_as_a_site_pattern_crashes_the_reader(pattern: str) -> None:
    try:
        parse_policy({"site": {"a": {"nodes": [pattern]}}})
    except PolicyError as refused:
        assert refused.problems

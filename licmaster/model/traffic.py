"""Traffic theory for sizing a pool: Erlang-B, Engset and the busiest hour's offered traffic.

Pure functions, no I/O. A pool of `servers` licenses of a family serves holders that each keep a
license for a while; the traffic they offer, in Erlangs, is the mean number of licenses that
would be held if none were refused (the sum of holding times over a period, divided by its
length). Two loss models turn offered traffic into the share of requests refused ("blocking"):

- **Erlang-B** (`erlang_b`): infinitely many sources, requests arriving as a Poisson stream,
  refused requests lost (not queued). The usual model for a big population of phones.
- **Engset** (`engset`, `engset_idle`): `sources` holders, each asking only while it holds
  nothing. Fewer sources ask when many hold, so blocking is lower than Erlang-B's at the same
  offered traffic; as the sources grow at constant offered traffic it converges to Erlang-B.
  The model for a small population (the eight operators of a switchboard).

Both assume requests independent of each other. Recorded license demand often is not: a PBX
that restarts registers hundreds of phones in a second, and a refused phone retries. Where the
replay of the record and these formulas disagree, that is usually why.

Both are computed by recurrences over the servers that stay within [0, 1] at every step (no
factorial, no power of the load): thousands of servers and loads of thousands of Erlangs neither
overflow nor lose precision.

Bad input (a negative load, a negative count, a target outside (0, 1), a window that ends
before it starts...) raises ValueError naming the argument.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass

HOUR = 3600.0
Interval = tuple[float, float]  # (start, end) of one holding, in seconds (epoch seconds in the record)


# ---------------------------------------------------------------- checks

def _count(name: str, value: int, least: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: expected a whole number, got {value!r}")
    if value < least:
        raise ValueError(f"{name}: must be at least {least}, got {value}")
    return value


def _load(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"{name}: must not be negative, got {value}")
    return float(value)


def _target(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"{name}: must be between 0 and 1 (exclusive), got {value!r}")
    return float(value)


# ---------------------------------------------------------------- Erlang-B

def erlang_b(servers: int, erlangs: float) -> float:
    """The blocking probability of `servers` servers offered `erlangs` of Poisson traffic
    (Erlang's loss formula, blocked requests cleared).

    By the recurrence B(0) = 1, B(n) = A·B(n-1) / (n + A·B(n-1)): each step stays in [0, 1], so it
    neither overflows nor loses precision for thousands of servers. No servers refuse everything
    (B = 1, even with no traffic); no traffic is never refused by one server or more (B = 0).
    """
    n = _count("servers", servers)
    a = _load("erlangs", erlangs)
    b = 1.0
    for k in range(1, n + 1):
        ab = a * b
        b = ab / (k + ab)
    return b


def servers_for(erlangs: float, target_blocking: float) -> int:
    """The smallest number of servers whose Erlang-B blocking at `erlangs` is at most
    `target_blocking` (0 for no traffic: nothing to serve)."""
    a = _load("erlangs", erlangs)
    target = _target("target_blocking", target_blocking)
    if a == 0:
        return 0
    b, n = 1.0, 0
    while b > target:  # B falls strictly with n (B(n) < B(n-1) for any A), so this ends
        n += 1
        ab = a * b
        b = ab / (n + ab)
    return n


def erlangs_for(servers: int, target_blocking: float) -> float:
    """The most traffic `servers` servers take at a blocking of at most `target_blocking`
    (what a printed Erlang-B table lists): the A with erlang_b(servers, A) = target, by bisection
    to 1e-9 Erlangs. B rises strictly with A, so there is exactly one."""
    n = _count("servers", servers)
    target = _target("target_blocking", target_blocking)
    if n == 0:
        return 0.0  # no server takes any traffic below a blocking of 1
    lo, hi = 0.0, 1.0
    while erlang_b(n, hi) <= target:
        lo, hi = hi, hi * 2
    while hi - lo > 1e-9 * max(1.0, hi):  # an absolute 1e-9 at least: it ends however small the answer
        mid = (lo + hi) / 2
        if erlang_b(n, mid) <= target:
            lo = mid
        else:
            hi = mid
    return lo


# ---------------------------------------------------------------- Engset

def engset_idle(servers: int, sources: int, per_idle_source: float) -> float:
    """Engset's call congestion: the share of requests refused when `sources` sources each ask,
    while idle (holding nothing), at rate λ for a mean holding time 1/μ, with
    `per_idle_source` = β = λ/μ, the traffic offered by one idle source.

    A request sees the other sources, not its own: the share of time all servers are busy among
    sources - 1 (Engset's time congestion E with S - 1 sources),

        B = C(S-1, n) β^n / Σ_{i=0..n} C(S-1, i) β^i,

    by the recurrence E(0) = 1, E(k) = (M-k+1)·β·E(k-1) / (k + (M-k+1)·β·E(k-1)) with M = S - 1,
    which stays in [0, 1] like Erlang-B's. With no more sources than servers nothing is refused
    (B = 0): every source can hold one at once.
    """
    n = _count("servers", servers)
    s = _count("sources", sources, least=1)
    beta = _load("per_idle_source", per_idle_source)
    others = s - 1
    if n > others:
        return 0.0
    e = 1.0
    for k in range(1, n + 1):
        w = (others - k + 1) * beta * e
        e = w / (k + w)
    return e


def engset(servers: int, sources: int, erlangs: float) -> float:
    """Engset's call congestion at `erlangs` of offered traffic from `sources` sources: the
    blocking to set beside erlang_b(servers, erlangs), at the same traffic.

    Offered traffic is what it is for Erlang-B: the rate of requests, refused ones included,
    times the mean holding time. A source asks only while it holds nothing, so the traffic
    each idle source offers, β, follows from it: with α = A/S offered per source and B the call
    congestion at β, α = β / (1 + β·(1 - B)) (a source is idle except while it holds; it holds
    for a share β·(1-B)/(1 + β·(1-B)) of the time). The right side rises with β, from 0 without
    bound when there are more sources than servers; β is found by bisection, to a relative 1e-12.

    As `sources` grows at constant `erlangs`, β·S → A and the result converges to
    erlang_b(servers, erlangs) from below: a finite population's requests are smoother than
    Poisson. With no more sources than servers nothing is refused (0.0), and the sources cannot
    offer as much as one Erlang each then (`erlangs` < `sources`, else ValueError).
    """
    n = _count("servers", servers)
    s = _count("sources", sources, least=1)
    a = _load("erlangs", erlangs)
    if s <= n:
        if a >= s:
            raise ValueError(f"erlangs: {s} source(s), never refused with {n} server(s), cannot offer {a} Erlangs (under one each)")
        return 0.0
    if a == 0:
        return engset_idle(n, s, 0.0)
    alpha = a / s

    def offered(beta: float) -> float:  # per source, at β per idle source
        return beta / (1 + beta * (1 - engset_idle(n, s, beta)))

    lo, hi = 0.0, max(alpha, 1.0)  # offered(β) <= β, so β >= α
    while offered(hi) < alpha:
        lo, hi = hi, hi * 2
    for _ in range(200):  # 1e-12 is some 40 halvings; tiny loads end where the float cannot halve further
        mid = (lo + hi) / 2
        if hi - lo <= 1e-12 * hi or not lo < mid < hi:
            break
        if offered(mid) < alpha:
            lo = mid
        else:
            hi = mid
    return engset_idle(n, s, (lo + hi) / 2)


# ---------------------------------------------------------------- offered traffic from the record

def _intervals(holding_intervals: Iterable[Interval]) -> Iterable[Interval]:
    for start, end in holding_intervals:
        if not (math.isfinite(start) and math.isfinite(end)):
            raise ValueError(f"holding_intervals: a holding with a time that is not a finite number: ({start!r}, {end!r})")
        if end < start:
            raise ValueError(f"holding_intervals: a holding that ends ({end}) before it starts ({start})")
        yield float(start), float(end)


def _window(start_name: str, start: float, end_name: str, end: float) -> tuple[float, float]:
    for name, value in ((start_name, start), (end_name, end)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name}: expected a finite number of seconds, got {value!r}")
    if end <= start:
        raise ValueError(f"{end_name}: must be after {start_name} ({end} <= {start})")
    return float(start), float(end)


def offered_erlangs(holding_intervals: Iterable[Interval], window_start: float, window_end: float) -> float:
    """The traffic held within [window_start, window_end), in Erlangs: the time each holding
    spent inside the window, summed, divided by the window's length. Holdings reaching outside
    the window count only their part inside it.

    From the grants the record holds, this is the traffic carried; the traffic offered also
    holds what was refused, which the caller adds as holdings of its own (an unmet demand
    from its first ask to its last is a lower bound on it)."""
    lo, hi = _window("window_start", window_start, "window_end", window_end)
    held = 0.0
    for start, end in _intervals(holding_intervals):
        inside = min(end, hi) - max(start, lo)
        if inside > 0:
            held += inside
    return held / (hi - lo)


@dataclass(frozen=True, slots=True)
class BusyHour:
    """The busiest hour of a period: [start, end) and its offered traffic in Erlangs."""

    start: float
    end: float
    erlangs: float


def busiest_hour(holding_intervals: Iterable[Interval], period_start: float, period_end: float, *,
                 hour: float = HOUR, on_the_clock: bool = False) -> BusyHour:
    """The hour of [period_start, period_end) with the most offered traffic, and that traffic.

    By default the hour slides: of every `hour`-long window wholly inside the period, the one
    with the most holding time (the earliest of equals). The record has exact holding times,
    not counts sampled every quarter hour, so nothing ties the busy hour to the clock; an hour
    on the clock can cut a morning peak in two and report half of it. The sliding maximum is
    exact: the traffic in a window is piecewise linear in its start, so it peaks where the
    window's start or end meets a holding's start or end, and only those starts are tried
    (O(h log h) for h holdings, holding them all in memory).

    `on_the_clock=True`: the busiest of the whole hours on the clock (multiples of `hour` since
    the epoch: UTC hours, and local hours in every time zone a whole number of hours from UTC)
    wholly inside the period, as traffic measurements and printed traffic reports count them;
    memory grows with the hours, not the holdings.

    A period shorter than an hour, or with no whole clock hour in it, raises ValueError.
    """
    lo, hi = _window("period_start", period_start, "period_end", period_end)
    length = _load("hour", hour)
    if length <= 0:
        raise ValueError("hour: must be more than 0 seconds")
    if hi - lo < length:
        raise ValueError(f"period_end: the period ({hi - lo:g} s) is shorter than an hour ({length:g} s)")
    if on_the_clock:
        return _busiest_clock_hour(holding_intervals, lo, hi, length)
    return _busiest_sliding_hour(holding_intervals, lo, hi, length)


def _busiest_clock_hour(holding_intervals: Iterable[Interval], lo: float, hi: float, length: float) -> BusyHour:
    first, last = math.ceil(lo / length), math.floor(hi / length) - 1  # the whole hours inside the period
    if last < first:
        raise ValueError(f"period_end: no whole clock hour ({length:g} s) between {lo} and {hi}")
    held: dict[int, float] = {}
    for start, end in _intervals(holding_intervals):
        s, e = max(start, first * length), min(end, (last + 1) * length)
        if e <= s:
            continue
        k = math.floor(s / length)
        while k * length < e:
            inside = min(e, (k + 1) * length) - max(s, k * length)
            if inside > 0:
                held[k] = held.get(k, 0.0) + inside
            k += 1
    best = max(range(first, last + 1), key=lambda k: (held.get(k, 0.0), -k))
    return BusyHour(best * length, (best + 1) * length, held.get(best, 0.0) / length)


def _busiest_sliding_hour(holding_intervals: Iterable[Interval], lo: float, hi: float, length: float) -> BusyHour:
    changes: dict[float, int] = {}  # time -> change in the number held
    for start, end in _intervals(holding_intervals):
        s, e = max(start, lo), min(end, hi)
        if e > s:
            changes[s] = changes.get(s, 0) + 1
            changes[e] = changes.get(e, 0) - 1
    times = sorted(changes)
    # Held(x), the holding time before x, is piecewise linear between the change times: at
    # times[i] it is area[i], and `level[i]` are held from times[i] to times[i + 1].
    area: list[float] = []
    level: list[int] = []
    total, held, previous = 0.0, 0, lo
    for t in times:
        total += held * (t - previous)
        held += changes[t]
        area.append(total)
        level.append(held)
        previous = t

    def held_before(x: float) -> float:
        i = bisect_right(times, x) - 1
        return 0.0 if i < 0 else area[i] + level[i] * (x - times[i])

    latest = hi - length
    starts = {lo, latest}
    for t in times:
        for candidate in (t, t - length):
            if lo <= candidate <= latest:
                starts.add(candidate)
    best_start, best = lo, -1.0
    for start in sorted(starts):
        inside = held_before(start + length) - held_before(start)
        if inside > best + 1e-9 * length:  # the earliest of equals, float noise aside
            best_start, best = start, inside
    return BusyHour(best_start, best_start + length, max(best, 0.0) / length)

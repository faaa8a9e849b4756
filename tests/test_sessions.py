"""A session ends one way: each reason releases (or not), journals, forgets and closes as its
row in ENDINGS says."""

from __future__ import annotations

from typing import Any

import pytest

from licmaster.daemon.sessions import ENDINGS, End, Session, Sessions
from licmaster.model.types import Node

from .conftest import pool_of


class FakeConnection:
    def __init__(self) -> None:
        self.session: Session | None = None
        self.closing = False
        self.closed_with: list[dict[str, Any] | None] = []

    def close(self, event: dict[str, Any] | None = None) -> None:
        self.closing = True
        self.closed_with.append(event)


def open_session(sessions: Sessions, name: str) -> tuple[Session, FakeConnection]:
    conn = FakeConnection()
    session = Session(name, "s1", conn, 0.0, Node(name))  # type: ignore[arg-type]
    conn.session = session  # type: ignore[assignment]
    sessions.by_node[name] = session
    sessions.pool.set_node(Node(name))
    return session, conn


@pytest.mark.parametrize("why", list(End))
def test_each_ending_releases_journals_forgets_and_closes(why: End) -> None:
    pool = pool_of(("PBX-Port13", 5))
    journal: list[tuple[Any, ...]] = []
    forgotten: list[str] = []
    sessions = Sessions(pool, lambda *row, **kw: journal.append((*row, kw.get("detail"))), on_end=forgotten.append)
    session, conn = open_session(sessions, "pbx1")
    pool.checkout("pbx1", "port", "alice")
    pool.checkout("pbx1", "port", "bob")
    event = {"event": "fenced", "reason": why.value}

    released = sessions.end(session, why, event=event)

    ending = ENDINGS[why]
    assert len(released) == (2 if ending.release else 0)
    assert sum(b.in_use for b in pool.buckets()) == (0 if ending.release else 2)
    assert journal == ([(ending.journal, "pbx1", "2")] if ending.journal else [])
    assert sessions.get("pbx1") is None and forgotten == ["pbx1"]
    assert session.conn is None and conn.session is None
    if why is End.BYE:  # the reply to the bye goes out first; the protocol closes after it
        assert conn.closing and conn.closed_with == []
    else:
        assert conn.closed_with == [event]


def test_a_session_replaced_by_a_newer_one_is_not_forgotten_by_ending_the_old() -> None:
    pool = pool_of(("PBX-Port13", 5))
    sessions = Sessions(pool, lambda *a, **k: None)
    old, _ = open_session(sessions, "pbx1")
    new, _ = open_session(sessions, "pbx1")
    sessions.end(old, End.EXPIRE)
    assert sessions.get("pbx1") is new

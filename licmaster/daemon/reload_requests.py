"""`licmaster reload --data-dir D`: a request file beside the signal, so that the command prints
the outcome of its own reload, and can ask for `--force`.

A signal carries nothing: the command writes `D/reload-<id>.request` (JSON, `{"force": bool}`)
and then sends SIGHUP; the master, on SIGHUP, takes every request there, oldest first, reloads
once for each (with its `force`), and writes that reload's outcome (its `last_reload`) to
`D/reload-<id>.outcome`, which the command reads and deletes. A SIGHUP with no request
(`kill -HUP`, `systemctl reload`) reloads once, as ever. Both sides write under a temporary name
and rename, so neither reads half a file. The files are in the data directory itself, which the
master may write whoever made them; an outcome nobody collected (the command was killed) is
removed after `KEEP_S`.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

PREFIX, REQUEST, OUTCOME = "reload-", ".request", ".outcome"
KEEP_S = 3600


def _write(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, default=str), encoding="utf-8")
    os.replace(tmp, path)


def ask(data_dir: Path, *, force: bool) -> str:
    """Leave a request for the master of `data_dir` (before signalling it): its id, which sorts
    by when it was asked (the master takes them in that order). OSError."""
    request_id = f"{time.time_ns():016x}{secrets.token_hex(4)}"
    _write(data_dir / f"{PREFIX}{request_id}{REQUEST}", {"force": force})
    return request_id


def withdraw(data_dir: Path, request_id: str) -> None:
    """The master was not signalled after all, or did not answer: take the request back."""
    (data_dir / f"{PREFIX}{request_id}{REQUEST}").unlink(missing_ok=True)


def collect(data_dir: Path, request_id: str) -> dict[str, Any] | None:
    """The outcome of that request's reload once the master wrote it (read, then deleted)."""
    path = data_dir / f"{PREFIX}{request_id}{OUTCOME}"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    path.unlink(missing_ok=True)
    return doc if isinstance(doc, dict) else {"ok": False, "problems": ["the master's answer was not understood"]}


def take(data_dir: Path) -> list[tuple[str, bool]]:
    """The master's side: every request waiting, oldest first, as (id, force), each claimed (its
    file gone). A request that cannot be read is taken without force."""
    try:
        paths = [p for p in data_dir.iterdir() if p.name.startswith(PREFIX) and p.name.endswith((REQUEST, OUTCOME))]
    except OSError:
        return []
    now = time.time()
    found: list[tuple[str, bool]] = []
    for path in paths:
        try:
            if path.name.endswith(OUTCOME):
                if now - path.stat().st_mtime > KEEP_S:
                    path.unlink(missing_ok=True)
                continue
            text = path.read_text(encoding="utf-8")
            path.unlink()
        except OSError:  # gone meanwhile (withdrawn), or not ours to read
            continue
        try:
            force = json.loads(text).get("force") is True
        except (ValueError, AttributeError):
            force = False
        found.append((path.name[len(PREFIX):-len(REQUEST)], force))
    return sorted(found)


def answer(data_dir: Path, request_id: str, outcome: dict[str, Any]) -> None:
    """The master's side: what came of that request's reload, for the command to read."""
    _write(data_dir / f"{PREFIX}{request_id}{OUTCOME}", outcome)

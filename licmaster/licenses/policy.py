"""The site policy file (TOML, `policy = "sites.toml"` in the config): read and checked against
the licenses it will govern. The policy's meaning is licmaster/model/sites.py's."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path

from licmaster.model.sites import Policy, PolicyError, check_installed, parse_policy


def load_policy(path: str | Path, installed: Mapping[str, int] | None = None) -> Policy:
    """The policy in `path`, or PolicyError listing every problem: the file's, the policy's, and
    (given what is installed per family) reservations that sum past it."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError([f"{path}: cannot read the policy file: {exc.strerror or exc}"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError([f"{path}: not valid TOML: {exc}"]) from None
    policy = parse_policy(data, source=path.name)
    if installed is not None:
        problems = check_installed(policy, installed)
        if problems:
            raise PolicyError(problems)
    return policy


def describe(policy: Policy | None) -> str:
    """A policy in a few words, for logs and the reload's report."""
    if policy is None:
        return "no site policy"
    limits = sum(len(s.reserve) + len(s.max) for s in policy.sites)
    return f"{len(policy.sites)} site(s), {limits} limit(s), {len(policy.access)} family rule(s) ({policy.source})"

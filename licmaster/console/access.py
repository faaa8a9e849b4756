"""Who may do what on the console. Pure.

- With `admin_tokens` configured, every request carries `Authorization: Bearer <token>`; a
  `view` token reads, a `manage` token also reloads and releases.
- Without any, the console is read-only and answers only on loopback: nobody configured who may
  change things, and nobody off this host may read.
- `/metrics` alone may also be read with `metrics_token` (a Prometheus scrape's bearer token,
  good for nothing else), or by anyone with `metrics_public`.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

from licmaster.daemon.config import AdminToken


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    status: int = 200  # 401: who are you; 403: not you, not this
    reason: str = ""
    who: str = ""


def loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def allowed_origin(origin: str | None, masters: list[str]) -> bool:
    """A page of another master's console may read this one (the dashboard follows a failover):
    an origin on loopback, or on the host of a master this one knows (standby_of, peers)."""
    if not origin:
        return False
    host = origin.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return loopback(host) or host == "localhost" or host in {m.rsplit(":", 1)[0].strip("[]") for m in masters}


def decide(tokens: tuple[AdminToken, ...], authorization: str | None, remote: str | None, *, mutation: bool) -> Decision:
    if not tokens:
        if not loopback(remote):
            return Decision(False, 403, "no admin_tokens configured: the console answers on loopback only")
        if mutation:
            return Decision(False, 403, "no admin_tokens configured: the console is read-only (configure a manage token)")
        return Decision(True, who="loopback")
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return Decision(False, 401, "missing credentials: send Authorization: Bearer <token>")
    for token in tokens:
        if hmac.compare_digest(presented.encode(), token.token.encode()):
            if mutation and token.role != "manage":
                return Decision(False, 403, f"a {token.role} token may not change anything: this needs a manage token")
            return Decision(True, who=token.who)
    return Decision(False, 401, "unknown token")


def decide_metrics(tokens: tuple[AdminToken, ...], metrics_token: str, public: bool, authorization: str | None,
                   remote: str | None) -> Decision:
    """GET /metrics: anyone with `metrics_public`; the `metrics_token`; else as any read (`decide`)."""
    if public:
        return Decision(True, who="metrics_public")
    scheme, _, presented = (authorization or "").partition(" ")
    if metrics_token and scheme.lower() == "bearer" and hmac.compare_digest(presented.encode(), metrics_token.encode()):
        return Decision(True, who="metrics_token")
    decision = decide(tokens, authorization, remote, mutation=False)
    if not decision.allowed and metrics_token:
        return Decision(False, 401, "/metrics needs Authorization: Bearer <metrics_token> (or an admin token)")
    return decision

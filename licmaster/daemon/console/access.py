"""Who may do what on the console. Pure.

- With `admin_tokens` configured, every request carries `Authorization: Bearer <token>`; a
  `view` token reads, a `manage` token also reloads and releases.
- Without any, the console is read-only and answers only on loopback: nobody configured who may
  change things, and nobody off this host may read.
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

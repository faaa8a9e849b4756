"""Errors as values: a protocol error code, the rule that decided, and a sentence for a person."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, final

# The error codes of docs/protocol.md, in one place so that nothing misspells one.
BAD_FRAME = "bad_frame"
BAD_REQUEST = "bad_request"
UNKNOWN_OP = "unknown_op"
NOT_HELLO = "not_hello"
AUTH_FAILED = "auth_failed"
UNKNOWN_RESOURCE = "unknown_resource"
UNKNOWN_LICENSE = "unknown_license"
EXHAUSTED = "exhausted"
VERSION = "version"
DECENTRAL = "decentral"
BOUND_ELSEWHERE = "bound_elsewhere"
SMB = "smb"
STANDBY_UNLICENSED = "standby_unlicensed"
PREREQUISITE = "prerequisite"
NOT_MASTER = "not_master"
FENCED = "fenced"
GRACE = "grace"
NO_QUORUM = "no_quorum"  # etcd mode: the leadership cannot be confirmed; nothing new is granted for now
BUSY = "busy"
UNKNOWN_LEASE = "unknown_lease"  # a checkin names a lease id this master does not hold for the node
POLICY = "policy"  # the site policy said no: a site's max, another site's reservation, include/exclude
INTERNAL = "internal"


@final
@dataclass(frozen=True, slots=True)
class Denial:
    """Why the model said no. `rule` is a rule ID of docs/rules.md, or None for plain input errors."""

    code: str
    message: str
    rule: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        """The fields of an error reply (without `id`/`ok`)."""
        out: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.rule:
            out["rule"] = self.rule
        out.update(self.details)
        return out

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" + (f" ({self.rule})" if self.rule else "")


def bad_request(field_name: str, problem: str) -> Denial:
    return Denial(BAD_REQUEST, f"field {field_name!r}: {problem}", details={"field": field_name})

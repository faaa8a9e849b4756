"""Vendor signatures on license files: Ed25519 (the `cryptography` package), bound to installations.

A signed license file is an ordinary license file with one more table:

```toml
[signature]
algorithm = "ed25519"
key = "3f1c0a9d2b7e4c55"              # the signing key's id: first 16 hex digits of SHA-256 of its raw public key
installations = ["00:90:33:aa:00:01", "00:90:33:aa:00:02"]   # a master and its standby
value = "base64 of the 64-byte signature"
```

What is signed is a canonical form of what matters, not the file's bytes: the license entries
with their values normalised (a MAC in lower case, a date as ISO text), sorted, and the sorted
installation ids, as compact JSON. Comments, white space, key order and entry order do not
matter; a changed count, an added or removed entry, a changed binding or installation do.

Why Ed25519 through `cryptography`: small keys and signatures, no parameters to get wrong, and
the library every Python project already trusts for it (FlexNet, RLM and Keygen sign likewise).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from licmaster.model.rules import normalize_mac

ALGORITHM = "ed25519"
FORMAT = "licmaster-license/1"  # part of what is signed: a later canonical form gets a new name
TABLE = "signature"


class SigningError(ValueError):
    """A key or file that cannot be used to sign or verify; the message says which and why."""


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def keygen(out: str | Path) -> tuple[Path, Path]:
    """A vendor key pair: `OUT.key` (private, PEM PKCS#8, mode 0600) and `OUT.pub` (public, PEM)."""
    private = Ed25519PrivateKey.generate()
    key_path, pub_path = Path(f"{out}.key"), Path(f"{out}.pub")
    for path in (key_path, pub_path):
        if path.exists():
            raise SigningError(f"{path} exists: not overwritten (a vendor key is not replaced by accident)")
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub_path.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_path, pub_path


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SigningError(f"{path}: not a readable PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise SigningError(f"{path}: not a readable PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"{path}: not an Ed25519 public key")
    return key


def _normal(value: Any) -> Any:
    if isinstance(value, bool) or isinstance(value, int):
        return value
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        return normalize_mac(value) or value.strip()
    return value


def canonical(entries: Iterable[dict[str, Any]], installations: Iterable[str]) -> bytes:
    """The bytes a signature covers (see the module's docstring)."""
    normal = [{key: _normal(value) for key, value in entry.items()} for entry in entries]
    licenses = sorted(normal, key=lambda e: json.dumps(e, sort_keys=True, ensure_ascii=False))
    doc = {"format": FORMAT, "installations": sorted(set(installations)), "licenses": licenses}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signature_table(entries: list[dict[str, Any]], private: Ed25519PrivateKey, installations: Sequence[str]) -> str:
    """The `[signature]` table to append to a license file."""
    if not installations:
        raise SigningError("a signed license file is bound to at least one installation (--installation ID)")
    value = base64.b64encode(private.sign(canonical(entries, installations))).decode()
    ids = ", ".join(json.dumps(i) for i in sorted(set(installations)))
    return (f"\n[{TABLE}]\nalgorithm = \"{ALGORITHM}\"\nkey = \"{key_id(private.public_key())}\"\n"
            f"installations = [{ids}]\nvalue = \"{value}\"\n")


@dataclass(frozen=True, slots=True)
class Verifier:
    """Checks license files against the vendor keys, for one installation."""

    keys: dict[str, Ed25519PublicKey]  # by key id
    installation: str

    @classmethod
    def from_files(cls, paths: Iterable[str | Path], installation: str) -> Verifier:
        keys = {}
        for path in paths:
            key = load_public_key(path)
            keys[key_id(key)] = key
        if not keys:
            raise SigningError("no vendor key given")
        return cls(keys, installation)

    def problem(self, doc: dict[str, Any]) -> str | None:
        """Why this parsed license file is not acceptable here, or None when it is."""
        sig = doc.get(TABLE)
        if sig is None:
            return "unsigned: vendor_keys are configured, so every license file must carry the vendor's [signature]"
        if not isinstance(sig, dict) or sig.get("algorithm") != ALGORITHM:
            return f"[signature] is not an {ALGORITHM} signature of this format"
        installations = sig.get("installations")
        if not isinstance(installations, list) or not all(isinstance(i, str) for i in installations):
            return "[signature] installations must be a list of installation ids"
        key = self.keys.get(str(sig.get("key")))
        if key is None:
            return f"signed by key {sig.get('key')!r}, which is not one of the vendor keys ({', '.join(sorted(self.keys))})"
        try:
            value = base64.b64decode(str(sig.get("value")), validate=True)
            key.verify(value, canonical(doc.get("license", []), installations))
        except (InvalidSignature, ValueError):
            return "the signature does not match the content: the file was changed after it was signed"
        if self.installation not in installations:
            return f"bound to installation(s) {', '.join(installations)}, not to this one ({self.installation})"
        return None

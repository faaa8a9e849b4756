"""How slave-sim reaches a secured master: TLS on the PBX port (`--tls`, `--cafile`, or `tls` and
`cafile` in the scenario's `[master]`) and the installation's PBX token (`--token`, `--token-file`,
`SLAVE_SIM_TOKEN`, or `token` / `token_file`), which every hello carries as `auth = {token}`.

Against an operator's master (`--master`), `check_access` connects once, before anything else,
the way the run's PBXs will; when that fails for want of TLS, of a trusted certificate or of the
token, it says so in one line naming the option to give (`AccessError`), instead of the
connection's bare `connection to the master lost`. A master slave-sim starts itself is given
what the scenario asks: `tls = true` makes a self-signed certificate for 127.0.0.1, which the
masters serve and the run's clients trust (`make_certificate`); `token` becomes its `auth_token`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import ipaddress
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from licmaster.client import LicenseError, MasterClient, parse_address
from licmaster.model.errors import AUTH_FAILED

TOKEN_ENV = "SLAVE_SIM_TOKEN"
PROBE_TIMEOUT_S = 3.0


class AccessError(RuntimeError):
    """The master is there but will not take the run's connections as given: one line, naming
    the option that fixes it."""


@dataclass(frozen=True)
class MasterAccess:
    """What every client of the run connects with. Picklable (worker processes get it)."""

    tls: bool = False
    cafile: Path | None = None  # the CA (or the master's own certificate) to verify it with; None: the system's
    token: str | None = field(default=None, repr=False)  # kept out of reprs, logs and reports

    def context(self) -> ssl.SSLContext | None:
        return _context(str(self.cafile) if self.cafile else None) if self.tls else None

    def auth(self) -> dict[str, str] | None:
        return {"token": self.token} if self.token else None

    def client_options(self) -> dict[str, Any]:
        """MasterClient's keyword arguments for TLS and the token."""
        return {"ssl": self.context(), "auth": self.auth()}


PLAIN = MasterAccess()  # plain TCP, no token: a master without tls_cert and auth_token


@functools.lru_cache(maxsize=8)
def _context(cafile: str | None) -> ssl.SSLContext:
    """One context per CA file and process, shared by every PBX (a city has a thousand)."""
    return ssl.create_default_context(cafile=cafile)


def read_token_file(path: Path, what: str) -> str:
    """The token in a file (its first line, surrounding blanks dropped); ValueError naming `what`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not token:
        raise ValueError(f"{what}: {path} is empty")
    return token


TOKEN_HINT = f"--token (or --token-file FILE, or {TOKEN_ENV}; in the scenario, [master] token or token_file)"


async def check_access(address: str, access: MasterAccess) -> None:
    """Connect as the run's clients will (an observer, then `bye`). When that fails, say why in one
    line if the master is there but speaks TLS and we do not (or the reverse), its certificate is
    not trusted, or the token is missing or wrong (AccessError); otherwise the connection's own
    error goes on (no master there at all)."""
    client = MasterClient([address], "slave-sim-access", role="observer", connect_timeout=5.0, reconnect=False,
                          **access.client_options())
    try:
        await client.connect()
    except LicenseError as exc:
        if exc.code != AUTH_FAILED:
            raise
        if access.token:
            raise AccessError(f"the master at {address} refused the token (auth_failed): check {TOKEN_HINT}") from None
        raise AccessError(f"the master at {address} asks for a token (auth_failed): run with {TOKEN_HINT}") from None
    except (OSError, TimeoutError):  # NotConnected is a ConnectionError
        why = await diagnose(address, access)
        if why:
            raise AccessError(why) from None
        raise
    finally:
        await client.close()


async def diagnose(address: str, access: MasterAccess) -> str | None:
    """Why a master that did not take our connection may be there all the same, in one line; None
    when the probes find no master speaking either way (unreachable, hung, or something else)."""
    host, port = parse_address(address)
    if not access.tls:
        # A TLS listener closes a plaintext hello without a byte: ask it for a TLS handshake instead.
        if await _handshake(host, port, _unverified()) is None:
            return f"the master at {address} speaks TLS: run with --tls [--cafile CA]"
        return None
    context = access.context()
    assert context is not None
    failure = await _handshake(host, port, context)
    if isinstance(failure, ssl.SSLCertVerificationError):
        return (f"the master at {address} speaks TLS, but its certificate was not accepted "
                f"({failure.verify_message or failure.reason}): give --cafile CA (the master's certificate or the CA "
                f"that signed it), and a --master host it is issued for")
    if isinstance(failure, ssl.SSLError) and await _speaks_plaintext(address, access):
        return f"the master at {address} does not speak TLS: run without --tls (and without --cafile)"
    return None


async def _handshake(host: str, port: int, context: ssl.SSLContext) -> BaseException | None:
    """None when a TLS handshake with host:port completes; else what failed."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=context), PROBE_TIMEOUT_S)
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        return exc
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    return None


def _unverified() -> ssl.SSLContext:
    """Only to learn whether TLS is spoken there: nothing is sent over it."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _speaks_plaintext(address: str, access: MasterAccess) -> bool:
    """A plaintext hello is answered (accepted or refused): a master without TLS is there."""
    client = MasterClient([address], "slave-sim-access", role="observer", connect_timeout=PROBE_TIMEOUT_S,
                          reconnect=False, auth=access.auth())
    try:
        await client.connect()
    except LicenseError:
        return True
    except (OSError, TimeoutError):
        return False
    finally:
        await client.close()
    return True


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and localhost) and its key, for a master slave-sim
    starts with `tls = true`: the masters serve it, and the run's clients trust it alone."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "slave-sim master")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                    x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "master-cert.pem", directory / "master-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path

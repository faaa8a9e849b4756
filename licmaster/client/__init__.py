"""The client of the master, for any PBX integration (and the simulator):

    from licmaster.client import MasterClient, LicenseError

- core.py: its state without I/O (the masters and the one in use, the leases held with their
  confirmation and lapse, replies in parts), tested in memory;
- connection.py: `MasterClient`, the asyncio shell around it (sockets, tasks, futures).
"""

from licmaster.client.connection import RETRY_CAP_S, RETRYABLE, LicenseError, MasterClient, NotConnected
from licmaster.client.core import HeldLease, parse_address

__all__ = ["RETRYABLE", "RETRY_CAP_S", "HeldLease", "LicenseError", "MasterClient", "NotConnected", "parse_address"]

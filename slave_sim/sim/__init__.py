"""`slave-sim sim`: days of faults in a minute (issue 26). The real masters (a master and its
standby: two-node, or both in a model of etcd) and the real MasterClients of the PBXs run on one
virtual clock (licmaster/testing/simloop.py), in one process; faults are drawn from the seed; the
same seed on the same commit gives the same history, byte for byte (`history_sha256`).

    config.py   what is asked, what the seed derives (printed first), what was found
    world.py    the masters, the PBXs, the faults, the history (slave_sim/chaos/check.py's rules)
    command.py  the command's options and output, `--trace`

The history is held to the chaos drill's rules (slave_sim/chaos/check.py), reported apart:
safety (never over installed, every grant accounted for, every lease a PBX believes counted by
the serving master lease by lease), availability (no PBX loses a lease within its hold) and
liveness (every PBX served again within 5 s of the last heal; a simulation where every task
waits and no timer is due is reported as stalled, never a hang).
"""

from .config import ETCD_FAULTS, FAULTS, SimConfig, SimResult
from .world import run_sim

__all__ = ["ETCD_FAULTS", "FAULTS", "SimConfig", "SimResult", "run_sim"]

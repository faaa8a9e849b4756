"""Run a master for tests, benchmarks and the simulator.

- `MasterProcess` (process.py): a real `licmaster serve` process: start from a config, ready when
  it writes its ready file (not a regex on a log line), stop, `kill -9`, restart;
- `InProcessMaster` (harness.py): a real `Master` in this process and loop, whose connections
  are fed bytes through a fake transport: request handling without a socket or a process;
- `RawPeer` / `SocketPeer` (peers.py): raw protocol talk (send maps, read replies and events)
  over either.
"""

from licmaster.testing.harness import FakeTransport, InProcessMaster
from licmaster.testing.peers import RawPeer, SocketPeer
from licmaster.testing.process import MasterProcess, free_port, toml_value

__all__ = ["FakeTransport", "InProcessMaster", "MasterProcess", "RawPeer", "SocketPeer", "free_port", "toml_value"]

"""The timeline actions of a scenario, one row each. Pure.

A row says everything the rest of the drill asks about an action:

- `scope`: who plays it. "pbx": every Network, on its own PBXs (in each worker process), by its
  `do_<action>` method (network.py). "run": the Runner, once, on the run's masters, the links
  between them, or the clock, by its `do_<action>` method (runner.py).
- `targeted`: a step of it picks PBXs with `pbx = [...]` (and the step's description names them).
- `needs`: what the run must have besides PBXs. "own-master": slave-sim starts the master (no
  `--master`, or the run is refused before it starts); "standby-master": that, and
  `[master] standby = true` (or the scenario is refused at load); "etcd": that slave-sim starts
  the master, and `[master] etcd = true` (or the scenario is refused at load); "none".
- `failover`: a standby takes over what a failed peer held; a refusal fails the run unless
  `[expect] failover_refused` allows it (scenario.failover_steps() says why these).
- `shows`: what the step's description adds, a format of the step (`{step.seconds:g}s`).
- `doc`: the line `slave-sim actions` prints.

The method is found by name: action "fail-master" is played by `do_fail_master`. Adding an action
is one row here and one method there; tests/test_scenario.py checks that every row has its method
and every `do_` method its row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Scope = Literal["pbx", "run"]
Needs = Literal["none", "own-master", "standby-master", "etcd"]


@dataclass(frozen=True)
class Action:
    name: str
    scope: Scope
    targeted: bool
    doc: str
    needs: Needs = "none"
    failover: bool = False
    shows: str = ""

    @property
    def method(self) -> str:
        """The name of the method that plays it: `do_` and the name, with `_` for `-`."""
        return "do_" + self.name.replace("-", "_")

    @property
    def needs_own_master(self) -> bool:
        """It kills, restarts or reloads the master: slave-sim must have started it."""
        return self.needs in ("own-master", "standby-master", "etcd")

    def detail(self, step: object) -> str:
        """What a step of it shows after its name and targets (`step` a scenario.Step)."""
        return self.shows.format(step=step)


def _rows(*rows: Action) -> dict[str, Action]:
    table = {row.name: row for row in rows}
    assert len(table) == len(rows), "an action is one row"
    return table


ACTIONS: dict[str, Action] = _rows(
    Action("register", "pbx", True, "devices register (Port per object, R-PORT-1/3)"),
    Action("unregister", "pbx", True, "devices unregister"),
    Action("configure-users", "pbx", True, "assign the PBX's user-license template to its users (R-USER, R-UC)"),
    Action("conference", "pbx", True, "start conferences in bridge rooms (R-CHAN)", shows="{step.participants} participants"),
    Action("end-conference", "pbx", True, "end conferences"),
    Action("operator-login", "pbx", True, "operator desks log in (R-OP-1)"),
    Action("operator-logout", "pbx", True, "operator desks log out"),
    Action("queue-monitor", "pbx", True, "start monitoring the waiting queues (R-QM-1, R-VER-4)"),
    Action("isdn-up", "pbx", True, "ISDN interfaces come up (R-HW-3/4)"),
    Action("isdn-down", "pbx", True, "ISDN interfaces go down"),
    Action("upgrade", "pbx", True, "PBXs move to another firmware version and say hello again (R-VER)", shows="V{step.firmware}"),
    Action("pause", "run", False, "wait; with audit = true the master and the network must then agree exactly",
           shows="{step.seconds:g}s"),
    Action("kill", "pbx", True, "a PBX dies: its connection drops, it sends nothing more"),
    Action("cut", "pbx", True, "a PBX is cut off: the connection hangs, nothing goes through"),
    Action("restore", "pbx", True, "a killed or cut-off PBX comes back, reconnects and re-syncs"),
    Action("takeover", "pbx", False, "a standby PBX takes over its failed PBX (R-STBY)", failover=True, shows="{step.standby}"),
    Action("restart-master", "run", False, "the master is killed (kill -9) and started again", needs="own-master"),
    Action("reload-licenses", "run", False, "the master's license files are replaced and it reloads them (SIGHUP, no restart)",
           needs="own-master"),
    Action("fail-master", "run", False,
           "the master is killed (kill -9) and its standby master takes over ([master] standby = true)", needs="standby-master",
           failover=True),
    Action("return-master", "run", False, "the master that failed starts again on its data, finds its standby acting as master "
                                          "and follows it as the new standby (the two swap roles)", needs="standby-master"),
    Action("partition", "run", False, "cut and heal named links (cut = [...], heal = [...]): standby-master, master-etcd",
           shows="{step.link_changes}"),
    Action("etcd-down", "run", False, "every etcd member is killed for `seconds`, then started again; the steps after it play "
                                      "during the outage (no quorum: no master grants) ([master] etcd = true)",
           needs="etcd", shows="{step.seconds:g}s"),
)

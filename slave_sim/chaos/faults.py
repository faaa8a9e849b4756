"""The chaos drill's faults: one frozen dataclass per kind, with named fields.

Each kind is drawn from the seed (`draw`, in the order plan.py draws), says what it holds (a
master's process, an etcd member, links: two faults on one thing do not stack), says what it is
in words (`describe`, the report's timeline), and acts on the running installation (an
`Installation`: runner.Chaos) with its `inject` / `heal` pair. Adding a kind is one class here,
listed in KINDS.

Pure to import: the pair acts only on the installation it is given.
"""

from __future__ import annotations

import asyncio
import random
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from licmaster.testing.etcd import EtcdCluster
    from licmaster.testing.process import MasterProcess

    from ..proxy import Link

MASTERS = 2  # the drill's masters
ETCD_MEMBERS = 3  # the etcd cluster's members
DIRECTIONS = ("up", "down")  # a one-way cut: what goes towards the master (or etcd) is lost, or what comes back


class Installation(Protocol):
    """What a fault acts on: the drill's processes and proxies (runner.Chaos), nothing else of it."""

    masters: list[MasterProcess]
    etcd: EtcdCluster | None
    etcd_links: list[list[Link]]  # [master][member]
    site_links: list[list[Link]]  # [site][master]
    peer_links: list[Link]  # [master]: the way the other master reaches it


Held = tuple[Any, ...]  # ("process", master), ("member", j), or a link: ("etcd", master), ("site", site, master), ("masters",)


@dataclass(frozen=True)
class Fault:
    kind: ClassVar[str]

    @classmethod
    def draw(cls, rng: random.Random, sites: int) -> Fault:
        raise NotImplementedError

    def lasts(self, rng: random.Random, lease_ttl_s: float) -> float:
        """How long it stays before its heal, drawn from the seed: 1-5 s."""
        return rng.uniform(1.0, 5.0)

    def holds(self) -> frozenset[Held]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    async def inject(self, chaos: Installation) -> None:
        raise NotImplementedError

    async def heal(self, chaos: Installation) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------- a master's process

@dataclass(frozen=True)
class Kill(Fault):
    """kill -9 of a master, restarted on its port at the heal."""

    kind: ClassVar[str] = "kill"
    master: int

    @classmethod
    def draw(cls, rng: random.Random, sites: int) -> Fault:
        return cls(rng.randrange(MASTERS))

    def holds(self) -> frozenset[Held]:
        return frozenset({("process", self.master)})

    def describe(self) -> str:
        return f"kill -9 master{self.master}"

    async def inject(self, chaos: Installation) -> None:
        chaos.masters[self.master].kill9()

    async def heal(self, chaos: Installation) -> None:
        await asyncio.get_running_loop().run_in_executor(None, chaos.masters[self.master].restart_same_port)


@dataclass(frozen=True)
class Stop(Fault):
    """SIGSTOP of a master, SIGCONT at the heal."""

    kind: ClassVar[str] = "stop"
    master: int

    @classmethod
    def draw(cls, rng: random.Random, sites: int) -> Fault:
        return cls(rng.randrange(MASTERS))

    def holds(self) -> frozenset[Held]:
        return frozenset({("process", self.master)})

    def describe(self) -> str:
        return f"SIGSTOP master{self.master}"

    async def inject(self, chaos: Installation) -> None:
        chaos.masters[self.master].signal(signal.SIGSTOP)

    async def heal(self, chaos: Installation) -> None:
        chaos.masters[self.master].signal(signal.SIGCONT)


# ---------------------------------------------------------------- links (the drill's proxies)

@dataclass(frozen=True)
class Cut(Fault):
    """Links cut (both ways, or one way: `way`), healed together."""

    def proxies(self, chaos: Installation) -> list[Link]:
        raise NotImplementedError

    @property
    def way(self) -> str:
        return "both"

    async def inject(self, chaos: Installation) -> None:
        for link in self.proxies(chaos):
            link.set_cut(True, self.way)

    async def heal(self, chaos: Installation) -> None:
        for link in self.proxies(chaos):
            link.set_cut(False)


@dataclass(frozen=True)
class CutEtcd(Cut):
    kind: ClassVar[str] = "cut-etcd"
    master: int

    @classmethod
    def draw(cls, rng: random.Random, sites: int) -> Fault:
        return cls(rng.randrange(MASTERS))

    def holds(self) -> frozenset[Held]:
        return frozenset({("etcd", self.master)})

    def describe(self) -> str:
        return f"cut master{self.master} from etcd"

    def proxies(self, chaos: Installation) -> list[Link]:
        return chaos.etcd_links[self.master]


@dataclass(frozen=True)
class CutEtcdOneWay(CutEtcd):
    kind: ClassVar[str] = "cut-etcd-oneway"
    direction: str

    @classmethod
    def draw(cls, rng: random.Random, sites: int) -> Fault:
        master = rng.randrange(MASTERS)
        return cls(master, rng.choice(DIRECTIONS))

    @property
    def way(self) -> str:
        return self.direction

    def describe(self) -> str:
        lost = "its requests" if self.direction == "up" else "the answers"
        return f"cut master{self.master} from etcd one way ({lost} lost)"


@dataclass(frozen=True)
class CutSite(Cut):
    kind: ClassVar[str] = "cut-site"
    site: int
    master: int

    @classmethod
    def draw(cls, rng: random.Random, sites: int) -> Fault:
        site = rng.randrange(sites)
        return cls(site, rng.randrange(MASTERS))

    def holds(self) -> frozenset[Held]:
        return frozenset({("site", self.site, self.master)})

    def describe(self) -> str:
        return f"cut site{self.site} from master{self.master}"

    def proxies(self, chaos: Installation) -> list[Link]:
        return [chaos.site_links[self.site][self.master]]


@dataclass(frozen=True)
class CutSiteOneWay(CutSite):
    kind: ClassVar[str] = "cut-site-oneway"
    direction: str

    @classmethod
    def draw(cls, rng: random.Random, sites: int) -> Fault:
        site = rng.randrange(sites)
        master = rng.randrange(MASTERS)
        return cls(site, master, rng.choice(DIRECTIONS))

    @property
    def way(self) -> str:
        return self.direction

    def describe(self) -> str:
        lost = "requests" if self.direction == "up" else "replies"
        return f"cut site{self.site} from master{self.master} one way ({lost} lost)"


@dataclass(frozen=True)
class CutSiteAll(Cut):
    kind: ClassVar[str] = "cut-site-all"
    site: int

    @classmethod
    def draw(cls, rng: random.Random, sites: int) -> Fault:
        return cls(rng.randrange(sites))

    def holds(self) -> frozenset[Held]:
        return frozenset({("site", self.site, m) for m in range(MASTERS)})

    def describe(self) -> str:
        return f"cut site{self.site} from both masters"

    def proxies(self, chaos: Installation) -> list[Link]:
        return chaos.site_links[self.site]


@dataclass(frozen=True)
class CutSiteLong(CutSiteAll):
    """A site cut from both masters well past the lease TTL (2-4 TTLs): its PBXs are absent, and
    keep what they hold (their hold is far longer): the masters give none of it to anyone else."""

    kind: ClassVar[str] = "cut-site-long"

    def lasts(self, rng: random.Random, lease_ttl_s: float) -> float:
        return rng.uniform(2.0, 4.0) * lease_ttl_s

    def describe(self) -> str:
        return f"cut site{self.site} from both masters, 2-4 lease TTLs"


@dataclass(frozen=True)
class CutMasters(Cut):
    """Each master reaches the other by its `advertise` address, through a proxy: both cut."""

    kind: ClassVar[str] = "cut-masters"

    @classmethod
    def draw(cls, rng: random.Random, sites: int) -> Fault:
        return cls()

    def holds(self) -> frozenset[Held]:
        return frozenset({("masters",)})

    def describe(self) -> str:
        return "cut the two masters from each other"

    def proxies(self, chaos: Installation) -> list[Link]:
        return chaos.peer_links


# ---------------------------------------------------------------- etcd members

@dataclass(frozen=True)
class EtcdKill(Fault):
    """etcd members killed, restarted at the heal."""

    kind: ClassVar[str] = "etcd-kill"
    members: tuple[int, ...]

    @classmethod
    def draw(cls, rng: random.Random, sites: int) -> Fault:
        return cls((rng.randrange(ETCD_MEMBERS),))

    def holds(self) -> frozenset[Held]:
        return frozenset(("member", j) for j in self.members)

    def describe(self) -> str:
        return f"kill etcd member m{self.members[0]}"

    async def inject(self, chaos: Installation) -> None:
        assert chaos.etcd is not None
        for j in self.members:
            await asyncio.get_running_loop().run_in_executor(None, chaos.etcd.kill, j)

    async def heal(self, chaos: Installation) -> None:
        assert chaos.etcd is not None
        for j in self.members:
            await asyncio.get_running_loop().run_in_executor(None, chaos.etcd.restart, j)


@dataclass(frozen=True)
class EtcdKillTwo(EtcdKill):
    """Two of the three: no quorum."""

    kind: ClassVar[str] = "etcd-kill-2"

    @classmethod
    def draw(cls, rng: random.Random, sites: int) -> Fault:
        return cls(tuple(sorted(rng.sample(range(ETCD_MEMBERS), 2))))

    def describe(self) -> str:
        first, second = self.members
        return f"kill etcd members m{first} and m{second} (no quorum)"


KINDS: dict[str, type[Fault]] = {cls.kind: cls for cls in (Kill, Stop, CutEtcd, CutEtcdOneWay, CutSite, CutSiteOneWay,
                                                           CutSiteAll, CutMasters, EtcdKill, EtcdKillTwo, CutSiteLong)}
FAULTS = tuple(KINDS)  # in this order: the seed picks a kind by its index


def describe(fault: Fault) -> str:
    return fault.describe()

"""Leadership of an installation held in etcd: only the holder of the leader key grants.

The key (`<etcd_prefix>/leader`) is created only if absent, under an etcd lease of `ttl_s`, with
this master's address as its value; the revision that created it is the epoch (the fencing
token every reply carries). While it leads, the master renews the lease every `ttl_s / 4` and
keeps a local deadline: the moment of its last confirmed renewal's request, plus the TTL, less a
margin. Before that deadline it stops confirming (`on_suspend`), *before* etcd can give the key
to another master: at no instant do two masters confirm. The master also checks the deadline on
its request path (`on_confirmed`), so a process paused past it answers nothing when it wakes. A renewal in time again resumes it; the key
found in another master's hands makes it step down (`on_lost`). A master that does not lead
watches the key and campaigns when it is free: only winning makes it master (`on_won`).

Only a master that holds every grant the last leader answered may lead next: beside the leader
key, `<etcd_prefix>/insync` records the leader's name and its in-sync standby masters (the ones
that acknowledge every grant before it is answered: daemon/ha/feed.py), as Kafka records its
in-sync replicas (each master named by its address, the one in the leader key: names may repeat).
The leader writes it (`record_in_sync`) only while it holds its key, and drops
a standby from it before it answers anything without that standby. A master campaigns only if
the record names it as the leader or as an in-sync standby whose stream is whole (`in_sync`), or
if there is no record; its campaign is one transaction with the record's revision, so a record
changed meanwhile makes it fail. A standby that wins as an in-sync one knows every lease a PBX
may believe (`complete`): no grace window need hold new checkouts back.

A suspended leader confirms nothing: it sends its PBXs away and serves none until it renews (a
PBX's lease is valid only while a confirmed leader confirmed it within its hold:
docs/operations.md, "Two clocks"); it keeps counting what they hold. With etcd's quorum lost
nobody can renew or win, so no master grants, and the PBXs keep what they hold for their hold:
no license is given twice under any partition, and no phone goes down for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from licmaster.daemon import logs
from licmaster.daemon.ha.etcd import EtcdClient, EtcdUnavailable, KeyValue

MARGIN_S = 0.5  # stop granting this long before the lease can expire in etcd


class Leadership:
    def __init__(self, etcd: EtcdClient, key: str, name: str, address: str, *, ttl_s: int,
                 on_won: Callable[[int], None], on_follow: Callable[[str], None],
                 on_suspend: Callable[[str], None], on_resume: Callable[[], None],
                 on_lost: Callable[[str | None], None], on_confirmed: Callable[[float], None] | None = None,
                 in_sync: Callable[[], bool] = lambda: False, poll_s: float = 0.2) -> None:
        self.etcd, self.key, self.name, self.address = etcd, key, name, address
        self.ttl_s, self.poll_s = ttl_s, poll_s
        self.on_won, self.on_follow, self.on_suspend, self.on_resume, self.on_lost = on_won, on_follow, on_suspend, on_resume, on_lost
        self.on_confirmed = on_confirmed  # (loop time until which the leadership is confirmed): checked per read
        self.leading = False
        self.suspended = False
        self.lease = 0
        self.epoch = 0
        self.deadline = 0.0
        self.leader: str | None = None  # the address in the key, as last read
        self.state = "campaigning"
        self.why = ""  # why suspended, or why etcd could not be asked
        self.insync_key = key.rsplit("/", 1)[0] + "/insync"
        self.in_sync = in_sync  # this master's replica stream is whole (it may lead if the record names it)
        self.complete = False  # the last win was as an in-sync standby: it holds every grant answered before
        self.recorded: list[str] | None = None  # the in-sync standbys this leader last recorded
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="leadership")

    async def stop(self) -> None:
        """Give the key back at once (a clean stop need not make the standby wait a TTL)."""
        if self._task is not None:
            self._task.cancel()
        if self.leading and self.lease:
            try:
                await self.etcd.revoke(self.lease)
            except EtcdUnavailable:
                pass
        await self.etcd.close()

    def status(self) -> dict[str, object]:
        return {"mode": "etcd", "state": self.state, "leader": self.leader, "epoch": self.epoch or None,
                "lease_ttl_s": self.ttl_s, "why": self.why or None, "in_sync": self.recorded if self.leading else None}

    async def record_in_sync(self, standbys: list[str]) -> bool:
        """Record this leader's in-sync standby masters (only while it holds its key): True once
        etcd has it. A standby leaves the record before any reply stops waiting for it (Master)."""
        if not self.leading or self.suspended:
            return False
        try:
            done = await self.etcd.put_if_held(self.insync_key, _record(self.address, standbys), self.key, self.epoch)
        except EtcdUnavailable as exc:
            self._unreachable(str(exc))
            return False
        if done:
            self.recorded = sorted(standbys)
        return done

    def _eligible(self, record: KeyValue | None) -> tuple[bool, bool]:
        """(may this master campaign, would it win knowing every grant answered before)."""
        if record is None:
            return True, False  # no leader recorded one: the first election of an installation
        try:
            said = json.loads(record.value)
            leader, standbys = str(said["leader"]), [str(n) for n in said["standbys"]]
        except (ValueError, KeyError, TypeError):
            return True, False  # unreadable: no record to hold anyone back
        if leader == self.address:
            return True, False  # the leader before, back: its own journal says what it knows
        if self.address in standbys and self.in_sync():
            return True, True
        return False, False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                if self.leading:
                    await self._renew(loop)
                    await asyncio.sleep(self.ttl_s / 4)
                else:
                    await self._campaign()
                    await asyncio.sleep(self.poll_s)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the loop die: a master without it would neither renew nor campaign
                logs.log.exception("leadership_error")
                await asyncio.sleep(self.poll_s)

    async def _campaign(self) -> None:
        try:
            sent = asyncio.get_running_loop().time()
            holder = await self.etcd.get(self.key)  # a read while another leads: no lease granted for nothing
            created, revision, complete = False, 0, False
            if holder is None:
                record = await self.etcd.get(self.insync_key)
                eligible, complete = self._eligible(record)
                if not eligible:
                    self._not_in_sync(record)
                    return
                if not self.lease:
                    self.lease, granted = await self.etcd.grant(self.ttl_s)
                    self.ttl_s = max(self.ttl_s, granted)
                sent = asyncio.get_running_loop().time()
                # The key, and a record of no in-sync standby yet, in one transaction that fails
                # if the record changed since it was read.
                created, revision, holder = await self.etcd.create(
                    self.key, json.dumps({"name": self.name, "address": self.address}), self.lease,
                    also=(self.insync_key, _record(self.address, []), record.mod_revision if record else 0))
        except EtcdUnavailable as exc:
            self.lease = 0  # perhaps lapsed meanwhile: a fresh one on the next try
            self._unreachable(str(exc))
            return
        self.why = ""
        if created:
            self.leading, self.epoch, self.leader = True, revision, self.address
            self.deadline = sent + self.ttl_s - MARGIN_S
            self.state, self.complete, self.recorded = "leading", complete, []
            logs.event("leadership_won", logging.WARNING, key=self.key, epoch=revision, in_sync=complete)
            self.on_won(revision)
            self._confirm()
            return
        if holder is not None:
            leader = _address(holder.value)
            if holder.lease == self.lease and leader == self.address:  # our own key (a lost reply): lead again
                self.leading, self.epoch, self.leader = True, holder.create_revision, self.address
                self.deadline = sent + self.ttl_s - MARGIN_S
                self.state = "leading"
                self.on_won(holder.create_revision)
                self._confirm()
                return
            if holder.lease != self.lease:
                self.lease = 0  # not renewed while another leads: it lapses; a fresh one when the key is free
            if leader == self.address:
                return  # our previous run's key (killed, restarted): it lapses within the TTL; then we campaign
            if leader != self.leader:
                self.leader = leader
                self.state = "following"
                if leader:
                    self.on_follow(leader)

    async def _renew(self, loop: asyncio.AbstractEventLoop) -> None:
        sent = loop.time()
        try:
            ttl = await asyncio.wait_for(self.etcd.keep_alive(self.lease), timeout=max(0.2, self.ttl_s / 4))
        except (EtcdUnavailable, TimeoutError) as exc:
            self._check_deadline(loop, f"cannot renew the leadership: {exc}")
            return
        if ttl <= 0:  # gone in etcd: someone else may lead now
            self._lose()
            return
        self.deadline = sent + min(ttl, self.ttl_s) - MARGIN_S
        if self.suspended:
            self.suspended, self.why, self.state = False, "", "leading"
            logs.event("leadership_renewed", logging.WARNING, key=self.key, epoch=self.epoch)
            self.on_resume()
        self._confirm()

    @property
    def suspend_at(self) -> float:
        """When to stop confirming if no renewal came: the deadline itself, 0.5 s before etcd
        could give the key to another. The master checks it on every read (on_confirmed), so a
        late timer here cannot let a confirmation through after it; suspending earlier only made
        a busy machine's slow etcd answer send every PBX away."""
        return self.deadline

    def _confirm(self) -> None:
        if self.on_confirmed is not None and self.leading and not self.suspended:
            self.on_confirmed(self.suspend_at)

    def expired(self, why: str) -> None:
        """Suspend now: the master found the deadline passed on its request path (the renewal
        task did not run in time: the process was paused, or the loop starved)."""
        if self.leading and not self.suspended:
            self.suspended, self.state, self.why = True, "suspended", why
            logs.event("leadership_suspended", logging.ERROR, key=self.key, why=why,
                       action="no PBX served until the leadership is confirmed again")
            self.on_suspend(why)

    def _check_deadline(self, loop: asyncio.AbstractEventLoop, why: str) -> None:
        self.why = why
        if not self.suspended and loop.time() >= self.suspend_at:
            # the next renewal could come too late: stop confirming now
            self.suspended, self.state = True, "suspended"
            logs.event("leadership_suspended", logging.ERROR, key=self.key, why=why,
                       action="no PBX served until the leadership is confirmed again")
            self.on_suspend(why)

    def _lose(self) -> None:
        self.leading, self.suspended, self.lease, self.state = False, False, 0, "campaigning"
        logs.event("leadership_lost", logging.WARNING, key=self.key, epoch=self.epoch)
        self.leader = None
        self.on_lost(None)

    def _not_in_sync(self, record: KeyValue | None) -> None:
        """The key is free and this master may not take it: it does not hold every grant the
        last leader answered. It waits for the leader before, or an in-sync standby, to lead."""
        why = f"not an in-sync standby of the last leader ({record.value if record else '-'}): only one may lead"[:300]
        if why != self.why:
            logs.event("leadership_not_in_sync", logging.WARNING, key=self.insync_key, record=record.value if record else "-")
        self.why, self.state = why, "waiting"

    def _unreachable(self, why: str) -> None:
        if why != self.why:
            logs.event("etcd_unreachable", logging.WARNING, why=why)
        self.why = why


def _address(value: str) -> str | None:
    try:
        return str(json.loads(value)["address"])
    except (ValueError, KeyError, TypeError):
        return None


def _record(leader: str, standbys: list[str]) -> str:
    return json.dumps({"leader": leader, "standbys": sorted(standbys)}, separators=(",", ":"))

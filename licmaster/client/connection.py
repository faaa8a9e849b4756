"""An asyncio client of the master, for any PBX integration (and the simulator).

    client = MasterClient(["127.0.0.1:4460", "127.0.0.1:4470"], node="pbx1", mac="00:90:33:00:00:01")
    await client.connect()
    lease = await client.checkout("port", "alice")        # raises LicenseError when refused
    await client.checkin("port", "alice")
    await client.close()

- several master addresses: it connects to whichever serves, and moves on when one fails,
  says `shutdown`, answers `not_master`, or shows an epoch lower than one seen before;
- pipelining: `send()` returns a future at once; replies come in request order;
- heartbeats are automatic; after a reconnect it `sync`s the leases it holds, and requests wait
  until that re-sync is done (`ready`), so that none crosses it;
- every request it sent is answered, or fails (`NotConnected`, `LicenseError`), or is sent again
  once on the next master: a request on a connection that goes away (even one dropped during
  its hello) fails at once, and `call` sends it again once the client is ready. A `checkin`
  whose connection went away is not sent again: the re-sync, made without that lease, frees it;
- lease ids are the master's: a re-sync answers each lease's id on the master now serving, and
  the client uses it from then on; a `checkin` of an id that master does not hold is refused
  (`unknown_lease`, raised), never applied to another lease;
- `grace` and `busy` answers are retried after `retry_ms` (bounded), other refusals raise
  `LicenseError` with the code, the rule and the sentence;
- a master that answers nothing for a whole lease TTL is left (`unresponsive`) for the next one;
- events (`fenced`, `epoch`, `shutdown`, and the client's own `reconnected`, `lost`,
  `unresponsive`, `lapsed`, `refused` — a hello a master refused, `busy` or `no_quorum`, with
  its code and `retry_ms`; the client tries the next master, and waits that long only when
  every one refused) go to `on_event` if given, and to `client.events` (an asyncio.Queue of
  the newest `events_kept`, 1,000 by default; 0 for a caller that never reads it);
- lease validity: what it holds is the PBX's while a master confirmed it within the master's
  `hold_s` (72 h by default; `confirmed()`, `believed()`): a PBX cut off from every master keeps
  its phones up. Past that, `lapsed` says the PBX must stop using it until a master answers
  again and the re-sync gives it back (docs/operations.md, "Two clocks");
- a client that holds nothing says so in its hello (`fresh`): whatever the master still held
  for its node goes back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
import ssl as ssl_module
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from licmaster.client.core import Address, HeldLease, Holdings, MasterList, Parts
from licmaster.wire.codec import DEFAULT_MAX_FRAME, PART_MARGIN, FrameDecoder, FrameError, encode, packed_runs

RETRYABLE = ("grace", "busy", "no_quorum")
RETRY_CAP_S = 0.25  # the longest wait between two rounds of reconnect attempts, while a failover may be under way
OUTAGE_AFTER_S = 10.0  # every master refused this long: no failover is under way (a standby takes over within ~2 s)
RETRY_OUTAGE_CAP_S = 2.0  # ... then the longest wait: 1,000 PBXs do not hammer a returning master 4 times a second each


def retry_cap(refused_for_s: float) -> float:
    """The longest wait between two reconnect rounds after every master refused for this long."""
    return RETRY_CAP_S if refused_for_s < OUTAGE_AFTER_S else RETRY_OUTAGE_CAP_S


class LicenseError(Exception):
    """The master said no: `code` (docs/protocol.md), `rule` (docs/rules.md) and `message` for a person."""

    def __init__(self, reply: dict[str, Any]) -> None:
        self.reply = reply
        self.code: str = reply.get("error", "unknown")
        self.rule: str | None = reply.get("rule")
        self.message: str = reply.get("message", "")
        super().__init__(f"{self.code}: {self.message}" + (f" ({self.rule})" if self.rule else ""))


class NotConnected(ConnectionError):
    """No master answered, or the connection to it is gone (requests in flight fail with this).
    `retry_s`: how long the masters that refused asked to be left alone (their `retry_ms`)."""

    def __init__(self, message: str, *, retry_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_s = retry_s


class _Wire(asyncio.Protocol):
    def __init__(self, client: MasterClient) -> None:
        self.client = client
        self.decoder = FrameDecoder(client.max_frame)
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        # Any bytes, even unreadable ones, show the master is alive (a standby must not take a
        # frame it cannot read for a dead master).
        self.client.last_heard = asyncio.get_running_loop().time()
        try:
            messages = self.decoder.feed(data)
        except FrameError as exc:
            self.client.unreadable = str(exc)
            if self.transport:
                self.transport.close()
            return
        for message in messages:
            try:
                self.client._on_message(self, message)
            except FrameError as exc:  # a reply in parts that does not add up
                self.client.unreadable = str(exc)
                if self.transport:
                    self.transport.close()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.lost.done():
            self.lost.set_result(exc)
        self.client._on_lost(self)


class MasterClient:
    def __init__(
        self,
        masters: Sequence[str | tuple[str, int]],
        node: str,
        *,
        role: str = "pbx",
        firmware: int = 13,
        platform: str = "gateway",
        mac: str | None = None,
        licensing: str = "central",
        model: str | None = None,
        standby_for: str | None = None,
        auth: dict[str, Any] | None = None,
        reconnect: bool = True,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        ssl: ssl_module.SSLContext | None = None,
        connect_timeout: float = 2.0,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_retry_s: float = 30.0,
        events_kept: int = 1000,
        follow_named: bool = True,
    ) -> None:
        self.master_list = MasterList(masters, follow_named=follow_named)  # pure state: client/core.py
        self.holdings = Holdings()
        self.node = node
        self.hello_fields: dict[str, Any] = {"node": node, "role": role}
        if role != "observer":
            self.hello_fields.update(firmware=firmware, platform=platform, mac=mac or "00:00:00:00:00:00", licensing=licensing)
            if model:
                self.hello_fields["model"] = model
            if standby_for:
                self.hello_fields["standby_for"] = standby_for
        if auth is not None:
            self.hello_fields["auth"] = auth
        if max_frame != DEFAULT_MAX_FRAME:
            self.hello_fields["max_frame"] = max_frame  # replies larger than this come in parts
        self.reconnect = reconnect
        self.on_event = on_event
        self.ssl = ssl
        self.connect_timeout = connect_timeout
        self.max_frame = max_frame
        self.max_retry_s = max_retry_s
        # The newest `events_kept` events, for a caller that reads them; older ones are dropped (a
        # queue nobody read kept every event for ever: a standby master's, every replica push).
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        if events_kept < 0:
            raise ValueError(f"events_kept {events_kept}: 0 (keep none) or more")
        self.events_kept = events_kept
        self.session: dict[str, Any] = {}
        self.epoch = 0
        self.connected = asyncio.Event()
        # Connected and its leases re-synced (or nothing to re-sync): requests wait for it, so that
        # none crosses a re-sync (an id from the old master, a checkout the sync then releases).
        self.ready = asyncio.Event()
        self._resyncing = False  # inside _reconnect: `ready` only once its sync is done
        self._frozen = False
        self._wire: _Wire | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        # each pending request: (loop time sent, is a sync's last part, the connection it went on)
        self._sent_at: dict[int, tuple[float, bool, _Wire]] = {}
        self._ids = itertools.count(1)
        self._closed = False
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._last_sent = 0.0
        self._last_heard = 0.0
        self._syncs_in_flight = 0  # a sync sent and not answered yet (the lapse waits for its reply)
        self.last_heard = 0.0  # loop time any bytes last came from a master, readable or not
        self.unreadable = ""  # why the last connection was dropped for what the master sent, if it was
        self._parts = Parts()

    # ================================================================ connection

    @property
    def settled(self) -> bool:
        """Connected, and not in the middle of a reconnect and re-sync."""
        return self.connected.is_set() and (self._reconnect_task is None or self._reconnect_task.done())

    @property
    def reconnecting(self) -> bool:
        """A reconnect (and re-sync) of its own is under way."""
        return self._reconnect_task is not None and not self._reconnect_task.done()

    @property
    def address(self) -> Address:
        return self.master_list.current

    # The core's state under the names integrators read (and the simulator's auditor sets).
    @property
    def masters(self) -> list[Address]:
        return self.master_list.addresses

    @property
    def master_index(self) -> int:
        return self.master_list.index

    @master_index.setter
    def master_index(self, index: int) -> None:
        self.master_list.index = index

    @property
    def follow_named(self) -> bool:
        return self.master_list.follow_named

    @property
    def leases(self) -> dict[tuple[str, str], HeldLease]:
        """What this PBX holds, used or not (`believed()`: what it may use now)."""
        return self.holdings.held

    @property
    def confirmed_at(self) -> float:
        return self.holdings.confirmed_at

    async def connect(self) -> dict[str, Any]:
        """Connect to the master that serves and say hello. Raises NotConnected if none does.

        One round: each address at most once, in order from the current one, and a standby's
        `not_master` sends the client straight to the master it names (added to the list if it
        is new). No waiting within a round: a backoff is only for when every address refused."""
        last: Exception | None = None
        tried: set[tuple[str, int]] = set()
        retry_s = 0.0  # the longest retry_ms a refusal of this round asked for
        while len(tried) < len(self.masters):
            tried.add(self.address)
            try:
                return await self._connect_once()
            except (TimeoutError, OSError, LicenseError) as exc:
                if isinstance(exc, LicenseError) and exc.code not in ("not_master", "busy", "no_quorum"):
                    raise
                if isinstance(exc, LicenseError):  # another master may serve (a new leader): try it in this round
                    retry_s = max(retry_s, float(exc.reply.get("retry_ms", 0) or 0) / 1000)
                    if exc.code != "not_master":  # said, as a refusal of this PBX's (a standby's not_master is routine)
                        self._emit({**exc.reply, "event": "refused", "op": "hello", "master": f"{self.address[0]}:{self.address[1]}"})
                last = exc
                named = self.master_list.named(exc.reply) if isinstance(exc, LicenseError) and exc.code == "not_master" else None
                if named is not None and named not in tried:
                    self.master_list.go_to(named)
                    continue
                self.master_list.next_untried(tried)
        raise NotConnected(f"no master answered: {last}", retry_s=retry_s)

    async def _connect_once(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        host, port = self.address
        _, wire = await asyncio.wait_for(
            loop.create_connection(lambda: _Wire(self), host, port, ssl=self.ssl), self.connect_timeout)
        self._wire = wire
        try:
            # Holding nothing, it says so (`fresh`): whatever its node still held (a PBX restarted
            # within its hold, a grant whose reply the lost connection never brought) goes back now.
            hello = self.hello_fields if self.holdings.held else {**self.hello_fields, "fresh": True}
            reply = await asyncio.wait_for(self._request("hello", hello), self.connect_timeout)
        except BaseException:
            self._drop_wire("no answer to hello")
            raise
        if not reply.get("ok"):  # a standby master (`not_master`), `busy`, ...: no session here
            self._drop_wire(f"hello refused ({reply.get('error')}): no session there")
            raise LicenseError(reply)
        if self._wire is not wire:
            # Lost in the very turn its hello was answered (_on_lost ran first): not connected.
            # It went on to say `connected` with no connection, and a client that does not
            # reconnect by itself (a master's watch on its peer) stayed so for good: `slave-sim sim
            # --seed 901`, two masters acting apart, 61 counted of 60, for as long as it lasted.
            raise NotConnected(f"{self.node}: the connection was lost as the hello was answered")
        self._check_epoch(reply)
        self.session = reply
        self.holdings.session_opened(wire)  # with leases to bring, confirmed only once synced
        self._last_heard = loop.time()
        self.connected.set()
        if not self._resyncing:
            self.ready.set()
        if self._heartbeat_task is None or self._heartbeat_task.done():
            self._heartbeat_task = loop.create_task(self._heartbeats(), name=f"heartbeat-{self.node}")
        return reply

    def _drop_wire(self, why: str = "connection dropped") -> None:
        wire, self._wire = self._wire, None
        self.connected.clear()
        self.ready.clear()
        if wire is not None:
            self._fail_wire(wire, NotConnected(f"{self.node}: {why}"))
            if wire.transport:
                wire.transport.close()

    async def close(self, *, bye: bool = True) -> None:
        """`bye` (gives every floating lease back) and close. Safe to call twice."""
        if self._closed:
            return
        if bye and self._wire is not None:
            with contextlib.suppress(LicenseError, ConnectionError, asyncio.TimeoutError):
                await asyncio.wait_for(self._call("bye", {}, wait_ready=False, resend=False), self.connect_timeout)
            self.leases.clear()
        self._stop_tasks()
        self._drop_wire()
        self._fail_pending(NotConnected("client closed"))

    def _stop_tasks(self) -> None:
        """No more heartbeats, and no reconnect from now on."""
        self._closed = True
        for task in (self._heartbeat_task, self._reconnect_task):
            if task:
                task.cancel()

    def freeze(self) -> None:
        """Stop all traffic but keep the connection open, as a PBX cut off by the network looks
        to the master: no heartbeat, nothing read, nothing sent, no reconnect (a drill's fault)."""
        self._stop_tasks()
        if self._wire and self._wire.transport:
            self._wire.transport.pause_reading()
        self._frozen = True
        self.ready.clear()
        self._fail_pending(NotConnected(f"{self.node}: cut off (frozen)"))

    def abort(self) -> None:
        """Drop the connection at once, as a crash of the PBX would: no bye, no reconnect."""
        self._stop_tasks()
        wire, self._wire = self._wire, None
        if wire and wire.transport:
            wire.transport.abort()
        self.connected.clear()
        self.ready.clear()
        self._fail_pending(NotConnected(f"{self.node}: aborted"))

    def abort_connection(self) -> None:
        """Drop the current connection at once; the client reconnects (to its current address)
        and re-syncs, as after any lost connection."""
        if self._wire is not None and self._wire.transport is not None:
            self._wire.transport.abort()

    def adopt(self, leases: Iterable[HeldLease]) -> None:
        """Take over leases an earlier client of this node believed it held (the PBX process
        restarted its client, say): the next `sync` asks the master for them."""
        self.holdings.adopt(leases)

    # ================================================================ requests

    def send(self, op: str, **fields: Any) -> asyncio.Future[dict[str, Any]]:
        """Send now, answer later (pipelining). The future holds the reply, ok or not."""
        return self._request(op, fields)

    def _request(self, op: str, fields: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        wire = self._wire
        if wire is None or wire.transport is None or self._frozen:
            future.set_exception(NotConnected(f"{self.node}: " + ("cut off (frozen)" if self._frozen else "not connected to a master")))
            return future
        rid = next(self._ids)
        message = {"op": op, "id": rid}
        message.update(fields)
        self._pending[rid] = future
        now = asyncio.get_running_loop().time()
        self._sent_at[rid] = (now, op == "sync" and not fields.get("more"), wire)
        wire.transport.write(encode(message))
        self._last_sent = now
        return future

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """One request; raises LicenseError if refused. `grace`/`busy` are retried after retry_ms.
        It waits until the client is ready (connected and re-synced); a request whose connection
        goes away is sent again, once, when the client is ready again."""
        return await self._call(op, fields)

    async def _until_ready(self, deadline: float) -> None:
        """Wait for `ready` (a reconnect and its re-sync) until the loop time `deadline`."""
        if self.ready.is_set() or not self.reconnect or self._closed:
            return
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(self.ready.wait(), max(0.01, deadline - loop.time()))
        except TimeoutError:
            raise NotConnected(f"{self.node}: no master served it within {self.max_retry_s:g} s") from None

    async def _call(self, op: str, fields: dict[str, Any], *, wait_ready: bool = True, resend: bool = True) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_retry_s
        while True:
            if wait_ready:
                await self._until_ready(deadline)
            try:
                reply = await self._request(op, fields)
            except NotConnected:
                if not (resend and wait_ready and self.reconnect and not self._closed) or loop.time() >= deadline:
                    raise
                resend = False  # once: the next master answers it, or the caller hears why not
                continue
            if reply.get("ok"):
                return reply
            if reply.get("error") in RETRYABLE and loop.time() < deadline:
                await asyncio.sleep(min(reply.get("retry_ms", 100), 1000) / 1000)
                continue
            if reply.get("error") == "not_master" and self.reconnect and not self._closed and loop.time() < deadline:
                # This master gave way (or was started as a standby): go where it says, then ask again.
                self.master_list.go_to_named(reply)
                if self._wire is not None and self._wire.transport is not None:
                    self._wire.transport.abort()  # connection_lost: reconnect and sync
                continue
            raise LicenseError(reply)

    async def checkout(self, resource: str, holder: str, count: int = 1, interface: str | None = None,
                       client_version: int | None = None) -> HeldLease:
        """`client_version`: for `operator` and `queue-monitor`, the version of the workstation
        software asking (R-OP-3); without it the PBX's firmware stands in."""
        fields: dict[str, Any] = {"resource": resource, "holder": holder}
        if count != 1:
            fields["count"] = count
        if interface:
            fields["interface"] = interface
        if client_version is not None:
            fields["client_version"] = client_version
        reply = await self.call("checkout", **fields)
        return self.holdings.granted(reply, resource, holder, count, interface, client_version)

    async def checkin(self, resource: str, holder: str) -> None:
        """Give a lease back. The id sent is the one the master now serving knows (a re-sync may
        have changed it: the client waits for any re-sync first). If the connection goes away
        before the answer, the check-in is not sent again: the lease is no longer the client's,
        so the re-sync, made without it, frees it on whichever master serves. Raises
        LicenseError (`unknown_lease`) if the master holds no lease under that id."""
        deadline = asyncio.get_running_loop().time() + self.max_retry_s
        await self._until_ready(deadline)
        held = self.leases.pop((resource, holder), None)
        if held is None:
            return
        try:
            await self._call("checkin", {"lease": held.lease}, resend=False)
        except NotConnected:
            if not self.reconnect or self._closed:
                raise
            await self._until_ready(deadline)  # the re-sync without it: given back

    async def sync(self) -> dict[str, Any]:
        """Make the master's view of this node's leases exactly `self.leases`; from then on each
        lease's id is the one this master answered."""
        self._syncs_in_flight += 1
        try:
            reply = await self._sync_in_parts(self.holdings.sync_entries())
        finally:
            self._syncs_in_flight -= 1
        for stale in self.holdings.synced_ids(reply):  # checked in while the sync was on its way (a sync the caller made)
            self._request("checkin", {"lease": stale}).add_done_callback(_ignore_result)
        return reply

    async def _sync_in_parts(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        """One `sync`, or, when the entries do not fit in a frame the master reads, several: each
        but the last says `more` and the master takes them all at once with the last."""
        limit = min(self.session.get("max_frame", DEFAULT_MAX_FRAME), DEFAULT_MAX_FRAME) - PART_MARGIN
        runs = packed_runs(entries, limit)
        start = 0
        for part, (count, _) in enumerate(runs[:-1]):
            await self._call("sync", {"leases": entries[start:start + count], "more": True, "part": part}, wait_ready=False, resend=False)
            start += count
        return await self._call("sync", {"leases": entries[start:], "part": max(0, len(runs) - 1)}, wait_ready=False, resend=False)

    async def takeover(self, failed: str) -> dict[str, Any]:
        reply = await self.call("takeover", failed=failed)
        self.holdings.moved(reply)
        return reply

    async def assign(self, user: str, families: Sequence[str]) -> dict[str, Any]:
        return await self.call("assign", user=user, families=list(families))

    async def unassign(self, user: str, families: Sequence[str]) -> dict[str, Any]:
        return await self.call("unassign", user=user, families=list(families))

    async def usage(self) -> dict[str, Any]:
        """The pools and a summary of the sessions (`nodes` lists them)."""
        return await self.call("usage")

    async def nodes(self, cursor: str | None = None, limit: int = 200, *, held: bool = False) -> dict[str, Any]:
        """One page of the master's sessions: `nodes`, `total`, and `next` (the cursor of the next
        page, None on the last). `held`: each node's leases too, as [resource, holder, lease id]."""
        fields: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            fields["cursor"] = cursor
        if held:
            fields["held"] = True
        return await self.call("nodes", **fields)

    async def all_nodes(self, *, held: bool = False) -> list[dict[str, Any]]:
        """Every session, page by page (a session that comes or goes meanwhile may be missed or seen)."""
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = await self.nodes(cursor, held=held)
            found += page["nodes"]
            cursor = page.get("next")
            if cursor is None:
                return found

    async def may_record(self) -> None:
        """Returns if recording queues, conference rooms or the gateway is licensed; raises
        LicenseError (`prerequisite`, R-REC-1) if not."""
        await self.call("recording")

    # ================================================================ incoming

    def _on_message(self, wire: _Wire, message: dict[str, Any]) -> None:
        self._last_heard = asyncio.get_running_loop().time()
        if "event" in message and "id" not in message:
            self._on_event(wire, message)
            return
        rid = message.get("id")
        if rid.__class__ is int and ("parts" in message or "part" in message):
            whole = self._parts.add(rid, message)
            if whole is None:
                return
            message = whole
        future = self._pending.pop(rid, None) if rid is not None else None
        sent = self._sent_at.pop(rid, None) if rid is not None else None
        if sent is not None and message.get("ok") and not (message.get("epoch", 0) < self.epoch):
            sent_at, is_sync, _ = sent
            for lost in self.holdings.ok_reply(wire, sent_at, is_sync, message):
                self._emit(lost)
        if future is None:
            if rid is None:  # bad_frame: the master could not read us; everything pending fails
                self._fail_pending(LicenseError(message))
            return
        if message.get("ok") and "epoch" in message and message["epoch"] < self.epoch:
            # A deposed master: go elsewhere (docs/protocol.md, "epoch").
            future.set_exception(NotConnected(f"master at epoch {message['epoch']} < {self.epoch}: deposed"))
            self._switch_master(wire)
            return
        if not future.done():
            future.set_result(message)

    def _check_epoch(self, reply: dict[str, Any]) -> None:
        epoch = reply.get("epoch", 0)
        self.epoch = max(self.epoch, epoch)

    def _on_event(self, wire: _Wire, event: dict[str, Any]) -> None:
        name = event.get("event")
        if name == "epoch":
            self._check_epoch(event)
        self._emit(event)
        if name == "shutdown":
            if not self.master_list.go_to_named(event):
                self.master_list.next()  # none named (or unreadable, or not followed): try the next
        elif name == "revoked":  # an operator took one lease back: no longer this PBX's
            lost = self.holdings.revoked(event)
            if lost is not None:
                self._emit(lost)
        elif name == "fenced" and wire is self._wire and not str(event.get("reason", "")).startswith(("expired", "absent")):
            # Another connection or a standby is this node now: do not come back. (On an older
            # connection of ours, the newer one replacing it is us: nothing to do.)
            self._closed = True
            self.holdings.held.clear()

    def _emit(self, event: dict[str, Any]) -> None:
        if self.events_kept:
            if self.events.qsize() >= self.events_kept:
                self.events.get_nowait()
            self.events.put_nowait(event)
        if self.on_event is not None:
            self.on_event(event)

    def _switch_master(self, wire: _Wire) -> None:
        self.master_list.next()
        if wire.transport:
            wire.transport.abort()  # not close(): a hung master would never take the buffered bytes

    def _on_lost(self, wire: _Wire) -> None:
        if wire is not self._wire:  # one dropped already (a failed hello): what it still carried fails now
            self._fail_wire(wire, NotConnected(f"{self.node}: connection to the master lost"))
            return
        self._parts.clear()
        self._wire = None
        self.connected.clear()
        self.ready.clear()
        self._fail_wire(wire, NotConnected(f"{self.node}: connection to the master lost"))
        if self.reconnect and not self._closed and (self._reconnect_task is None or self._reconnect_task.done()):
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect(), name=f"reconnect-{self.node}")

    @property
    def lease_ttl_s(self) -> float:
        """How long the master waits for a word from this PBX (and this client for one from the
        master) before it counts the other absent."""
        return float(self.session.get("lease_ttl_ms", 3000)) / 1000

    @property
    def hold_s(self) -> float:
        """How long the leases stay this PBX's after the last confirmation (the master's `hold_s`;
        a master that does not say one holds them a lease TTL)."""
        hold = self.session.get("hold_s")
        return float(hold) if isinstance(hold, (int, float)) and hold > 0 else self.lease_ttl_s

    def confirmed(self) -> bool:
        """A master confirmed this PBX's leases within its hold: they are its own."""
        return self.holdings.confirmed(asyncio.get_running_loop().time(), self.hold_s)

    def believed(self) -> dict[tuple[str, str], HeldLease]:
        """The leases this PBX may use now: all it holds while confirmed, none past the hold
        without a confirmation (they are kept, to be re-synced when a master answers again)."""
        return self.holdings.believed(asyncio.get_running_loop().time(), self.hold_s)

    def _fail_wire(self, wire: _Wire, exc: Exception) -> None:
        """Every request still pending on this connection fails: no reply can come on it any more."""
        for rid in [rid for rid, (_, _, on) in self._sent_at.items() if on is wire]:
            del self._sent_at[rid]
            future = self._pending.pop(rid, None)
            if future is not None and not future.done():
                future.set_exception(exc)

    def _fail_pending(self, exc: Exception) -> None:
        self._sent_at.clear()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(exc)

    async def _reconnect(self) -> None:
        """A round over the addresses at once (connect), then a short, jittered backoff only when
        every one refused: a standby master that takes over is found within RETRY_CAP_S of it.
        After OUTAGE_AFTER_S of refusals no failover is under way (the masters are down or cut
        off) and the rounds slow to one every RETRY_OUTAGE_CAP_S at most: the PBX keeps what it
        holds meanwhile (its hold), and finds a master back within that."""
        self._resyncing = True
        try:
            await self._reconnect_and_sync()
        finally:
            self._resyncing = False

    async def _reconnect_and_sync(self) -> None:
        delay = 0.05
        loop = asyncio.get_running_loop()
        started = loop.time()
        while not self._closed:
            try:
                await self.connect()
            except (TimeoutError, OSError, LicenseError, ConnectionError) as exc:
                self.master_list.next()
                # Every master refused: wait as they asked (no_quorum says retry_ms), or the backoff.
                asked = exc.retry_s if isinstance(exc, NotConnected) else 0.0
                await asyncio.sleep(max(delay * random.uniform(0.5, 1.0), asked))
                delay = min(delay * 2, retry_cap(loop.time() - started))
                continue
            try:
                await self.sync()
            except (TimeoutError, LicenseError, ConnectionError):
                self._drop_wire("re-sync refused or cut: trying again")  # e.g. a standby master that has not taken over yet
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, retry_cap(loop.time() - started))
                continue
            if self._wire is None:
                # Lost in the very turn its re-sync was answered: _on_lost saw this task still
                # running and started no other, so this one goes on (it used to say `reconnected`
                # on a dead connection and end: the PBX was never served again).
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, retry_cap(loop.time() - started))
                continue
            self.ready.set()
            self._emit({"event": "reconnected", "master": f"{self.address[0]}:{self.address[1]}", "epoch": self.epoch})
            return

    async def _heartbeats(self) -> None:
        """Heartbeats when nothing else was sent; and a master that has answered nothing for a
        whole lease TTL (hung, or the path to it broken) is left for the next one."""
        loop = asyncio.get_running_loop()
        self._last_heard = loop.time()
        while not self._closed:
            interval = self.session.get("heartbeat_ms", 1000) / 1000
            # Woken when something falls due, not more: the next heartbeat (never more than one
            # interval without a word), the master silent for a whole TTL, the hold running out.
            # (It woke twice an interval to look: most of an idle client's cost, and of the
            # simulation's, which runs hundreds of clients' clocks.)
            now = loop.time()
            ttl = self.session.get("lease_ttl_ms", 3000) / 1000
            if self._wire is None:
                wake = now + interval
            else:
                wake = min(self._last_sent + interval, self._last_heard + ttl)
            if self.holdings.held and not self.holdings.lapsed and self.holdings.confirmed_at > -math.inf:
                # (leases brought from before, never confirmed since this client started, are
                # looked at on the next wake, not at once: their sync is on its way)
                wake = min(wake, self.holdings.confirmed_at + self.hold_s)
            # Each deadline that falls due moves on once acted upon (a heartbeat sent, the master
            # left, `lapsed` said): a short floor cannot spin. (A session a new master opened with
            # other timings is seen at the next wake: up to one old interval late.)
            await asyncio.sleep(max(0.001, wake - now))
            # Once per lapse: stop using what it holds. Not while a sync is on its way on a live
            # connection: the master is deciding (a master back on a stale journal answers it
            # once the PBXs that could free what it asks for have re-synced, up to grace_ms), and
            # leases brought from before, never confirmed since this client started, would
            # lapse in that moment only to come back with its reply.
            lapsed = None if self._syncs_in_flight and self._wire is not None else self.holdings.lapse(loop.time(), self.hold_s)
            if lapsed is not None:
                self._emit(lapsed)
            wire = self._wire
            if wire is None:
                continue
            if loop.time() >= self._last_heard + ttl:  # as `wake` computes it
                self._emit({"event": "unresponsive", "master": f"{self.address[0]}:{self.address[1]}"})
                self._switch_master(wire)  # connection_lost follows: reconnect and sync
                self._last_heard = loop.time()
                continue
            if loop.time() - self._last_sent < interval * 0.95:
                continue  # one heartbeat per interval, when nothing else was sent
            future = self._request("heartbeat", {})
            future.add_done_callback(_ignore_result)


def _ignore_result(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()

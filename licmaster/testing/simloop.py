"""An asyncio event loop on a virtual clock, with an in-memory network: the ground of a
deterministic simulation of masters and PBXs (issue 26). The product's own classes run on it
unchanged, through seams they use anyway: the loop's clock (`loop.time()`), its
`create_server` / `create_connection`, and an executor for the journal's writes (`Inline`).

- **Time moves only when every task waits.** The selector never blocks: when nothing is ready,
  it advances the clock to the next timer, as a discrete-event simulation does. An hour of
  heartbeats takes the CPU time of its callbacks, not an hour. A loop with nothing ready and no
  timer left would wait for ever: `Stalled` says so (a liveness violation, never a hang).
- **The network is in memory**, with TCP's guarantees: each direction in order, nothing lost on a
  live connection, a `latency_s` per delivery. A link can be cut both ways or one way, which
  holds its bytes back like a silent path; `reset` ends every connection through it at once.
- **Deterministic**: the same program on the same seed gives the same history. The loop's own
  ready queue is FIFO; what could vary (thread timing) is taken out by `Inline`, and the
  randomness the product draws goes through seams a simulation seeds (Dispatcher.lease_tag).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from typing import Any

# The host a task connects from (a PBX's address in the simulated network): set it in a task, and
# every connection that task and the tasks it starts open come from there (links are cut by host).
HOST: contextvars.ContextVar[str] = contextvars.ContextVar("simulated_host", default="127.0.0.9")


WALL_EPOCH = 1_800_000_000.0  # what the virtual wall clock reads at virtual time 0 (2027-01-15)


class Stalled(RuntimeError):
    """Every task waits, and no timer is due: nothing can ever happen again."""


class Inline(Executor):
    """An executor that runs each call at once, in the loop's thread (no thread timing)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the awaiting task, as a thread's would be
            future.set_exception(exc)
        return future


class _Timer(asyncio.TimerHandle):
    """A TimerHandle made without the base's debug checks (every asyncio.sleep makes one)."""

    __slots__ = ()

    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...], loop: VirtualLoop,
                 context: contextvars.Context | None) -> None:
        self._when, self._callback, self._args, self._loop = when, callback, args, loop
        self._context = context if context is not None else contextvars.copy_context()
        self._cancelled, self._scheduled, self._repr, self._source_traceback = False, True, None, None


class _Handle(asyncio.Handle):
    """A Handle made without the base's debug checks (every call_soon makes one)."""

    __slots__ = ()

    def __init__(self, callback: Callable[..., object], args: tuple[Any, ...], loop: VirtualLoop,
                 context: contextvars.Context | None) -> None:
        self._callback, self._args, self._loop = callback, args, loop
        self._context = context if context is not None else contextvars.copy_context()
        self._cancelled, self._repr, self._source_traceback = False, None, None


class VirtualLoop(asyncio.SelectorEventLoop):
    """The loop: `time()` is the virtual clock; `create_server`/`create_connection` go through
    `network`; hosts can be paused (`pause`/`resume`).

    Its iteration is its own (`_run_once`): no selector is polled (nothing here is a file), and
    timers are kept as (when, sequence, handle) so that two due at the same instant run in the
    order they were set (a connection's bytes stay in order) and the heap compares in C."""

    def __init__(self, network: Network | None = None) -> None:
        super().__init__()
        self.now = 0.0
        self.network = network or Network(self)
        self.network.loop = self
        self._timers: list[tuple[float, int, asyncio.TimerHandle]] = []
        self._sequence = itertools.count()
        self.paused: set[str] = set()  # hosts whose callbacks wait (a SIGSTOP'd process: its sockets queue)
        self._parked: dict[str, list[asyncio.Handle]] = {}
        self.wall_offset: dict[str, float] = {}  # host -> seconds its wall clock is off (virtual_wall_clock)

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any,  # type: ignore[override]
                   context: contextvars.Context | None = None) -> asyncio.TimerHandle:
        when = self.now + delay  # call_at's body: asyncio.sleep comes here, the simulation's most frequent call
        timer = _Timer(when, callback, args, self, context)
        heapq.heappush(self._timers, (when, next(self._sequence), timer))
        return timer

    def call_soon(self, callback: Callable[..., object], *args: Any,  # type: ignore[override]
                  context: contextvars.Context | None = None) -> asyncio.Handle:
        # The base's, without its debug checks (a third of its cost: the simulation calls it most)
        handle = _Handle(callback, args, self, context)
        self._ready.append(handle)  # type: ignore[attr-defined]
        return handle

    def call_at(self, when: float, callback: Callable[..., object], *args: Any,  # type: ignore[override]
                context: contextvars.Context | None = None) -> asyncio.TimerHandle:
        timer = _Timer(when, callback, args, self, context)
        heapq.heappush(self._timers, (when, next(self._sequence), timer))
        return timer

    def wall(self) -> float:
        """The wall clock (time.time) as the current host reads it, with `virtual_wall_clock`: the
        virtual time from WALL_EPOCH, plus that host's offset (a clock set wrong, then stepped)."""
        if not self.wall_offset:
            return WALL_EPOCH + self.now
        return WALL_EPOCH + self.now + self.wall_offset.get(HOST.get(), 0.0)

    @contextlib.contextmanager
    def virtual_wall_clock(self) -> Iterator[None]:
        """time.time() reads `wall()` meanwhile: the wall time the product writes (journal rows,
        what it shows) follows the virtual clock and each host's offset, deterministically. The
        product's own seam for time is the loop's (monotonic) clock; the wall clock is the
        operating system's, so it is set where the operating system's would be."""
        real = time.time
        time.time = self.wall
        try:
            yield
        finally:
            time.time = real

    def _write_to_self(self) -> None:
        """call_soon_threadsafe's wake-up: nothing to wake, the loop never blocks."""

    def pause(self, host: str) -> None:
        """From now on no callback of `host` runs (its tasks, what arrives on its connections):
        each waits, in order, for `resume`. Its clock runs on meanwhile, as a stopped process's."""
        self.paused.add(host)

    def resume(self, host: str) -> None:
        self.paused.discard(host)
        self._ready.extend(self._parked.pop(host, ()))  # type: ignore[attr-defined]

    def _run_once(self) -> None:
        """Iterations until the loop is stopped (run_forever's own loop is per call: one call
        does them all, a third less overhead). Each: if nothing is ready, the clock moves to the
        next timer; every timer due is made ready; what was ready runs (a paused host's
        callbacks are parked)."""
        ready: deque[asyncio.Handle] = self._ready  # type: ignore[attr-defined]
        heappop = heapq.heappop
        paused, parked = self.paused, self._parked
        while True:
            if self._timer_cancelled_count > 100 and 2 * self._timer_cancelled_count > len(self._timers):
                self._compact()
            timers = self._timers
            if not ready:
                if self._stopping:  # type: ignore[attr-defined]
                    return
                while timers and timers[0][2]._cancelled:
                    heappop(timers)[2]._scheduled = False  # type: ignore[attr-defined]
                    self._timer_cancelled_count -= 1
                if not timers:
                    raise Stalled(f"at {self.now:.3f} s every task waits and no timer is due")
                if timers[0][0] > self.now:
                    self.now = timers[0][0]
            now = self.now
            while timers and timers[0][0] <= now:
                timer = heappop(timers)[2]
                timer._scheduled = False  # type: ignore[attr-defined]
                if timer._cancelled:
                    self._timer_cancelled_count -= 1
                else:
                    ready.append(timer)
            for _ in range(len(ready)):
                handle = ready.popleft()
                if handle._cancelled:
                    continue
                if paused:
                    host = handle._context.get(HOST)  # type: ignore[attr-defined]
                    if host in paused:
                        parked.setdefault(host, []).append(handle)
                        continue
                handle._run()
            if self._stopping:  # type: ignore[attr-defined]
                return

    def _compact(self) -> None:
        kept = []
        for entry in self._timers:
            if entry[2]._cancelled:
                entry[2]._scheduled = False  # type: ignore[attr-defined]
            else:
                kept.append(entry)
        heapq.heapify(kept)
        self._timers = kept
        self._timer_cancelled_count = 0

    async def create_server(self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: Any = None,  # type: ignore[override]
                            port: Any = None, **_: Any) -> MemServer:
        return self.network.listen(str(host), int(port or 0), protocol_factory)

    async def create_connection(self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: Any = None,  # type: ignore[override]
                                port: Any = None, **_: Any) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        return await self.network.connect(str(host), int(port), protocol_factory)


class MemServer:
    """What `create_server` returns, as far as the master reads it; its connections' callbacks
    run in the context it was created in (its host's)."""

    def __init__(self, network: Network, address: tuple[str, int], factory: Callable[[], asyncio.BaseProtocol]) -> None:
        self.network, self.address, self.factory = network, address, factory
        self.sockets = [_Sock(address)]
        self.context = contextvars.copy_context()

    def close(self) -> None:
        self.network.servers.pop(self.address, None)

    async def wait_closed(self) -> None:
        return None


class _Sock:
    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address

    def getsockname(self) -> tuple[str, int]:
        return self.address


class Network:
    """Listeners by address, and links between hosts that can be cut (both ways or one way) or
    reset. A link is named by the two hosts' names, as given to `connect`/`listen` by address
    host part: ("127.0.0.2", "127.0.0.1") is the direction from the first to the second."""

    def __init__(self, loop: VirtualLoop | None = None, *, latency_s: float = 0.0005) -> None:
        self.loop = loop
        self.latency_s = latency_s
        self.servers: dict[tuple[str, int], MemServer] = {}
        self.cut: set[tuple[str, str]] = set()  # (from host, to host): bytes held back
        self.transports: list[MemTransport] = []
        self._ports = 40_000

    def listen(self, host: str, port: int, factory: Callable[[], asyncio.BaseProtocol]) -> MemServer:
        if not port:
            self._ports += 1
            port = self._ports
        address = (host, port)
        if address in self.servers:
            raise OSError(98, f"address already in use: {host}:{port}")
        server = self.servers[address] = MemServer(self, address, factory)
        return server

    async def connect(self, host: str, port: int, factory: Callable[[], asyncio.BaseProtocol], *,
                      from_host: str | None = None) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        assert self.loop is not None
        from_host = from_host or HOST.get()
        await asyncio.sleep(self.latency_s)  # the SYN's way there
        server = self.servers.get((host, port))
        if server is None or (from_host, host) in self.cut:
            raise ConnectionRefusedError(111, f"connect to {host}:{port} failed")
        self._ports += 1
        client = MemTransport(self, (from_host, self._ports), host, contextvars.copy_context())
        remote = MemTransport(self, (host, port), from_host, server.context)
        client.peer, remote.peer = remote, client
        client_protocol, server_protocol = factory(), server.factory()
        client.protocol, remote.protocol = client_protocol, server_protocol
        self.transports += [client, remote]
        if host in self.loop.paused:  # the kernel accepts for a stopped process: the server sees it on resuming
            self.loop.call_soon(server_protocol.connection_made, remote, context=server.context)
        else:
            server.context.run(server_protocol.connection_made, remote)
        client_protocol.connection_made(client)
        return client, client_protocol

    def set_cut(self, a: str, b: str, *, both: bool = True) -> None:
        self.cut.add((a, b))
        if both:
            self.cut.add((b, a))

    def heal(self, a: str, b: str) -> None:
        self.cut -= {(a, b), (b, a)}
        for transport in self.transports:
            transport.flush()

    def reset(self, host: str) -> None:
        """Every connection to or from `host` ends at once (a crash, an RST), except one that
        `host` had closed already: what it wrote, and its FIN, are on their way, and the other
        end reads them, as TCP delivers them after the process that sent them died. (Aborted too,
        a standby paused while its master dropped it, the master then killed, never read the
        `replica_dropped` that came on that connection, and took over as if its stream were
        whole: `slave-sim sim --seed 1303`, 61 of 60.)"""
        transports = list(self.transports)
        closed_by_host = {id(t) for t in transports if t.local[0] == host and t.closed}
        for transport in transports:
            if transport.local[0] == host:
                transport.abort()
            elif transport.remote_host == host and id(transport.peer) not in closed_by_host:
                transport.abort()


class MemTransport(asyncio.Transport):
    """One end of an in-memory connection: writes reach the peer's protocol in order, one
    `latency_s` later, unless the link from here to there is cut (held back until healed: the
    bytes, and a close or a reset after them). Callbacks into its protocol run in its owner's
    context (the host that connected, or the server's), whatever task caused them."""

    def __init__(self, network: Network, local: tuple[str, int], remote_host: str, context: contextvars.Context) -> None:
        super().__init__()
        self.network, self.local, self.remote_host = network, local, remote_host
        self.context = context
        self.peer: MemTransport | None = None
        self.protocol: asyncio.BaseProtocol | None = None
        self.closed = False
        self.reading = True
        self.held: deque[bytes | None] = deque()  # written while the link is cut (None: then the connection ended)
        self.inbox: deque[bytes] = deque()  # arrived while this end pauses reading
        self._batch: list[bytes] | None = None  # the bytes on their way that a write in the same instant joins
        self._batch_when = -1.0

    # ---------------------------------------------------------------- asyncio.Transport

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return (self.remote_host, 0)
        if name == "sockname":
            return self.local
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def get_write_buffer_size(self) -> int:
        return sum(len(data) for data in self.held if data is not None)

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        if not self.reading:
            self.reading = True
            while self.inbox and self.reading and not self.closed:
                self._deliver(self.inbox.popleft())

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed or self.peer is None or not data:
            return
        self.held.append(bytes(data))
        self.flush()

    def flush(self) -> None:
        """Send what was held back, if the link is up."""
        peer = self.peer
        if peer is None or (self.local[0], self.remote_host) in self.network.cut:
            return
        loop = self.network.loop
        assert loop is not None
        when = loop.now + self.network.latency_s
        while self.held:
            data = self.held.popleft()
            if data is None:
                loop.call_at(when, peer._lost, context=peer.context)
                self._batch = None
            elif self._batch is not None and self._batch_when == when:
                self._batch.append(data)  # written in the same instant: one arrival, as TCP coalesces
            else:
                self._batch, self._batch_when = [data], when
                loop.call_at(when, peer._arrive, self._batch, context=peer.context)

    def close(self) -> None:
        """Close after what was written: this end at once, the peer once it all arrived."""
        if self.closed:
            return
        self.closed = True
        self.held.append(None)
        self.flush()
        loop = self.network.loop
        assert loop is not None
        loop.call_soon(self._lost, context=self.context)

    def abort(self) -> None:
        """Drop what was not sent; this end at once, the peer when the reset gets there."""
        if self.closed:
            return
        self.closed = True
        self.held.clear()
        self.held.append(None)
        self.flush()
        loop = self.network.loop
        assert loop is not None
        loop.call_soon(self._lost, context=self.context)

    # ---------------------------------------------------------------- the other end's side

    def _arrive(self, batch: list[bytes]) -> None:
        if self.closed:
            return
        peer = self.peer
        if peer is not None and peer._batch is batch:
            peer._batch = None  # delivered: a later write starts another
        data = batch[0] if len(batch) == 1 else b"".join(batch)
        if not self.reading:
            self.inbox.append(data)
            return
        self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        protocol = self.protocol
        if isinstance(protocol, asyncio.Protocol):
            protocol.data_received(data)

    def _lost(self) -> None:
        protocol, self.protocol = self.protocol, None
        self.closed = True
        if protocol is not None:
            protocol.connection_lost(None)
        if self.peer is None or self.peer.protocol is None:  # both ends gone
            for end in (self, self.peer):
                if end is not None and end in self.network.transports:
                    self.network.transports.remove(end)

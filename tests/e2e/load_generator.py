"""The load generator of the "operate the pipeline" tests (issue 4) and scripts/measure-restarts.py.

`SteadyStream` runs, in one asyncio process, N subscribers over S subjects and a few publishers that publish at
R publishes/s, every publish with a closure. Every subscriber reconnects by itself when its connection closes and
re-subscribes with `recover` = its last {epoch, seq} per subject. It records every (subject, epoch, seq, type,
closure) it receives, every status frame and every close; publishers record every publish_status.

Publishes are mapped to seqs through their closures (`p<publisher>-<n>`), which the messages carry.
Subjects are owned by one publisher each, so each subject's publish order is defined.

Everything is bounded in time: `drain()` waits for answers and deliveries, but no longer than it is told.
stream_analyzer.py checks what a stream recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import websockets
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

# --- records ----------------------------------------------------------------------------------------------

MSG, STATUS, RECONNECT = "m", "s", "r"


@dataclass
class PubRecord:
    closure: str
    subject: str
    publisher: int
    n: int                     # the publisher's own counter: its send order
    t_sent: float              # loop.time() when handed to the socket
    t_status: float | None = None
    status: str | None = None  # OK | FAILED | ... (None: no answer)
    reason: str | None = None
    conn_lost: bool = False    # its connection closed before the answer came

    @property
    def ack_latency(self) -> float | None:
        return None if self.t_status is None else self.t_status - self.t_sent


@dataclass
class Close:
    t: float
    who: str
    code: int | None
    reason: str
    by_us: bool  # the harness closed it (a forced reconnect or the end of the run)


def _close_info(ws) -> tuple[int | None, str]:
    code = getattr(ws, "close_code", None)
    reason = getattr(ws, "close_reason", None) or ""
    return code, reason


CONNECT_ERRORS = (OSError, asyncio.TimeoutError, websockets.exceptions.InvalidHandshake,
                  websockets.exceptions.InvalidMessage, EOFError)


async def _connect(url: str, timeout: float = 5.0):
    return await ws_connect(url, open_timeout=timeout, close_timeout=1, ping_interval=None,
                            max_size=32 * 1024 * 1024, max_queue=None)


async def keep_connected(stream: "SteadyStream", url: Callable[[], str], on_open, on_frame, on_close, *,
                         gate: asyncio.Semaphore | None = None, on_connect_failure=None):
    """Holds one connection until the stream stops: connects to `url()` (through `gate`, if given), awaits
    `on_open(ws)`, hands every frame to `on_frame`, calls `on_close(ws)` after the close and connects again
    `stream.reconnect_delay` later. A failed connect calls `on_connect_failure()` and is retried after that delay."""
    while not stream.stopping:
        try:
            async with gate or contextlib.nullcontext():
                ws = await _connect(url())
        except CONNECT_ERRORS:
            if on_connect_failure:
                on_connect_failure()
            await asyncio.sleep(stream.reconnect_delay)
            continue
        try:
            await on_open(ws)
            async for raw in ws:
                on_frame(raw)
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await ws.close()
            raise
        on_close(ws)
        if not stream.stopping:
            await asyncio.sleep(stream.reconnect_delay)


# --- subscribers ------------------------------------------------------------------------------------------

class Subscriber:
    def __init__(self, stream: "SteadyStream", idx: int, subjects: list[str]):
        self.stream = stream
        self.idx = idx
        self.name = f"sub{idx}"
        self.subjects = subjects
        # per subject: the events in arrival order: (MSG, t, epoch, seq, type, closure) | (STATUS, t, status)
        # | (RECONNECT, t)
        self.events: dict[str, list[tuple]] = {s: [] for s in subjects}
        self.received: dict[str, set[str]] = {s: set() for s in subjects}   # closures received per subject
        self.resynced: dict[str, list[float]] = {s: [] for s in subjects}   # DATA_RESYNC receipt times
        self.positions: dict[str, tuple[str, int]] = {}
        self.closes: list[Close] = []
        self.other: list[dict] = []  # errors, refused subscribes, frames we did not expect
        self.connects = 0
        self.connect_failures = 0
        self.allowed: set[str] = set()
        self.subscribed_once = asyncio.Event()
        self.ws = None
        self.force_reconnect = False
        self.task: asyncio.Task | None = None

    def subscribe_frame(self) -> dict:
        recover = {s: {"epoch": e, "seq": q} for s, (e, q) in self.positions.items()}
        frame: dict[str, Any] = {"op": "subscribe", "subjects": self.subjects}
        if recover:
            frame["recover"] = recover
        return frame

    async def run(self):
        st = self.stream
        await keep_connected(st, lambda: st.url_for(self.idx), self.on_open, self.on_frame, self.on_close,
                             gate=st.connect_gate, on_connect_failure=self.on_connect_failure)

    def on_connect_failure(self):
        self.connect_failures += 1

    async def on_open(self, ws):
        self.ws = ws
        self.connects += 1
        if self.connects > 1:
            for s in self.subjects:
                self.events[s].append((RECONNECT, self.stream.now()))
        self.allowed.clear()
        await ws.send(json.dumps(self.subscribe_frame()))

    def on_close(self, ws):
        code, reason = _close_info(ws)
        by_us = self.stream.stopping or self.force_reconnect
        self.force_reconnect = False
        self.ws = None
        self.closes.append(Close(self.stream.now(), self.name, code, reason, by_us))

    def on_frame(self, raw):
        t = self.stream.now()
        self.stream.last_rx = t
        try:
            f = json.loads(raw)
        except (TypeError, ValueError):
            self.other.append({"_raw": raw if isinstance(raw, str) else repr(raw)[:200]})
            return
        op = f.get("op")
        if op == "message":
            s = f.get("subject")
            ev = self.events.get(s)
            if ev is None:
                self.other.append(f)
                return
            # a message carries its publisher's closure; a Kafka record does not, but its content is the closure
            epoch, seq, closure = f.get("epoch"), f.get("seq"), f.get("closure") or f.get("content")
            ev.append((MSG, t, epoch, seq, f.get("type"), closure))
            self.stream.deliveries += 1
            if closure:
                self.received[s].add(closure)
                rec = self.stream.records.get(closure)
                if rec is not None:
                    self.stream.delivery_latencies.append((t, t - rec.t_sent))
            pos = self.positions.get(s)
            if pos is None or pos[0] != epoch or seq > pos[1]:
                self.positions[s] = (epoch, seq)
        elif op == "status":
            s = f.get("subject")
            if s in self.events:
                self.events[s].append((STATUS, t, f.get("status")))
                if f.get("status") == "DATA_RESYNC":
                    self.resynced[s].append(t)
            else:
                self.other.append(f)
        elif op == "subscribed":
            if f.get("status") == "ALLOW":
                self.allowed.add(f.get("subject"))
                if len(self.allowed) == len(self.subjects):
                    self.subscribed_once.set()
            else:
                self.other.append(f)
        else:
            self.other.append(f)

    async def reconnect(self):
        """Closes the connection from our side; run() reconnects and recovers."""
        ws = self.ws
        if ws is not None:
            self.force_reconnect = True
            with contextlib.suppress(Exception):
                await ws.close()


# --- publishers -------------------------------------------------------------------------------------------

class Publisher:
    def __init__(self, stream: "SteadyStream", idx: int):
        self.stream = stream
        self.idx = idx
        self.name = f"pub{idx}"
        self.n = 0
        self.ws = None
        self.pending: dict[str, PubRecord] = {}  # sent on the current connection, no answer yet
        self.closes: list[Close] = []
        self.not_sent = 0
        self.other: list[dict] = []
        self.connected = asyncio.Event()
        self.task: asyncio.Task | None = None

    async def run(self):
        st = self.stream
        await keep_connected(st, lambda: st.url_for(10_000 + self.idx), self.on_open, self.on_frame, self.on_close)

    async def on_open(self, ws):
        self.ws = ws
        self.connected.set()

    def on_close(self, ws):
        self.ws = None
        self.connected.clear()
        code, reason = _close_info(ws)
        self.closes.append(Close(self.stream.now(), self.name, code, reason, self.stream.stopping))
        for rec in self.pending.values():
            rec.conn_lost = True
        self.pending.clear()

    def on_frame(self, raw):
        t = self.stream.now()
        try:
            f = json.loads(raw)
        except (TypeError, ValueError):
            self.other.append({"_raw": str(raw)[:200]})
            return
        if f.get("op") == "publish_status":
            rec = self.pending.pop(f.get("closure"), None)
            if rec is None:
                rec = self.stream.records.get(f.get("closure"))
                if rec is None or rec.status is not None:
                    self.other.append(f)  # an answer for nothing we sent, or a second answer
                    return
            rec.status, rec.reason, rec.t_status = f.get("status"), f.get("reason"), t
        else:
            self.other.append(f)

    def send(self, subject: str):
        ws = self.ws
        if ws is None:
            self.not_sent += 1
            return
        self.n += 1
        closure = f"p{self.idx}-{self.n}"
        rec = PubRecord(closure, subject, self.idx, self.n, self.stream.now())
        self.stream.records[closure] = rec
        self.pending[closure] = rec
        frame = json.dumps({"op": "publish", "subject": subject, "content": closure, "closure": closure})
        # send() on the asyncio client writes synchronously when the socket is writable; keep it in order
        self.stream.spawn_send(ws, frame, rec, self)


# --- the stream -------------------------------------------------------------------------------------------

class SteadyStream:
    """N subscribers over S subjects, P publishers at R publishes/s in total (round-robin over subjects)."""

    def __init__(self, url: str | Callable[[int], str], subscribers: int = 200, subjects: int = 20,
                 subjects_per_subscriber: int = 1, publishers: int = 2, rate: float = 200.0,
                 prefix: str = "op", reconnect_delay: float = 0.1, connect_concurrency: int = 64):
        self.url_for = url if callable(url) else (lambda _i, u=url: u)
        tag = uuid.uuid4().hex[:8]
        self.subjects = [f"/{prefix}/{tag}/s{i}" for i in range(subjects)]
        self.rate = rate
        self.reconnect_delay = reconnect_delay
        self.connect_gate = asyncio.Semaphore(connect_concurrency)
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.stopping = False
        self.publishing = False
        self.records: dict[str, PubRecord] = {}
        self.delivery_latencies: list[tuple[float, float]] = []  # (receipt time, receipt - publish sent)
        self.deliveries = 0
        self.last_rx = 0.0
        self.subs = [Subscriber(self, i, [self.subjects[(i + k) % subjects] for k in range(subjects_per_subscriber)])
                     for i in range(subscribers)]
        self.pubs = [Publisher(self, i) for i in range(publishers)]
        self.owner = {s: self.pubs[i % publishers] for i, s in enumerate(self.subjects)}
        self.marks: dict[str, float] = {}
        self._send_chain: dict[int, asyncio.Task] = {}
        self._pub_task: asyncio.Task | None = None
        self.published = 0

    def now(self) -> float:
        return self.loop.time() - self.t0

    def mark(self, name: str) -> float:
        self.marks[name] = self.now()
        return self.marks[name]

    # --- life cycle --------------------------------------------------------------------------------------
    async def start(self, timeout: float = 60.0, settle: float = 0.3):
        """Connects and subscribes everyone (bounded), connects the publishers, starts publishing."""
        for s in self.subs:
            s.task = asyncio.create_task(s.run(), name=s.name)
        for p in self.pubs:
            p.task = asyncio.create_task(p.run(), name=p.name)
        deadline = self.loop.time() + timeout
        for s in self.subs:
            left = deadline - self.loop.time()
            try:
                await asyncio.wait_for(s.subscribed_once.wait(), max(0.01, left))
            except asyncio.TimeoutError:
                done = sum(x.subscribed_once.is_set() for x in self.subs)
                raise AssertionError(f"only {done}/{len(self.subs)} subscribers subscribed within {timeout:.0f}s "
                                     f"(connect failures: {sum(x.connect_failures for x in self.subs)})")
        for p in self.pubs:
            await asyncio.wait_for(p.connected.wait(), max(0.01, deadline - self.loop.time()))
        await asyncio.sleep(settle)
        self.mark("publishing")
        self.publishing = True
        self._pub_task = asyncio.create_task(self._publish_loop(), name="publish-loop")

    async def _publish_loop(self):
        t_start = self.loop.time()
        k = 0
        n_sub = len(self.subjects)
        while self.publishing:
            due = int((self.loop.time() - t_start) * self.rate)
            while k < due and self.publishing:
                s = self.subjects[k % n_sub]
                self.owner[s].send(s)
                k += 1
            self.published = k
            await asyncio.sleep(0.005)

    def spawn_send(self, ws, frame: str, rec: PubRecord, pub: Publisher):
        # websockets' send is a coroutine; chain them per publisher so frames leave in order
        prev = self._send_chain.get(pub.idx)

        async def go():
            if prev is not None and not prev.done():
                with contextlib.suppress(Exception):
                    await prev
            try:
                await ws.send(frame)
            except ConnectionClosed:
                rec.conn_lost = True
                pub.pending.pop(rec.closure, None)

        self._send_chain[pub.idx] = asyncio.create_task(go())

    async def run_for(self, seconds: float):
        await asyncio.sleep(seconds)

    async def stop_publishing(self):
        self.publishing = False
        if self._pub_task is not None:
            with contextlib.suppress(Exception):
                await self._pub_task
        for t in list(self._send_chain.values()):
            with contextlib.suppress(Exception):
                await t
        self.mark("stopped publishing")

    def unanswered(self) -> list[PubRecord]:
        return [r for r in self.records.values() if r.status is None and not r.conn_lost]

    def incomplete(self, limit: int = 1_000_000) -> list[tuple[str, str, int]]:
        """(subscriber, subject, how many OK'd closures it lacks) where no DATA_RESYNC excuses it."""
        ok_by_subject: dict[str, set[str]] = {}
        for r in self.records.values():
            if r.status == "OK":
                ok_by_subject.setdefault(r.subject, set()).add(r.closure)
        out = []
        for sub in self.subs:
            for s in sub.subjects:
                if sub.resynced[s]:
                    continue
                lack = len(ok_by_subject.get(s, set()) - sub.received[s])
                if lack:
                    out.append((sub.name, s, lack))
                    if len(out) >= limit:
                        return out
        return out

    async def drain(self, answer_timeout: float = 6.0, deliver_timeout: float = 8.0, quiet: float = 0.5):
        """After stop_publishing: waits (bounded) until every publish is answered (or its connection is gone)
        and every subscriber has every OK'd message (or a DATA_RESYNC), then `quiet` seconds without frames."""
        deadline = self.loop.time() + answer_timeout
        while self.unanswered() and self.loop.time() < deadline:
            await asyncio.sleep(0.1)
        deadline = self.loop.time() + deliver_timeout
        while self.loop.time() < deadline:
            if not self.incomplete(limit=1) and all(s.ws is not None for s in self.subs):
                break
            await asyncio.sleep(0.25)
        end = self.loop.time() + deliver_timeout
        while self.loop.time() < end and self.now() - self.last_rx < quiet:
            await asyncio.sleep(0.1)
        self.mark("drained")

    async def reconnect_some(self, fraction: float):
        """Closes `fraction` of the subscribers' connections from the client side (they reconnect and recover)."""
        step = max(1, round(1 / fraction)) if fraction > 0 else 0
        victims = [s for i, s in enumerate(self.subs) if step and i % step == 0]
        await asyncio.gather(*(s.reconnect() for s in victims))
        return victims

    async def close(self):
        self.stopping = True
        self.publishing = False
        tasks = [x.task for x in self.subs + self.pubs if x.task is not None]
        for x in self.subs + self.pubs:
            ws = x.ws
            if ws is not None:
                with contextlib.suppress(Exception):
                    ws.transport.abort() if hasattr(ws, "transport") else None
        for t in tasks + [self._pub_task] + list(self._send_chain.values()):
            if t is not None and not t.done():
                t.cancel()
        await asyncio.gather(*[t for t in tasks if t is not None], return_exceptions=True)

    # --- convenience ---------------------------------------------------------------------------------------
    def closes(self, since: float = 0.0, include_ours: bool = False) -> list[Close]:
        out = []
        for x in self.subs + self.pubs:
            out += [c for c in x.closes if c.t >= since and (include_ours or not c.by_us)]
        return out

"""A steady-stream load harness for the "operate the pipeline" tests (issue 4) and scripts/measure-restarts.py.

`SteadyStream` runs, in one asyncio process, N subscribers over S subjects and a few publishers that publish at
R publishes/s, every publish with a closure. Every subscriber reconnects by itself when its connection closes and
re-subscribes with `recover` = its last {epoch, seq} per subject. It records every (subject, epoch, seq, type,
closure) it receives, every status frame and every close; publishers record every publish_status.

`analyze(stream)` checks, per subscriber per subject:
- every publish that got OK reached the subscriber (live, repaired or recovered), unless a DATA_RESYNC for that
  subject that arrived after the publish was sent covers it (then the loss was reported, not silent);
- no duplicate (the same epoch+seq twice), seqs strictly increasing within an epoch, no hole in an epoch's seqs
  without a DATA_RESYNC in between (the standalone cache numbers every subject without holes);
- every change of epoch is announced by a DATA_RESYNC (right before the new epoch's first message, or right
  after it when that first message is the snapshot of a resync answer);
- within an epoch, messages come in the order their (single) publisher sent them;
and that every publish got OK or FAILED, or lost its connection before the answer could come (ingress restarts).

Publishes are mapped to seqs through their closures (`p<publisher>-<n>`), which the messages carry.
Subjects are owned by one publisher each, so each subject's publish order is defined.

Everything is bounded in time: `drain()` waits for answers and deliveries, but no longer than it is told.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

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
        while not st.stopping:
            try:
                async with st.connect_gate:
                    ws = await _connect(st.url_for(self.idx))
            except CONNECT_ERRORS:
                self.connect_failures += 1
                await asyncio.sleep(st.reconnect_delay)
                continue
            self.ws = ws
            self.connects += 1
            if self.connects > 1:
                for s in self.subjects:
                    self.events[s].append((RECONNECT, st.now()))
            self.allowed.clear()
            try:
                await ws.send(json.dumps(self.subscribe_frame()))
                async for raw in ws:
                    self.on_frame(raw)
            except ConnectionClosed:
                pass
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await ws.close()
                raise
            code, reason = _close_info(ws)
            by_us = st.stopping or self.force_reconnect
            self.force_reconnect = False
            self.ws = None
            self.closes.append(Close(st.now(), self.name, code, reason, by_us))
            if not st.stopping:
                await asyncio.sleep(st.reconnect_delay)

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
        while not st.stopping:
            try:
                ws = await _connect(st.url_for(10_000 + self.idx))
            except CONNECT_ERRORS:
                await asyncio.sleep(st.reconnect_delay)
                continue
            self.ws = ws
            self.connected.set()
            try:
                async for raw in ws:
                    self.on_frame(raw)
            except ConnectionClosed:
                pass
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await ws.close()
                raise
            self.ws = None
            self.connected.clear()
            code, reason = _close_info(ws)
            self.closes.append(Close(st.now(), self.name, code, reason, st.stopping))
            for rec in self.pending.values():
                rec.conn_lost = True
            self.pending.clear()
            if not st.stopping:
                await asyncio.sleep(st.reconnect_delay)

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


# --- analysis ---------------------------------------------------------------------------------------------

@dataclass
class Report:
    subscribers: int = 0
    subjects: int = 0
    publishes: int = 0
    ok: int = 0
    failed: int = 0
    other_status: dict = field(default_factory=dict)
    unanswered: list = field(default_factory=list)       # closures: connection open, no answer
    conn_lost: int = 0                                    # publishes whose connection closed before the answer
    not_sent: int = 0                                     # publishes skipped while the publisher was disconnected
    failed_delivered: int = 0                             # FAILED but delivered anyway (stored late)
    conn_lost_delivered: int = 0                          # no answer (connection closed) but delivered
    max_ack_latency: float = 0.0
    deliveries: int = 0
    missing: list = field(default_factory=list)           # (sub, subject, closure): OK'd, not received, not covered
    covered: int = 0                                      # OK'd, not received, covered by a reported DATA_RESYNC
    duplicates: list = field(default_factory=list)        # (sub, subject, epoch, seq)
    out_of_order: list = field(default_factory=list)      # (sub, subject, epoch, prev seq, seq)
    gaps: list = field(default_factory=list)              # (sub, subject, epoch, prev seq, seq): silent hole
    order_violations: list = field(default_factory=list)  # (sub, subject, epoch, seq, closure): publish order
    unannounced_epochs: list = field(default_factory=list)  # (sub, subject, old epoch, new epoch)
    resyncs: dict = field(default_factory=dict)           # count of DATA_RESYNC -> how many (sub, subject)
    syncs: int = 0                                        # DATA_SYNC frames (recoveries)
    new_epoch_starts: list = field(default_factory=list)  # (sub, subject, epoch, first seq, type)
    epochs_per_subject: dict = field(default_factory=dict)  # subject -> epochs seen (any subscriber) in order
    foreign: list = field(default_factory=list)           # messages whose closure is not ours
    other_frames: list = field(default_factory=list)
    closes: list = field(default_factory=list)            # Close (not made by us)
    close_codes: dict = field(default_factory=dict)
    reconnects: int = 0

    def summary(self) -> str:
        def few(xs, n=5):
            return f"{len(xs)} {xs[:n]}" if xs else "0"
        return (f"subscribers={self.subscribers} subjects={self.subjects} publishes={self.publishes} ok={self.ok} "
                f"failed={self.failed} other={self.other_status} unanswered={few(self.unanswered)} "
                f"conn_lost={self.conn_lost} (delivered {self.conn_lost_delivered}) not_sent={self.not_sent} failed_delivered={self.failed_delivered} "
                f"max_ack={self.max_ack_latency:.2f}s deliveries={self.deliveries}\n"
                f"  missing={few(self.missing)} covered_by_resync={self.covered}\n"
                f"  duplicates={few(self.duplicates)} out_of_order={few(self.out_of_order)} gaps={few(self.gaps)} "
                f"order_violations={few(self.order_violations)} unannounced_epochs={few(self.unannounced_epochs)}\n"
                f"  resyncs(count->pairs)={self.resyncs} syncs={self.syncs} "
                f"new_epoch_starts={few(self.new_epoch_starts)}\n"
                f"  closes={len(self.closes)} codes={self.close_codes} reconnects={self.reconnects} "
                f"foreign={few(self.foreign)} other_frames={few(self.other_frames)}")

    def delivery_problems(self) -> list[str]:
        """Problems no scenario excuses: loss, duplicates, disorder, silent gaps, unanswered publishes."""
        out = []
        for name in ("missing", "duplicates", "out_of_order", "gaps", "order_violations", "unannounced_epochs",
                     "unanswered", "foreign"):
            v = getattr(self, name)
            if v:
                out.append(f"{name}: {len(v)}, e.g. {v[:5]}")
        return out


def _parse_closure(closure: str | None) -> tuple[int, int] | None:
    m = re.fullmatch(r"p(\d+)-(\d+)", closure or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def analyze(stream: SteadyStream, seq_holes: bool = False) -> Report:
    """`seq_holes`: a subject's seqs may have holes (Kafka mode: seq = the partition offset, shared by every key
    of the partition), so only duplicates and order are checked there, not continuity."""
    r = Report(subscribers=len(stream.subs), subjects=len(stream.subjects), publishes=len(stream.records))
    recs = stream.records
    ok_by_subject: dict[str, list[PubRecord]] = {}
    for rec in recs.values():
        if rec.status == "OK":
            r.ok += 1
            ok_by_subject.setdefault(rec.subject, []).append(rec)
        elif rec.status == "FAILED":
            r.failed += 1
        elif rec.status is not None:
            r.other_status[rec.status] = r.other_status.get(rec.status, 0) + 1
        elif rec.conn_lost:
            r.conn_lost += 1
        else:
            r.unanswered.append(rec.closure)
        if rec.ack_latency is not None:
            r.max_ack_latency = max(r.max_ack_latency, rec.ack_latency)
    r.not_sent = sum(p.not_sent for p in stream.pubs)
    r.deliveries = stream.deliveries

    # where each publish landed (epoch, seq), from whoever received it
    landed: dict[str, tuple[str, int]] = {}
    delivered_closures: set[str] = set()
    for sub in stream.subs:
        for s in sub.subjects:
            for ev in sub.events[s]:
                if ev[0] == MSG and ev[5]:
                    landed.setdefault(ev[5], (ev[2], ev[3]))
                    delivered_closures.add(ev[5])
    r.failed_delivered = sum(1 for c, rec in recs.items() if rec.status == "FAILED" and c in delivered_closures)
    r.conn_lost_delivered = sum(1 for c, rec in recs.items()
                                if rec.status is None and rec.conn_lost and c in delivered_closures)

    epochs_seen: dict[str, list[str]] = {}
    for sub in stream.subs:
        for s in sub.subjects:
            evs = sub.events[s]
            seen: set[tuple[str, int]] = set()
            last_seq: dict[str, int] = {}
            last_n: dict[str, int] = {}
            epoch = None
            status_since_msg = False
            resync_times = sub.resynced[s]
            n_resync = len(resync_times)
            r.resyncs[n_resync] = r.resyncs.get(n_resync, 0) + 1
            epochs_after_resync: set[str] = set()
            for i, ev in enumerate(evs):
                if ev[0] == STATUS:
                    if ev[2] == "DATA_RESYNC":
                        status_since_msg = True
                    elif ev[2] == "DATA_SYNC":
                        r.syncs += 1
                    continue
                if ev[0] == RECONNECT:
                    r.reconnects += 1
                    continue
                _, t, e, q, typ, closure = ev
                if closure and closure not in recs:
                    r.foreign.append((sub.name, s, closure))
                if resync_times and t >= resync_times[0]:
                    epochs_after_resync.add(e)
                if e not in epochs_seen.setdefault(s, []):
                    epochs_seen[s].append(e)
                if (e, q) in seen:
                    r.duplicates.append((sub.name, s, e, q))
                    continue
                seen.add((e, q))
                if epoch is not None and e != epoch:
                    announced = status_since_msg
                    if not announced and typ == "snapshot":
                        nxt = next((x for x in evs[i + 1:] if x[0] != RECONNECT), None)
                        announced = nxt is not None and nxt[0] == STATUS and nxt[2] == "DATA_RESYNC"
                    if not announced:
                        r.unannounced_epochs.append((sub.name, s, epoch, e))
                    if e not in last_seq:
                        r.new_epoch_starts.append((sub.name, s, e, q, typ))
                prev = last_seq.get(e)
                if prev is not None:
                    if q < prev:
                        r.out_of_order.append((sub.name, s, e, prev, q))
                    elif q > prev + 1 and not status_since_msg and not seq_holes:
                        r.gaps.append((sub.name, s, e, prev, q))
                last_seq[e] = max(q, prev or 0)
                pc = _parse_closure(closure)
                if pc is not None:
                    pn = last_n.get(e)
                    if pn is not None and pc[1] < pn and q > (prev or 0):
                        r.order_violations.append((sub.name, s, e, q, closure))
                    last_n[e] = max(pc[1], pn or 0)
                epoch = e
                status_since_msg = False

            # every OK'd publish of this subject reached this subscriber, or a DATA_RESYNC covered it
            for rec in ok_by_subject.get(s, ()):
                if rec.closure in sub.received[s]:
                    continue
                where = landed.get(rec.closure)
                covering = [tr for tr in resync_times if tr >= rec.t_sent]
                if covering and (where is None or where[0] not in epochs_after_resync):
                    r.covered += 1
                else:
                    r.missing.append((sub.name, s, rec.closure, where))
        r.other_frames += sub.other[:3]
    for p in stream.pubs:
        r.other_frames += p.other[:3]
    r.epochs_per_subject = epochs_seen
    r.closes = stream.closes()
    for c in r.closes:
        r.close_codes[c.code] = r.close_codes.get(c.code, 0) + 1
    return r


# --- statistics -------------------------------------------------------------------------------------------

def percentile(values: Iterable[float], p: float) -> float:
    xs = sorted(values)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, math.ceil(p / 100 * len(xs)) - 1))
    return xs[k]


# --- talking to the stack ---------------------------------------------------------------------------------

async def cli_async(broker, *args: str, timeout: float = 60.0, env: dict | None = None):
    """`broker.cli(*args)` in a thread, so the stream keeps running meanwhile; `env` is set around the call."""
    def call():
        with env_vars(env or {}):
            return broker.cli(*args, timeout=timeout)
    return await asyncio.to_thread(call)


@contextlib.contextmanager
def env_vars(values: dict):
    """Sets environment variables for the commands run inside (the supervisor CLI inherits them)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
        return resp.status, resp.read().decode(errors="replace")


METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}\s+(\S+)$')


def parse_metrics(text: str) -> dict[tuple[str, str, int], float]:
    """{(metric, stage, instance): value} from Prometheus text with stage/instance labels."""
    out = {}
    for line in text.splitlines():
        m = METRIC_LINE.match(line.strip())
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        if "stage" in labels and "instance" in labels:
            out[(m.group(1), labels["stage"], int(labels["instance"]))] = float(m.group(3))
    return out


def stage_pids(broker, stage: str) -> dict[int, int]:
    """instance -> pid for the stage's rows in `status --json` (those with a pid)."""
    return {int(r["instance"]): int(r["pid"]) for r in broker.status_json()
            if r.get("stage") == stage and r.get("pid")}


LOG_LINE = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_log_line(line: str) -> list[tuple[str, str]] | None:
    """The key=value pairs of one log line, or None when the line is not entirely key=value pairs."""
    pos, pairs = 0, []
    line = line.rstrip("\n")
    while pos < len(line):
        while pos < len(line) and line[pos] == " ":
            pos += 1
        if pos >= len(line):
            break
        m = LOG_LINE.match(line, pos)
        if not m:
            return None
        pairs.append((m.group(1), m.group(2)))
        pos = m.end()
        if pos < len(line) and line[pos] != " ":
            return None
    return pairs or None


# --- one scenario: a stream around an operator action -----------------------------------------------------

async def run_scenario(url, action: Callable[[SteadyStream], Any] | None, *, before: float = 3.0,
                       after: float = 5.0, publish_timeout: float = 3.0, start_timeout: float = 60.0,
                       deliver_timeout: float = 8.0, **stream_kw) -> tuple[SteadyStream, Report, Any]:
    """Starts a SteadyStream, lets it run `before` seconds, awaits `action(stream)` (its result is returned),
    runs `after` more seconds, stops publishing, drains (answers within publish_timeout + 3 s), analyzes."""
    stream = SteadyStream(url, **stream_kw)
    result = None
    try:
        await stream.start(timeout=start_timeout)
        await asyncio.sleep(before)
        stream.mark("action")
        if action is not None:
            result = await action(stream)
        stream.mark("action done")
        await asyncio.sleep(after)
        await stream.stop_publishing()
        await stream.drain(answer_timeout=publish_timeout + 3, deliver_timeout=deliver_timeout)
        report = analyze(stream)
    finally:
        await stream.close()
    return stream, report, result


# --- fixtures and checks shared by the test_operate_* modules ---------------------------------------------

import shutil  # noqa: E402
import signal  # noqa: E402

import pytest  # noqa: E402

from e2e_helpers import BIN_DIR, wait_until  # noqa: E402

STAGE_BINARIES = ("ws-ingress", "router", "cache", "fanout", "kafka-in", "kafka-out")
PUBLISH_TIMEOUT = 3


@pytest.fixture(scope="module")
def frozen_bin(tmp_path_factory):
    """A copy of the stage executables for the module, set as SWITCHYARD_BIN while it runs: a restart must start
    the build that is running, not one that `make build` put in .build/release since the stack started (an
    incompatible envelope change between the two would make every restart test fail for the wrong reason)."""
    dst = tmp_path_factory.mktemp("bin")
    for name in STAGE_BINARIES:
        if (BIN_DIR / name).exists():
            shutil.copy2(BIN_DIR / name, dst / name)
    with env_vars({"SWITCHYARD_BIN": str(dst)}):
        yield dst


@pytest.fixture
def op_broker(make_broker, frozen_bin):
    """Factory: a started standalone stack with PublishTimeout = 3 (plus any parameter given)."""
    def make(**params):
        params.setdefault("PublishTimeout", PUBLISH_TIMEOUT)
        return make_broker(name="op", **params)
    return make


def row_of(broker, stage: str, instance: int = 0) -> dict | None:
    return broker.status_row(stage, instance)


async def kill_and_wait_back(broker, stage: str, instance: int = 0, timeout: float = 30.0) -> dict:
    """kill -9 of one instance; waits until the supervisor has it up again with a new pid. Returns
    {"old_pid", "new_pid", "seconds", "row"}."""
    old = broker.pid(stage, instance)
    t = time.monotonic()
    os.kill(old, signal.SIGKILL)

    def back():
        r = broker.status_row(stage, instance)
        return r if r and r.get("state") == "up" and r.get("pid") and int(r["pid"]) != old else None

    row = await asyncio.to_thread(wait_until, back, timeout, 0.1, f"{stage}-{instance} back up after kill -9")
    return {"old_pid": old, "new_pid": int(row["pid"]), "seconds": time.monotonic() - t, "row": row}


def failed_after(stream: SteadyStream, t: float) -> list[PubRecord]:
    """FAILED publishes sent at or after stream time t."""
    return [r for r in stream.records.values() if r.status == "FAILED" and r.t_sent >= t]


def pairs(stream: SteadyStream) -> int:
    return sum(len(s.subjects) for s in stream.subs)


def assert_delivery_clean(report: Report, stream: SteadyStream, what: str):
    problems = report.delivery_problems()
    assert not problems, f"{what}: " + "; ".join(problems) + "\n" + report.summary()
    assert report.ok > 0, f"{what}: no publish was OK\n{report.summary()}"


def assert_no_disconnects(report: Report, what: str):
    assert not report.closes, (f"{what}: {len(report.closes)} WebSocket clients were disconnected, e.g. "
                               f"{report.closes[:5]}\n{report.summary()}")
    assert report.conn_lost == 0 and report.not_sent == 0, report.summary()


def assert_recovered_after(stream: SteadyStream, report: Report, t: float, what: str):
    """Once the stage is back (stream time t), publishing works again: nothing sent after t FAILED."""
    late = failed_after(stream, t)
    assert not late, (f"{what}: {len(late)} publishes sent {t:.1f}s+ into the run (after the stage was back) "
                      f"FAILED, e.g. {[(r.closure, round(r.t_sent, 2), r.reason) for r in late[:5]]}\n"
                      f"{report.summary()}")

"""The analyzer of a `SteadyStream` run (load_generator.py), and the checks the operate tests make with it.

`analyze(stream)` checks, per subscriber per subject:
- every publish that got OK reached the subscriber (live, repaired or recovered), unless a DATA_RESYNC for that
  subject that arrived after the publish was sent covers it (then the loss was reported, not silent);
- no duplicate (the same epoch+seq twice), seqs strictly increasing within an epoch, no hole in an epoch's seqs
  without a DATA_RESYNC in between (the standalone cache numbers every subject without holes);
- every change of epoch is announced by a DATA_RESYNC (right before the new epoch's first message, or right
  after it when that first message is the snapshot of a resync answer);
- within an epoch, messages come in the order their (single) publisher sent them;
and that every publish got OK or FAILED, or lost its connection before the answer could come (ingress restarts).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable

from load_generator import MSG, RECONNECT, STATUS, PubRecord, SteadyStream

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


# --- checks shared by the test_operate_* modules ----------------------------------------------------------

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

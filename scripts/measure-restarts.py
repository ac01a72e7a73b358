#!/usr/bin/env python3
"""Measures what restarting each stage of a running Switchyard stack costs, under a steady stream.

Usage: scripts/measure-restarts.py CONFIG [--subscribers 200] [--subjects 20] [--rate 200] [--baseline 5]
                                          [--settle S] [--stages router,cache,...] [--json FILE]
(It runs itself with <repo>/.venv/bin/python when the python it was started with lacks the test packages.)

Against the stack started from CONFIG (`./switchyard start -c CONFIG`), it runs a steady stream (subscribers
spread over subjects, publishes/s with closures; tests/e2e/load_generator.SteadyStream), measures a baseline,
then restarts each stage in turn with `./switchyard restart STAGE -c CONFIG` (router, cache, fanout,
ws-ingress; kafka-out and kafka-in too when ClusterEngine = kafka) and prints, per stage:

  ready s        seconds from the restart command until it returned (the new instance ready)
  window         publishes sent from the restart command until `ready + settle` seconds after it
  delayed        of those, how many were acknowledged later than 2 x the baseline p99 ack latency (or FAILED)
  max ack        the largest ack latency (send -> publish_status) among them
  FAILED         of those, how many got FAILED
  late deliv.    deliveries of those publishes (one per subscriber) later than 2 x the baseline p99 delivery
                 latency (publish sent -> subscriber received), of all their deliveries
  max deliv.     the largest delivery latency among them
  disconnects    WebSocket closes the clients saw in the window (they reconnect and recover by themselves)
  resyncs        DATA_RESYNC frames subscribers got in the window

Then a line per check of the whole run (every OK'd publish delivered or covered by a DATA_RESYNC, no
duplicates, no silent gaps). Exit 0 when every restart succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

try:
    import websockets  # noqa: F401  (the harness's client)
except ImportError:  # run by a python without the test packages: use the repo's .venv (make setup)
    venv_python = REPO / ".venv" / "bin" / "python"
    if venv_python.exists() and Path(sys.executable).resolve() != venv_python.resolve():
        os.execv(str(venv_python), [str(venv_python), __file__, *sys.argv[1:]])
    raise

from load_generator import SteadyStream  # noqa: E402
from stream_analyzer import analyze, percentile  # noqa: E402

SUPERVISOR = REPO / "switchyard"


def read_config(path: Path) -> dict[str, str]:
    """The `Parameter = Value` lines of a switchyard.conf (comments stripped)."""
    params = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            k, v = line.split("=", 1)
            params[k.strip()] = v.strip()
    return params


def ws_url(listen: str) -> str:
    first = listen.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if host in ("*", "", "0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"ws://{host}:{port}/"


def switchyard(conf: Path, *args: str, timeout: float = 180) -> tuple[int, str]:
    p = subprocess.run([str(SUPERVISOR), *args, "-c", str(conf)], cwd=REPO, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace")


def fmt_s(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.3f}"


async def measure(args) -> int:
    conf = Path(args.config).resolve()
    params = read_config(conf)
    url = ws_url(params.get("Listen", "*:8800"))
    kafka = params.get("ClusterEngine", "none").lower() == "kafka"
    publish_timeout = float(params.get("PublishTimeout", "10"))
    settle = args.settle if args.settle is not None else publish_timeout + 2
    stages = args.stages.split(",") if args.stages else \
        ["router", "cache", "fanout", "ws-ingress"] + (["kafka-out", "kafka-in"] if kafka else [])

    rc, out = await asyncio.to_thread(switchyard, conf, "status")
    if rc != 0:
        print(f"the stack of {conf} is not (fully) up:\n{out}", file=sys.stderr)
        return 1
    print(f"stack {conf} ({'kafka' if kafka else 'standalone'}), {url}; {args.subscribers} subscribers on "
          f"{args.subjects} subjects, {args.rate:g} publishes/s; PublishTimeout {publish_timeout:g} s; "
          f"settle {settle:g} s after each restart", flush=True)

    stream = SteadyStream(url, subscribers=args.subscribers, subjects=args.subjects, rate=args.rate,
                          publishers=args.publishers, prefix="measure")
    rows, failures = [], 0
    try:
        await stream.start(timeout=120)
        await asyncio.sleep(1.0)  # warm-up
        b0 = stream.now()
        await asyncio.sleep(args.baseline)
        b1 = stream.now()
        base = [r for r in stream.records.values() if b0 <= r.t_sent < b1]
        base_ack = [r.ack_latency for r in base if r.status == "OK"]
        base_del = [lat for (t, lat) in stream.delivery_latencies if b0 <= t - lat < b1]
        ack_p50, ack_p99 = percentile(base_ack, 50), percentile(base_ack, 99)
        del_p50, del_p99 = percentile(base_del, 50), percentile(base_del, 99)
        ack_limit, del_limit = 2 * ack_p99, 2 * del_p99
        print(f"baseline over {args.baseline:g} s: {len(base)} publishes, ack p50 {ack_p50 * 1000:.1f} ms "
              f"p99 {ack_p99 * 1000:.1f} ms; {len(base_del)} deliveries, p50 {del_p50 * 1000:.1f} ms "
              f"p99 {del_p99 * 1000:.1f} ms; 'delayed' means ack > {ack_limit * 1000:.1f} ms, 'late' means "
              f"delivery > {del_limit * 1000:.1f} ms", flush=True)

        for stage in stages:
            t0 = stream.now()
            started = time.monotonic()
            rc, out = await asyncio.to_thread(switchyard, conf, "restart", stage)
            ready = time.monotonic() - started
            if rc != 0:
                failures += 1
                print(f"restart {stage} failed (exit {rc}):\n{out}", file=sys.stderr, flush=True)
            await asyncio.sleep(settle)
            t1 = stream.now()
            window = [r for r in stream.records.values() if t0 <= r.t_sent < t0 + ready + 1.0]
            # wait (bounded) for the window's publishes to be answered before judging them
            deadline = time.monotonic() + publish_timeout + 2
            while any(r.status is None and not r.conn_lost for r in window) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            t1 = stream.now()
            answered = [r for r in window if r.status is not None]
            acks = [r.ack_latency for r in answered]
            failed = sum(1 for r in window if r.status == "FAILED")
            delayed = sum(1 for r in answered if r.status != "OK" or r.ack_latency > ack_limit)
            dels = [lat for (t, lat) in stream.delivery_latencies if t0 <= t - lat < t0 + ready + 1.0]
            late = sum(1 for lat in dels if lat > del_limit)
            closes = [c for c in stream.closes(since=t0) if c.t < t1]
            resyncs = sum(1 for s in stream.subs for subj in s.subjects for tr in s.resynced[subj] if t0 <= tr < t1)
            row = {
                "stage": stage, "ok": rc == 0, "ready_s": round(ready, 3), "window_publishes": len(window),
                "delayed": delayed, "max_ack_s": round(max(acks), 3) if acks else None, "failed": failed,
                "unanswered": sum(1 for r in window if r.status is None and not r.conn_lost),
                "conn_lost": sum(1 for r in window if r.conn_lost), "late_deliveries": late,
                "deliveries": len(dels), "max_delivery_s": round(max(dels), 3) if dels else None,
                "disconnects": len(closes), "close_codes": sorted({c.code for c in closes if c.code is not None}),
                "resyncs": resyncs,
            }
            rows.append(row)
            print(f"  {stage}: ready {ready:.2f} s, {delayed}/{len(window)} publishes delayed, "
                  f"max ack {fmt_s(row['max_ack_s'])} s, {failed} FAILED, {late}/{len(dels)} deliveries late, "
                  f"{len(closes)} disconnects, {resyncs} DATA_RESYNC", flush=True)
            await asyncio.sleep(1.0)

        await stream.stop_publishing()
        await stream.drain(answer_timeout=publish_timeout + 3, deliver_timeout=10)
        report = analyze(stream, seq_holes=kafka)
    finally:
        await stream.close()

    head = ["stage", "ready s", "window", "delayed", "max ack s", "FAILED", "late deliv.", "max deliv. s",
            "disconnects", "resyncs"]
    table = [head] + [[r["stage"], f"{r['ready_s']:.2f}", str(r["window_publishes"]), str(r["delayed"]),
                       fmt_s(r["max_ack_s"]), str(r["failed"]), f"{r['late_deliveries']}/{r['deliveries']}",
                       fmt_s(r["max_delivery_s"]),
                       str(r["disconnects"]) + (f" ({','.join(map(str, r['close_codes']))})" if r["close_codes"]
                                                else ""),
                       str(r["resyncs"])] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    print()
    for i, row in enumerate(table):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print()
    problems = report.delivery_problems()
    print(f"whole run: {report.publishes} publishes, {report.ok} OK, {report.failed} FAILED "
          f"({report.failed_delivered} of them delivered anyway), {report.conn_lost} without an answer because "
          f"their connection closed ({report.conn_lost_delivered} of them delivered), "
          f"{len(report.unanswered)} unanswered; "
          f"{report.deliveries} deliveries; {len(report.missing)} OK'd deliveries missing, {report.covered} covered "
          f"by a DATA_RESYNC; {len(report.duplicates)} duplicates; {len(report.gaps)} silent gaps; "
          f"{sum(1 for e in report.new_epoch_starts if e[3] != 1)} of {len(report.new_epoch_starts)} new epochs "
          f"seen by a subscriber began past seq 1")
    if problems:
        print("PROBLEMS: " + "; ".join(problems))
    if args.json:
        Path(args.json).write_text(json.dumps({"baseline": {"ack_p50": ack_p50, "ack_p99": ack_p99,
                                                            "delivery_p50": del_p50, "delivery_p99": del_p99},
                                               "rows": rows, "problems": problems}, indent=2))
    return 1 if failures or problems else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="the stack's switchyard.conf (the stack must be running)")
    ap.add_argument("--subscribers", type=int, default=200)
    ap.add_argument("--subjects", type=int, default=20)
    ap.add_argument("--publishers", type=int, default=2)
    ap.add_argument("--rate", type=float, default=200.0, help="publishes per second in total")
    ap.add_argument("--baseline", type=float, default=5.0, help="seconds of baseline before the restarts")
    ap.add_argument("--settle", type=float, default=None,
                    help="seconds to watch after each restart returns (default PublishTimeout + 2)")
    ap.add_argument("--stages", help="comma-separated stages to restart, in order (default: all)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    return asyncio.run(measure(args))


if __name__ == "__main__":
    sys.exit(main())

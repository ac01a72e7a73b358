#!/usr/bin/env python3
"""Kafka-mode benchmark: Switchyard next to librdkafka alone, against the same Tansu, in one run.

  .venv/bin/python scripts/bench-kafka.py [--records N] [--duration S] [--publishers P] [--windows W1,W2,...]
                                          [--publish-only]

Starts a Tansu broker and a Kafka-mode stack on free loopback ports (temporary folders), then measures:

1. WebSocket -> Kafka publish rate: `switchyard-bench --scenario publish` (acked publishes/s: OK only after
   Kafka's delivery report) with P publishers at each in-flight window W per publisher (a rate that stops
   growing with the window is the stages' limit, not the bench's), with the CPU of every stage, of Tansu and of
   the bench during the measured window; next to `kcat -P` producing the same number of records (librdkafka
   alone), with kcat's and Tansu's CPU for it. CPU is reported as CPU-microseconds per acked publish / per
   produced record.
2. Kafka -> WebSocket delivery: N records produced as fast as librdkafka goes, each carrying its send time;
   received live by a WebSocket subscriber through Switchyard and, at the same time, by a librdkafka consumer
   (confluent-kafka) reading the partition directly: rate and latency of each (both clients are Python, so the
   comparison is fair; absolute figures include the Python clients' cost).

Everything stops by itself; all traffic is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
RDKAFKA_LIB = os.path.join(REPO, ".deps", "librdkafka", "lib")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300, **kwargs)


def kcat(*args: str, stdin: str | None = None) -> float:
    """Runs kcat against the patched librdkafka and returns the wall time it took."""
    env = dict(os.environ, LD_LIBRARY_PATH=RDKAFKA_LIB)
    began = time.monotonic()
    subprocess.run(["kcat", *args], input=stdin, check=True, capture_output=True, text=True, env=env, timeout=300)
    return time.monotonic() - began


def start_stack(folder: str, bootstrap: str) -> tuple[str, int]:
    port = free_port()
    os.makedirs(os.path.join(folder, "kafka"))
    with open(os.path.join(folder, "kafka", "consumer.properties"), "w") as f:
        f.write(f"bootstrap.servers = {bootstrap}\ntopics = benchin\n")
    with open(os.path.join(folder, "kafka", "producer.properties"), "w") as f:
        f.write(f"bootstrap.servers = {bootstrap}\n")
    conf = os.path.join(folder, "switchyard.conf")
    with open(conf, "w") as f:
        f.write(f"Listen = 127.0.0.1:{port}\nMonitorListen = none\nClusterEngine = kafka\nRunDir = run\nLogFolder = log\n")
    run([os.path.join(REPO, "switchyard"), "start", "-c", conf])
    return conf, port


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a running process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def publish_rate(port: int, duration: int, records: int, bootstrap: str, run_dir: str, tansu_pid: int,
                 publishers: int, windows: list[int]) -> dict:
    """Switchyard's acked WebSocket publishes/s into Kafka at each window, with the CPU per acked publish of
    every stage, Tansu and the bench; then kcat's produce rate for `records` and its CPU per record."""
    bench = os.path.join(REPO, ".build", "release", "switchyard-bench")
    runs = []
    for window in windows:
        out = tempfile.mktemp(suffix=".json")
        subprocess.run([bench, "--scenario", "publish", "--target", f"127.0.0.1:{port}", "--duration", str(duration),
                        "--warmup", "1", "--publishers", str(publishers), "--window", str(window),
                        "--watch-rundir", run_dir, "--watch-pid", f"tansu={tansu_pid}",
                        "--quiet", "--json-out", out], check=False, capture_output=True, timeout=300)
        with open(out) as f:
            summary = json.load(f).get("switchyard", {})
        rate = summary.get("publishes_acked_per_s") or 0
        cores = summary.get("cpu_cores", {})
        runs.append({"publishers": publishers, "window": window, "acked_per_s": rate,
                     "ack_latency_ms": summary.get("ack_latency_ms"), "failed": summary.get("publishes_failed"),
                     "cores": cores,
                     "cpu_us_per_publish": {name: round(c * 1e6 / rate, 2) for name, c in cores.items()} if rate else {}})
    lines = "".join(f"k{i % 100}:" + "x" * 100 + "\n" for i in range(records))
    tansu_before = process_cpu_seconds(tansu_pid)
    children_before = os.times()
    seconds = kcat("-P", "-b", bootstrap, "-t", "benchout", "-K:", stdin=lines)
    children_after = os.times()
    kcat_cpu = (children_after.children_user - children_before.children_user
                + children_after.children_system - children_before.children_system)
    tansu_cpu = process_cpu_seconds(tansu_pid) - tansu_before
    return {"switchyard": runs, "kcat_records_per_s": records / seconds,
            "kcat_cpu_us_per_record": round(kcat_cpu * 1e6 / records, 2),
            "tansu_cpu_us_per_record_for_kcat": round(tansu_cpu * 1e6 / records, 2)}


async def ws_receive(port: int, records: int, ready: threading.Event, results: dict) -> None:
    import websockets
    latencies, first, last = [], None, None
    async with websockets.connect(f"ws://127.0.0.1:{port}/", max_size=None) as ws:
        await ws.send(json.dumps({"op": "subscribe", "subjects": ["/benchin/k"]}))
        await ws.recv()  # subscribed
        ready.set()
        while len(latencies) < records:
            frame = await asyncio.wait_for(ws.recv(), 60)
            if '"type":"update"' not in frame:
                continue
            now = time.time_ns()
            start = frame.index('"content":"t=') + 13
            latencies.append((now - int(frame[start:frame.index('"', start)])) / 1e6)
            first = first or time.monotonic()
            last = time.monotonic()
    results["switchyard"] = (latencies, first, last)


def kafka_receive(bootstrap: str, records: int, ready: threading.Event, results: dict) -> None:
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-kafka", "enable.auto.commit": False})
    consumer.assign([TopicPartition("benchin", 0, -1)])  # OFFSET_END: live records only
    latencies, first, last = [], None, None
    ready.set()
    deadline = time.monotonic() + 120
    while len(latencies) < records and time.monotonic() < deadline:
        for message in consumer.consume(1000, 1.0):
            if message.error() or message.partition() != 0:
                continue
            latencies.append((time.time_ns() - int(message.value()[2:])) / 1e6)
            first = first or time.monotonic()
            last = time.monotonic()
    consumer.close()
    results["librdkafka"] = (latencies, first, last)


def delivery(port: int, bootstrap: str, records: int) -> dict:
    """Kafka -> WebSocket through Switchyard next to a librdkafka consumer, for the same records."""
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    producer.produce("benchin", key=b"k", value=b"t=0", partition=0)  # creates the topic
    producer.flush(10)
    time.sleep(7)  # kafka-in's metadata refresh (5 s) picks the topic up
    results: dict = {}
    ws_ready, kafka_ready = threading.Event(), threading.Event()
    ws_thread = threading.Thread(target=lambda: asyncio.run(ws_receive(port, records, ws_ready, results)))
    kafka_thread = threading.Thread(target=kafka_receive, args=(bootstrap, records, kafka_ready, results))
    ws_thread.start()
    kafka_thread.start()
    ws_ready.wait(30)
    kafka_ready.wait(30)
    time.sleep(2)
    for _ in range(records):
        while True:
            try:
                producer.produce("benchin", key=b"k", value=f"t={time.time_ns()}".encode(), partition=0)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(30)
    ws_thread.join(120)
    kafka_thread.join(120)
    report = {}
    for name, (latencies, first, last) in results.items():
        span = (last - first) if first and last and last > first else float("nan")
        report[name] = {"received": len(latencies), "per_s": len(latencies) / span,
                        "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99)}
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--publishers", type=int, default=4, help="publishing connections (default 4)")
    parser.add_argument("--windows", default="100",
                        help="in-flight window per publisher, one publish run per value: e.g. 100,400,1600")
    parser.add_argument("--publish-only", action="store_true", help="skip the Kafka -> WebSocket part")
    args = parser.parse_args()
    windows = [int(w) for w in args.windows.split(",") if w.strip()]
    folder = tempfile.mkdtemp(prefix="sy-bench-kafka-")
    tansu_dir = os.path.join(folder, "tansu")
    kafka_port = free_port()
    bootstrap = f"127.0.0.1:{kafka_port}"
    conf = None
    try:
        tansu_pid = int(run(["bash", os.path.join(REPO, "scripts", "tansu.sh"), "start", str(kafka_port),
                             tansu_dir]).stdout.split()[-1])
        conf, port = start_stack(os.path.join(folder, "node"), bootstrap)
        produce = publish_rate(port, args.duration, args.records, bootstrap, os.path.join(folder, "node", "run"),
                               tansu_pid, args.publishers, windows)
        deliver = {} if args.publish_only else delivery(port, bootstrap, args.records)
    finally:
        if conf:
            subprocess.run([os.path.join(REPO, "switchyard"), "stop", "-c", conf], capture_output=True)
        subprocess.run(["bash", os.path.join(REPO, "scripts", "tansu.sh"), "stop", tansu_dir], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
    print("WebSocket -> Kafka (acked after Kafka's delivery report)")
    for r in produce["switchyard"]:
        print(f"  switchyard, {r['publishers']} publishers x window {r['window']}: {r['acked_per_s']:.0f} acked "
              f"publishes/s, {r['failed']} failed, ack latency {r['ack_latency_ms']}")
        print("    CPU-us per acked publish: " + ", ".join(f"{name} {us}" for name, us in
                                                         sorted(r["cpu_us_per_publish"].items())))
    best = max((r["acked_per_s"] for r in produce["switchyard"]), default=0)
    print(f"  kcat -P (librdkafka alone):    {produce['kcat_records_per_s']:.0f} records/s, "
          f"kcat {produce['kcat_cpu_us_per_record']} CPU-us per record, "
          f"tansu {produce['tansu_cpu_us_per_record_for_kcat']}")
    print(f"  ratio switchyard (best window)/librdkafka: {best / produce['kcat_records_per_s']:.2f}")
    print(f"Kafka -> WebSocket ({args.records} records, one partition, produced as fast as librdkafka goes)")
    for name in ("switchyard", "librdkafka"):
        r = deliver.get(name)
        if r:
            print(f"  {name:>10}: {r['received']} received, {r['per_s']:.0f}/s, "
                  f"latency p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms")
    if "switchyard" in deliver and "librdkafka" in deliver:
        print(f"  ratio switchyard/librdkafka: rate {deliver['switchyard']['per_s'] / deliver['librdkafka']['per_s']:.2f}, "
              f"p50 latency {deliver['switchyard']['p50_ms'] / deliver['librdkafka']['p50_ms']:.2f}x")
    print(json.dumps({"produce": produce, "deliver": deliver}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

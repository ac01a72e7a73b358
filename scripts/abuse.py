#!/usr/bin/env python3
"""The abuse run: a Switchyard stack under hostile clients while well-behaved ones are measured.

Usage: scripts/abuse.py [--quick] [--duration S] [--half-open N] [--subject-hogs N] [--hog-subjects N]
                        [--slow-subscribers N] [--history-clients N] [--subscribers N] [--rate R]
                        [--rss-limit-mb MB] [--param Name=Value ...] [--json FILE]
(It runs itself with <repo>/.venv/bin/python when the python it was started with lacks `websockets`.)

It starts its own stack with the real supervisor (`./switchyard start -c <temp conf>`, a free loopback port, a temp
RunDir and LogFolder; `--param` adds configuration lines), then:

1. quiet run: `--subscribers` well-behaved subscribers spread over `--subjects` subjects and one publisher at
   `--rate` messages/s in total, for `--duration` seconds; latency = receive time - the send timestamp carried in
   each message's content;
2. abuse run: the same, while (each in processes of their own, loopback only, every loop bounded in time)
     - `--half-open` connections send part of an HTTP upgrade request and never finish it (from 127.0.0.2...),
     - one client floods pings and never reads,
     - `--subject-hogs` clients each subscribe to `--hog-subjects` subjects,
     - `--slow-subscribers` clients subscribe to a subject published at `--fanout-rate` messages/s of
       `--fanout-bytes` bytes, then stop reading,
     - `--history-clients` clients repeat huge history (`history: 1000000`) and deep-recovery (`seq: 0`)
       requests on the well-behaved subjects.

It samples the RSS of every stage instance each second (/proc/PID/status VmRSS; pids from `./switchyard status
--json`), prints what happened to each kind of abuser (how many were closed, with which close code, after how
long) and a table of the criteria, and exits 1 if one fails:
  - every well-behaved subscriber got every message published (and acknowledged OK) on its subject;
  - the abuse run's p99 delivery latency is at most 2x the quiet run's;
  - no stage instance's RSS went over `--rss-limit-mb` (default 1024 MiB);
  - nothing restarted (same pids, restart counters unchanged) and no well-behaved client was disconnected.
`--quick` is a smaller run of about 20 seconds of traffic. Run it on a quiet machine: CPU taken by other work
shows up as latency.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUPERVISOR = REPO / "switchyard"

try:
    import websockets
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import ConnectionClosed
except ImportError:  # run by a python without the test packages: use the repo's .venv (make setup)
    venv_python = REPO / ".venv" / "bin" / "python"
    if venv_python.exists() and Path(sys.executable).resolve() != venv_python.resolve():
        os.execv(str(venv_python), [str(venv_python), __file__, *sys.argv[1:]])
    raise

FANOUT_SUBJECT = "/abuse/fanout"


def quiet_subjects(count: int) -> list[str]:
    """The well-behaved clients' subjects (the history abusers ask for theirs)."""
    return [f"/abuse/quiet/s{k}" for k in range(count)]


# Connections opened at once by one abuser process.
CONNECT_BATCH = 100
# At most this many sockets in one process (the machine's hard limit is 20,000 open files).
MAX_SOCKETS_PER_PROCESS = 18_000
TCP_STATES = {1: "ESTABLISHED", 7: "CLOSE", 8: "CLOSE_WAIT"}


def raise_nofile_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def summarize_times(times: list[float]) -> str:
    if not times:
        return "-"
    return f"min {min(times):.1f} s, median {percentile(times, 50):.1f} s, max {max(times):.1f} s"


def count_by(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[str(v)] = counts.get(str(v), 0) + 1
    return dict(sorted(counts.items()))


def close_description(e: ConnectionClosed) -> str:
    """`1008 slow consumer: ...` from the close frame the server sent, or that there was none."""
    return f"{e.rcvd.code} {e.rcvd.reason}".strip() if e.rcvd else "no close frame"


# --- raw WebSocket client pieces (for clients that misbehave below what `websockets` allows) -----------------

def upgrade_request(port: int, path: str = "/") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def client_frame(payload: bytes, opcode: int = 1) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def find_close_code(data: bytes) -> int | None:
    """The code of the first close frame in a stream of server frames (unmasked), if one is there whole."""
    i = 0
    while i + 2 <= len(data):
        opcode, n = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if n == 126:
            if i + 2 > len(data):
                return None
            n = struct.unpack(">H", data[i:i + 2])[0]
            i += 2
        elif n == 127:
            if i + 8 > len(data):
                return None
            n = struct.unpack(">Q", data[i:i + 8])[0]
            i += 8
        if opcode == 8:
            return struct.unpack(">H", data[i:i + 2])[0] if n >= 2 and i + 2 <= len(data) else 1005
        i += n
    return None


def tcp_state(sock: socket.socket) -> int:
    """The kernel's TCP state of a socket (1 = established, 7 = closed/reset, 8 = the peer closed)."""
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    except OSError:
        return 7


async def raw_connect(port: int, source: str = "127.0.0.1", rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((source, 0))
    await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), 10)
    return sock


async def raw_handshake(sock: socket.socket, port: int) -> bytes:
    """Upgrades; returns whatever followed the 101 response (already-sent frames)."""
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, upgrade_request(port))
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 10)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n")[0].decode(errors="replace"))
    return rest


def drain(sock: socket.socket, limit: int = 64 * 1024 * 1024) -> tuple[bytes, str]:
    """Reads what the kernel holds for a socket nobody read: (bytes, 'eof' | 'reset' | 'open')."""
    sock.setblocking(False)
    data = bytearray()
    while len(data) < limit:
        try:
            chunk = sock.recv(256 * 1024)
        except BlockingIOError:
            return bytes(data), "open"
        except OSError:
            return bytes(data), "reset"
        if not chunk:
            return bytes(data), "eof"
        data += chunk
    return bytes(data), "open"


class Watch:
    """Polls the TCP state of sockets that are never read, to tell when the server closed each."""

    def __init__(self):
        self.closed_after: dict[int, float] = {}

    async def run(self, socks: list[socket.socket], started: float, until: float):
        while time.time() < until:
            for i, s in enumerate(socks):
                if i not in self.closed_after and tcp_state(s) != 1:
                    self.closed_after[i] = time.time() - started
            await asyncio.sleep(0.5)


# --- abuser roles (each runs in a process of its own: `abuse.py --role NAME`) ------------------------------------

async def role_half_open(a) -> dict:
    """Connections that send part of an upgrade request and never finish it."""
    loop = asyncio.get_running_loop()
    started = time.time()
    socks: list[socket.socket] = []
    failures: list[str] = []
    partial = upgrade_request(a.port)[:40]

    async def half_open(i: int):
        try:
            s = await raw_connect(a.port, f"127.0.0.{2 + i // 1000 % 250}")
            await loop.sock_sendall(s, partial)
            socks.append(s)
        except (OSError, asyncio.TimeoutError) as e:
            failures.append(getattr(e, "strerror", None) or type(e).__name__)

    for first in range(0, a.half_open, CONNECT_BATCH):
        if time.time() > a.until:
            break
        await asyncio.gather(*(half_open(i) for i in range(first, min(first + CONNECT_BATCH, a.half_open))))
    connected_in = time.time() - started
    watch = Watch()
    await watch.run(socks, started, a.until)
    answers = []
    for s in socks:
        data, _ = drain(s, 4096)
        answers.append(data.split(b"\r\n")[0].decode(errors="replace") if data else "nothing")
        s.close()
    return {"role": "half-open", "attempted": a.half_open, "connected": len(socks), "connect_failures": count_by(failures),
            "connect_seconds": round(connected_in, 1), "closed_by_server": len(watch.closed_after),
            "closed_after": summarize_times(list(watch.closed_after.values())),
            "still_open_at_end": len(socks) - len(watch.closed_after), "server_answers": count_by(answers)}


async def role_ping_flood(a) -> dict:
    """One client that sends pings as fast as it can and never reads (a tiny receive buffer)."""
    loop = asyncio.get_running_loop()
    sock = await raw_connect(a.port, rcvbuf=4096)
    await raw_handshake(sock, a.port)
    started = time.time()
    ping = client_frame(b"p" * 125, opcode=9)
    sent, closed_after, error = 0, None, None
    while time.time() < a.until:
        try:
            await asyncio.wait_for(loop.sock_sendall(sock, ping * 64), 1.0)
            sent += 64
        except asyncio.TimeoutError:
            pass  # the server stopped reading our pings (its pongs fill our unread buffer)
        except OSError as e:
            error = e.strerror or type(e).__name__
            break
        if tcp_state(sock) != 1:
            break
    if tcp_state(sock) != 1 or error:
        closed_after = time.time() - started
    data, state = drain(sock)
    sock.close()
    return {"role": "ping-flood", "pings_sent": sent, "closed_by_server": closed_after is not None,
            "closed_after_s": None if closed_after is None else round(closed_after, 1), "send_error": error,
            "close_code": find_close_code(data), "socket_at_end": state, "unread_bytes": len(data)}


async def role_subject_hogs(a) -> dict:
    """Clients that each subscribe to many subjects, in frames of 500, and read every answer."""
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    closes: list[str] = []
    closed_after: list[float] = []
    started = time.time()

    async def hog(n: int):
        try:
            async with ws_connect(a.url, max_size=None, ping_interval=None, open_timeout=20, close_timeout=2) as ws:
                subjects = [f"/abuse/hog{n}-{os.getpid()}/s{j}" for j in range(a.hog_subjects)]
                for k in range(0, len(subjects), 500):
                    await ws.send(json.dumps({"op": "subscribe", "subjects": subjects[k:k + 500]}))
                while time.time() < a.until:
                    try:
                        frame = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, a.until - time.time())))
                    except asyncio.TimeoutError:
                        break
                    if frame.get("op") == "subscribed":
                        statuses[frame.get("status")] = statuses.get(frame.get("status"), 0) + 1
                    elif frame.get("op") == "error":
                        errors[frame.get("code")] = errors.get(frame.get("code"), 0) + 1
        except ConnectionClosed as e:
            closes.append(close_description(e))
            closed_after.append(time.time() - started)
        except (OSError, asyncio.TimeoutError, websockets.exceptions.InvalidHandshake) as e:
            closes.append(f"connect: {type(e).__name__}")

    await asyncio.gather(*(hog(n) for n in range(a.subject_hogs)))
    return {"role": "subject-hogs", "clients": a.subject_hogs, "subjects_each": a.hog_subjects, "subscribed": statuses,
            "errors": errors, "closed": count_by(closes), "closed_after": summarize_times(closed_after)}


async def role_slow_subscribers(a) -> dict:
    """Subscribers of the fan-out subject that stop reading once subscribed (tiny receive buffers), and the
    publisher of that subject."""
    loop = asyncio.get_running_loop()
    socks, failures = [], []
    subscribe = client_frame(json.dumps({"op": "subscribe", "subjects": [FANOUT_SUBJECT]}).encode())

    async def slow_subscriber():
        try:
            s = await raw_connect(a.port, rcvbuf=4096)
            await raw_handshake(s, a.port)
            await loop.sock_sendall(s, subscribe)
            socks.append(s)
        except (OSError, asyncio.TimeoutError, ConnectionError) as e:
            failures.append(str(e) or type(e).__name__)

    for first in range(0, a.slow_subscribers, CONNECT_BATCH):
        await asyncio.gather(*(slow_subscriber() for _ in range(first, min(first + CONNECT_BATCH, a.slow_subscribers))))
    started = time.time()
    published = 0

    async def publish():
        nonlocal published
        content = "x" * a.fanout_bytes
        async with ws_connect(a.url, ping_interval=None, open_timeout=20, close_timeout=2) as ws:
            t0 = time.monotonic()
            while time.time() < a.until:
                await ws.send(json.dumps({"op": "publish", "subject": FANOUT_SUBJECT, "content": content,
                                          "retained": False, "qos": "STANDARD"}))
                published += 1
                await asyncio.sleep(max(0.0, t0 + published / a.fanout_rate - time.monotonic()))

    watch = Watch()
    publisher = asyncio.create_task(publish())
    await watch.run(socks, started, a.until)
    publisher.cancel()
    codes = []
    for i, s in enumerate(socks):
        data, state = drain(s)
        codes.append(find_close_code(data) if i in watch.closed_after else "still open")
        s.close()
    return {"role": "slow-subscribers", "clients": a.slow_subscribers, "subscribed": len(socks),
            "connect_failures": count_by(failures), "published": published, "closed_by_server": len(watch.closed_after),
            "closed_after": summarize_times(list(watch.closed_after.values())), "close_codes": count_by(codes)}


async def role_history(a) -> dict:
    """Clients that keep asking for huge histories and deep recoveries of the well-behaved subjects."""
    requests, messages, statuses, closes, closed_after = 0, 0, {}, [], []
    subjects = quiet_subjects(a.subjects)
    started = time.time()

    async def client(n: int):
        nonlocal requests, messages
        epoch = {}
        try:
            async with ws_connect(a.url, max_size=None, ping_interval=None, open_timeout=20, close_timeout=2) as ws:
                async def reader():
                    nonlocal messages
                    async for raw in ws:
                        frame = json.loads(raw)
                        if frame.get("op") == "message":
                            messages += 1
                            epoch[frame["subject"]] = frame.get("epoch", "")
                        elif frame.get("op") in ("status", "error"):
                            key = f"{frame['op']} {frame.get('status') or frame.get('code')}"
                            statuses[key] = statuses.get(key, 0) + 1
                read = asyncio.create_task(reader())
                i = 0
                while time.time() < a.until and not read.done():
                    subject = subjects[(n + i) % len(subjects)]
                    if i % 2 == 0 or subject not in epoch:
                        request = {"op": "subscribe", "subjects": [subject], "history": 1_000_000}
                    else:
                        request = {"op": "subscribe", "subjects": [subject],
                                   "recover": {subject: {"epoch": epoch[subject], "seq": 0}}}
                    await ws.send(json.dumps(request))
                    await ws.send(json.dumps({"op": "unsubscribe", "subjects": [subject]}))
                    requests += 1
                    i += 1
                    await asyncio.sleep(1 / a.history_rate)
                read.cancel()
        except ConnectionClosed as e:
            closes.append(close_description(e))
            closed_after.append(time.time() - started)
        except (OSError, asyncio.TimeoutError, websockets.exceptions.InvalidHandshake) as e:
            closes.append(f"connect: {type(e).__name__}")

    await asyncio.gather(*(client(n) for n in range(a.history_clients)))
    return {"role": "history", "clients": a.history_clients, "requests": requests, "messages_received": messages,
            "statuses": statuses, "closed": count_by(closes), "closed_after": summarize_times(closed_after)}


# The options an abuser process is given (the rest are the orchestrator's).
ROLE_OPTIONS = ("half_open", "subject_hogs", "hog_subjects", "slow_subscribers", "fanout_rate", "fanout_bytes",
                "history_clients", "history_rate", "subjects")

ROLES = {"half-open": role_half_open, "ping-flood": role_ping_flood, "subject-hogs": role_subject_hogs,
         "slow-subscribers": role_slow_subscribers, "history": role_history}


def run_role(a) -> int:
    raise_nofile_limit()
    try:
        result = asyncio.run(asyncio.wait_for(ROLES[a.role](a), a.until - time.time() + 60))
    except Exception as e:  # a report, not a traceback: the orchestrator prints it
        result = {"role": a.role, "failed": f"{type(e).__name__}: {e}"}
    Path(a.result).write_text(json.dumps(result))
    return 0


# --- the well-behaved clients --------------------------------------------------------------------------------

class WellBehaved:
    """Subscribers spread over subjects and one publisher; latency from the timestamp in each message."""

    def __init__(self, url: str, subscribers: int, subjects: list[str], rate: float):
        self.url, self.count, self.subjects, self.rate = url, subscribers, subjects, rate
        self.latencies: list[float] = []
        self.received: list[dict[str, set[int]]] = [dict() for _ in range(subscribers)]
        self.acked: dict[str, set[int]] = {s: set() for s in subjects}
        self.failed_publishes = 0
        self.disconnects: list[str] = []
        self.clients = []
        self.readers = []
        self.publisher = None
        self.pending: dict[str, tuple[str, int]] = {}  # closure → (subject, number) until answered

    async def connect(self):
        for n in range(self.count):
            ws = await ws_connect(self.url, max_size=None, ping_interval=None, open_timeout=20, close_timeout=2)
            subject = self.subjects[n % len(self.subjects)]
            await ws.send(json.dumps({"op": "subscribe", "subjects": [subject]}))
            self.clients.append(ws)
            self.readers.append(asyncio.create_task(self.read(n, ws)))
        self.publisher = await ws_connect(self.url, ping_interval=None, open_timeout=20, close_timeout=2)
        self.readers.append(asyncio.create_task(self.acks()))
        await asyncio.sleep(1.0)  # let every subscribe be answered before measuring

    async def read(self, n: int, ws):
        try:
            async for raw in ws:
                now = time.time_ns()
                frame = json.loads(raw)
                if frame.get("op") == "message" and frame.get("type") == "update":
                    body = json.loads(frame["content"])
                    self.received[n].setdefault(frame["subject"], set()).add(body["i"])
                    if body.get("measure"):
                        self.latencies.append((now - body["t"]) / 1e9)
        except ConnectionClosed as e:
            self.disconnects.append(close_description(e))

    async def acks(self):
        try:
            async for raw in self.publisher:
                frame = json.loads(raw)
                if frame.get("op") == "publish_status" and frame.get("closure") in self.pending:
                    subject, i = self.pending.pop(frame["closure"])
                    if frame.get("status") == "OK":
                        self.acked[subject].add(i)
                    else:
                        self.failed_publishes += 1
        except ConnectionClosed as e:
            self.disconnects.append(f"publisher: {close_description(e)}")

    async def publish(self, seconds: float, first: int) -> int:
        """Publishes for `seconds` on the publisher's connection (opened before any abuser came); returns the next
        message number."""
        t0, i, n = time.monotonic(), first, 0
        try:
            while time.monotonic() - t0 < seconds:
                subject = self.subjects[i % len(self.subjects)]
                content = json.dumps({"t": time.time_ns(), "i": i, "measure": True})
                self.pending[f"c{i}"] = (subject, i)
                await self.publisher.send(json.dumps({"op": "publish", "subject": subject, "content": content,
                                                      "closure": f"c{i}"}))
                i, n = i + 1, n + 1
                await asyncio.sleep(max(0.0, t0 + n / self.rate - time.monotonic()))
        except ConnectionClosed:
            pass  # counted by acks()
        deadline = time.monotonic() + 10
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)  # deliveries of the last publishes
        return i

    def missing(self, numbers: range) -> int:
        """Acknowledged messages in `numbers` that a subscriber of their subject did not get."""
        missing = 0
        for n in range(self.count):
            subject = self.subjects[n % len(self.subjects)]
            wanted = {i for i in self.acked[subject] if i in numbers}
            missing += len(wanted - self.received[n].get(subject, set()))
        return missing

    async def close(self):
        for ws in self.clients + ([self.publisher] if self.publisher else []):
            await ws.close()
        for r in self.readers:
            r.cancel()


# --- the stack -----------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def switchyard(conf: Path, *args: str, timeout: float = 120) -> tuple[int, str]:
    p = subprocess.run([str(SUPERVISOR), *args, "-c", str(conf)], cwd=REPO, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace")


def stage_processes(conf: Path) -> dict[str, dict]:
    """name → {pid, restarts} for every stage instance, from `status --json`."""
    _, out = switchyard(conf, "status", "--json")
    try:
        rows = json.loads(out[out.index("["):])
    except ValueError:
        return {}
    found = {}
    for row in rows:
        name = f"{row.get('stage')}-{row.get('instance', 0)}"
        found[name] = {"pid": row.get("pid"), "restarts": row.get("restarts", 0)}
    return found


def rss_mb(pid) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, TypeError):
        return None
    return None


class RssSampler:
    def __init__(self, conf: Path):
        self.conf = conf
        self.peak: dict[str, dict[str, float]] = {}  # phase → stage → MiB
        self.phase = "start"

    async def run(self):
        while True:
            procs = await asyncio.to_thread(stage_processes, self.conf)
            for name, proc in procs.items():
                value = rss_mb(proc["pid"])
                if value is not None:
                    peaks = self.peak.setdefault(self.phase, {})
                    peaks[name] = max(peaks.get(name, 0.0), value)
            await asyncio.sleep(1.0)


# --- the run -------------------------------------------------------------------------------------------------

def spawn_role(a, role: str, name: str, workdir: Path, until: float, **options) -> tuple[subprocess.Popen, Path]:
    """Starts `abuse.py --role ROLE` with the run's options (and `options` overriding them)."""
    result = workdir / f"{name}.json"
    argv = [sys.executable, __file__, "--role", role, "--port", str(a.port), "--url", a.url, "--until", str(until),
            "--result", str(result)]
    for key in ROLE_OPTIONS:
        argv += [f"--{key.replace('_', '-')}", str(options.get(key, getattr(a, key)))]
    log = open(workdir / f"{name}.log", "w")
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT), result


async def measured_phase(name: str, wb: WellBehaved, seconds: float, first: int, sampler: RssSampler) -> dict:
    sampler.phase = name
    wb.latencies = []
    end = await wb.publish(seconds, first)
    lat = list(wb.latencies)
    return {"phase": name, "published": end - first, "numbers": range(first, end), "deliveries": len(lat),
            "p50_ms": percentile(lat, 50) * 1000, "p99_ms": percentile(lat, 99) * 1000,
            "max_ms": max(lat) * 1000 if lat else float("nan"), "missing": wb.missing(range(first, end)),
            "next": end}


async def orchestrate(a) -> int:
    nofile = raise_nofile_limit()
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-abuse-"))
    a.port = free_port()
    a.url = f"ws://127.0.0.1:{a.port}/"
    conf = workdir / "abuse.conf"
    lines = [f"Listen = 127.0.0.1:{a.port}", "ClusterEngine = none", f"RunDir = {workdir / 'run'}",
             f"LogFolder = {workdir / 'log'}", "LogLevel = INFO", "MonitorListen = none", *(p.replace("=", " = ", 1) for p in a.param)]
    conf.write_text("\n".join(lines) + "\n")
    print(f"abuse run: stack in {workdir} on {a.url}; open-file limit {nofile}", flush=True)
    rc, out = switchyard(conf, "start")
    if rc != 0:
        print(f"`switchyard start` failed:\n{out}", file=sys.stderr)
        return 1
    sampler = RssSampler(conf)
    sampling = asyncio.create_task(sampler.run())
    before = stage_processes(conf)
    subjects = quiet_subjects(a.subjects)
    wb = WellBehaved(a.url, a.subscribers, subjects, a.rate)
    results, phases, procs = {}, [], []
    try:
        await wb.connect()
        quiet = await measured_phase("quiet", wb, a.duration, 0, sampler)
        phases.append(quiet)
        print(f"quiet run: {quiet['published']} published, p99 {quiet['p99_ms']:.1f} ms", flush=True)

        sampler.phase = "abuse"
        until = time.time() + a.ramp + a.duration + 15
        share = MAX_SOCKETS_PER_PROCESS // 2
        for i in range(0, a.half_open, share):
            procs.append(spawn_role(a, "half-open", f"half-open-{i // share}", workdir, until,
                                    half_open=min(share, a.half_open - i)))
        for role in ("ping-flood", "subject-hogs", "slow-subscribers", "history"):
            if role != "ping-flood" or a.ping_flood:
                procs.append(spawn_role(a, role, role, workdir, until))
        print(f"abusers started ({len(procs)} processes); measuring after {a.ramp:g} s of ramp-up", flush=True)
        await asyncio.sleep(a.ramp)
        abuse = await measured_phase("abuse", wb, a.duration, quiet["next"], sampler)
        phases.append(abuse)
        print(f"abuse run: {abuse['published']} published, p99 {abuse['p99_ms']:.1f} ms; waiting for the abusers",
              flush=True)
        for proc, result in procs:
            try:
                await asyncio.to_thread(proc.wait, max(1.0, until - time.time() + 90))
            except subprocess.TimeoutExpired:
                proc.kill()
            try:
                report = json.loads(result.read_text())
            except (OSError, ValueError):
                report = {"role": result.stem, "failed": f"no report (exit {proc.returncode})"}
            results.setdefault(report["role"], []).append(report)
        sampler.phase = "end"
        await asyncio.sleep(1.5)
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
        await wb.close()
        after = stage_processes(conf)
        sampling.cancel()
        rc, out = switchyard(conf, "stop")
        if rc != 0:
            print(f"`switchyard stop` failed:\n{out}", file=sys.stderr)

    # --- report ---
    print("\nwhat happened to the abusers:")
    for role, reports in results.items():
        for report in reports:
            print(f"  {role}: " + ", ".join(f"{k} {v}" for k, v in report.items() if k != "role"))
    print("\nwell-behaved clients:")
    print(f"  {'phase':6} {'published':>9} {'deliveries':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'missing':>7}")
    for p in phases:
        print(f"  {p['phase']:6} {p['published']:>9} {p['deliveries']:>10} {p['p50_ms']:>8.1f} {p['p99_ms']:>8.1f} "
              f"{p['max_ms']:>8.1f} {p['missing']:>7}")
    print(f"  publishes not acknowledged OK: {wb.failed_publishes}; disconnects: {count_by(wb.disconnects) or 0}")
    print("\npeak RSS (MiB) per stage instance:")
    names = sorted({n for peaks in sampler.peak.values() for n in peaks})
    for name in names:
        print(f"  {name:14} " + "  ".join(f"{ph} {sampler.peak[ph].get(name, 0):7.1f}" for ph in sampler.peak))
    restarted = [n for n in before if n not in after or after[n]["pid"] != before[n]["pid"]
                 or after[n]["restarts"] != before[n]["restarts"]]
    peak_rss = max((v for peaks in sampler.peak.values() for v in peaks.values()), default=0.0)
    quiet, abuse = phases[0], phases[-1] if len(phases) > 1 else None
    criteria = [
        ("every message reached every well-behaved subscriber",
         all(p["missing"] == 0 for p in phases) and wb.failed_publishes == 0,
         f"missing {[p['missing'] for p in phases]}, not OK {wb.failed_publishes}"),
        ("abuse p99 latency <= 2 x quiet p99", abuse is not None and abuse["p99_ms"] <= 2 * quiet["p99_ms"],
         f"{abuse['p99_ms'] if abuse else float('nan'):.1f} ms vs 2 x {quiet['p99_ms']:.1f} ms"),
        (f"every stage's RSS < {a.rss_limit_mb} MiB", peak_rss < a.rss_limit_mb, f"peak {peak_rss:.1f} MiB"),
        ("nothing restarted", not restarted and len(after) == len(before), f"restarted: {restarted or 'none'}"),
        ("no well-behaved client was disconnected", not wb.disconnects, f"{len(wb.disconnects)} disconnects"),
    ]
    print("\ncriteria:")
    for what, ok, detail in criteria:
        print(f"  {'PASS' if ok else 'FAIL'}  {what} ({detail})")
    if a.json:
        Path(a.json).write_text(json.dumps({"phases": [{k: v for k, v in p.items() if k != "numbers"} for p in phases],
                                            "abusers": results, "peak_rss_mb": sampler.peak,
                                            "criteria": [{"what": w, "ok": ok, "detail": d} for w, ok, d in criteria]},
                                           indent=1))
    if a.keep:
        print(f"\nlogs and reports kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(ok for _, ok, _ in criteria) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smaller run of about 20 s of traffic")
    ap.add_argument("--duration", type=float, help="seconds of each measured phase (default 60; quick 8)")
    ap.add_argument("--ramp", type=float, help="seconds for the abusers to set up before measuring (default 15; quick 4)")
    ap.add_argument("--subscribers", type=int, help="well-behaved subscribers (default 100; quick 20)")
    ap.add_argument("--subjects", type=int, default=10, help="subjects of the well-behaved clients")
    ap.add_argument("--rate", type=float, help="well-behaved publishes/s in total (default 100; quick 50)")
    ap.add_argument("--half-open", type=int, help="handshakes never finished (default 10000; quick 1000)")
    ap.add_argument("--no-ping-flood", dest="ping_flood", action="store_false",
                    help="leave out the ping flooder (to measure the other abusers alone)")
    ap.add_argument("--subject-hogs", type=int, help="clients subscribing to many subjects (default 100; quick 10)")
    ap.add_argument("--hog-subjects", type=int, help="subjects each hog subscribes to (default 10000; quick 1000)")
    ap.add_argument("--slow-subscribers", type=int, help="fan-out subscribers that stop reading (default 1000; quick 100)")
    ap.add_argument("--fanout-rate", type=float, default=100.0, help="messages/s on the slow subscribers' subject")
    ap.add_argument("--fanout-bytes", type=int, default=1024, help="content bytes of each fan-out message")
    ap.add_argument("--history-clients", type=int, help="clients repeating huge history/recovery (default 10; quick 2)")
    ap.add_argument("--history-rate", type=float, default=10.0, help="history/recovery requests/s per history client")
    ap.add_argument("--rss-limit-mb", type=float, default=1024.0, help="RSS bound of every stage instance (MiB)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="an extra configuration line for the stack (repeatable)")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--keep", action="store_true", help="keep the stack's logs and the abusers' reports")
    # internal: one abuser role in a process of its own, given the run's options
    ap.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--until", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role:
        return run_role(a)
    quick = a.quick
    for name, full, small in (("duration", 60.0, 8.0), ("ramp", 15.0, 4.0), ("subscribers", 100, 20), ("rate", 100.0, 50.0),
                              ("half_open", 10_000, 1000), ("subject_hogs", 100, 10), ("hog_subjects", 10_000, 1000),
                              ("slow_subscribers", 1000, 100), ("history_clients", 10, 2)):
        if getattr(a, name) is None:
            setattr(a, name, small if quick else full)
    return asyncio.run(orchestrate(a))


if __name__ == "__main__":
    sys.exit(main())

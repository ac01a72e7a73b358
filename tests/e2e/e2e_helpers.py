"""Helpers for the Switchyard end-to-end tests.

`Broker` drives one stack through the real `./switchyard` supervisor with its own config, RunDir and
LogFolder in a temp dir; fixtures hold stacks through `running` (one stack) or `broker_factory` (a test's
stacks). `Client` is a thin asyncio wrapper around a real `websockets` client connection;
`RawSlowClient` is a hand-rolled WebSocket client on a plain socket with a tiny receive buffer that never reads.

Every wait is bounded: a test fails with what it saw, it never hangs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import websockets
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

REPO = Path(__file__).resolve().parents[2]
SUPERVISOR = Path(os.environ.get("SWITCHYARD_SUPERVISOR", REPO / "switchyard"))
# the supervisor reads the same variable (default <repo>/.build/release)
BIN_DIR = Path(os.environ.get("SWITCHYARD_BIN") or REPO / ".build" / "release")
STAGES = ("ws-ingress", "router", "cache", "fanout")
STAGE_BINARIES = (*STAGES, "kafka-in", "kafka-out")  # every stage executable (STAGES: the standalone ones)

START_TIMEOUT = float(os.environ.get("SWITCHYARD_E2E_START_TIMEOUT", "90"))
STOP_TIMEOUT = float(os.environ.get("SWITCHYARD_E2E_STOP_TIMEOUT", "60"))
CLI_TIMEOUT = 30.0
WAIT = 10.0  # default bound for one expected frame

# Every broker that was started and not yet stopped, so a failing test can show their logs.
ACTIVE_BROKERS: list["Broker"] = []


def missing_prerequisites() -> list[str]:
    missing = []
    if not os.access(SUPERVISOR, os.X_OK):
        missing.append(f"{SUPERVISOR} (the supervisor script) is missing or not executable")
    for stage in STAGES:
        if not os.access(BIN_DIR / stage, os.X_OK):
            missing.append(f"{BIN_DIR / stage} is missing: run `make build`")
    return missing


_checked = False


def ensure_prerequisites():
    """Fails (not skips) the calling test when the stack cannot be run: `make test` builds it first."""
    global _checked
    if _checked:
        return
    missing = missing_prerequisites()
    if missing:
        import pytest
        pytest.fail("end-to-end tests need the built stages and the supervisor:\n  " + "\n  ".join(missing),
                    pytrace=False)
    _checked = True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique_subject(prefix: str = "e2e") -> str:
    return f"/{prefix}/{uuid.uuid4().hex[:12]}"


def pid_alive(pid: int) -> bool:
    """True when pid is a live (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # state is the field after the parenthesised command name
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes whose command line contains `text` (e.g. a test's temp dir)."""
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd and pid_alive(int(entry)):
            found.append((int(entry), cmd.strip()))
    return found


def wait_until(cond: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def run(coro, timeout: float = 120.0):
    """Runs a coroutine to completion from a sync test, failing (not hanging) after `timeout` seconds."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


class CliResult:
    def __init__(self, args: list[str], rc: int, output: str):
        self.args, self.rc, self.output = args, rc, output

    def __repr__(self):
        return f"<switchyard {' '.join(self.args)} rc={self.rc}>\n{self.output}"


class BrokerError(AssertionError):
    pass


class Broker:
    """One Switchyard stack in its own directory, driven through `./switchyard ... -c CONF`."""

    def __init__(self, workdir: Path, name: str = "node", **params: Any):
        ensure_prerequisites()
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = free_port()
        self.monitor_port = free_port()
        self.conf = self.dir / f"{name}.conf"
        self.run_dir = self.dir / "var" / "run"
        self.log_dir = self.dir / "var" / "log"
        self.params: dict[str, Any] = {
            "Listen": f"127.0.0.1:{self.port}",
            "MonitorListen": f"127.0.0.1:{self.monitor_port}",
            "ClusterEngine": "none",
            "RunDir": str(self.run_dir),
            "LogFolder": str(self.log_dir),
            "LogLevel": "INFO",
        }
        self.params.update(params)
        self.started = False
        self.write_config()

    # --- config ------------------------------------------------------------------------------------
    def write_config(self, extra_lines: Iterable[str] = ()) -> Path:
        lines = [f"# e2e test config for {self.name}"]
        lines += [f"{k} = {v}" for k, v in self.params.items()]
        lines += list(extra_lines)
        self.conf.write_text("\n".join(lines) + "\n")
        return self.conf

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    # --- supervisor commands -----------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = CLI_TIMEOUT) -> CliResult:
        """Runs `./switchyard ARGS -c CONF`. Output goes to a file, not a pipe: a daemonised supervisor
        that inherited a pipe would keep us waiting for EOF."""
        argv = [str(SUPERVISOR), *args, "-c", str(self.conf)]
        out_path = self.dir / f".cli-{uuid.uuid4().hex[:8]}.out"
        with open(out_path, "w+b") as out:
            try:
                proc = subprocess.run(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT, timeout=timeout)
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                rc = None
            out.seek(0)
            text = out.read().decode(errors="replace")
        out_path.unlink(missing_ok=True)
        if rc is None:
            raise BrokerError(f"`switchyard {' '.join(args)}` did not return within {timeout:.0f}s; "
                              f"output so far:\n{text}\n{self.log_tails()}")
        return CliResult(list(args), rc, text)

    def start(self) -> CliResult:
        if self not in ACTIVE_BROKERS:
            ACTIVE_BROKERS.append(self)
        r = self.cli("start", timeout=START_TIMEOUT)
        if r.rc != 0:
            raise BrokerError(f"`switchyard start` failed with exit code {r.rc}:\n{r.output}\n{self.log_tails()}")
        self.started = True
        return r

    def stop(self) -> CliResult | None:
        try:
            return self.cli("stop", timeout=STOP_TIMEOUT)
        finally:
            self.started = False
            if self in ACTIVE_BROKERS:
                ACTIVE_BROKERS.remove(self)

    def status_json(self) -> list[dict]:
        """The rows of `status --json`. Its exit status is not checked: it is 1 while an instance is not up
        (e.g. being restarted), and the rows say that too."""
        r = self.cli("status", "--json")
        try:
            data = json.loads(r.output)
        except json.JSONDecodeError:
            # tolerate a trailing/leading non-JSON line, but say so if there is nothing parseable
            m = re.search(r"(\[.*\])", r.output, re.S)
            assert m, f"status --json printed no JSON list:\n{r.output}"
            data = json.loads(m.group(1))
        if isinstance(data, dict):  # {"instances": [...]} or similar
            for v in data.values():
                if isinstance(v, list):
                    data = v
                    break
        assert isinstance(data, list), f"status --json is not a list: {data!r}"
        return data

    def status_row(self, stage: str, instance: int = 0) -> dict | None:
        for row in self.status_json():
            if row.get("stage") == stage and int(row.get("instance", 0)) == instance:
                return row
        return None

    def pid_file(self, stage: str, instance: int = 0) -> Path:
        return self.run_dir / f"{stage}-{instance}.pid"

    def pid(self, stage: str, instance: int = 0) -> int:
        return int(self.pid_file(stage, instance).read_text().split()[0])

    def log_path(self, stage: str, instance: int = 0) -> Path:
        return self.log_dir / f"{stage}-{instance}.log"

    def log_text(self, stage: str, instance: int = 0) -> str:
        try:
            return self.log_path(stage, instance).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tails(self, lines: int = 40) -> str:
        parts = []
        files = sorted(self.log_dir.glob("*.log")) if self.log_dir.is_dir() else []
        if not files:
            return f"[{self.name}] no log files in {self.log_dir}"
        for path in files:
            try:
                tail = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError as e:
                tail = [f"<cannot read: {e}>"]
            parts.append(f"----- [{self.name}] {path.name} (last {len(tail)} lines) -----\n" + "\n".join(tail))
        return "\n".join(parts)

    def kill_stage(self, stage: str, instance: int = 0, sig: int = signal.SIGKILL) -> int:
        pid = self.pid(stage, instance)
        os.kill(pid, sig)
        return pid


@contextlib.contextmanager
def running(broker: Broker, start: bool = True):
    """The one way fixtures hold a stack: `broker`, started unless start=False, stopped on the way out when it
    was started or is still starting (a failed start is stopped too)."""
    try:
        if start:
            broker.start()
        yield broker
    finally:
        if broker.started or broker in ACTIVE_BROKERS:
            broker.stop()


@contextlib.contextmanager
def broker_factory(build: Callable[..., Broker]):
    """For per-test fixtures: yields make(*args, start=True, **kw) -> Broker, where `build(index, *args, **kw)`
    creates the index-th broker of the test. Each is held by `running` until the fixture ends, so one whose start
    failed is stopped only then, after the failure report has shown its logs."""
    with contextlib.ExitStack() as stack:
        made = 0

        def make(*args: Any, start: bool = True, **kw: Any) -> Broker:
            nonlocal made
            b = stack.enter_context(running(build(made, *args, **kw), start=False))
            made += 1
            if start:
                b.start()
            return b

        yield make


# --- WebSocket client -----------------------------------------------------------------------------------

class Client:
    """A real `websockets` client. Frames that a wait does not match stay in a backlog, in arrival order,
    for later waits."""

    def __init__(self, ws, name: str = "client"):
        self.ws = ws
        self.name = name
        self.backlog: list[dict] = []
        self.seen: list[dict] = []  # everything received, for failure messages

    @classmethod
    async def connect(cls, url: str, name: str = "client", timeout: float = WAIT, retry_for: float = 0.0,
                      **kw) -> "Client":
        deadline = time.monotonic() + retry_for
        kw.setdefault("max_size", 32 * 1024 * 1024)
        kw.setdefault("open_timeout", timeout)
        kw.setdefault("close_timeout", 2)
        kw.setdefault("ping_interval", None)
        while True:
            try:
                ws = await ws_connect(url, **kw)
                return cls(ws, name)
            except (OSError, asyncio.TimeoutError, websockets.exceptions.InvalidHandshake,
                    websockets.exceptions.InvalidMessage):
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.2)

    async def close(self):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 3)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    # --- sending -----------------------------------------------------------------------------------
    async def send(self, frame: dict | str | bytes):
        if isinstance(frame, dict):
            frame = json.dumps(frame)
        await self.ws.send(frame)

    async def subscribe(self, subjects: list[str] | str, history: int | None = None,
                        recover: dict | None = None, wait: bool = True, timeout: float = WAIT) -> dict[str, dict]:
        if isinstance(subjects, str):
            subjects = [subjects]
        frame: dict[str, Any] = {"op": "subscribe", "subjects": subjects}
        if history is not None:
            frame["history"] = history
        if recover is not None:
            frame["recover"] = recover
        await self.send(frame)
        if not wait:
            return {}
        result = {}
        for s in subjects:
            result[s] = await self.wait_for(lambda f, s=s: f.get("op") == "subscribed" and f.get("subject") == s,
                                            timeout, what=f"subscribed for {s}")
        return result

    async def publish(self, subject: str, content: str, closure: str | None = None, wait: bool = True,
                      timeout: float = WAIT, **extra) -> dict | None:
        frame: dict[str, Any] = {"op": "publish", "subject": subject, "content": content}
        if closure is not None:
            frame["closure"] = closure
        frame.update(extra)
        await self.send(frame)
        if closure is None or not wait:
            return None
        return await self.wait_status(closure, timeout)

    async def wait_status(self, closure: str, timeout: float = WAIT) -> dict:
        return await self.wait_for(lambda f: f.get("op") == "publish_status" and f.get("closure") == closure,
                                   timeout, what=f"publish_status for closure {closure!r}")

    async def publish_ok(self, subject: str, content: str, closure: str | None = None, timeout: float = WAIT,
                         **extra) -> dict:
        closure = closure or f"c-{uuid.uuid4().hex[:8]}"
        st = await self.publish(subject, content, closure, timeout=timeout, **extra)
        assert st["status"] == "OK", f"publish {content!r} to {subject} was not OK: {st}"
        return st

    # --- receiving ---------------------------------------------------------------------------------
    async def _recv_one(self, timeout: float) -> dict:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        if isinstance(raw, bytes):
            frame = {"_binary": raw}
        else:
            try:
                frame = json.loads(raw)
            except json.JSONDecodeError:
                frame = {"_text": raw}
            if not isinstance(frame, dict):
                frame = {"_json": frame}
        self.seen.append(frame)
        return frame

    def _take_from_backlog(self, pred) -> dict | None:
        for i, f in enumerate(self.backlog):
            if pred(f):
                return self.backlog.pop(i)
        return None

    async def wait_for(self, pred: Callable[[dict], bool], timeout: float = WAIT, what: str = "frame") -> dict:
        hit = self._take_from_backlog(pred)
        if hit is not None:
            return hit
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"[{self.name}] timed out after {timeout:.1f}s waiting for {what}; "
                                     f"last frames: {self._recent()}")
            try:
                f = await self._recv_one(left)
            except asyncio.TimeoutError:
                continue
            if pred(f):
                return f
            self.backlog.append(f)

    async def recv(self, timeout: float = WAIT) -> dict:
        """The next frame, backlog first."""
        if self.backlog:
            return self.backlog.pop(0)
        return await self._recv_one(timeout)

    async def collect(self, match: Callable[[dict], bool], done: Callable[[list[dict]], bool],
                      timeout: float = WAIT, what: str = "frames") -> list[dict]:
        """Frames satisfying `match`, in arrival order, until `done(frames)` is true."""
        got: list[dict] = []
        deadline = time.monotonic() + timeout
        while not done(got):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"[{self.name}] timed out after {timeout:.1f}s collecting {what}; "
                                     f"got {len(got)}: {summarize(got)}")
            got.append(await self.wait_for(match, left, what=what))
        return got

    async def subject_frames_until(self, subject: str, done: Callable[[list[dict]], bool],
                                   timeout: float = WAIT) -> list[dict]:
        """`message` and `status` frames of one subject, in arrival order, until `done`."""
        return await self.collect(
            lambda f: f.get("op") in ("message", "status") and f.get("subject") == subject,
            done, timeout, what=f"message/status frames of {subject}")

    async def messages(self, subject: str, n: int, timeout: float = WAIT) -> list[dict]:
        return await self.collect(lambda f: f.get("op") == "message" and f.get("subject") == subject,
                                  lambda got: len(got) >= n, timeout, what=f"{n} messages on {subject}")

    async def quiet(self, match: Callable[[dict], bool], duration: float) -> list[dict]:
        """Listens for `duration` seconds and returns the frames matching `match` (should be none)."""
        hits = [f for f in self.backlog if match(f)]
        self.backlog = [f for f in self.backlog if not match(f)]
        deadline = time.monotonic() + duration
        while (left := deadline - time.monotonic()) > 0:
            try:
                f = await self._recv_one(left)
            except asyncio.TimeoutError:
                break
            (hits if match(f) else self.backlog).append(f)
        return hits

    async def wait_closed(self, timeout: float = WAIT):
        """Reads until the server closes the connection; returns the ConnectionClosed exception."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"[{self.name}] connection still open after {timeout:.1f}s; "
                                     f"last frames: {self._recent()}")
            try:
                await self._recv_one(left)
            except ConnectionClosed as e:
                return e
            except asyncio.TimeoutError:
                continue

    async def ping_pong(self, timeout: float = WAIT) -> dict:
        await self.send({"op": "ping"})
        return await self.wait_for(lambda f: f.get("op") == "pong", timeout, what="pong")

    def _recent(self, n: int = 8) -> str:
        return summarize(self.seen[-n:])


def summarize(frames: list[dict], limit: int = 12) -> str:
    out = []
    for f in frames[:limit]:
        g = dict(f)
        if isinstance(g.get("content"), str) and len(g["content"]) > 40:
            g["content"] = g["content"][:40] + f"...({len(f['content'])} chars)"
        out.append(json.dumps(g, default=str))
    more = f" ... (+{len(frames) - limit} more)" if len(frames) > limit else ""
    return "[" + ", ".join(out) + "]" + more


def kinds(frames: list[dict]) -> list[tuple]:
    """(type, seq) for messages, ('status', STATUS) for status frames: easy to compare in asserts."""
    out = []
    for f in frames:
        if f.get("op") == "message":
            out.append((f.get("type"), f.get("seq")))
        else:
            out.append(("status", f.get("status")))
    return out


# --- a WebSocket client that stops reading ---------------------------------------------------------------

def ws_client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    header = bytes([0x80 | opcode])
    if n < 126:
        header += bytes([0x80 | n])
    elif n < 65536:
        header += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


class RawSlowClient:
    """A WebSocket client on a blocking socket with a tiny receive buffer. After subscribing it reads
    nothing, so the server's queue for it grows until the server gives up on it."""

    def __init__(self, port: int, rcvbuf: int = 4096):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: fixes the window
        self.sock.settimeout(WAIT)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise AssertionError(f"server closed during the WebSocket handshake: {self.buf!r}")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert b" 101 " in head.split(b"\r\n", 1)[0] + b" ", f"handshake refused: {head!r}"

    def send_json(self, obj: dict):
        self.sock.sendall(ws_client_frame(json.dumps(obj).encode()))

    def read_until(self, needle: bytes, timeout: float = WAIT):
        self.sock.settimeout(timeout)
        while needle not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise AssertionError(f"connection closed while waiting for {needle!r}")
            self.buf += chunk
        self.buf = b""

    def drain_until_closed(self, timeout: float) -> tuple[bool, int | None]:
        """Reads everything until EOF/reset. Returns (closed, close_code_if_a_close_frame_was_seen)."""
        deadline = time.monotonic() + timeout
        close_code = None
        data = bytearray(self.buf)
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                break
            except (ConnectionResetError, BrokenPipeError):
                return True, close_code or _find_close_code(data)
            if not chunk:
                return True, close_code or _find_close_code(data)
            data += chunk
            if len(data) > (8 << 20):  # keep only the tail; the close frame is at the end
                del data[: len(data) - (1 << 20)]
        return False, _find_close_code(data)

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()


def _find_close_code(data: bytes | bytearray) -> int | None:
    """Best effort: a server close frame (0x88, unmasked, len>=2) near the end of the stream."""
    i = bytes(data).rfind(b"\x88")
    while i != -1:
        if i + 4 <= len(data):
            n = data[i + 1]
            if 2 <= n < 126 and i + 2 + n == len(data):
                return int.from_bytes(data[i + 2:i + 4], "big")
        i = bytes(data).rfind(b"\x88", 0, i)
    return None


def copy_tree_if_exists(src: Path, dst: Path):
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)


def http_get(port: int, path: str) -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode(errors="replace")

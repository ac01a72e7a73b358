"""Fixtures and stack helpers shared by the test_operate_* modules: a frozen copy of the stage executables, a
standalone stack with PublishTimeout = 3, supervisor commands in a thread while a stream runs, kill -9 and wait
for the restart, the monitor's metrics and the stages' log lines, and `run_scenario` (a `SteadyStream` around
one operator action, then `analyze`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import time
import urllib.request
from typing import Any, Callable

import pytest

from e2e_helpers import BIN_DIR, STAGE_BINARIES, wait_until
from load_generator import SteadyStream
from stream_analyzer import Report, analyze

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
    """{(metric, stage, instance): value} from Prometheus text with stage/stage_instance labels."""
    out = {}
    for line in text.splitlines():
        m = METRIC_LINE.match(line.strip())
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        if "stage" in labels and "stage_instance" in labels:
            out[(m.group(1), labels["stage"], int(labels["stage_instance"]))] = float(m.group(3))
    return out


def stage_pids(broker, stage: str) -> dict[int, int]:
    """instance -> pid for the stage's rows in `status --json` (those with a pid)."""
    return {int(r["instance"]): int(r["pid"]) for r in broker.status_json()
            if r.get("stage") == stage and r.get("pid")}


LOG_LINE = re.compile(r'([\w.-]+)=("(?:[^"\\]|\\.)*"|\S*)')


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

"""Issue 4, items 4 and 5: what an operator sees.

- `status --json` under load: per instance pid, uptime/startedAt, restarts, rateIn/rateOut (per second over 10 s,
  non-zero under load), queueDepth, and connections for ws-ingress; `/metrics` on the monitor port (MonitorListen)
  has the same figures as Prometheus text for every stage instance; `/health` answers ok.
- Logs: every line of every stage log is key=value with time, level, stage, instance first; files rotate at
  LogRotateLimit (a `.1` appears, the current file stays under twice the limit); `logs STAGE -f` follows, also
  across a rotation; `loglevel STAGE debug` changes the level at run time and DEBUG lines appear.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import threading
import time

from e2e_helpers import REPO, STAGES, SUPERVISOR, run, wait_until
from load_generator import SteadyStream
from operate_fixtures import (PUBLISH_TIMEOUT, frozen_bin, http_get, op_broker,  # noqa: F401  (fixtures)
                              parse_log_line, parse_metrics)
from stream_analyzer import analyze

LEVELS = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR"}
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
ROTATE = 4096


def test_status_and_metrics_under_load(op_broker):
    b = op_broker(IngressInstances=2, CacheInstances=2, FanoutInstances=2)
    seen: dict = {}

    async def scenario():
        stream = SteadyStream(b.url, subscribers=200, subjects=20, rate=200)
        try:
            await stream.start()
            await asyncio.sleep(8)  # rates are averaged over 10 s
            seen["clients"] = len(stream.subs) + len(stream.pubs)
            seen["rows"] = await asyncio.to_thread(b.status_json)
            seen["table"] = await asyncio.to_thread(b.cli, "status")
            seen["metrics"] = await asyncio.to_thread(http_get, b.monitor_port, "/metrics")
            seen["health"] = await asyncio.to_thread(http_get, b.port, "/health")
            await stream.stop_publishing()
            await stream.drain(answer_timeout=PUBLISH_TIMEOUT + 3)
            seen["report"] = analyze(stream)
        finally:
            await stream.close()

    run(scenario(), 90)
    rows = seen["rows"]
    want = {("ws-ingress", 0), ("ws-ingress", 1), ("router", 0), ("cache", 0), ("cache", 1), ("fanout", 0),
            ("fanout", 1)}
    assert {(r["stage"], int(r["instance"])) for r in rows} == want, rows
    for r in rows:
        name = f"{r['stage']}-{r['instance']}"
        for key in ("pid", "uptime", "startedAt", "restarts", "rateIn", "rateOut", "queueDepth",
                    "messagesIn", "messagesOut"):
            assert key in r, f"{name}: status --json has no {key!r}: {r}"
        assert r["state"] == "up" and int(r["pid"]) == b.pid(r["stage"], int(r["instance"])), r
        assert 5 < float(r["uptime"]) < 120 and abs(time.time() - float(r["startedAt"]) - float(r["uptime"])) < 5, r
        assert int(r["restarts"]) == 0 and int(r["queueDepth"]) >= 0, r
        # every instance moves messages under this load (20 subjects hash onto both shards)
        assert float(r["rateIn"]) > 0 and float(r["rateOut"]) > 0, f"{name}: no rate under load: {r}"
    by = {(r["stage"], int(r["instance"])): r for r in rows}
    router_in = float(by[("router", 0)]["rateIn"])
    # ~200 publishes/s plus subscribes, for the 8 s of a 10 s window that had load
    assert 100 <= router_in <= 400, f"router rateIn {router_in}/s at 200 publishes/s"
    conns = {i: int(by[("ws-ingress", i)].get("connections", -1)) for i in (0, 1)}
    assert sum(conns.values()) == seen["clients"], f"ws-ingress connections {conns}, clients {seen['clients']}"

    table = seen["table"].output
    header = table.splitlines()[0]
    for col in ("PID", "UPTIME", "RESTARTS", "IN/S", "OUT/S", "QUEUE", "CONN"):
        assert col in header, f"status table has no {col} column:\n{table}"

    status, text = seen["metrics"]
    assert status == 200
    m = parse_metrics(text)
    for stage, inst in want:
        for metric in ("switchyard_messages_in_total", "switchyard_messages_out_total", "switchyard_rate_in",
                       "switchyard_rate_out", "switchyard_queue_depth", "switchyard_uptime_seconds",
                       "switchyard_ready"):
            assert (metric, stage, inst) in m, f"/metrics has no {metric}{{stage=\"{stage}\",stage_instance=\"{inst}\"}}"
        assert m[("switchyard_messages_in_total", stage, inst)] > 0, (stage, inst)
        assert m[("switchyard_ready", stage, inst)] == 1
    assert 'switchyard_messages_in_total{stage="cache",stage_instance="0"}' in text
    for inst in (0, 1):
        assert m[("switchyard_connections", "ws-ingress", inst)] == conns[inst], "metrics and status disagree"
    for metric in ("switchyard_messages_in_total", "switchyard_messages_out_total"):
        assert f"# TYPE {metric} counter" in text, f"{metric} is not typed as a counter"
    assert seen["health"][0] == 200 and seen["health"][1].strip() == "ok", seen["health"]
    rep = seen["report"]
    assert not rep.delivery_problems() and not rep.closes and rep.failed == 0, rep.summary()


def stage_logs(b) -> list:
    """The stages' current and rotated logs, read once the stack is stopped: a stage still logging can be in
    the middle of a rotation (its `.new` file exists, its `.1` is being replaced) while the test lists them."""
    b.stop()
    return sorted(p for p in b.log_dir.iterdir()
                  if p.name.startswith(STAGES) and re.fullmatch(r".+-\d+\.log(\.1)?", p.name))


def check_log_lines(path) -> int:
    """Every line of one stage log file is key=value with time, level, stage, instance first."""
    m = re.match(r"(.+)-(\d+)\.log(\.1)?$", path.name)
    assert m, path
    stage, inst = m.group(1), m.group(2)
    lines = path.read_text(errors="replace").splitlines()
    for n, line in enumerate(lines, 1):
        pairs = parse_log_line(line)
        assert pairs, f"{path.name}:{n}: not key=value: {line!r}"
        keys = [k for k, _ in pairs]
        assert keys[:4] == ["time", "level", "stage", "instance"], f"{path.name}:{n}: keys {keys[:5]}: {line!r}"
        values = dict(pairs)
        assert TIME.fullmatch(values["time"]), f"{path.name}:{n}: time {values['time']!r}"
        assert values["level"] in LEVELS, f"{path.name}:{n}: level {values['level']!r}"
        assert values["stage"] == stage and values["instance"] == inst, f"{path.name}:{n}: {line!r}"
        assert "msg" in values, f"{path.name}:{n}: no msg: {line!r}"
    return len(lines)


def traffic(b, seconds: float = 3.0, subscribers: int = 50, restart: str | None = None):
    """A short stream; optionally restarts a stage in the middle (more kinds of log lines)."""
    async def scenario():
        stream = SteadyStream(b.url, subscribers=subscribers, subjects=10, rate=200)
        try:
            await stream.start()
            await asyncio.sleep(seconds / 2)
            if restart:
                r = await asyncio.to_thread(b.cli, "restart", restart)
                assert r.rc == 0, r
            await asyncio.sleep(seconds / 2)
            await stream.stop_publishing()
            await stream.drain(answer_timeout=PUBLISH_TIMEOUT + 3)
            return analyze(stream)
        finally:
            await stream.close()
    return run(scenario(), 90)


def test_every_stage_log_line_is_key_value_with_time_level_stage_instance_first(op_broker):
    b = op_broker(IngressInstances=2)
    traffic(b, restart="router")
    traffic(b, restart="ws-ingress")
    b.kill_stage("fanout")
    wait_until(lambda: (b.status_row("fanout") or {}).get("state") == "up" and b.log_text("fanout").count("ready") >= 2,
               20, what="fanout back")
    assert b.cli("loglevel", "cache", "debug").rc == 0
    files = stage_logs(b)
    assert {p.name for p in files} >= {f"{s}-0.log" for s in STAGES} | {"ws-ingress-1.log"}, files
    total = sum(check_log_lines(p) for p in files)
    assert total >= 15, f"only {total} log lines"


def follow(b, target: str):
    """Starts `switchyard logs TARGET -f`; returns (process, lines list filled by a reader thread)."""
    proc = subprocess.Popen([str(SUPERVISOR), "logs", target, "-f", "-c", str(b.conf)], cwd=REPO,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []

    def reader():
        for raw in proc.stdout:
            lines.append(raw.decode(errors="replace").rstrip("\n"))

    threading.Thread(target=reader, daemon=True).start()
    return proc, lines


def stop_follower(proc) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            return None
    return proc.returncode


def test_logs_follow_sees_new_lines_and_loglevel_change(op_broker):
    b = op_broker()
    proc, lines = follow(b, "router")
    try:
        wait_until(lambda: any("msg=ready" in ln for ln in lines), 10, what="the existing lines (ready)")
        assert b.cli("loglevel", "router", "debug").rc == 0
        wait_until(lambda: any("log level changed" in ln and "level=DEBUG" in ln for ln in lines), 10,
                   what="the log level change to appear in `logs router -f`")
        assert proc.poll() is None, "logs -f exited by itself"
    finally:
        rc = stop_follower(proc)
    assert rc is not None, "logs -f did not stop on SIGINT"
    for ln in lines:
        assert parse_log_line(ln), f"logs -f printed a line that is not key=value: {ln!r}"


def test_logs_rotate_at_limit_and_follow_crosses_the_rotation(op_broker):
    b = op_broker(LogRotateLimit=ROTATE, LogLevel="DEBUG")
    proc, lines = follow(b, "ws-ingress")
    try:
        # ws-ingress writes a line per level change and a few per restart of another stage ("re-announcing")
        deadline = time.monotonic() + 40
        rotated = b.log_dir / "ws-ingress-0.log.1"
        k = 0
        while not rotated.exists() and time.monotonic() < deadline:
            assert b.cli("loglevel", "ws-ingress", ("debug", "trace")[k % 2]).rc == 0
            k += 1
        assert rotated.exists(), f"no ws-ingress-0.log.1 after {k} level changes (LogRotateLimit={ROTATE})"
        # a few more lines after the rotation, which the follower must see in the new file
        for level in ("info", "debug", "info"):
            assert b.cli("loglevel", "ws-ingress", level).rc == 0
        marker_count = sum(1 for ln in b.log_text("ws-ingress").splitlines() if "log level changed" in ln)
        assert marker_count >= 3, b.log_text("ws-ingress")
        wait_until(lambda: sum(1 for ln in lines if "log level changed" in ln) >= k + 3, 10,
                   what=f"all {k + 3} level changes in `logs -f` across the rotation "
                        f"(saw {sum(1 for ln in lines if 'log level changed' in ln)})")
    finally:
        stop_follower(proc)
    for p in b.log_dir.iterdir():
        if p.name.endswith(".log") and p.name != "supervisor.log":
            assert p.stat().st_size < 2 * ROTATE, f"{p.name} is {p.stat().st_size} bytes (limit {ROTATE})"
        if p.name.endswith(".log.1"):
            assert p.stat().st_size <= ROTATE + 1024, f"{p.name} is {p.stat().st_size} bytes (limit {ROTATE})"
            check_log_lines(p)


def test_debug_level_under_traffic_rotates_the_logs(op_broker):
    """LogLevel=DEBUG and some traffic (a stream with a router restart): the stages log at DEBUG and a busy log
    rotates to `.1`, the current files staying under twice the limit."""
    b = op_broker(LogRotateLimit=ROTATE, LogLevel="DEBUG")
    rep = traffic(b, seconds=6, subscribers=100, restart="router")
    assert not rep.delivery_problems(), rep.summary()
    files = stage_logs(b)
    debug = {p.name: sum(1 for ln in p.read_text(errors="replace").splitlines() if " level=DEBUG " in ln)
             for p in files}
    sizes = {p.name: p.stat().st_size for p in files}
    assert any(debug.values()), f"no DEBUG line in any stage log at LogLevel=DEBUG under traffic: {sizes}"
    assert any(name.endswith(".1") for name in sizes), \
        f"no log rotated at LogRotateLimit={ROTATE} under DEBUG traffic: sizes {sizes}, DEBUG lines {debug}"
    for name, size in sizes.items():
        if name.endswith(".log"):
            assert size < 2 * ROTATE, f"{name}: {size} bytes"
    for p in files:  # DEBUG lines (connections, batches, publishes) keep the key=value format too
        check_log_lines(p)


def test_loglevel_debug_at_run_time_makes_router_log_debug_lines(op_broker):
    b = op_broker()
    assert " level=DEBUG " not in b.log_text("router")
    r = b.cli("loglevel", "router", "debug")
    assert r.rc == 0, r
    wait_until(lambda: "log level changed" in b.log_text("router"), 10, what="router to apply the level")
    assert (b.run_dir / "router-0.loglevel").read_text().strip() == "DEBUG"
    rep = traffic(b, seconds=4, subscribers=50, restart="cache")
    assert not rep.delivery_problems(), rep.summary()
    router_debug = [ln for ln in b.log_text("router").splitlines() if " level=DEBUG " in ln]
    assert router_debug, ("`loglevel router debug` then traffic and a cache restart: no DEBUG line in the router's "
                          "log:\n" + b.log_text("router"))
    # and back: the other stages were not touched
    assert " level=DEBUG " not in b.log_text("cache")

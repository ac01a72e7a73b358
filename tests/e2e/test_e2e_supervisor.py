"""Issue 2, item 6: start returns once ready, status, logs, stop leaves nothing behind, and kill -9 of any
stage is survived (the supervisor restarts it; clients of a killed ws-ingress reconnect and recover)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time

import pytest
from websockets.exceptions import ConnectionClosed

from e2e_helpers import (STAGES, Client, kinds, pid_alive, processes_mentioning, run, summarize,
                         unique_subject, wait_until)

RESTART_TIMEOUT = 30.0


def test_start_returns_only_when_ready(make_broker):
    b = make_broker()
    s = unique_subject("ready")

    async def scenario():
        # no retry: start has returned, so ws-ingress must be listening and the pipeline connected
        async with await Client.connect(b.url, retry_for=0) as c:
            st = await c.subscribe([s])
            assert st[s]["status"] == "ALLOW"
            await c.publish_ok(s, "first")
            assert (await c.messages(s, 1))[0]["seq"] == 1

    run(scenario(), 30)


def test_status_shows_one_row_per_stage_with_live_pid(broker):
    rows = broker.status_json()
    by_stage: dict[str, list[dict]] = {}
    for r in rows:
        by_stage.setdefault(r.get("stage"), []).append(r)
    assert set(STAGES) <= set(by_stage), f"stages in status: {sorted(map(str, by_stage))}"
    for stage in STAGES:
        assert len(by_stage[stage]) == 1, f"{stage}: expected one instance: {by_stage[stage]}"
        row = by_stage[stage][0]
        for key in ("instance", "pid", "state", "restarts", "messagesIn", "messagesOut"):
            assert key in row, f"{stage}: status row has no {key!r}: {row}"
        assert int(row["instance"]) == 0
        pid = int(row["pid"])
        assert pid_alive(pid), f"{stage}: pid {pid} is not running"
        assert pid == broker.pid(stage), f"{stage}: status pid {pid} != pid file {broker.pid(stage)}"
        assert int(row["restarts"]) == 0, row
        assert row["state"] == "up", row
    assert broker.cli("status", "--json").rc == 0, "status exits 0 when every instance is up"

    table = broker.cli("status")
    assert table.rc == 0, table
    for stage in STAGES:
        line = next((ln for ln in table.output.splitlines() if re.search(rf"\b{re.escape(stage)}\b", ln)), None)
        assert line, f"no row for {stage} in:\n{table.output}"
        assert re.search(rf"\b{broker.pid(stage)}\b", line), f"{stage} row does not show its pid: {line!r}"


def test_status_counts_messages(broker):
    s = unique_subject("count")

    async def scenario():
        async with await Client.connect(broker.url) as c:
            await c.subscribe([s])
            for i in range(20):
                await c.publish_ok(s, f"n{i}")
            await c.messages(s, 20)

    run(scenario(), 30)

    def counted():
        rows = {r["stage"]: r for r in broker.status_json()}
        if all(int(rows[st].get("messagesIn") or 0) >= 20 for st in STAGES):
            return rows
        return None

    wait_until(counted, 15, interval=0.5, what="every stage to count at least 20 messages in")


def test_logs_shows_the_stages_own_log(broker):
    for stage in ("cache", "ws-ingress"):
        own = [ln for ln in broker.log_text(stage).splitlines() if ln.strip()]
        assert own, f"{broker.log_path(stage)} is empty"
        r = broker.cli("logs", stage)
        assert r.rc == 0, r
        assert own[-1] in r.output or own[0] in r.output, \
            f"`logs {stage}` does not show {broker.log_path(stage).name}:\n{r.output[-2000:]}"
        r0 = broker.cli("logs", f"{stage}-0")
        assert r0.rc == 0 and (own[-1] in r0.output or own[0] in r0.output), r0
    cache_only = set(broker.log_text("cache").splitlines()) - set(broker.log_text("ws-ingress").splitlines())
    ingress_out = broker.cli("logs", "ws-ingress").output
    assert not any(ln.strip() and ln in ingress_out for ln in cache_only), \
        "`logs ws-ingress` shows lines of the cache's log"


def test_stop_leaves_no_process_behind(make_broker):
    b = make_broker()
    pids = {stage: b.pid(stage) for stage in STAGES}
    assert all(pid_alive(p) for p in pids.values())
    r = b.stop()
    assert r.rc == 0, r
    # stop returns after the stages are gone; allow a moment for the kernel to reap
    wait_until(lambda: not any(pid_alive(p) for p in pids.values()), 3,
               what=f"stage pids {pids} to be gone after stop")
    left = processes_mentioning(str(b.dir))
    assert not left, f"processes left behind after stop: {left}"
    # a second stop is harmless
    again = b.cli("stop", timeout=60)
    assert again.rc == 0, again


def wait_restarted(b, stage: str, old_pid: int) -> dict:
    def restarted():
        row = b.status_row(stage)
        if row and int(row.get("restarts", 0)) >= 1 and int(row.get("pid") or 0) not in (0, old_pid) \
                and pid_alive(int(row["pid"])) and row.get("state", "up") == "up":
            return row
        return None
    return wait_until(restarted, RESTART_TIMEOUT, interval=0.5,
                      what=f"{stage} to be restarted (restarts >= 1, new live pid)")


@pytest.mark.parametrize("stage", ["router", "cache", "fanout"])
def test_kill_9_of_a_pipeline_stage_is_restarted_and_service_resumes(make_broker, stage):
    b = make_broker(PublishTimeout=3)
    s = unique_subject(f"kill-{stage}")

    async def scenario():
        async with await Client.connect(b.url, name="sub") as sub, \
                await Client.connect(b.url, name="pub") as pub:
            await sub.subscribe([s])
            await pub.publish_ok(s, "before")
            assert (await sub.messages(s, 1))[0]["content"] == "before"

            old = b.kill_stage(stage)
            row = await asyncio.to_thread(wait_restarted, b, stage, old)
            assert int(row["restarts"]) >= 1

            # the same connections (subscriptions re-announced) and a new subscriber both get new messages
            late = await Client.connect(b.url, name="late")
            await late.subscribe([s])
            deadline = time.monotonic() + RESTART_TIMEOUT
            i, delivered = 0, False
            while not delivered:
                assert time.monotonic() < deadline, \
                    f"pub/sub did not work again within {RESTART_TIMEOUT:.0f}s after {stage} restarted; " \
                    f"pub saw {summarize(pub.seen[-6:])}; sub saw {summarize(sub.seen[-6:])}"
                i += 1
                content = f"after-{i}"
                try:
                    st = await pub.publish(s, content, closure=content, timeout=4)
                except AssertionError:
                    continue  # no answer yet
                if st["status"] != "OK":
                    await asyncio.sleep(0.5)
                    continue
                try:
                    for c in (sub, late):
                        await c.wait_for(lambda f: f.get("op") == "message" and f.get("content") == content,
                                         timeout=4, what=f"message {content}")
                    delivered = True
                except AssertionError:
                    continue
            await late.close()

    run(scenario(), 90)


def test_kill_9_of_ws_ingress_client_reconnects_and_recovers(make_broker):
    b = make_broker()
    s = unique_subject("kill-ingress")

    async def scenario():
        sub = await Client.connect(b.url, name="sub")
        pub = await Client.connect(b.url, name="pub")
        await sub.subscribe([s])
        for i in range(1, 6):
            await pub.publish_ok(s, f"m{i}")
        msgs = await sub.messages(s, 5)
        epoch, last = msgs[-1]["epoch"], msgs[-1]["seq"]

        old = b.kill_stage("ws-ingress")
        for c in (sub, pub):
            closed = await c.wait_closed(timeout=10)
            assert isinstance(closed, ConnectionClosed)

        # the supervisor brings ws-ingress back; messages published meanwhile are kept by the cache
        pub = await Client.connect(b.url, name="pub2", retry_for=RESTART_TIMEOUT)
        for i in range(6, 9):
            await pub.publish_ok(s, f"m{i}", timeout=15)
        row = await asyncio.to_thread(wait_restarted, b, "ws-ingress", old)
        assert int(row["restarts"]) >= 1

        back = await Client.connect(b.url, name="back", retry_for=RESTART_TIMEOUT)
        await back.subscribe([s], recover={s: {"epoch": epoch, "seq": last}})
        frames = await back.subject_frames_until(s, lambda g: any(f.get("op") == "status" for f in g))
        assert kinds(frames) == [("recovered", 6), ("recovered", 7), ("recovered", 8), ("status", "DATA_SYNC")], \
            summarize(frames)
        await pub.publish_ok(s, "m9")
        live = await back.messages(s, 1)
        assert (live[0]["type"], live[0]["seq"]) == ("update", 9)
        await back.close()
        await pub.close()

    run(scenario(), 90)


def test_unacknowledged_publish_fails_after_publish_timeout(make_broker):
    """A cache that stops answering (SIGSTOP, so the supervisor does not restart it): a publish with a closure
    is answered FAILED once PublishTimeout passes, and works again once the cache runs again."""
    b = make_broker(PublishTimeout=2)
    s = unique_subject("timeout")

    async def scenario():
        async with await Client.connect(b.url, name="pub") as pub:
            await pub.publish_ok(s, "before")
            cache = b.pid("cache")
            os.kill(cache, signal.SIGSTOP)
            try:
                began = time.monotonic()
                st = await pub.publish(s, "stuck", closure="stuck", timeout=10)
                waited = time.monotonic() - began
                assert st["status"] == "FAILED", st
                assert 1.5 <= waited <= 6, f"FAILED after {waited:.1f}s with PublishTimeout = 2"
            finally:
                os.kill(cache, signal.SIGCONT)
            st = await pub.publish(s, "after", closure="after", timeout=10)
            assert st["status"] == "OK", st

    run(scenario(), 40)


def test_status_counts_connections_and_forgets_closed_ones(make_broker):
    b = make_broker()

    def ingress_connections():
        row = b.status_row("ws-ingress")
        return row.get("connections") if row else None

    async def scenario():
        clients = [await Client.connect(b.url, name=f"c{i}") for i in range(20)]
        await asyncio.to_thread(wait_until, lambda: (ingress_connections() or 0) >= 20, 15, 0.5,
                                "ws-ingress to count 20 connections")
        for c in clients:
            await c.close()
        await asyncio.to_thread(wait_until, lambda: ingress_connections() == 0, 15, 0.5,
                                "ws-ingress connections back to 0 after the clients closed")

    run(scenario(), 60)


# The schema of every file in RunDir, as docs/OPERATIONS.md "Files in RunDir" documents it.
SUPERVISOR_STATE_FIELDS = {"supervisorPid": int, "configFile": str, "clusterEngine": str, "updatedAt": (int, float),
                           "instances": dict, "scaled": dict, "swapped": dict, "processes": list}
PROCESS_FIELDS = {"name": str, "stage": str, "instance": int, "pid": (int, type(None)), "state": str,
                  "restarts": int, "binary": str}
STATS_FIELDS = {"stage": str, "instance": int, "pid": int, "ready": bool, "state": str, "startedAt": (int, float),
                "messagesIn": int, "messagesOut": int, "rateIn": (int, float), "rateOut": (int, float)}


def assert_fields(obj, fields: dict, where: str) -> None:
    assert isinstance(obj, dict), f"{where}: not a JSON object"
    for key, kind in fields.items():
        assert key in obj, f"{where}: no '{key}'"
        assert isinstance(obj[key], kind) and not (kind is int and isinstance(obj[key], bool)), \
            f"{where}: '{key}' is {obj[key]!r}"


def test_run_dir_files_match_their_documented_schema(broker):
    run_dir = broker.run_dir
    names = set(os.listdir(run_dir))
    documented = re.compile(r"supervisor\.(json|pid|lock|sock)|topology\.json"
                            r"|(ws-ingress|router|cache|fanout)-\d+\.(ipc|pid|stats\.json|prom|loglevel)|mqtt-sessions|mqtt-takeovers")
    assert all(documented.fullmatch(n) for n in names), f"undocumented files: {sorted(n for n in names if not documented.fullmatch(n))}"

    with open(run_dir / "supervisor.json") as f:
        state = json.load(f)
    assert_fields(state, SUPERVISOR_STATE_FIELDS, "supervisor.json")
    assert state["clusterEngine"] == "none"
    for process in state["processes"]:
        assert_fields(process, PROCESS_FIELDS, f"supervisor.json process {process.get('name')}")
    with open(run_dir / "supervisor.pid") as f:
        assert int(f.read().strip()) == state["supervisorPid"]

    with open(run_dir / "topology.json") as f:
        topology = json.load(f)
    assert topology == state["instances"] and all(isinstance(v, int) for v in topology.values())

    for stage in STAGES:
        for n in range(topology[stage]):
            name = f"{stage}-{n}"
            with open(run_dir / f"{name}.pid") as f:
                pid = int(f.read().strip())
            with open(run_dir / f"{name}.stats.json") as f:
                stats = json.load(f)
            assert_fields(stats, STATS_FIELDS, f"{name}.stats.json")
            assert (stats["stage"], stats["instance"], stats["pid"]) == (stage, n, pid)
            assert f"{name}.ipc" in names

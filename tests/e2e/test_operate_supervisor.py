"""Issue 4, item 6: a supervisor that crashes (kill -9) does not take the stages down: they keep serving a steady
stream; `./switchyard start` then adopts the running stages from their pid files (same pids, no duplicates),
keeps their restart counts, and supervises them again."""

from __future__ import annotations

import asyncio
import os
import signal

from e2e_helpers import STAGES, pid_alive, processes_mentioning, run, wait_until
from operate_fixtures import (PUBLISH_TIMEOUT, cli_async, frozen_bin, kill_and_wait_back,  # noqa: F401  (fixtures)
                              op_broker, run_scenario)
from stream_analyzer import assert_delivery_clean, assert_no_disconnects, pairs


def stage_processes(b) -> dict[str, list[int]]:
    """stage -> pids of live processes started with this stack's config (to spot duplicates)."""
    out: dict[str, list[int]] = {}
    for pid, cmd in processes_mentioning(str(b.conf)):
        exe = cmd.split()[0]
        name = os.path.basename(exe)
        if name in STAGES:
            out.setdefault(name, []).append(pid)
    return out


def test_supervisor_crash_leaves_stages_serving_and_start_adopts_them(op_broker):
    b = op_broker()
    seen: dict = {}

    async def action(stream):
        # one crash first, so there is a restart count to keep
        got = await kill_and_wait_back(b, "fanout")
        seen["fanout_restarts"] = int(got["row"]["restarts"])
        seen["pids"] = {s: b.pid(s) for s in STAGES}
        sup = int((b.run_dir / "supervisor.pid").read_text().split()[0])
        seen["supervisor"] = sup
        os.kill(sup, signal.SIGKILL)
        await asyncio.to_thread(wait_until, lambda: not pid_alive(sup), 10, 0.1, "the supervisor to die")
        seen["killed_at"] = stream.now()
        await asyncio.sleep(3)  # the stages serve on their own
        seen["alive_meanwhile"] = {s: pid_alive(p) for s, p in seen["pids"].items()}
        seen["status_orphaned"] = await cli_async(b, "status")
        seen["start"] = await cli_async(b, "start")
        seen["adopted_at"] = stream.now()

    stream, rep, _ = run(run_scenario(b.url, action, rate=200, before=2, after=4, publish_timeout=PUBLISH_TIMEOUT,
                                      subscribers=200, subjects=20), 90)
    assert seen["fanout_restarts"] == 1
    assert all(seen["alive_meanwhile"].values()), f"stages died with the supervisor: {seen['alive_meanwhile']}"
    orphaned = seen["status_orphaned"]
    assert orphaned.rc == 1 and "supervisor is not running" in orphaned.output, orphaned
    start = seen["start"]
    assert start.rc == 0, start
    new_sup = int((b.run_dir / "supervisor.pid").read_text().split()[0])
    assert new_sup != seen["supervisor"] and pid_alive(new_sup)

    # adopted, not restarted: same pids, one process per stage, restart counts kept
    assert {s: b.pid(s) for s in STAGES} == seen["pids"], "start replaced running stages instead of adopting them"
    procs = stage_processes(b)
    assert {s: sorted(p) for s, p in procs.items()} == {s: [p] for s, p in seen["pids"].items()}, \
        f"duplicate or missing stage processes after start: {procs}"
    rows = {r["stage"]: r for r in b.status_json()}
    assert all(rows[s]["state"] == "up" and int(rows[s]["pid"]) == seen["pids"][s] for s in STAGES), rows
    assert int(rows["fanout"]["restarts"]) == 1, f"fanout's restart count was not kept: {rows['fanout']}"
    assert all(int(rows[s]["restarts"]) == 0 for s in STAGES if s != "fanout"), rows
    assert b.cli("status").rc == 0

    # the stream never noticed
    what = "supervisor kill -9 and adoption"
    assert_delivery_clean(rep, stream, what)
    assert_no_disconnects(rep, what)
    assert rep.failed == 0 and rep.covered == 0 and rep.resyncs == {0: pairs(stream)}, rep.summary()
    ok_while_orphaned = sum(1 for r in stream.records.values()
                            if r.status == "OK" and seen["killed_at"] <= r.t_sent <= seen["adopted_at"])
    assert ok_while_orphaned > 100, f"only {ok_while_orphaned} publishes OK while the supervisor was down"

    # and the adopted stages are supervised again: a crash is noticed and repaired
    router = b.pid("router")
    os.kill(router, signal.SIGKILL)
    row = wait_until(lambda: (lambda r: r if r and r["state"] == "up" and int(r["pid"]) != router else None)(
        b.status_row("router")), 20, what="the new supervisor to restart a killed router")
    assert int(row["restarts"]) == 1, row

"""The supervisor (./switchyard) against fake stages: life cycle, crash handling, commands."""

import json
import os
import re
import selectors
import signal
import subprocess
import time

from supervisor_helpers import SWITCHYARD, alive, wait_for

STANDALONE = ["ws-ingress-0", "router-0", "cache-0", "fanout-0"]


def test_start_returns_once_all_are_ready_then_status_and_stop(stack):
    result = stack.sw("start", config_first=True)
    assert result.returncode == 0, result.stderr
    for name in STANDALONE:  # ready at the moment start returned
        pid = int((stack.run_dir / f"{name}.pid").read_text())
        stats = json.loads((stack.run_dir / f"{name}.stats.json").read_text())
        assert stats["pid"] == pid and stats["ready"] is True and alive(pid)

    table = stack.sw("status", config_first=True)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:5] == ["INSTANCE", "PID", "STATE", "UPTIME", "RESTARTS"]
    assert [line.split()[0] for line in lines[1:]] == STANDALONE
    assert all(line.split()[2] == "up" for line in lines[1:])

    rows = stack.status()
    assert list(rows) == STANDALONE
    row = rows["ws-ingress-0"]
    assert row["state"] == "up" and row["restarts"] == 0 and row["connections"] == 3
    assert row["fake"] is True and row["stageState"] == "ok"  # extra stats keys come through
    assert {"uptime", "rateIn", "rateOut", "queueDepth", "messagesIn", "messagesOut"} <= set(row)

    pids = set(stack.processes())
    assert len(pids) == 5  # supervisor + 4 stages
    stopped = stack.sw("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not any(alive(pid) for pid in pids)
    assert not list(stack.run_dir.glob("*.pid"))

    status = stack.sw("status")
    assert status.returncode == 1 and "not running" in status.stdout
    again = stack.sw("stop")
    assert again.returncode == 0 and "not running" in again.stdout


def test_killed_stage_is_restarted_and_counted(stack):
    assert stack.sw("start").returncode == 0
    old = stack.status()["router-0"]["pid"]
    os.kill(old, signal.SIGKILL)
    assert wait_for(lambda: stack.status()["router-0"]["pid"] not in (None, old) and stack.all_up())
    assert stack.status()["router-0"]["restarts"] == 1
    assert "router-0 killed by signal 9 (SIGKILL)" in stack.log("supervisor")


def test_restart_command_is_not_counted_as_a_crash(stack):
    assert stack.sw("start").returncode == 0
    for target in ("cache", "cache-0"):
        old = stack.status()["cache-0"]["pid"]
        result = stack.sw("restart", target)
        assert result.returncode == 0, result.stderr
        row = stack.status()["cache-0"]
        assert row["state"] == "up" and row["pid"] != old and row["restarts"] == 0
        assert not alive(old)
    assert stack.sw("restart", "cache-3").returncode == 2
    assert stack.sw("restart", "nosuch").returncode == 2


def test_stages_survive_a_supervisor_crash_and_start_adopts_them(stack):
    assert stack.sw("start").returncode == 0
    assert stack.sw("scale", "ws-ingress", "2").returncode == 0
    before = {name: row["pid"] for name, row in stack.status().items()}
    supervisor = stack.supervisor_pid()
    os.kill(supervisor, signal.SIGKILL)
    assert wait_for(lambda: not alive(supervisor))
    assert all(alive(pid) for pid in before.values())
    assert stack.sw("status").returncode == 1  # unsupervised

    result = stack.sw("start")
    assert result.returncode == 0, result.stderr
    assert {name: row["pid"] for name, row in stack.status().items()} == before
    assert len(stack.stage_processes()) == 5  # no duplicates, the scale override was kept
    assert stack.log("supervisor").count("adopted") == 5

    adopted = before["fanout-0"]  # not our child: noticed through /proc
    os.kill(adopted, signal.SIGKILL)
    assert wait_for(lambda: stack.status()["fanout-0"]["pid"] not in (None, adopted) and stack.all_up())
    assert stack.status()["fanout-0"]["restarts"] == 1


def test_loglevel_reaches_the_stage(stack):
    assert stack.sw("start").returncode == 0
    assert stack.sw("loglevel", "router", "debug").returncode == 0
    assert (stack.run_dir / "router-0.loglevel").read_text().strip() == "DEBUG"
    assert wait_for(lambda: "log level now DEBUG" in stack.log("router-0"))
    assert stack.sw("loglevel", "router-0", "WARN").returncode == 0
    assert wait_for(lambda: "log level now WARN" in stack.log("router-0"))
    bad = stack.sw("loglevel", "router", "LOUD")
    assert bad.returncode == 2 and "LOUD" in bad.stderr


def test_reload_is_for_ws_ingress_with_a_tls_listener_only(stack):
    assert stack.sw("start").returncode == 0
    wrong_stage = stack.sw("reload", "router")
    assert wrong_stage.returncode == 2 and "only ws-ingress" in wrong_stage.stderr
    assert stack.sw("reload", "ws-ingress-7").returncode == 2
    no_tls = stack.sw("reload", "ws-ingress")  # the fake stage reports no tlsListeners, like one without TLS
    assert no_tls.returncode == 1
    assert "ws-ingress-0: no TLS listener (ListenEncrypted or ListenMqttEncrypted)" in no_tls.stderr
    assert stack.all_up()


def test_scale_writes_topology_and_runs_n_instances(stack):
    assert stack.sw("start").returncode == 0
    result = stack.sw("scale", "ws-ingress", "3")
    assert result.returncode == 0, result.stderr
    topology = {"ws-ingress": 3, "router": 1, "cache": 1, "fanout": 1}
    assert json.loads((stack.run_dir / "topology.json").read_text()) == topology
    rows = stack.status()
    assert [n for n in rows if n.startswith("ws-ingress")] == ["ws-ingress-0", "ws-ingress-1", "ws-ingress-2"]
    assert all(r["state"] == "up" for r in rows.values())
    assert wait_for(lambda: '"ws-ingress": 3' in stack.log("router-0"))  # SIGHUP, topology re-read

    extra = [rows["ws-ingress-1"]["pid"], rows["ws-ingress-2"]["pid"]]
    assert stack.sw("scale", "ws-ingress", "1").returncode == 0
    assert not any(alive(pid) for pid in extra)
    assert json.loads((stack.run_dir / "topology.json").read_text())["ws-ingress"] == 1
    assert list(stack.status()) == STANDALONE
    assert stack.sw("scale", "kafka-in", "2").returncode == 2  # not part of a standalone stack
    for stage, count, said in (("router", "2", "router runs exactly 1 instance, not 2"),
                               ("cache", "0", "cache runs 1-64 instances, not 0"),
                               ("ws-ingress", "65", "ws-ingress runs 1-64 instances, not 65")):
        refused = stack.sw("scale", stage, count)
        assert refused.returncode == 2 and said in refused.stderr, refused
    assert list(stack.status()) == STANDALONE  # nothing changed


def test_swap_refuses_bad_paths_rolls_back_and_persists(stack, tmp_path):
    assert stack.sw("start").returncode == 0
    plain = tmp_path / "plain"
    plain.write_text("not a program")
    for path in (tmp_path / "missing", plain):
        refused = stack.sw("swap", "router", str(path))
        assert refused.returncode == 2 and "not an executable file" in refused.stderr

    never = stack.link("never-ready-router")
    failed = stack.sw("swap", "router", str(never), env={"SWITCHYARD_START_TIMEOUT": "1.5"})
    assert failed.returncode == 1 and "rolled back" in failed.stderr
    row = stack.status()["router-0"]
    assert row["state"] == "up" and row["binary"] == str(stack.bin / "router")

    v2 = stack.link("v2-router")
    assert stack.sw("swap", "router", str(v2)).returncode == 0
    assert stack.sw("restart", "router").returncode == 0  # restarts keep the swapped binary
    row = stack.status()["router-0"]
    assert row["binary"] == str(v2) and row["restarts"] == 0
    assert str(v2) in stack.processes()[row["pid"]]


def test_stop_kills_an_instance_that_ignores_sigterm(stack):
    stack.env["SWITCHYARD_GRACE"] = "0.5"
    assert stack.sw("start").returncode == 0
    assert stack.sw("swap", "cache", str(stack.link("stubborn-cache"))).returncode == 0
    pids = set(stack.processes())
    assert stack.sw("stop").returncode == 0
    assert not any(alive(pid) for pid in pids)
    assert "SIGTERM ignored" in stack.log("cache-0")
    assert "ignored SIGTERM" in stack.log("supervisor")


def test_bad_config_fails_start_fast_with_file_and_line(stack):
    stack.conf.write_text("Listen = *:8800\nRunDir = var/run\nBogus = 1\n")
    began = time.monotonic()
    result = stack.sw("start")
    assert result.returncode == 2
    assert time.monotonic() - began < 5
    assert result.stderr.strip() == f"switchyard: {stack.conf}:3: parameter 'Bogus': unknown parameter"
    assert not stack.processes()
    missing = stack.sw("status", config=stack.root / "nope.conf")
    assert missing.returncode == 2 and "config file not found" in missing.stderr


def test_start_fails_fast_when_a_stage_executable_is_missing(stack):
    (stack.bin / "fanout").unlink()
    result = stack.sw("start")
    assert result.returncode == 1 and "stage executable missing" in result.stderr
    assert str(stack.bin / "fanout") in result.stderr
    assert not stack.processes()


def test_start_timeout_names_the_late_stage_and_cleans_up(stack):
    result = stack.sw("start", env={"FAKE_NEVER_READY": "cache", "SWITCHYARD_START_TIMEOUT": "1.5"})
    assert result.returncode == 1
    assert "not ready after 1.5s: cache-0 (starting)" in result.stderr
    assert "cache-0 started" in result.stderr  # the tail of its log
    assert "supervisor.log: " in result.stderr and "launched cache-0" in result.stderr
    assert not stack.processes()


def test_crash_loop_backs_off_exponentially(stack):
    result = stack.sw("start", env={"FAKE_CRASH": "cache", "SWITCHYARD_START_TIMEOUT": "2"})
    assert result.returncode == 1 and re.search(r"not ready after 2s: cache-0 \((re)?starting\)", result.stderr)
    log = stack.log("supervisor")
    assert "cache-0 exited with status 3" in log
    for n, delay in enumerate(("0.1", "0.2", "0.4", "0.8"), 1):
        assert f"restart #{n} in {delay}s" in log
    assert not stack.processes()


def test_start_when_already_running(stack):
    assert stack.sw("start").returncode == 0
    again = stack.sw("start")
    assert again.returncode == 0 and "already running" in again.stdout
    assert len(stack.stage_processes()) == 4


def test_two_stacks_side_by_side(make_stack):
    a, b = make_stack("a"), make_stack("b", engine="kafka")
    assert a.sw("start").returncode == 0
    assert b.sw("start").returncode == 0
    assert len(a.status()) == 4 and len(b.status()) == 6
    assert a.all_up() and b.all_up()
    a_pids = set(a.processes())
    assert not a_pids & set(b.processes())
    assert a.sw("stop").returncode == 0
    assert not any(alive(pid) for pid in a_pids)
    assert b.all_up() and len(b.stage_processes()) == 6


def test_run_in_the_foreground_until_sigint(stack):
    run = subprocess.Popen([str(SWITCHYARD), "run", "-c", str(stack.conf)], env=stack.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(stack.all_up)
        pids = set(stack.stage_processes())
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=15) == 0
        assert not any(alive(pid) for pid in pids)
        assert "all 4 instances ready" in run.stderr.read()
    finally:
        run.kill()
        run.wait()


def read_until(proc, text, timeout=10.0):
    """Output of `proc` until it contains `text` (or the timeout passes)."""
    seen, deadline = b"", time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while text.encode() not in seen and time.monotonic() < deadline:
            if selector.select(timeout=0.2):
                seen += os.read(proc.stdout.fileno(), 65536)
    return seen.decode()


def test_logs_prints_and_follows(stack):
    assert stack.sw("start").returncode == 0
    assert "router-0 started" in stack.sw("logs", "router").stdout
    assert len(stack.sw("logs", "router-0", "-n", "1").stdout.splitlines()) == 1
    assert stack.sw("logs", "nosuch").returncode == 2

    follow = subprocess.Popen([str(SWITCHYARD), "logs", "router", "-f", "-c", str(stack.conf)], env=stack.env,
                              stdout=subprocess.PIPE)
    try:
        assert "router-0 started" in read_until(follow, "router-0 started")
        assert stack.sw("loglevel", "router", "error").returncode == 0
        assert "log level now ERROR" in read_until(follow, "log level now ERROR")
    finally:
        follow.kill()
        follow.wait()

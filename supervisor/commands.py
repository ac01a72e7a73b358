"""One function per command: cmd_NAME(cfg, args) -> exit status. `start` runs the supervisor in the background
(`run --daemon`) and waits for readiness; `restart`, `scale` and `swap` go through the control socket; the
others read RunDir's files and signal the stages directly."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

from .common import (EXIT_FAIL, EXIT_LOCKED, EXIT_OK, EXIT_USAGE, KILL_WAIT, SCRIPT, TICK, SwitchyardError,
                     UsageError, default_binary, grace_seconds, is_executable_file, is_whole_number, start_timeout,
                     wait_until)
from .config import Config, check_stage, instance_name, parse_target
from .control import send_command
from .loop import Supervisor
from .processes import spawn_logged, stage_process, terminate_all
from .runfiles import (PID_FILE, acquire_lock, current_stats, is_ready, load_state, log_fields, prepare_dirs,
                       read_pid, remove, remove_supervisor_files, state_dict, supervisor_locked, supervisor_pid,
                       tail_bytes, tail_text, write_atomic)
from .status import (configuration_failure_report, expected_instances, format_table, instance_rows,
                     not_ready_report, recorded_process)

LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR")


def check_binaries(cfg: Config) -> None:
    """Fails fast when a stage executable is missing (swap overrides saved by a crashed supervisor count)."""
    swapped = state_dict(load_state(cfg), "swapped")
    missing = [b for b in (swapped.get(s) or default_binary(s) for s in cfg.stages) if not is_executable_file(b)]
    if missing:
        raise SwitchyardError(f"stage executable missing: {', '.join(missing)} "
                              "(build the stages or set SWITCHYARD_BIN)")


def stop_stack(cfg: Config) -> bool:
    """Stops the supervisor (which stops its stages, upstream first), then any stage instance still
    named by a pid file (e.g. after the supervisor died). Returns whether anything was running."""
    state = load_state(cfg)
    grace = grace_seconds()
    found = False
    pid = supervisor_pid(cfg)
    if pid is not None:
        found = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        budget = grace * len(cfg.every_stage_start_order) + KILL_WAIT + 5
        if not wait_until(lambda: not supervisor_locked(cfg), budget, interval=0.1):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not supervisor_locked(cfg), KILL_WAIT)
    found = stop_leftover_stages(cfg, state, grace) or found
    remove_supervisor_files(cfg)
    return found


PID_FILE_RE = re.compile(r"^(?P<stage>[a-z-]+)-(?P<n>\d+)\.pid$")


def stop_leftover_stages(cfg: Config, state: dict, grace: float) -> bool:
    swapped = state_dict(state, "swapped")
    by_stage: dict[str, list[tuple[int, str]]] = {}
    for entry in os.listdir(cfg.run_dir):
        match = PID_FILE_RE.match(entry)
        if match and match["stage"] in cfg.every_stage_start_order:
            by_stage.setdefault(match["stage"], []).append((int(match["n"]), cfg.run_file(entry)))
    found = False
    for stage in reversed(cfg.every_stage_start_order):
        binary = swapped.get(stage) or default_binary(stage)
        procs = [p for n, path in by_stage.get(stage, [])
                 if (p := stage_process(read_pid(path), stage, n, cfg.file, binary)) is not None]
        if procs:
            found = True
            terminate_all(procs, grace)
        for _, path in by_stage.get(stage, []):
            remove(path)
    return found


def spawn_supervisor(cfg: Config) -> subprocess.Popen:
    """Runs `./switchyard run --daemon` in its own session, its output appended to supervisor.log."""
    return spawn_logged([sys.executable, SCRIPT, "run", "--daemon", "-c", cfg.file], os.path.dirname(cfg.file),
                        cfg.log_file("supervisor"))


def report_running(cfg: Config, pid: int) -> int:
    print(f"switchyard: already running (supervisor pid {pid})")
    waiting = [r for r in instance_rows(cfg, load_state(cfg), True) if r["state"] != "up"]
    if not waiting:
        return EXIT_OK
    print("switchyard: not up: " + ", ".join(f"{r['name']} ({r['state']})" for r in waiting), file=sys.stderr)
    return EXIT_FAIL


def cmd_start(cfg: Config, args) -> int:
    pid = supervisor_pid(cfg)
    if pid is not None:
        return report_running(cfg, pid)
    check_binaries(cfg)
    prepare_dirs(cfg)
    timeout, began = start_timeout(), time.monotonic()
    daemon = spawn_supervisor(cfg)
    while daemon.poll() is None:
        state = load_state(cfg)
        rows = instance_rows(cfg, state, True) if state.get("supervisorPid") == daemon.pid else []
        if failed := [r["name"] for r in rows if r["state"] == "failed"]:
            print(configuration_failure_report(cfg, failed), file=sys.stderr)
            stop_stack(cfg)
            return EXIT_USAGE
        if rows and all(r["state"] == "up" for r in rows):
            print(f"switchyard: started {len(rows)} instances in {time.monotonic() - began:.1f}s "
                  f"(supervisor pid {daemon.pid})")
            return EXIT_OK
        if time.monotonic() - began > timeout:
            waiting = [(r["name"], r["state"]) for r in rows if r["state"] != "up"] or [("supervisor", "starting")]
            print(not_ready_report(cfg, waiting, timeout), file=sys.stderr)
            stop_stack(cfg)
            return EXIT_FAIL
        time.sleep(TICK)
    if daemon.returncode == EXIT_LOCKED and (pid := supervisor_pid(cfg)) is not None:
        return report_running(cfg, pid)  # another start won the race
    stop_stack(cfg)
    log_path = cfg.log_file("supervisor")
    print(f"switchyard: the supervisor exited with status {daemon.returncode} while starting; "
          f"last lines of {log_path}:", file=sys.stderr)
    print("\n".join(tail_text(log_path, 20)), file=sys.stderr)
    return EXIT_FAIL


def make_logger(cfg: Config, foreground: bool) -> logging.Logger:
    """Logs to stderr; the background supervisor's stderr is supervisor.log, the foreground one also
    writes there."""
    log = logging.getLogger("switchyard")
    log.setLevel(logging.INFO)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if foreground:
        handlers.append(logging.FileHandler(cfg.log_file("supervisor")))
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    for handler in handlers:
        handler.setFormatter(formatter)
        log.addHandler(handler)
    return log


def cmd_run(cfg: Config, args) -> int:
    check_binaries(cfg)
    prepare_dirs(cfg)
    lock_fd = acquire_lock(cfg)
    if lock_fd is None:
        if args.daemon:
            return EXIT_LOCKED
        raise SwitchyardError(f"already running (supervisor pid {supervisor_pid(cfg)}); stop it first")
    write_atomic(cfg.run_file(PID_FILE), f"{os.getpid()}\n")
    log = make_logger(cfg, foreground=not args.daemon)
    supervisor = Supervisor(cfg, log, grace_seconds(), start_timeout())
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: supervisor.shutdown.set())
    log.info("supervisor %d starting (config %s)", os.getpid(), cfg.file)
    deadline = None if args.daemon else time.monotonic() + supervisor.start_timeout
    return supervisor.serve(deadline)


def cmd_stop(cfg: Config, args) -> int:
    running = os.path.isdir(cfg.run_dir) and stop_stack(cfg)
    print("switchyard: stopped" if running else "switchyard: not running")
    return EXIT_OK


def cmd_status(cfg: Config, args) -> int:
    supervised = supervisor_pid(cfg) is not None
    rows = instance_rows(cfg, load_state(cfg), supervised)
    running = supervised or any(r["pid"] for r in rows)
    if args.json:
        print(json.dumps(rows if running else [], indent=2))
    elif running:
        print(format_table(rows))
    if not running:
        print("switchyard: not running", file=sys.stderr if args.json else sys.stdout)
        return EXIT_FAIL
    if not supervised:
        print("switchyard: the supervisor is not running (start adopts the running stages)", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK if all(r["state"] == "up" for r in rows) else EXIT_FAIL


def follow(f, path: str, out) -> None:
    """Copies what is appended to the log until interrupted, like tail -F: reopens the file when the
    stage rotates it (new inode) and starts over when it is truncated."""
    while True:
        chunk = f.read(65536)
        if chunk:
            out.write(chunk)
            out.flush()
            continue
        time.sleep(0.2)
        try:
            current = os.stat(path)
        except FileNotFoundError:
            continue  # between rotation and re-creation
        if current.st_ino != os.fstat(f.fileno()).st_ino:
            out.write(f.read())  # whatever reached the old file after our last read
            f.close()
            f = open(path, "rb")
        elif current.st_size < f.tell():
            f.seek(0)


def cmd_logs(cfg: Config, args) -> int:
    stage, n = parse_target(args.target, cfg.stages)
    name = instance_name(stage, n or 0)
    if args.lines is not None and args.lines < 0:
        raise UsageError("-n needs a number of lines >= 0")
    path = cfg.log_file(name)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise SwitchyardError(f"no log for {name} ({path})")
    out = sys.stdout.buffer
    lines = args.lines if args.lines is not None or not args.follow else 10
    try:
        with f:
            out.write(tail_bytes(f, lines))
            out.flush()
            if args.follow:
                follow(f, path, out)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def target_records(cfg: Config, target: str, stage: str, n) -> list[dict]:
    """The instance records STAGE[-N] names (all of STAGE when `n` is None); usage error when there is none."""
    records = [r for r in expected_instances(cfg, load_state(cfg))
               if r["stage"] == stage and (n is None or r["instance"] == n)]
    if not records:
        raise UsageError(f"{target}: no such instance")
    return records


def cmd_loglevel(cfg: Config, args) -> int:
    level = args.level.upper()
    if level not in LEVELS:
        raise UsageError(f"unknown log level {args.level!r} (use {', '.join(LEVELS)})")
    stage, n = parse_target(args.target, cfg.stages)
    not_up = []
    for record in target_records(cfg, args.target, stage, n):
        name = instance_name(stage, record["instance"])
        proc = recorded_process(cfg, record)
        if proc is None or not is_ready(cfg, name, proc.pid):
            not_up.append(name)
            continue
        write_atomic(cfg.run_file(f"{name}.loglevel"), level + "\n")
        proc.signal(signal.SIGUSR1)
    if not_up:
        raise SwitchyardError(f"not up, log level unchanged: {', '.join(not_up)}")
    print(f"switchyard: {args.target} log level set to {level}")
    return EXIT_OK


RELOAD_TIMEOUT = 10.0  # seconds to wait for every instance to report its certificate reload


def stats_count(stats: dict, key: str) -> int:
    value = stats.get(key)
    return value if is_whole_number(value) else 0


def last_reload_error(cfg: Config, name: str) -> str:
    """The reason in the instance's last `TLS reload failed` log line."""
    lines = [l for l in tail_text(cfg.log_file(name), 200) if "TLS reload failed" in l]
    if not lines:
        return f"see {cfg.log_file(name)}"
    return log_fields(lines[-1]).get("error", lines[-1])


def cmd_reload(cfg: Config, args) -> int:
    """SIGUSR2 makes a ws-ingress instance read its certificate and key again; its stats file counts the
    reloads it tried (tlsReloads) and those that failed (tlsReloadFailures)."""
    stage, n = parse_target(args.target, cfg.stages)
    if stage != "ws-ingress":
        raise UsageError("only ws-ingress reloads (its TLS certificate and key)")
    problems, waiting = [], {}  # waiting: name -> (pid, reloads and failures before the signal)
    for record in target_records(cfg, args.target, stage, n):
        name = instance_name(stage, record["instance"])
        proc = recorded_process(cfg, record)
        stats = current_stats(cfg, name, proc.pid) if proc else None
        if stats is None or stats.get("ready") is not True:
            problems.append(f"{name}: not up, not reloaded")
        elif not stats_count(stats, "tlsListeners"):
            problems.append(f"{name}: no TLS listener (ListenEncrypted or ListenMqttEncrypted), nothing to reload")
        else:
            waiting[name] = (proc.pid, stats_count(stats, "tlsReloads"), stats_count(stats, "tlsReloadFailures"))
            proc.signal(signal.SIGUSR2)
    reloaded, deadline = 0, time.monotonic() + RELOAD_TIMEOUT
    while waiting and time.monotonic() < deadline:
        time.sleep(TICK)
        for name, (pid, reloads, failures) in list(waiting.items()):
            stats = current_stats(cfg, name, pid)
            if stats is None or stats_count(stats, "tlsReloads") <= reloads:
                continue
            del waiting[name]
            if stats_count(stats, "tlsReloadFailures") > failures:
                problems.append(f"{name}: still serving the previous certificate: {last_reload_error(cfg, name)}")
            else:
                reloaded += 1
    problems += [f"{name}: no answer within {RELOAD_TIMEOUT:g}s" for name in waiting]
    if problems:
        raise SwitchyardError("reload failed:\n  " + "\n  ".join(problems))
    print(f"switchyard: {args.target}: TLS certificate and key reloaded ({reloaded} instances)")
    return EXIT_OK


def cmd_restart(cfg: Config, args) -> int:
    stage, n = parse_target(args.target, cfg.stages)
    return send_command(cfg, {"cmd": "restart", "stage": stage, "instance": n})


def cmd_scale(cfg: Config, args) -> int:
    check_stage(cfg, args.stage)
    if refusal := cfg.count_refusal(args.stage, args.count):
        raise UsageError(refusal)
    return send_command(cfg, {"cmd": "scale", "stage": args.stage, "count": args.count})


def cmd_swap(cfg: Config, args) -> int:
    check_stage(cfg, args.stage)
    path = os.path.abspath(args.path)  # not realpath: the identity check uses the name it is run by
    if not is_executable_file(path):
        raise UsageError(f"{args.path}: not an executable file")
    return send_command(cfg, {"cmd": "swap", "stage": args.stage, "binary": path})

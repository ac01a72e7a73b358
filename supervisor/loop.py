"""The supervisor itself (run in the foreground by `run`, in the background by `start`): launches or adopts every
stage instance downstream-first, restarts those that die with backoff, keeps supervisor.json and topology.json,
and carries out restart/scale/swap requests from the control socket."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from .common import (EXIT_FAIL, EXIT_OK, EXIT_USAGE, TICK, SwitchyardError, UsageError, default_binary,
                     is_executable_file, wait_until)
from .config import Config, instance_name
from .control import ControlServer
from .processes import Proc, process_uptime, spawn_logged, stage_process, terminate_all
from .runfiles import (STATE_FILE, TOPOLOGY_FILE, load_state, is_ready, read_pid, remove, remove_supervisor_files,
                       state_dict, write_atomic)
from .status import configuration_failure_report, not_ready_report

BACKOFF_MIN, BACKOFF_MAX, BACKOFF_RESET = 0.1, 10.0, 30.0


def spawn_stage(cfg: Config, stage: str, n: int, binary: str) -> subprocess.Popen:
    """Launches an instance in its own session (a supervisor crash leaves it running), output appended
    to its log file."""
    return spawn_logged([binary, "-c", cfg.file, "--instance", str(n)], os.path.dirname(cfg.file),
                        cfg.log_file(instance_name(stage, n)))


@dataclass
class Instance:
    """One stage instance as the supervisor tracks it; fields are guarded by Supervisor.lock."""

    stage: str
    n: int
    restarts: int = 0
    binary: str = ""
    proc: Optional[Proc] = None
    state: str = "down"  # down | starting | up | restarting | stopping
    launched_at: float = 0.0  # time.monotonic() of the launch (for an adopted process: of its start)
    restart_at: float = 0.0
    backoff: float = BACKOFF_MIN
    busy: bool = False  # a command is stopping/starting it: the monitor leaves it alone

    @property
    def name(self) -> str:
        return instance_name(self.stage, self.n)


class Supervisor:
    """Launches or adopts the instances of one stack, restarts those that die, persists its view in
    supervisor.json and carries out restart/scale/swap requests from the control socket.

    The main thread calls tick() every TICK seconds (crash detection, restarts with backoff, readiness,
    staged start-up). Each control connection gets a thread. `lock` guards instance fields and is only
    held briefly; `command_lock` lets one command (or the final shutdown) run at a time, so a command
    can wait for a stop or for readiness without holding `lock`. An instance a command works on is
    marked busy, so the monitor neither reaps it nor counts its stop as a crash."""

    def __init__(self, cfg: Config, log: logging.Logger, grace: float, timeout: float):
        self.cfg, self.log, self.grace, self.start_timeout = cfg, log, grace, timeout
        self.lock = threading.RLock()
        self.command_lock = threading.Lock()
        self.shutdown = threading.Event()
        self.started = threading.Event()  # every stage has been launched
        saved = load_state(cfg)  # left by a supervisor that died: keep its overrides and counts
        self.scaled = {s: c for s, c in state_dict(saved, "scaled").items()
                       if s in cfg.stages and cfg.count_refusal(s, c) is None}
        self.swapped = {s: b for s, b in state_dict(saved, "swapped").items()
                        if s in cfg.stages and isinstance(b, str)}
        restarts = {p.get("name"): p.get("restarts") for p in saved.get("processes") or [] if isinstance(p, dict)}
        self.instances = {
            s: [Instance(s, n, restarts=self._int(restarts.get(instance_name(s, n)))) for n in range(self.count(s))]
            for s in cfg.stages}
        self.pending = list(cfg.start_order)  # stages not launched yet
        self.launching: Optional[str] = None
        self.launching_since = 0.0
        self.all_up = False
        self.dirty = True  # supervisor.json is behind
        self.persist_failing = False

    @staticmethod
    def _int(value) -> int:
        return value if isinstance(value, int) and value >= 0 else 0

    def count(self, stage: str) -> int:
        return self.scaled.get(stage, self.cfg.instances[stage])

    def binary_for(self, stage: str) -> str:
        return self.swapped.get(stage) or default_binary(stage)

    def all_instances(self) -> list[Instance]:
        return [i for s in self.cfg.stages for i in self.instances[s]]

    def pid_file(self, inst: Instance) -> str:
        return self.cfg.run_file(f"{inst.name}.pid")

    # -- main loop ----------------------------------------------------------------------------------

    def serve(self, deadline: Optional[float] = None) -> int:
        """Runs until shutdown is set, then stops every instance. With a `deadline` (monotonic time, for
        the foreground `run`) gives up and returns 1 if not every instance is up by then."""
        code = EXIT_OK
        with self.lock:
            self.write_topology()
            self.persist()
        server = ControlServer(self)
        try:
            while not self.shutdown.is_set():
                self.tick()
                if self.all_up:
                    deadline = None
                elif deadline is not None and (failed := [i.name for i in self.all_instances()
                                                          if i.state == "failed"]):
                    print(configuration_failure_report(self.cfg, failed), file=sys.stderr)
                    code = EXIT_USAGE
                    break
                elif deadline is not None and time.monotonic() > deadline:
                    waiting = [(i.name, i.state) for i in self.all_instances() if i.state != "up"]
                    print(not_ready_report(self.cfg, waiting, self.start_timeout), file=sys.stderr)
                    code = EXIT_FAIL
                    break
                self.shutdown.wait(TICK)
        finally:
            server.close()
            self.stop_all()
        return code

    def tick(self) -> None:
        now = time.monotonic()
        with self.lock:
            for inst in self.all_instances():
                if not inst.busy:
                    self.watch(inst, now)
            self.advance_startup(now)
            all_up = not self.pending and all(i.state == "up" for i in self.all_instances())
            if all_up and not self.all_up:
                self.log.info("all %d instances ready", len(self.all_instances()))
            self.all_up = all_up
            if self.dirty:
                self.persist()

    def watch(self, inst: Instance, now: float) -> None:
        if inst.state == "starting" and not inst.proc.alive() and inst.proc.exit_code() == EXIT_USAGE:
            # Exit status 2 before ever being ready: the stage refused its configuration (e.g. a Kafka
            # properties file). Restarting cannot help; `start` and `run` report it and give up.
            inst.proc, inst.state = None, "failed"
            remove(self.pid_file(inst))
            self.dirty = True
            self.log.error("%s refused its configuration (exit status 2); not restarted", inst.name)
        elif inst.state in ("starting", "up") and not inst.proc.alive():
            if now - inst.launched_at >= BACKOFF_RESET:
                inst.backoff = BACKOFF_MIN
            self.schedule_restart(inst, f"{inst.proc.exit_description()} after {now - inst.launched_at:.1f}s")
        elif inst.state == "starting" and is_ready(self.cfg, inst.name, inst.proc.pid):
            inst.state = "up"
            self.dirty = True
            self.log.info("%s ready (pid %d) after %.1fs", inst.name, inst.proc.pid, now - inst.launched_at)
        elif inst.state == "restarting" and now >= inst.restart_at:
            self.launch(inst)

    def advance_startup(self, now: float) -> None:
        """Launches the stages in start order, each once the previous one is up (or had the start
        timeout to get there), so downstream stages are listening before upstream ones send."""
        while self.pending and self.stage_settled(self.launching, now):
            self.launching, self.launching_since = self.pending.pop(0), now
            for inst in self.instances[self.launching]:
                self.adopt_or_launch(inst)
        if not self.pending:
            self.started.set()

    def stage_settled(self, stage: Optional[str], now: float) -> bool:
        if stage is None or now - self.launching_since > self.start_timeout:
            return True
        return all(i.state == "up" for i in self.instances[stage])

    # -- instance life cycle (callers hold self.lock) ----------------------------------------------

    def adopt_or_launch(self, inst: Instance) -> None:
        """Adopts the instance a previous supervisor left running (per its pid file), else launches it."""
        inst.binary = self.binary_for(inst.stage)
        pid = read_pid(self.pid_file(inst))
        proc = stage_process(pid, inst.stage, inst.n, self.cfg.file, inst.binary)
        if proc is None:
            self.launch(inst)
            return
        inst.proc, inst.state = proc, "starting"
        inst.launched_at = time.monotonic() - (process_uptime(proc.pid) or 0.0)
        self.dirty = True
        self.log.info("adopted %s (pid %d)", inst.name, proc.pid)

    def launch(self, inst: Instance) -> None:
        inst.binary = self.binary_for(inst.stage)
        try:
            popen = spawn_stage(self.cfg, inst.stage, inst.n, inst.binary)
        except OSError as e:
            remove(self.pid_file(inst))
            self.schedule_restart(inst, f"could not be launched: {e}")
            return
        inst.proc, inst.state, inst.launched_at = Proc(popen.pid, popen), "starting", time.monotonic()
        try:
            write_atomic(self.pid_file(inst), f"{popen.pid}\n")
        except OSError as e:
            self.log.error("%s: cannot write its pid file: %s", inst.name, e)
        self.dirty = True
        self.log.info("launched %s (pid %d, %s)", inst.name, popen.pid, inst.binary)

    def schedule_restart(self, inst: Instance, reason: str) -> None:
        inst.restarts += 1
        inst.proc, inst.state = None, "restarting"
        delay = inst.backoff
        inst.restart_at = time.monotonic() + delay
        inst.backoff = min(delay * 2, BACKOFF_MAX)
        remove(self.pid_file(inst))
        self.dirty = True
        self.log.warning("%s %s; restart #%d in %.1fs", inst.name, reason, inst.restarts, delay)

    def write_topology(self) -> None:
        write_atomic(self.cfg.run_file(TOPOLOGY_FILE),
                     json.dumps({s: len(self.instances[s]) for s in self.cfg.stages}) + "\n")

    def persist(self) -> None:
        processes = [{"name": i.name, "stage": i.stage, "instance": i.n, "pid": i.proc.pid if i.proc else None,
                      "state": i.state, "restarts": i.restarts, "binary": i.binary or self.binary_for(i.stage)}
                     for i in self.all_instances()]
        state = {"supervisorPid": os.getpid(), "configFile": self.cfg.file, "clusterEngine": self.cfg.engine,
                 "updatedAt": time.time(), "instances": {s: len(self.instances[s]) for s in self.cfg.stages},
                 "scaled": self.scaled, "swapped": self.swapped, "processes": processes}
        try:
            write_atomic(self.cfg.run_file(STATE_FILE), json.dumps(state, indent=1) + "\n")
        except OSError as e:  # e.g. disk full: keep supervising, retry on the next tick
            if not self.persist_failing:
                self.log.error("cannot save the state (will retry): %s", e)
            self.persist_failing = True
            return
        if self.persist_failing:
            self.log.info("state saved again")
        self.persist_failing = self.dirty = False

    # -- stopping -----------------------------------------------------------------------------------

    def terminate(self, label: str, procs: list[Proc]) -> None:
        killed = terminate_all(procs, self.grace)
        if killed:
            self.log.warning("%s: %d process(es) ignored SIGTERM for %.1fs: killed", label, len(killed), self.grace)

    def stop_all(self) -> None:
        """Stops every instance, upstream first, and removes the supervisor's files."""
        self.shutdown.set()
        with self.command_lock:  # a running command notices shutdown and returns promptly
            for stage in reversed(self.cfg.start_order):
                with self.lock:
                    insts = list(self.instances[stage])
                    for inst in insts:
                        inst.busy, inst.state = True, "stopping"
                procs = [i.proc for i in insts if i.proc is not None]
                if procs:
                    self.log.info("stopping %s", stage)
                    self.terminate(stage, procs)
                for inst in insts:
                    remove(self.pid_file(inst))
            remove_supervisor_files(self.cfg)
        self.log.info("supervisor stopped")

    # -- commands from the control socket -----------------------------------------------------------

    def execute(self, request: dict, progress: Callable[[str], None]) -> tuple[int, str]:
        """Carries out one control request; returns (exit code, message) for the client."""
        handlers = {"restart": self.cmd_restart, "scale": self.cmd_scale, "swap": self.cmd_swap}
        handler = handlers.get(request.get("cmd"))
        stage = request.get("stage")
        if handler is None or stage not in self.cfg.stages:
            return EXIT_USAGE, f"bad request {json.dumps(request)}"
        timeout = request.get("timeout")
        timeout = float(timeout) if isinstance(timeout, (int, float)) and timeout >= 0 else self.start_timeout
        if not wait_until(self.started.is_set, timeout, abort=self.shutdown):
            return EXIT_FAIL, "the supervisor is still starting the stack; try again"
        with self.command_lock:
            if self.shutdown.is_set():
                return EXIT_FAIL, "the supervisor is stopping"
            self.log.info("command: %s", json.dumps(request))
            try:
                code, message = handler(request, timeout, progress)
            except SwitchyardError as e:
                code, message = e.code, str(e)
        self.log.info("command %s: %s", "done" if code == EXIT_OK else "failed", message)
        return code, message

    def targets(self, stage: str, n) -> list[Instance]:
        with self.lock:
            insts = list(self.instances[stage])
        if n is None:
            if not insts:
                raise UsageError(f"{stage} has no instances")
            return insts
        if not isinstance(n, int) or not 0 <= n < len(insts):
            raise UsageError(f"{stage}-{n}: no such instance ({stage} runs {len(insts)})")
        return [insts[n]]

    def cmd_restart(self, request: dict, timeout: float, progress) -> tuple[int, str]:
        insts = self.targets(request["stage"], request.get("instance"))
        for inst in insts:
            progress(f"restarting {inst.name}")
            if not self.restart_instance(inst, timeout):
                return EXIT_FAIL, f"{inst.name} not ready within {timeout:g}s (see {self.cfg.log_file(inst.name)})"
        return EXIT_OK, f"restarted {', '.join(i.name for i in insts)}"

    def cmd_scale(self, request: dict, timeout: float, progress) -> tuple[int, str]:
        stage, count = request["stage"], request.get("count")
        if refusal := self.cfg.count_refusal(stage, count):
            raise UsageError(refusal)
        with self.lock:
            current = self.instances[stage]
            added = [Instance(stage, n) for n in range(len(current), count)]
            removed = current[count:]
            self.instances[stage] = current[:count] + added
            if count == self.cfg.instances[stage]:
                self.scaled.pop(stage, None)
            else:
                self.scaled[stage] = count
            self.write_topology()
            for inst in added:
                self.launch(inst)
            self.dirty = True
        ready = self.wait_up(added, timeout)
        for inst in reversed(removed):
            progress(f"stopping {inst.name}")
            if inst.proc is not None:
                self.terminate(inst.name, [inst.proc])
            for suffix in ("pid", "stats.json", "prom"):
                remove(self.cfg.run_file(f"{inst.name}.{suffix}"))
        notified = self.signal_up(signal.SIGHUP)
        if not ready:
            late = ", ".join(i.name for i in added if i.state != "up")
            return EXIT_FAIL, f"{stage} scaled to {count}, but {late} not ready within {timeout:g}s"
        return EXIT_OK, f"{stage} scaled to {count} ({notified} instances sent SIGHUP)"

    def cmd_swap(self, request: dict, timeout: float, progress) -> tuple[int, str]:
        stage, binary = request["stage"], request.get("binary")
        if not isinstance(binary, str) or not is_executable_file(binary):
            raise UsageError(f"{binary}: not an executable file")
        insts = self.targets(stage, None)
        old = self.binary_for(stage)
        self.set_binary(stage, binary)
        for inst in insts:
            progress(f"restarting {inst.name} with {binary}")
            if not self.restart_instance(inst, timeout):
                progress(f"{inst.name} not ready within {timeout:g}s: rolling back to {old}")
                self.set_binary(stage, old)
                restored = [self.restart_instance(i, timeout) for i in self.targets(stage, None) if i.binary != old]
                tail = "" if all(restored) else " (the old binary is not ready yet either)"
                return EXIT_FAIL, f"{stage}: {binary} was not ready within {timeout:g}s; rolled back to {old}{tail}"
        return EXIT_OK, f"{stage} now runs {binary}"

    def set_binary(self, stage: str, binary: str) -> None:
        with self.lock:
            if binary == default_binary(stage):
                self.swapped.pop(stage, None)
            else:
                self.swapped[stage] = binary
            self.dirty = True

    def restart_instance(self, inst: Instance, timeout: float) -> bool:
        """Graceful stop and fresh launch (with the stage's current binary), not counted as a crash;
        returns whether the new process is ready within `timeout`."""
        with self.lock:
            inst.busy, inst.state = True, "restarting"
            proc, self.dirty = inst.proc, True
        try:
            if proc is not None:
                self.terminate(inst.name, [proc])
            with self.lock:
                if self.shutdown.is_set():
                    return False
                self.launch(inst)
        finally:
            with self.lock:
                inst.busy = False
        return self.wait_up([inst], timeout)

    def wait_up(self, insts: list[Instance], timeout: float) -> bool:
        def up() -> bool:
            with self.lock:
                return all(i.state == "up" for i in insts)
        return wait_until(up, timeout, abort=self.shutdown)

    def signal_up(self, signum: int) -> int:
        """Sends `signum` to every ready instance (only those have their handlers installed)."""
        with self.lock:
            return sum(1 for i in self.all_instances()
                       if i.state == "up" and not i.busy and i.proc.signal(signum))

"""Stage processes: who a pid is (from /proc), signals and termination, launching with output to a log file."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Iterable, Optional

from .common import KILL_WAIT, SCRIPT, wait_until


def proc_stat(pid: int) -> Optional[tuple[str, int]]:
    """(state letter, start time in clock ticks after boot) of process `pid`, None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 2:].split()
        return fields[0].decode(), int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def proc_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")] if raw else []


def process_uptime(pid: int) -> Optional[float]:
    stat = proc_stat(pid)
    try:
        with open("/proc/uptime") as f:
            now = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, now - stat[1] / os.sysconf("SC_CLK_TCK")) if stat else None


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Proc:
    """A stage process: launched by this supervisor (`popen` set: we reap it and learn its exit status)
    or found through a pid file. The latter is identified by pid *and* start time, so a recycled pid
    never passes for it, and a zombie counts as gone."""

    def __init__(self, pid: int, popen: Optional[subprocess.Popen] = None):
        self.pid = pid
        self.popen = popen
        stat = proc_stat(pid)
        self.start_ticks = stat[1] if stat else None

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        stat = proc_stat(self.pid)
        return stat is not None and stat[0] != "Z" and stat[1] == self.start_ticks

    def signal(self, signum: int) -> bool:
        """Sends `signum` if the process is still there; returns whether it was."""
        if not self.alive():
            return False
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def exit_code(self) -> Optional[int]:
        """The exit status of a process this supervisor launched and reaped; None otherwise."""
        return self.popen.returncode if self.popen is not None else None

    def exit_description(self) -> str:
        code = self.exit_code()
        if code is None:
            return "exited (status unknown: adopted process)"
        if code < 0:
            return f"killed by signal {-code} ({signal_name(-code)})"
        return f"exited with status {code}"


def terminate_all(procs: Iterable[Proc], grace: float) -> list[Proc]:
    """SIGTERM to every process, SIGKILL to those still there after `grace` seconds; waits until they
    are gone. Returns the processes that needed SIGKILL."""
    procs = [p for p in procs if p.signal(signal.SIGTERM)]
    if wait_until(lambda: not any(p.alive() for p in procs), grace):
        return []
    killed = [p for p in procs if p.signal(signal.SIGKILL)]
    wait_until(lambda: not any(p.alive() for p in killed), KILL_WAIT)
    return killed


def _values_after(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i in range(len(argv) - 1) if argv[i] == flag]


def stage_process(pid: Optional[int], stage: str, n: int, config_file: str, binary: str) -> Optional[Proc]:
    """The live process `pid` if its command line shows instance `n` of `stage` for this config (the
    binary's or stage's name, `--instance n`, `-c config`), else None."""
    if pid is None:
        return None
    argv = proc_cmdline(pid)
    names = {stage, os.path.basename(binary)}
    config = os.path.realpath(config_file)
    if not (any(os.path.basename(a) in names for a in argv)
            and str(n) in _values_after(argv, "--instance")
            and any(os.path.realpath(c) == config for c in _values_after(argv, "-c"))):
        return None
    proc = Proc(pid)
    return proc if proc.alive() else None


def spawn_logged(argv: list[str], cwd: str, log_path: str) -> subprocess.Popen:
    """Launches `argv` in its own session (a supervisor crash leaves it running), stdin from /dev/null,
    stdout and stderr appended to `log_path` (made 0600)."""
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        return subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                                start_new_session=True)
    finally:
        os.close(log_fd)


def is_supervisor_process(pid: int) -> bool:
    argv = proc_cmdline(pid)
    return "run" in argv and any(os.path.basename(a) == os.path.basename(SCRIPT) for a in argv)

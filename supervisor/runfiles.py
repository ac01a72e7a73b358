"""The files in RunDir and LogFolder: atomic writes, pid, state and stats files, log tails, private folders,
and the run dir lock that the live supervisor holds for its whole life."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
import time
from typing import Optional

from .common import SwitchyardError, wait_until
from .config import Config
from .processes import is_supervisor_process

PID_FILE = "supervisor.pid"
LOCK_FILE = "supervisor.lock"
STATE_FILE = "supervisor.json"
SOCKET_FILE = "supervisor.sock"
TOPOLOGY_FILE = "topology.json"

PRIVATE_UMASK = 0o077  # files of the supervisor and its stages: readable and writable by their user only
PRIVATE_DIR_MODE = 0o700


def write_atomic(path: str, text: str) -> None:
    """Replaces `path` in one step, so readers never see a partial file."""
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


def read_json(path: str):
    """The parsed file, or None if it is missing or not (yet) valid JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_pid(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 else None


def remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def tail_bytes(f, lines: Optional[int]) -> bytes:
    """The last `lines` lines of the open binary file (all of it if None); leaves f at the end it saw."""
    end = f.seek(0, os.SEEK_END)
    if lines is None:
        f.seek(0)
        return f.read(end)
    pos, data = end, b""
    while pos > 0 and data.count(b"\n") <= lines:
        step = min(65536, pos)
        pos -= step
        f.seek(pos)
        data = f.read(step) + data
    f.seek(end)
    return b"".join(data.splitlines(keepends=True)[-lines:]) if lines else b""


def tail_text(path: str, lines: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            return tail_bytes(f, lines).decode(errors="replace").splitlines()
    except OSError:
        return []


_LOG_FIELD = re.compile(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)')
_LOG_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def log_fields(line: str) -> dict[str, str]:
    """The fields of one stage log line (`key=value`, or `key="quoted \\"value\\""`, docs/OPERATIONS.md "Logs"), in
    any order, with the quoting undone."""
    fields = {}
    for key, value in _LOG_FIELD.findall(line):
        if value.startswith('"'):
            value = re.sub(r"\\(u\{[0-9a-f]+\}|.)",
                           lambda m: chr(int(m.group(1)[2:-1], 16)) if m.group(1).startswith("u{")
                           else _LOG_ESCAPES.get(m.group(1), m.group(1)), value[1:-1])
        fields[key] = value
    return fields



@contextlib.contextmanager
def short_dir_path(directory: str):
    """A short alias (/proc/self/fd/N) of `directory`, because AF_UNIX socket addresses are limited to
    107 bytes and run dirs can be deep."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def prepare_dirs(cfg: Config) -> None:
    """RunDir and LogFolder are private (0700), even when they existed: no other local user may connect to a
    stage's nanomsg socket or the control socket, or read the logs."""
    for folder in (cfg.run_dir, cfg.log_folder):
        try:
            os.makedirs(folder, mode=PRIVATE_DIR_MODE, exist_ok=True)
            os.chmod(folder, PRIVATE_DIR_MODE)
        except OSError as e:
            raise SwitchyardError(f"cannot create {folder}: {e.strerror or e}")


def load_state(cfg: Config) -> dict:
    state = read_json(cfg.run_file(STATE_FILE))
    return state if isinstance(state, dict) else {}


def state_dict(state: dict, key: str) -> dict:
    value = state.get(key)
    return value if isinstance(value, dict) else {}


def current_stats(cfg: Config, name: str, pid: int) -> Optional[dict]:
    """The instance's stats if they were written by process `pid` (stale files from earlier runs and
    half-written files do not count)."""
    stats = read_json(cfg.run_file(f"{name}.stats.json"))
    return stats if isinstance(stats, dict) and stats.get("pid") == pid else None


def is_ready(cfg: Config, name: str, pid: int) -> bool:
    stats = current_stats(cfg, name, pid)
    return stats is not None and stats.get("ready") is True


def remove_supervisor_files(cfg: Config) -> None:
    """Removes what only a running supervisor keeps in RunDir (after a clean stop)."""
    for name in (STATE_FILE, TOPOLOGY_FILE, SOCKET_FILE, PID_FILE):
        remove(cfg.run_file(name))


# ---------------------------------------------------------------------------------------------------
# The run dir lock: held by the live supervisor for its whole life, released by the kernel if it dies


def open_lock(cfg: Config) -> int:
    return os.open(cfg.run_file(LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def acquire_lock(cfg: Config) -> Optional[int]:
    """The locked fd, or None if another supervisor holds the lock. Retries briefly because commands
    probe the lock by taking it for an instant."""
    fd = open_lock(cfg)
    if wait_until(lambda: try_lock(fd), 2.0):
        return fd
    os.close(fd)
    return None


def supervisor_locked(cfg: Config) -> bool:
    try:
        fd = os.open(cfg.run_file(LOCK_FILE), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        return not try_lock(fd)  # closing the fd releases a lock we took
    finally:
        os.close(fd)



def supervisor_pid(cfg: Config) -> Optional[int]:
    """Pid of the live supervisor of this run dir, None if there is none."""
    deadline = time.monotonic() + 2.0
    while supervisor_locked(cfg):
        pid = read_pid(cfg.run_file(PID_FILE))
        if pid is not None and is_supervisor_process(pid):
            return pid
        if time.monotonic() > deadline:  # the lock is held but the pid file names no supervisor
            raise SwitchyardError(f"{cfg.run_file(LOCK_FILE)} is locked by a process not named in {PID_FILE}")
        time.sleep(0.05)
    return None


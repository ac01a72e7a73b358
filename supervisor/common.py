"""What every module shares: exit codes, errors, the SWITCHYARD_* environment, the repository's paths."""

from __future__ import annotations

import os
import threading
import time
from typing import Callable, Optional

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
SCRIPT = os.path.join(REPO, "switchyard")  # the entry point: the background supervisor runs it again
DEFAULT_CONFIG = "switchyard.conf"

TICK = 0.1  # supervisor loop period, seconds
KILL_WAIT = 5.0  # how long to wait for a process to vanish after SIGKILL

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
EXIT_LOCKED = 3  # internal: the background supervisor found another one holding the run dir


class SwitchyardError(Exception):
    """A failure reported as one line on stderr; `code` is the exit status."""

    code = EXIT_FAIL


class UsageError(SwitchyardError):
    code = EXIT_USAGE


def env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise UsageError(f"{name}={raw!r}: expected a number of seconds")
    return value


def grace_seconds() -> float:
    return env_seconds("SWITCHYARD_GRACE", 5.0)


def start_timeout() -> float:
    return env_seconds("SWITCHYARD_START_TIMEOUT", 60.0)


def default_binary(stage: str) -> str:
    folder = os.environ.get("SWITCHYARD_BIN") or os.path.join(REPO, ".build", "release")
    return os.path.join(folder, stage)


def is_executable_file(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def is_whole_number(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05,
               abort: Optional[threading.Event] = None) -> bool:
    """Polls `predicate` until it holds (True) or `timeout` passes or `abort` is set (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline or (abort is not None and abort.is_set()):
            return False
        time.sleep(interval)

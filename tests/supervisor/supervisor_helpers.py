"""Helpers of the supervisor tests: throw-away stacks of fake stages, each in its own temp dir.

(Not in conftest.py: tests/e2e has a conftest module too, and `import conftest` would be ambiguous.)"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SWITCHYARD = REPO / "switchyard"
FAKE_STAGE = Path(__file__).resolve().with_name("fake_stage.py")
STAGES = ("ws-ingress", "router", "cache", "fanout", "kafka-in", "kafka-out")


def alive(pid):
    """Whether process `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:].split()[0] != b"Z"


def wait_for(predicate, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Stack:
    """A stack of fake stages: bin dir of symlinks to fake_stage.py, a switchyard.conf, its env."""

    def __init__(self, root: Path, engine="none"):
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        for stage in STAGES:
            self.link(stage)
        self.conf = root / "switchyard.conf"
        self.conf.write_text(f"# test stack\nListen = *:8800\nClusterEngine = {engine}\n"
                             "RunDir = var/run\nLogFolder = var/log\n")
        self.run_dir = root / "var" / "run"
        self.log_dir = root / "var" / "log"
        self.env = dict(os.environ, SWITCHYARD_BIN=str(self.bin), SWITCHYARD_GRACE="1",
                        SWITCHYARD_START_TIMEOUT="15")

    def link(self, name):
        """A fake stage binary called `name` (e.g. never-ready-router) in the stack's bin dir: a copy of
        fake_stage.py run by this very interpreter without site-packages, for a quick start (a wrapper
        such as a pyenv shim costs ~0.1 s a process)."""
        path = self.bin / name
        source = FAKE_STAGE.read_text().split("\n", 1)[1]
        path.write_text(f"#!{sys.executable} -S\n{source}")
        path.chmod(0o755)
        return path

    def sw(self, *args, config_first=False, config=None, env=None, timeout=60):
        """Runs ./switchyard with -c (this stack's config unless `config`) before or after the other
        arguments."""
        config = ["-c", str(config or self.conf)]
        argv = [sys.executable, str(SWITCHYARD), *(config + list(args) if config_first else list(args) + config)]
        return subprocess.run(argv, env=dict(self.env, **(env or {})), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def status(self):
        """{instance name: row} from `status --json`."""
        result = self.sw("status", "--json")
        return {row["name"]: row for row in json.loads(result.stdout)}

    def log(self, name):
        path = self.log_dir / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def supervisor_pid(self):
        return int((self.run_dir / "supervisor.pid").read_text())

    def processes(self):
        """{pid: argv} of every live process of this stack (supervisor and stages)."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
            except OSError:
                continue
            argv = [a.decode(errors="replace") for a in argv]
            if str(self.conf) in argv and alive(int(entry.name)):
                found[int(entry.name)] = argv
        return found

    def stage_processes(self):
        return {pid: argv for pid, argv in self.processes().items() if "--instance" in argv}

    def all_up(self):
        rows = self.status()
        return bool(rows) and all(r["state"] == "up" for r in rows.values())

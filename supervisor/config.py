"""The stack's configuration as the stages see it: `router --print-config` validates switchyard.conf and reports the
folders, instance counts, stage list, start order and instance limits (the supervisor never parses the file)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from typing import Optional

from .common import EXIT_USAGE, SwitchyardError, UsageError, default_binary, is_whole_number

PRINT_CONFIG_TIMEOUT = 15.0


def instance_name(stage: str, n: int) -> str:
    return f"{stage}-{n}"


@dataclass(frozen=True)
class StageLimit:
    """The instance counts a stage can run, and why (from the stages' --print-config)."""

    least: int
    most: int
    why: str


@dataclass(frozen=True)
class Config:
    """One stack's settings as --print-config reports them, and where its files are."""

    file: str  # absolute path, as the stages get it
    engine: str  # "none" | "kafka"
    run_dir: str
    log_folder: str
    instances: dict  # stage -> instance count from the config
    stages: tuple[str, ...]  # the stages this engine runs, in display order
    limits: dict  # stage -> StageLimit
    every_stage_start_order: tuple[str, ...]  # every stage there is, downstream first

    @property
    def start_order(self) -> tuple[str, ...]:
        return tuple(s for s in self.every_stage_start_order if s in self.stages)

    def count_refusal(self, stage: str, count) -> Optional[str]:
        """Why `stage` cannot run `count` instances (one line); None when it can."""
        limit = self.limits[stage]
        if is_whole_number(count) and limit.least <= count <= limit.most:
            return None
        allowed = f"exactly {limit.least}" if limit.least == limit.most else f"{limit.least}-{limit.most}"
        return f"{stage} runs {allowed} instance{'' if limit.most == 1 else 's'}, not {count}: {limit.why}"

    def is_instance_number(self, stage: str, n) -> bool:
        return is_whole_number(n) and 0 <= n < self.limits[stage].most

    def run_file(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    def log_file(self, name: str) -> str:
        return os.path.join(self.log_folder, f"{name}.log")


def load_config(path: str) -> Config:
    """Validates the config with `router --print-config` (the supervisor never parses it itself)."""
    abs_path = os.path.abspath(path)
    if not os.path.isfile(abs_path):
        raise UsageError(f"config file not found: {abs_path}")
    router = default_binary("router")
    try:
        result = subprocess.run([router, "--print-config", "-c", abs_path], cwd=os.path.dirname(abs_path),
                                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=PRINT_CONFIG_TIMEOUT)
    except FileNotFoundError:
        raise SwitchyardError(f"stage binary not found: {router} (build the stages or set SWITCHYARD_BIN)")
    except OSError as e:
        raise SwitchyardError(f"cannot run {router}: {e.strerror or e}")
    except subprocess.TimeoutExpired:
        raise SwitchyardError(f"{router} --print-config gave no answer within {PRINT_CONFIG_TIMEOUT:g}s")
    message = result.stderr.strip()
    if result.returncode == EXIT_USAGE:
        raise UsageError(message or f"{abs_path}: invalid configuration")
    if result.returncode != 0:
        raise SwitchyardError(f"{router} --print-config failed (exit {result.returncode}): {message}")
    return parse_printed_config(result.stdout, abs_path, router)


def parse_printed_config(text: str, abs_path: str, router: str) -> Config:
    try:
        data = json.loads(text)
        engine = data["clusterEngine"]
        folder = os.path.dirname(abs_path)
        run_dir = os.path.join(folder, data["runDir"])
        log_folder = os.path.join(folder, data["logFolder"])
        counts = data.get("instances") or {}
        config_file = data.get("configFile") or abs_path
        limits = {s["name"]: StageLimit(int(s["minInstances"]), int(s["maxInstances"]), str(s["why"]))
                  for s in data["stages"]}
        start_order = tuple(str(s) for s in data["startOrder"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SwitchyardError(f"{router} --print-config printed something else than the expected JSON")
    if engine not in ("none", "kafka"):
        raise SwitchyardError(f"unsupported clusterEngine {engine!r} from {router} --print-config")
    stages = tuple(limits)
    if not set(stages) <= set(start_order):
        raise SwitchyardError(f"{router} --print-config: stages {stages} missing from the start order {start_order}")
    cfg = Config(config_file, engine, os.path.normpath(run_dir), os.path.normpath(log_folder),
                 {s: counts.get(s, 1) for s in stages}, stages, limits, start_order)
    refusals = [r for s in stages if (r := cfg.count_refusal(s, cfg.instances[s]))]
    if refusals:
        raise UsageError(f"{abs_path}: {refusals[0]}")
    return cfg



def unknown_stage(text: str, stages: tuple[str, ...]) -> UsageError:
    return UsageError(f"unknown stage {text!r} (this stack runs {', '.join(stages)})")


def parse_target(text: str, stages: tuple[str, ...]) -> tuple[str, Optional[int]]:
    """'router' -> ('router', None); 'ws-ingress-2' -> ('ws-ingress', 2)."""
    if text in stages:
        return text, None
    stage, _, number = text.rpartition("-")
    if stage in stages and number.isdigit():
        return stage, int(number)
    raise unknown_stage(text, stages)


def check_stage(cfg: Config, stage: str) -> None:
    if stage not in cfg.stages:
        raise unknown_stage(stage, cfg.stages)

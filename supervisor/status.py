"""What the commands see of a stack, built from the run dir's files: one row per instance, the status table, and
the reports printed when a start-up fails."""

from __future__ import annotations

from typing import Optional

from .common import default_binary
from .config import Config, instance_name
from .processes import Proc, process_uptime, stage_process
from .runfiles import current_stats, read_pid, tail_text


def expected_instances(cfg: Config, state: dict) -> list[dict]:
    """The instances the stack runs: the supervisor's saved view, else the config's counts."""
    saved = [p for p in state.get("processes") or []
             if isinstance(p, dict) and p.get("stage") in cfg.stages
             and cfg.is_instance_number(p["stage"], p.get("instance"))]
    if saved:
        return saved
    return [{"name": instance_name(s, n), "stage": s, "instance": n}
            for s in cfg.stages for n in range(cfg.instances[s])]


def record_binary(record: dict) -> str:
    """The executable an instance record runs: its swapped binary, else the default one."""
    return record.get("binary") or default_binary(record["stage"])


def recorded_process(cfg: Config, record: dict) -> Optional[Proc]:
    """The live process of an instance record, found through its pid file."""
    stage, n = record["stage"], record["instance"]
    return stage_process(read_pid(cfg.run_file(f"{instance_name(stage, n)}.pid")), stage, n, cfg.file,
                         record_binary(record))


def instance_row(cfg: Config, record: dict, supervised: bool) -> dict:
    """Status of one instance: liveness from its pid file and /proc, readiness from its stats file,
    restarts and the supervisor's own view (an instance is up once the supervisor saw it ready)."""
    stage, n = record["stage"], record["instance"]
    name = instance_name(stage, n)
    binary = record_binary(record)
    proc = recorded_process(cfg, record)
    stats = current_stats(cfg, name, proc.pid) if proc else None
    recorded = record.get("state") if supervised else "up"  # unsupervised: the files tell it all
    if proc is None:
        state = recorded if recorded in ("starting", "restarting", "failed") else "down"
    elif stats is not None and stats.get("ready") is True and recorded == "up":
        state = "up"
    else:
        state = "restarting" if recorded == "restarting" else "starting"
    uptime = process_uptime(proc.pid) if proc else None
    restarts = record.get("restarts")
    row = {"name": name, "stage": stage, "instance": n, "pid": proc.pid if proc else None, "state": state,
           "uptime": round(uptime, 1) if uptime is not None else None,
           "restarts": restarts if isinstance(restarts, int) else 0, "binary": binary}
    extra = dict(stats or {})
    if "state" in extra:
        extra["stageState"] = extra.pop("state")
    return {**row, **{k: v for k, v in extra.items() if k not in row}}


def instance_rows(cfg: Config, state: dict, supervised: bool) -> list[dict]:
    rows = [instance_row(cfg, r, supervised) for r in expected_instances(cfg, state)]
    order = {s: i for i, s in enumerate(cfg.stages)}
    return sorted(rows, key=lambda r: (order[r["stage"]], r["instance"]))


def format_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _number(value, fmt: str = "{}") -> str:
    return fmt.format(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


TABLE = (  # header, cell, right-aligned
    ("INSTANCE", lambda r: r["name"], False),
    ("PID", lambda r: _number(r["pid"]), True),
    ("STATE", lambda r: r["state"], False),
    ("UPTIME", lambda r: format_duration(r["uptime"]), True),
    ("RESTARTS", lambda r: _number(r["restarts"]), True),
    ("IN/S", lambda r: _number(r.get("rateIn"), "{:.1f}"), True),
    ("OUT/S", lambda r: _number(r.get("rateOut"), "{:.1f}"), True),
    ("QUEUE", lambda r: _number(r.get("queueDepth")), True),
    ("CONN", lambda r: _number(r.get("connections")), True),
    ("MSGS IN", lambda r: _number(r.get("messagesIn")), True),
    ("MSGS OUT", lambda r: _number(r.get("messagesOut")), True),
)


def format_table(rows: list[dict]) -> str:
    cells = [[header for header, _, _ in TABLE]] + [[cell(r) for _, cell, _ in TABLE] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(TABLE))]
    return "\n".join(
        "  ".join(c.rjust(w) if right else c.ljust(w) for c, w, (_, _, right) in zip(line, widths, TABLE)).rstrip()
        for line in cells)


def configuration_failure_report(cfg: Config, names: list[str]) -> str:
    """The instances that refused their configuration, each with the end of its log (the reason)."""
    parts = []
    for name in names:
        lines = tail_text(cfg.log_file(name), 5)
        parts.append(f"switchyard: {name} refused its configuration:\n" + "\n".join("  " + l for l in lines))
    return "\n".join(parts)


def not_ready_report(cfg: Config, waiting: list[tuple[str, str]], waited: float) -> str:
    """Which instances are not ready, with the tail of each one's log; instances never launched
    (still "down": an earlier stage held up the start-up) are only named."""
    late = [name for name, state in waiting if state != "down"]
    unlaunched = [name for name, state in waiting if state == "down"]
    lines = [f"switchyard: not ready after {waited:g}s: "
             + ", ".join(f"{n} ({s})" for n, s in waiting if s != "down")]
    if unlaunched:
        lines.append(f"switchyard: not launched yet (waiting for the stages above): {', '.join(unlaunched)}")
    supervisor_lines = tail_text(cfg.log_file("supervisor"), 500)
    for name in late:
        path = cfg.log_file(name)
        lines.append(f"--- last lines of {path} ---")
        lines.extend(tail_text(path, 10) or ["(empty)"])
        said = [line for line in supervisor_lines if f" {name} " in line][-3:]
        lines.extend(f"supervisor.log: {line}" for line in said)
    return "\n".join(lines)


#!/usr/bin/env python3
"""The table of scripts/bench-peers.sh, from the one-line JSON results of its switchyard-bench runs.

    bench_peers_report.py --dir DIR --targets "floor nats ..." --ramp "1200 2400"   the report; exit 3 on loss
    bench_peers_report.py --sustained RESULT.json                                  exit 0 if that step held

DIR holds fixed-<target>.json (the fixed-rate run), ramp-<target>-<rate>.json (the ramp steps) and, beside each,
<file>.load (/proc/loadavg before the run). A ramp step "held" when nothing was lost, the deliveries in the
measured window reached 95 % of the offered rate and latency p99 stayed within 100 ms (a server that falls behind
builds a queue, and its latency grows with it within seconds).
"""
import argparse
import json
import os
import sys

FLOOR = "floor"
HELD_FRACTION = 0.95
HELD_P99_MS = 100.0


def load(path):
    try:
        with open(path) as f:
            data = json.loads(f.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None
    for key, value in data.items():
        if isinstance(value, dict) and "deliveries_per_s" in value:
            return data, key, value
    return None


def load_average(path):
    try:
        with open(path + ".load") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def offered_deliveries_per_s(data, result):
    params = data["params"]
    return params["rate"] * result["subscribers"] / params["subjects"]


def held(path):
    loaded = load(path)
    if loaded is None:
        return False
    data, _, result = loaded
    return (result["missing"] == 0 and result["disconnects"] == 0 and result["connect_failures"] == 0
            and result["deliveries_per_s"] >= HELD_FRACTION * offered_deliveries_per_s(data, result)
            and result["latency_ms"]["p99"] <= HELD_P99_MS)


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"


def number(value, digits=2):
    return "-" if value is None else f"{value:,.{digits}f}"


def sustained_text(row):
    """The highest rate held; "< X" when not even the fixed rate X held, ">= X" when the ramp's top step held."""
    if row["sustained_below"] is not None:
        return f"< {row['sustained_below']:,.0f}"
    return (">= " if row["sustained_at_ramp_top"] else "") + number(row["sustained"], 0)


def table(header, rows):
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(cell).rjust(widths[i]) if i else str(cell).ljust(widths[i])
                       for i, cell in enumerate(row)) for row in [header] + rows]
    return "\n".join(lines)


def report(directory, targets, ramp):
    rows = {}
    for name in targets:
        path = os.path.join(directory, f"fixed-{name}.json")
        loaded = load(path)
        if loaded is None:
            print(f"{name}: no result", file=sys.stderr)
            continue
        data, _, result = loaded
        sustained = None
        held_every_step = bool(ramp)
        for rate in ramp:
            step = os.path.join(directory, f"ramp-{name}-{rate}.json")
            if not held(step):
                held_every_step = False
                break
            sustained = load(step)[2]["deliveries_per_s"]
        if sustained is None and ramp and held(path):
            sustained = result["deliveries_per_s"]  # held the fixed rate only
        cores = result["cpu_cores"]
        # Nothing held, not even the fixed rate: the figure is below the fixed rate's offered deliveries.
        below = None if sustained is not None or not ramp else offered_deliveries_per_s(data, result)
        rows[name] = {
            "protocol": data["protocol"],
            "cpu_per_million": result.get("server_cpu_s_per_million_deliveries"),
            "delivered": result["delivered"],
            "expected": result["expected_deliveries"],
            "missing": result["missing"],
            "gaps": result["gaps"],
            "disconnects": result["disconnects"],
            "connect_failures": result["connect_failures"],
            "deliveries_per_s": result["deliveries_per_s"],
            "p50": result["latency_ms"]["p50"],
            "p99": result["latency_ms"]["p99"],
            "sustained": sustained,
            "sustained_below": below,
            "sustained_at_ramp_top": held_every_step,
            "server_cores": {k: v for k, v in cores.items() if k != "bench_process"},
            "bench_cores": cores.get("bench_process"),
            "load": load_average(path),
        }
    if not rows:
        print("bench-peers: no results", file=sys.stderr)
        return 1
    floor = rows.get(FLOOR)
    print()
    print("Peers side by side: server CPU-seconds per million deliveries (utime + stime of every server process "
          "from /proc, all Switchyard stages summed), loss, latency (publish written -> message read), and the "
          "highest sustained delivery rate of the ramp " + (" / ".join(str(r) for r in ramp) or "(skipped)")
          + " publishes/s (held: no loss, >= 95 % of the offered deliveries, p99 <= 100 ms).")
    header = ["target", "protocol", "CPU-s/M deliv", "x floor", "received/expected", "lost", "p50 ms", "p99 ms",
              "p50 x floor", "p99 x floor", "max sustained deliv/s", "x floor", "load"]
    lines = []
    for name, row in rows.items():
        lines.append([
            name, row["protocol"], number(row["cpu_per_million"]),
            ratio(row["cpu_per_million"], floor and floor["cpu_per_million"]),
            f"{row['delivered']:,}/{row['expected']:,}", f"{row['missing']:,}", number(row["p50"]),
            number(row["p99"]), ratio(row["p50"], floor and floor["p50"]), ratio(row["p99"], floor and floor["p99"]),
            sustained_text(row),
            ratio(row["sustained"], floor and floor["sustained"]), row["load"],
        ])
    print(table(header, lines))
    for title, key in [("server CPU per delivery", "cpu_per_million"), ("latency p50", "p50"),
                       ("latency p99", "p99"), ("highest sustained delivery rate", "sustained")]:
        print(f"\n{title}, row / column:")
        names = list(rows)
        print(table([""] + names, [[a] + [ratio(rows[a][key], rows[b][key]) for b in names] for a in names]))
    print("\nserver processes (cores during the measured window) and the load generator:")
    for name, row in rows.items():
        cores = ", ".join(f"{k} {v:.2f}" for k, v in sorted(row["server_cores"].items()))
        print(f"  {name}: {cores}; switchyard-bench {row['bench_cores']:.2f}; "
              f"{row['deliveries_per_s']:,.0f} deliveries/s measured")
    problems = [f"{name}: {row['missing']} lost, {row['gaps']} gaps, {row['disconnects']} disconnects, "
                f"{row['connect_failures']} failed connections"
                for name, row in rows.items()
                if row["missing"] or row["gaps"] or row["disconnects"] or row["connect_failures"]]
    for line in problems:
        print("problem: " + line)
    print(json.dumps({"bench": "bench-peers", "targets": rows}, separators=(",", ":")))
    return 3 if problems or len(rows) < len(targets) else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir")
    parser.add_argument("--targets", default="")
    parser.add_argument("--ramp", default="")
    parser.add_argument("--sustained")
    args = parser.parse_args()
    if args.sustained:
        return 0 if held(args.sustained) else 1
    return report(args.dir, args.targets.split(), [int(r) for r in args.ramp.split()])


if __name__ == "__main__":
    sys.exit(main())

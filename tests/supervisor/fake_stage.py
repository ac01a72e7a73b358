#!/usr/bin/env python3
"""A stand-in Switchyard stage that honours the stage side of the supervisor contract.

The name it is run by picks the stage and a behaviour: `[MODE-]STAGE`, e.g. `router`, `v2-router`,
`never-ready-router` (never reports ready), `stubborn-router` (ignores SIGTERM). Stages named in the
environment variables FAKE_NEVER_READY or FAKE_CRASH (comma-separated) never report ready, or exit with
status 3 right after starting.

  fake_stage.py --print-config -c FILE   validate FILE, print the config JSON (exit 2 on a bad line)
  fake_stage.py -c FILE --instance N     run: stats every 0.2 s, logs to stdout, SIGUSR1 reloads the
                                         log level, SIGHUP the topology, SIGTERM exits 0
"""

import json
import os
import signal
import sys
import time

STAGES = ("ws-ingress", "router", "cache", "fanout", "kafka-in", "kafka-out")
DISPLAY_ORDER = ("ws-ingress", "router", "cache", "fanout", "kafka-out", "kafka-in")
START_ORDER = ("fanout", "cache", "router", "kafka-out", "kafka-in", "ws-ingress")
LIMITS = {"router": 1, "kafka-in": 1}  # most instances; the rest run 1-64
KNOWN = {"Listen", "ClusterEngine", "RunDir", "LogFolder", "LogLevel", "MaxCachedMessagesPerSubject",
         "CacheExpireTime", "KafkaConsumerConfig", "KafkaProducerConfig"}
STATS_PERIOD = 0.2


class ConfError(Exception):
    pass


def parse_conf(path):
    """`Key = Value` lines, `#` comments; relative paths resolved against the file's folder."""
    values = {"RunDir": "var/run", "LogFolder": "var/log", "ClusterEngine": "none", "Listen": "*:8800",
              "LogLevel": "INFO"}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            key, sep, value = (part.strip() for part in line.partition("="))
            if not sep:
                raise ConfError(f"{path}:{number}: parameter '{key}': expected 'Parameter = Value'")
            if key not in KNOWN:
                raise ConfError(f"{path}:{number}: parameter '{key}': unknown parameter")
            values[key] = value
    folder = os.path.dirname(path)
    for key in ("RunDir", "LogFolder"):
        values[key] = os.path.join(folder, values[key])
    return values


def print_config(path):
    path = os.path.abspath(path)
    try:
        conf = parse_conf(path)
    except ConfError as e:
        print(e, file=sys.stderr)
        return 2
    print(json.dumps({"configFile": path, "listen": conf["Listen"].split(","),
                      "clusterEngine": conf["ClusterEngine"], "runDir": conf["RunDir"],
                      "logFolder": conf["LogFolder"], "logLevel": conf["LogLevel"],
                      "instances": {s: 1 for s in STAGES},
                      "stages": [{"name": s, "minInstances": 1, "maxInstances": LIMITS.get(s, 64), "why": "fake"}
                                 for s in DISPLAY_ORDER if conf["ClusterEngine"] == "kafka" or not s.startswith("kafka")],
                      "startOrder": START_ORDER}))
    return 0


def identity():
    """(stage, modes) from the name this script was run by."""
    name = os.path.basename(sys.argv[0])
    for stage in STAGES:
        if name == stage or name.endswith("-" + stage):
            modes = set(name[:-len(stage)].strip("-").split("-")) if name != stage else set()
            for variable, mode in (("FAKE_NEVER_READY", "never"), ("FAKE_CRASH", "crash")):
                if stage in os.environ.get(variable, "").split(","):
                    modes.add(mode)
            return stage, modes
    sys.exit(f"fake_stage: cannot tell the stage from the name {name!r}")


def log(message):
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def write_json(path, data):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def run(stage, modes, conf_path, instance):
    conf = parse_conf(conf_path)
    name = f"{stage}-{instance}"
    run_dir = conf["RunDir"]
    started, ticks = time.time(), 0

    def on_usr1(*_):
        with open(os.path.join(run_dir, f"{name}.loglevel")) as f:
            log(f"log level now {f.read().strip()}")

    def on_hup(*_):
        with open(os.path.join(run_dir, "topology.json")) as f:
            log(f"SIGHUP: topology {json.dumps(json.load(f), sort_keys=True)}")

    def on_term(*_):
        if "stubborn" in modes:
            log("SIGTERM ignored")
            return
        log("SIGTERM: exiting")
        sys.exit(0)

    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, on_term)
    log(f"{name} started (pid {os.getpid()}, modes {sorted(modes)}, cwd {os.getcwd()})")
    if "crash" in modes:
        return 3
    while True:
        write_json(os.path.join(run_dir, f"{name}.stats.json"), {
            "stage": stage, "instance": instance, "pid": os.getpid(), "ready": "never" not in modes,
            "startedAt": started, "messagesIn": ticks, "messagesOut": 2 * ticks, "rateIn": 5.0, "rateOut": 10.0,
            "queueDepth": 0, "connections": 3 if stage == "ws-ingress" else 0, "state": "ok", "fake": True})
        ticks += 1
        time.sleep(STATS_PERIOD)


def main(argv):
    conf = argv[argv.index("-c") + 1] if "-c" in argv else None
    if "--print-config" in argv:
        return print_config(conf)
    stage, modes = identity()
    return run(stage, modes, conf, int(argv[argv.index("--instance") + 1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""switchyard - start, watch and steer the stages of one Switchyard stack.

Usage: switchyard [-c FILE] COMMAND [ARGS] [-c FILE]
  -c FILE (before or after the command; default ./switchyard.conf) picks the stack: its RunDir holds
  the supervisor's files, so stacks with different run dirs run side by side.

Commands
  start                     validate the config, start a background supervisor that launches (or adopts)
                            every stage instance downstream-first; returns once all are ready
  run                       the same in the foreground until Ctrl-C / SIGTERM, then stops everything
  stop                      stop the supervisor and every stage instance (upstream first); also cleans up
                            after a supervisor that died (pid files). Exit 0 if nothing was running
  status [--json]           one row per instance: pid, state (up/starting/restarting/down), uptime,
                            restarts, rates, queue, connections, totals; --json adds every stats key
                            (the stage's own "state" becomes "stageState"). Exit 0 only if all are up
  logs STAGE[-N] [-f] [-n LINES]
                            print an instance's log (N defaults to 0; all of it, or the last LINES);
                            -f follows it across rotations (starting with the last 10 lines)
  restart STAGE[-N]         graceful stop + start of one instance, or of every instance of STAGE one
                            after the other; waits until ready; not counted as a crash
  scale STAGE N             run N instances of STAGE: writes RunDir/topology.json, starts the new ones,
                            stops the extra ones highest first, then sends SIGHUP to every ready instance
                            so it re-reads the topology. A count the pipeline cannot use is refused with
                            the reason (exit 2): router and kafka-in run exactly 1, the others 1-64
  swap STAGE PATH           run the executable PATH for STAGE (rolling restart); if it is not ready within
                            the start timeout, the previous binary is put back and the exit status is 1
  loglevel STAGE[-N] LEVEL  TRACE|DEBUG|INFO|WARN|ERROR: writes RunDir/STAGE-N.loglevel, sends SIGUSR1
  reload ws-ingress[-N]     re-read TLSCertificateFile and TLSKeyFile for new connections (SIGUSR2; open
                            connections keep theirs); waits for each instance's answer in its stats file.
                            Exit 1 if one kept its previous certificate (a bad file: its log says why)

Environment
  SWITCHYARD_BIN            folder of the stage executables (default: <repo>/.build/release)
  SWITCHYARD_GRACE          seconds between SIGTERM and SIGKILL when stopping an instance (default 5)
  SWITCHYARD_START_TIMEOUT  seconds to wait for readiness in start/run/restart/scale/swap (default 60)

Files in RunDir
  supervisor.pid, supervisor.lock (held by the live supervisor), supervisor.sock (control socket used by
  restart/scale/swap), supervisor.json (its state: scale and swap overrides, per-instance pid/state/
  restarts; kept across a supervisor crash so the next start adopts the stages, removed by a clean stop),
  topology.json, STAGE-N.pid, STAGE-N.stats.json (written by the stage), STAGE-N.loglevel,
  kafka-in-N.offsets.json (kafka-in's resume point). Every file's fields: docs/OPERATIONS.md "Files in RunDir".
  Logs: LogFolder/STAGE-N.log (appended by the stage) and LogFolder/supervisor.log.
  RunDir and LogFolder are made 0700 and everything runs with umask 077; the control socket takes commands
  only from the supervisor's own user (or root), checked with SO_PEERCRED.

A stage instance that dies is restarted with backoff (0.1 s doubling to 10 s; reset once it has been up
for 30 s). Exit codes: 0 ok, 1 failure, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from .commands import (cmd_loglevel, cmd_logs, cmd_reload, cmd_restart, cmd_run, cmd_scale, cmd_start, cmd_status,
                       cmd_stop, cmd_swap)
from .common import DEFAULT_CONFIG, EXIT_OK, EXIT_USAGE, SwitchyardError
from .config import load_config
from .runfiles import PRIVATE_UMASK


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(EXIT_USAGE, f"switchyard: {message} (see switchyard --help)\n")


def build_parser() -> Parser:
    config = Parser(add_help=False)
    config.add_argument("-c", "--config", metavar="FILE", default=argparse.SUPPRESS,
                        help=f"configuration file (default ./{DEFAULT_CONFIG})")
    parser = Parser(prog="switchyard", parents=[config], description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler, text: str) -> Parser:
        p = sub.add_parser(name, parents=[config], help=text, description=text)
        p.set_defaults(handler=handler)
        return p

    command("start", cmd_start, "start the stack in the background")
    command("run", cmd_run, "run the stack in the foreground").add_argument(
        "--daemon", action="store_true", help=argparse.SUPPRESS)
    command("stop", cmd_stop, "stop the stack")
    command("status", cmd_status, "show every stage instance").add_argument(
        "--json", action="store_true", help="machine-readable output")
    logs = command("logs", cmd_logs, "print or follow an instance's log")
    logs.add_argument("target", metavar="STAGE[-N]")
    logs.add_argument("-f", "--follow", action="store_true", help="follow the log")
    logs.add_argument("-n", "--lines", type=int, metavar="LINES", help="print only the last LINES lines")
    command("restart", cmd_restart, "restart an instance or a stage").add_argument("target", metavar="STAGE[-N]")
    scale = command("scale", cmd_scale, "set a stage's instance count")
    scale.add_argument("stage", metavar="STAGE")
    scale.add_argument("count", type=int, metavar="N")
    swap = command("swap", cmd_swap, "run another binary for a stage")
    swap.add_argument("stage", metavar="STAGE")
    swap.add_argument("path", metavar="PATH")
    loglevel = command("loglevel", cmd_loglevel, "change log levels at run time")
    loglevel.add_argument("target", metavar="STAGE[-N]")
    loglevel.add_argument("level", metavar="LEVEL")
    command("reload", cmd_reload, "reload the TLS certificate and key of ws-ingress").add_argument(
        "target", metavar="ws-ingress[-N]")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    os.umask(PRIVATE_UMASK)  # inherited by the background supervisor and every stage it starts
    args = build_parser().parse_args(argv)
    if os.environ.get("SWITCHYARD_BIN"):  # the background supervisor runs in another folder
        os.environ["SWITCHYARD_BIN"] = os.path.abspath(os.environ["SWITCHYARD_BIN"])
    try:
        cfg = load_config(getattr(args, "config", DEFAULT_CONFIG))
        return args.handler(cfg, args)
    except SwitchyardError as e:
        print(f"switchyard: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into e.g. head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


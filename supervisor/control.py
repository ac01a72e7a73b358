"""The control socket, RunDir/supervisor.sock: the supervisor's server (one thread per connection, peers of other
users refused) and the client side used by `restart`, `scale` and `swap`."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import sys
import threading
from typing import TYPE_CHECKING

from .common import EXIT_FAIL, EXIT_OK, KILL_WAIT, SwitchyardError, grace_seconds, start_timeout
from .config import Config
from .runfiles import SOCKET_FILE, remove, short_dir_path, supervisor_pid

if TYPE_CHECKING:
    from .loop import Supervisor

MAX_REQUEST = 65536


class ControlServer:
    """The supervisor's end of RunDir/supervisor.sock. A client sends one JSON request line
    ({"cmd": "restart"|"scale"|"swap", "stage": ..., "timeout": seconds, ...}) and reads JSON lines back:
    any number of {"progress": text}, then {"code": exit status, "message": text}."""

    def __init__(self, supervisor: Supervisor):
        self.supervisor = supervisor
        run_dir = supervisor.cfg.run_dir
        remove(os.path.join(run_dir, SOCKET_FILE))  # stale: we hold the run dir lock
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with short_dir_path(run_dir) as base:
                self.sock.bind(f"{base}/{SOCKET_FILE}")
            self.sock.listen(8)
        except OSError as e:
            self.sock.close()
            raise SwitchyardError(f"cannot listen on {os.path.join(run_dir, SOCKET_FILE)}: {e.strerror or e}")
        self.sock.settimeout(0.5)
        threading.Thread(target=self.accept_loop, name="control", daemon=True).start()

    def accept_loop(self) -> None:
        while not self.supervisor.shutdown.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return  # closed
            threading.Thread(target=self.serve, args=(conn,), name="command", daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5.0)
            try:  # read before answering: a client that is still sending would otherwise get EPIPE, not the answer
                line = conn.makefile("rb").readline(MAX_REQUEST)
            except OSError:
                return
            pid, uid = peer_credentials(conn)
            if uid not in (os.getuid(), 0):
                self.supervisor.log.warning("control socket: refused pid %s of uid %s (not our user)", pid, uid)
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps({"code": EXIT_FAIL, "message": "permission denied: the supervisor "
                                             "takes commands from its own user only"}).encode() + b"\n")
                return
            try:
                request = json.loads(line)
            except ValueError:
                return
            if not isinstance(request, dict):
                return

            def send(message: dict) -> None:
                try:
                    conn.sendall(json.dumps(message).encode() + b"\n")
                except OSError:
                    pass  # the client went away; the command still completes

            code, text = self.supervisor.execute(request, lambda line: send({"progress": line}))
            send({"code": code, "message": text})

    def close(self) -> None:
        self.sock.close()


def peer_credentials(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a Unix socket, from the kernel (SO_PEERCRED)."""
    pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return pid, uid


def send_command(cfg: Config, request: dict) -> int:
    """Client side of the control socket: prints progress lines and the final message."""
    if supervisor_pid(cfg) is None:
        raise SwitchyardError("not running (no supervisor for this config; use start)")
    timeout = start_timeout()
    request = dict(request, timeout=timeout)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout + grace_seconds() + KILL_WAIT + 30)  # per read: progress comes between steps
        try:
            with short_dir_path(cfg.run_dir) as base:
                sock.connect(f"{base}/{SOCKET_FILE}")
            sock.sendall(json.dumps(request).encode() + b"\n")
            for line in sock.makefile("rb"):
                message = json.loads(line)
                if "progress" in message:
                    print(f"switchyard: {message['progress']}", flush=True)
                    continue
                code = int(message["code"])
                print(f"switchyard: {message['message']}", file=sys.stdout if code == EXIT_OK else sys.stderr)
                return code
        except socket.timeout:
            raise SwitchyardError("the supervisor stopped answering")
        except OSError as e:
            raise SwitchyardError(f"cannot talk to the supervisor: {e.strerror or e}")
        except (ValueError, KeyError, TypeError):
            raise SwitchyardError("garbled answer from the supervisor")
    raise SwitchyardError(f"the supervisor hung up without an answer (see {cfg.log_file('supervisor')})")

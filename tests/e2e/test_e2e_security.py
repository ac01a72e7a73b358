"""Issue 8 (security), first part: `AllowedOrigins` (403 before the upgrade for another web origin), the private
monitor listener (`MonitorListen`: /metrics, /health, /ready; /metrics no longer on the public port), private
run files (RunDir and LogFolder 0700, umask 077) and the control socket refusing other users (SO_PEERCRED)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import time

import pytest

from e2e_helpers import Broker, http_get, running, wait_until

ALLOWED = "https://app.example.com"
UPGRADE = ("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")


def status_of_upgrade(port: int, origin: str | None) -> tuple[int, str]:
    """The HTTP status line's code of a WebSocket upgrade with this Origin (None: no Origin header), and the
    answer's text."""
    request = UPGRADE + (f"Origin: {origin}\r\n" if origin is not None else "") + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request.encode())
        data = b""
        while b"\r\n\r\n" not in data and (chunk := sock.recv(4096)):
            data += chunk
        if not data.startswith(b"HTTP/1.1 101"):  # a refusal: its body, then the server closes
            while chunk := sock.recv(4096):
                data += chunk
    return int(data.split(b" ", 2)[1]), data.decode(errors="replace")


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory):
    work = tmp_path_factory.mktemp("security")
    b = Broker(work, name="secure", AllowedOrigins=f"{ALLOWED}, http://localhost:8080", IngressInstances=2)
    b.run_dir.mkdir(parents=True)
    b.run_dir.chmod(0o755)  # left open by someone: start must close it
    with running(b):
        yield b


def test_origin_allowed_refused_and_absent(secure_broker):
    port = secure_broker.port
    for origin in (ALLOWED, "HTTPS://APP.EXAMPLE.COM:443", "http://localhost:8080", None):
        code, text = status_of_upgrade(port, origin)
        assert code == 101, f"Origin {origin!r}: {text}"
    for origin in ("https://evil.example.com", "http://app.example.com", "null", "https://app.example.com.evil.net"):
        code, text = status_of_upgrade(port, origin)
        assert code == 403, f"Origin {origin!r}: {text}"
        assert "AllowedOrigins" in text and "Upgrade: websocket" not in text, text


def test_monitor_listener_serves_metrics_health_ready_and_the_public_port_no_metrics(secure_broker):
    b = secure_broker
    code, body = http_get(b.monitor_port, "/metrics")
    assert code == 200 and 'switchyard_ready{stage="cache",stage_instance="0"} 1' in body, body[:400]
    assert 'stage="ws-ingress",stage_instance="1"' in body, "the monitor of instance 0 shows every instance"
    assert http_get(b.port, "/metrics")[0] == 404
    assert http_get(b.port, "/health") == (200, "ok\n")
    assert http_get(b.monitor_port, "/health") == (200, "ok\n")
    assert http_get(b.monitor_port, "/ready") == (200, "ready\n")
    assert http_get(b.monitor_port, "/")[0] == 404


def test_ready_follows_the_cache(secure_broker):
    b = secure_broker
    pid = b.pid("cache")
    os.kill(pid, signal.SIGSTOP)
    try:
        answer = wait_until(lambda: (lambda a: a if a[0] == 503 else None)(http_get(b.monitor_port, "/ready")),
                            timeout=10, what="/ready 503 while the cache is stopped")
        assert "cache-0" in answer[1] and "stopped, hung or restarting" in answer[1], answer
        assert http_get(b.monitor_port, "/health")[0] == 200, "liveness does not depend on the other stages"
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: http_get(b.monitor_port, "/ready")[0] == 200, timeout=10, what="/ready 200 again")
    os.kill(b.pid("cache"), signal.SIGKILL)  # dead: 503 until the supervisor's new cache is ready
    answer = wait_until(lambda: (lambda a: a if a[0] == 503 else None)(http_get(b.monitor_port, "/ready")),
                        timeout=5, interval=0.02, what="/ready 503 once the cache is killed")
    assert "cache-0" in answer[1], answer
    wait_until(lambda: http_get(b.monitor_port, "/ready")[0] == 200, timeout=15, what="/ready 200 after restart")


def test_run_dir_log_folder_and_stage_files_are_private(secure_broker):
    b = secure_broker
    for folder in (b.run_dir, b.log_dir):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, f"{folder}: {oct(folder.stat().st_mode)}"
    files = [b.run_dir / "cache-0.stats.json", b.run_dir / "cache-0.prom", b.run_dir / "ws-ingress-1.pid",
             b.run_dir / "router-0.ipc", b.run_dir / "supervisor.sock", b.log_path("cache"),
             b.log_dir / "supervisor.log"]
    for path in files:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}: readable or writable by others"


NOBODY_CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect("supervisor.sock")
except PermissionError:
    print("EACCES"); sys.exit(0)
s.sendall(json.dumps({"cmd": "restart", "stage": "router", "timeout": 5}).encode() + b"\\n")
print(s.makefile().readline().strip())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
def test_control_socket_refuses_another_user(secure_broker):
    b = secure_broker
    router = b.pid("router")

    def as_nobody() -> str:
        out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
                              "-c", NOBODY_CLIENT], cwd=b.run_dir, capture_output=True, text=True, timeout=15)
        return out.stdout.strip() + out.stderr.strip()

    assert as_nobody() == "EACCES", "RunDir 0700 keeps other users from the socket"
    sock = b.run_dir / "supervisor.sock"
    b.run_dir.chmod(0o711)
    sock.chmod(0o777)  # as if the files were opened up: the supervisor must still refuse
    try:
        answer = as_nobody()
    finally:
        sock.chmod(0o600)
        b.run_dir.chmod(0o700)
    assert "permission denied" in answer and '"code": 1' in answer, answer
    time.sleep(0.5)
    assert b.pid("router") == router, "the refused command ran anyway"
    assert "refused pid" in (b.log_dir / "supervisor.log").read_text()

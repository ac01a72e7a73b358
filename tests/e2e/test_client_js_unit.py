"""Issue 9: the JavaScript client's unit tests (clients/js/switchyard.test.mjs, Node's test runner, a scripted fake
WebSocket: reconnect and recovery decisions, publish results, the bounded queue, status events, base64)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from e2e_helpers import REPO

NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node is not installed (the browser tests cover the client end to end)")
def test_javascript_client_unit_tests():
    r = subprocess.run([NODE, "--test", "clients/js/switchyard.test.mjs"], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "# fail 0" in r.stdout and "# pass 8" in r.stdout, r.stdout[-2000:]

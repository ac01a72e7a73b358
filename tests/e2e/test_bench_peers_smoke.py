"""scripts/bench-peers.sh in a tiny mode: every target of the peers benchmark (the floor program in both modes,
Switchyard's protocol v1 and MQTT over WebSocket through the real supervisor and stages, mosquitto over
WebSocket, nats-server over WebSocket) receives every message switchyard-bench published, and the report has a
line per target with its server CPU per million deliveries. A smoke test of the benchmark's plumbing (protocol
codecs, server start-up, CPU accounting, the report), not a measurement.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from e2e_helpers import BIN_DIR, REPO

TARGETS = ["floor", "floor-x4", "switchyard", "switchyard-mqtt", "mosquitto", "nats"]


@pytest.fixture(scope="module", autouse=True)
def bench_built():
    if not (BIN_DIR / "switchyard-bench").exists():
        pytest.fail(f"{BIN_DIR / 'switchyard-bench'} is missing: run `make build`")


def test_every_peer_delivers_everything_and_is_reported(tmp_path):
    env = dict(os.environ, BENCH_SKIP_BUILD="1", TMPDIR=str(tmp_path), SWITCHYARD_BIN=str(BIN_DIR),
               PEERS_SUBSCRIBERS="20", PEERS_SUBJECTS="4", PEERS_RATE="100", PEERS_DURATION="2",
               PEERS_WARMUP="0.5", PEERS_DRAIN="3", PEERS_RAMP="", PEERS_TARGETS=" ".join(TARGETS))
    done = subprocess.run(["bash", str(REPO / "scripts" / "bench-peers.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]

    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["bench"] == "bench-peers"
    assert list(summary["targets"]) == TARGETS, output[-4000:]
    for name, row in summary["targets"].items():
        # 100 publishes/s over 4 subjects, 5 subscribers each: about 500 deliveries/s for 2.5 s.
        assert row["expected"] >= 900, (name, row)
        assert row["delivered"] == row["expected"] and row["missing"] == 0, (name, row)
        assert row["gaps"] == 0 and row["disconnects"] == 0 and row["connect_failures"] == 0, (name, row)
        assert row["cpu_per_million"] is not None and row["cpu_per_million"] >= 0, (name, row)
        assert row["server_cores"], (name, row)
        assert row["p99"] > 0, (name, row)
    # Switchyard's figure sums its four stages (pid files ws-ingress-0, router-0, ...).
    stages = {name.rsplit("-", 1)[0] for name in summary["targets"]["switchyard"]["server_cores"]}
    assert stages >= {"ws-ingress", "router", "cache", "fanout"}, summary["targets"]["switchyard"]

    table = [line for line in done.stdout.splitlines() if line.split()[:1] and line.split()[0] in TARGETS]
    assert {line.split()[0] for line in table} == set(TARGETS), done.stdout
    assert "machine load" in done.stderr

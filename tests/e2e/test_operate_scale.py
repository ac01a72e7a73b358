"""Issue 4, item 2: scale stages under a steady stream (300 subscribers on 30 subjects, 200 publishes/s).

- `scale ws-ingress 4`: four ingress processes share the port; clients that reconnect spread over them (status
  and /metrics count connections per instance). `scale ws-ingress 1`: the extra instances close their clients
  with 1012 ("reconnect"); those recover on the remaining one; no OK'd publish is lost.
- `scale cache 4` / `scale fanout 4`: subjects shard by FNV-1a(subject) through the router; per-subject order
  holds, and a subject never has a silent gap: its seqs continue, or (a subject that moved to another cache
  shard) its subscribers get one DATA_RESYNC and then the new shard's epoch.
"""

from __future__ import annotations

import asyncio

import pytest

from e2e_helpers import pid_alive, run
from operate_fixtures import (PUBLISH_TIMEOUT, cli_async, frozen_bin, http_get, op_broker,  # noqa: F401  (fixtures)
                              parse_metrics, run_scenario, stage_pids)
from stream_analyzer import assert_delivery_clean, assert_no_disconnects, assert_recovered_after, pairs

LIGHT = dict(subscribers=300, subjects=30)
RATE = 200


def fnv1a64(text: str) -> int:
    h = 0xcbf29ce484222325
    for byte in text.encode():
        h ^= byte
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def ingress_connections(broker) -> dict[int, int]:
    return {int(r["instance"]): int(r.get("connections") or 0) for r in broker.status_json()
            if r.get("stage") == "ws-ingress" and r.get("state") == "up"}


def test_scale_ws_ingress_to_4_spreads_clients_and_back_to_1_drains_with_1012(op_broker):
    b = op_broker()
    seen: dict = {}

    async def action(stream):
        r = await cli_async(b, "scale", "ws-ingress", "4")
        assert r.rc == 0, r
        rows = [x for x in b.status_json() if x["stage"] == "ws-ingress"]
        seen["pids"] = {int(x["instance"]): int(x["pid"]) for x in rows if x.get("pid")}
        seen["states"] = [x["state"] for x in rows]
        # the clients connected before stay on ingress 0; make every subscriber reconnect (from our side)
        await stream.reconnect_some(1.0)
        await asyncio.sleep(2.5)
        seen["spread"] = ingress_connections(b)
        _, text = await asyncio.to_thread(http_get, b.monitor_port, "/metrics")
        seen["metrics"] = {inst: v for (name, stage, inst), v in parse_metrics(text).items()
                           if name == "switchyard_connections" and stage == "ws-ingress"}
        seen["before_down"] = stream.now()
        r = await cli_async(b, "scale", "ws-ingress", "1")
        assert r.rc == 0, r
        seen["after_down"] = stream.now()

    stream, rep, _ = run(run_scenario(b.url, action, rate=RATE, before=2, after=5,
                                      publish_timeout=PUBLISH_TIMEOUT, **LIGHT), 120)
    clients = len(stream.subs) + len(stream.pubs)
    pids = seen["pids"]
    assert sorted(pids) == [0, 1, 2, 3] and len(set(pids.values())) == 4 and seen["states"] == ["up"] * 4, seen
    spread = seen["spread"]
    assert sum(spread.values()) == clients, f"connections per ingress {spread} (want {clients} in all)"
    assert sum(1 for v in spread.values() if v > 0) >= 3, f"reconnected clients did not spread: {spread}"
    assert {i: int(v) for i, v in seen["metrics"].items()} == spread, \
        f"/metrics connections {seen['metrics']} != status {spread}"

    # scale down: exactly the clients of ingress 1..3 were closed, with 1012, and came back on ingress 0
    moved = sum(v for i, v in spread.items() if i != 0)
    down = [c for c in rep.closes if c.t >= seen["before_down"]]
    assert rep.close_codes == {1012: len(rep.closes)}, f"close codes {rep.close_codes}\n{rep.summary()}"
    # ingress 3, 2, 1 stop one after the other, so a client may land on one that stops next and be closed again
    closed = {c.who for c in down}
    assert len(down) == len(rep.closes) and len(closed) == moved, \
        f"{len(closed)} clients closed by the scale-down (want the {moved} of ingress 1-3)\n{rep.summary()}"
    bounced = max(sum(1 for c in down if c.who == w) for w in closed)
    assert bounced <= 3, f"a client was closed {bounced} times by a scale-down of 3 instances"
    assert_delivery_clean(rep, stream, "scale ws-ingress 4 -> 1")
    assert rep.covered == 0 and rep.resyncs == {0: pairs(stream)}, rep.summary()
    assert rep.failed == 0, f"publishes FAILED\n{rep.summary()}"
    rows = [x for x in b.status_json() if x["stage"] == "ws-ingress"]
    assert len(rows) == 1 and rows[0]["state"] == "up", rows
    assert stage_pids(b, "ws-ingress") == {0: pids[0]}, "ingress 0 kept running through both scalings"
    assert not any(pid_alive(pids[i]) for i in (1, 2, 3)), f"scaled-down ingress processes still run: {pids}"
    left = sorted(f.name for i in (1, 2, 3) for f in b.run_dir.glob(f"ws-ingress-{i}.*") if not f.name.endswith(".ipc"))
    assert left == [], f"files of scaled-down instances left in RunDir: {left}"


@pytest.mark.parametrize("stage", ["cache", "fanout"])
def test_scale_to_4_keeps_order_and_reports_every_shard_move(op_broker, stage):
    b = op_broker()
    out: dict = {}

    async def action(stream):
        r = await cli_async(b, "scale", stage, "4")
        assert r.rc == 0, r
        out["back_at"] = stream.now()

    stream, rep, _ = run(run_scenario(b.url, action, rate=RATE, before=3, after=5,
                                      publish_timeout=PUBLISH_TIMEOUT, **LIGHT), 90)
    what = f"scale {stage} 4"
    rows = [x for x in b.status_json() if x["stage"] == stage]
    assert [x["state"] for x in rows] == ["up"] * 4 and len({x["pid"] for x in rows}) == 4, rows
    assert_delivery_clean(rep, stream, what)
    assert_no_disconnects(rep, what)
    assert_recovered_after(stream, rep, out["back_at"] + 1.0, what)
    moved = {s for s in stream.subjects if fnv1a64(s) % 4 != 0}
    for sub in stream.subs:
        for s in sub.subjects:
            epochs = []
            for ev in sub.events[s]:
                if ev[0] == "m" and (not epochs or epochs[-1] != ev[2]):
                    epochs.append(ev[2])
            n_resync = len(sub.resynced[s])
            if stage == "cache" and s in moved:
                # a new shard numbers the subject afresh: DATA_RESYNC, then the new shard's epoch. Under load a repair
                # racing the re-announcement can repeat the DATA_RESYNC (nothing lost or reordered, checked above): a
                # known redundancy, left open on issue 7
                shard = fnv1a64(s) % 4
                assert n_resync >= 1 and len(epochs) == 2 and epochs[1].endswith(f"-{shard}"), \
                    f"{what}: {sub.name} {s} (moved to cache {shard}): epochs {epochs}, {n_resync} DATA_RESYNC"
            else:
                assert n_resync == 0 and len(epochs) == 1, \
                    f"{what}: {sub.name} {s} (did not move): epochs {epochs}, {n_resync} DATA_RESYNC"
    if stage == "fanout":
        assert rep.covered == 0, rep.summary()
    print(f"\n{what}: {rep.summary()}".replace("\n  ", " | "))

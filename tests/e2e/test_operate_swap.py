"""Issue 4, item 3: `./switchyard swap fanout PATH` runs another build of the stage in its place, under a steady
stream (300 subscribers, 30 subjects, 200 publishes/s), with the same guarantees as a restart; swap refuses a
path that is not an executable (exit 2) and rolls back (exit 1) when the new binary never becomes ready, while
the broker keeps serving."""

from __future__ import annotations

import os
import shutil
import stat

import pytest

from e2e_helpers import pid_alive, processes_mentioning, run
from operate_fixtures import PUBLISH_TIMEOUT, cli_async, frozen_bin, op_broker, run_scenario  # noqa: F401  (fixtures)
from stream_analyzer import assert_delivery_clean, assert_no_disconnects, assert_recovered_after, pairs

LIGHT = dict(subscribers=300, subjects=30)
RATE = 200


def test_swap_fanout_under_stream_keeps_every_client_and_message(op_broker, frozen_bin, tmp_path):
    b = op_broker()
    other = tmp_path / "other-build"
    other.mkdir()
    new_bin = other / "fanout"
    shutil.copy2(frozen_bin / "fanout", new_bin)
    old_pid = b.pid("fanout")
    out: dict = {}

    async def action(stream):
        r = await cli_async(b, "swap", "fanout", str(new_bin))
        out["r"] = r
        out["back_at"] = stream.now()

    stream, rep, _ = run(run_scenario(b.url, action, rate=RATE, before=3, after=5,
                                      publish_timeout=PUBLISH_TIMEOUT, **LIGHT), 90)
    assert out["r"].rc == 0, out["r"]
    row = b.status_row("fanout")
    assert row["state"] == "up" and int(row["pid"]) != old_pid and row.get("binary") == str(new_bin), row
    assert os.path.realpath(f"/proc/{row['pid']}/exe") == str(new_bin), "the swapped fanout runs the new binary"
    assert not pid_alive(old_pid)
    what = "swap fanout"
    assert_delivery_clean(rep, stream, what)
    assert_no_disconnects(rep, what)
    assert rep.resyncs == {0: pairs(stream)} and rep.covered == 0, rep.summary()
    assert_recovered_after(stream, rep, out["back_at"] + 1.0, what)


@pytest.mark.parametrize("kind", ["missing", "not-executable", "directory"])
def test_swap_refuses_what_is_not_an_executable(op_broker, tmp_path, kind):
    b = op_broker()
    path = tmp_path / "fanout"
    if kind == "not-executable":
        path.write_text("#!/bin/sh\nexec sleep 600\n")
        path.chmod(0o644)
    elif kind == "directory":
        path.mkdir()
    pid = b.pid("fanout")
    r = b.cli("swap", "fanout", str(path))
    assert r.rc == 2, r
    assert "not an executable" in r.output, r
    row = b.status_row("fanout")
    assert row["state"] == "up" and int(row["pid"]) == pid and "other" not in str(row.get("binary")), row


def test_swap_to_a_binary_that_never_gets_ready_rolls_back(op_broker, frozen_bin, tmp_path):
    b = op_broker()
    script = tmp_path / "never-ready" / "fanout"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n# never becomes ready: no stats file, no socket\nexec sleep 600\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    old_pid = b.pid("fanout")
    out: dict = {}

    async def action(stream):
        out["r"] = await cli_async(b, "swap", "fanout", str(script), env={"SWITCHYARD_START_TIMEOUT": "3"})
        out["back_at"] = stream.now()

    stream, rep, _ = run(run_scenario(b.url, action, rate=RATE, before=2, after=4,
                                      publish_timeout=PUBLISH_TIMEOUT, **LIGHT), 90)
    r = out["r"]
    assert r.rc == 1 and "rolled back" in r.output, r
    row = b.status_row("fanout")
    assert row["state"] == "up" and int(row["pid"]) != old_pid, row
    assert row.get("binary") == str(frozen_bin / "fanout"), row
    assert os.path.realpath(f"/proc/{row['pid']}/exe") == str(frozen_bin / "fanout")
    assert not processes_mentioning(str(script)), "the never-ready binary was left running"
    # the broker kept serving: fanout was away for the start timeout, then everything came through
    what = "swap fanout to a never-ready binary"
    assert_delivery_clean(rep, stream, what)
    assert_no_disconnects(rep, what)
    assert rep.resyncs == {0: pairs(stream)} and rep.covered == 0, rep.summary()
    assert_recovered_after(stream, rep, out["back_at"] + 1.0, what)
    # and a later swap still uses the rolled-back binary as the stage's own
    assert b.cli("restart", "fanout").rc == 0
    assert b.status_row("fanout").get("binary") == str(frozen_bin / "fanout")

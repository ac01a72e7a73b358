"""Issue 3, item 3: two nodes (two `./switchyard` stacks, own ports, RunDirs and LogFolders) on one Kafka form a
cluster. A publish on node 1 to a consumed topic reaches subscribers on node 2 (and on node 1) with the same
seq and epoch; a client that was on node 1 reconnects to node 2 with its last {epoch, seq} and recovers exactly
what it missed, then DATA_SYNC: no duplicate, no gap, also while publishes keep coming."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from e2e_helpers import Client, broker_factory, kinds, run, summarize
from kafka_helpers import KafkaBroker, tansu, unique_topic  # noqa: F401 (fixture)

PREFIX = f"cl{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def nodes(tansu, tmp_path_factory):
    def build(index: int) -> KafkaBroker:
        return KafkaBroker(tmp_path_factory.mktemp(f"node{index + 1}"), tansu.bootstrap, name=f"node{index + 1}",
                           topics_regex=rf"^{PREFIX}-.*")

    with broker_factory(build) as make:
        yield [make(), make()]


def has_status(got):
    return any(f.get("op") == "status" for f in got)


def msgs_of(subject):
    return lambda f: f.get("op") == "message" and f.get("subject") == subject


async def watch_until(client, subject, contents, timeout=30):
    """Messages of `subject` on `client` until every one of `contents` has arrived."""
    want = set(contents)
    return await client.collect(msgs_of(subject), lambda got: want <= {f["content"] for f in got},
                                timeout, what=f"{len(want)} messages on {subject}")


def test_two_nodes_run_side_by_side(nodes):
    n1, n2 = nodes
    assert n1.port != n2.port and n1.run_dir != n2.run_dir and n1.log_dir != n2.log_dir
    for n in nodes:
        rows = n.status_json()
        assert {r["stage"] for r in rows} == {"ws-ingress", "router", "cache", "fanout", "kafka-in", "kafka-out"}, rows
        assert all(r["state"] == "up" for r in rows), rows


def test_publish_on_node1_reaches_subscribers_on_both_nodes_with_the_same_numbers(nodes):
    n1, n2 = nodes
    s = f"/{unique_topic(PREFIX)}/car66/speed"

    async def scenario():
        async with await Client.connect(n1.url, name="pub@1") as pub, \
                await Client.connect(n2.url, name="sub@2") as sub2, \
                await Client.connect(n2.url, name="sub@2b") as sub2b, \
                await Client.connect(n1.url, name="sub@1") as sub1:
            for c in (sub2, sub2b, sub1):
                await c.subscribe([s])
            for i in range(3):
                await pub.publish_ok(s, f"v{i}", closure=f"p{i}", timeout=15)
            return [await watch_until(c, s, ["v0", "v1", "v2"]) for c in (sub2, sub2b, sub1)]

    got = run(scenario(), 90)
    seen = [[(f["content"], f["seq"], f["epoch"]) for f in frames] for frames in got]
    assert seen[0] == seen[1] == seen[2], seen
    assert [c for c, _, _ in seen[0]] == ["v0", "v1", "v2"], seen
    seqs = [q for _, q, _ in seen[0]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3, seqs
    assert len({e for _, _, e in seen[0]}) == 1, seen


def test_client_from_node1_recovers_exactly_what_it_missed_on_node2(nodes):
    n1, n2 = nodes
    topic = unique_topic(PREFIX)
    s, other = f"/{topic}/car66", f"/{topic}/car67"  # other keys of the topic interleave offsets
    k = 5

    async def scenario():
        async with await Client.connect(n1.url, name="pub@1") as pub, \
                await Client.connect(n2.url, name="watch@2") as watch:
            await watch.subscribe([s])
            # the first session, on node 1
            async with await Client.connect(n1.url, name="a@1") as a:
                await a.subscribe([s])
                for i in range(3):
                    await pub.publish_ok(s, f"m{i}", closure=f"m{i}", timeout=15)
                    await pub.publish_ok(other, f"o{i}", closure=f"o{i}", timeout=15)
                first = await watch_until(a, s, ["m0", "m1", "m2"])
            last = first[-1]
            # missed while away
            missed = [f"m{i}" for i in range(3, 3 + k)]
            for c in missed:
                await pub.publish_ok(s, c, closure=c, timeout=15)
                await pub.publish_ok(other, "x" + c, closure="x" + c, timeout=15)
            everything = await watch_until(watch, s, [f"m{i}" for i in range(3 + k)])
            # back, on node 2
            async with await Client.connect(n2.url, name="a@2") as b:
                st = await b.subscribe([s], recover={s: {"epoch": last["epoch"], "seq": last["seq"]}})
                assert st[s]["status"] == "ALLOW", st
                frames = await b.subject_frames_until(s, has_status, timeout=20)
                await pub.publish_ok(s, "after", closure="after", timeout=15)
                rest = await watch_until(b, s, ["after"])
                more = await b.quiet(msgs_of(s), 1.0)
            return last, everything, frames, rest + more

    last, everything, frames, rest = run(scenario(), 120)
    by_content = {f["content"]: f for f in everything}
    expected = [("recovered", by_content[f"m{i}"]["seq"]) for i in range(3, 3 + k)] + [("status", "DATA_SYNC")]
    assert kinds(frames) == expected, f"got {summarize(frames)}; expected {expected}"
    assert [f["content"] for f in frames[:-1]] == [f"m{i}" for i in range(3, 3 + k)], summarize(frames)
    assert all(f["epoch"] == last["epoch"] for f in frames[:-1]), summarize(frames)
    assert [(f["type"], f["content"]) for f in rest] == [("update", "after")], summarize(rest)


def test_recovery_on_node2_while_publishes_keep_coming_has_no_gap_and_no_duplicate(nodes):
    n1, n2 = nodes
    s = f"/{unique_topic(PREFIX)}/busy"
    total = 60

    async def scenario():
        async with await Client.connect(n1.url, name="pub@1") as pub, \
                await Client.connect(n2.url, name="watch@2") as watch:
            await watch.subscribe([s])
            async with await Client.connect(n1.url, name="a@1") as a:
                await a.subscribe([s])
                for i in range(5):
                    await pub.publish_ok(s, f"m{i}", closure=f"m{i}", timeout=15)
                first = await watch_until(a, s, [f"m{i}" for i in range(5)])
            last = first[-1]
            # node 2 knows the (new) topic once its kafka-in's metadata refresh (every 5 s) found it: until then a
            # recovery there is answered DATA_RESYNC ("deep recovery: epoch unknown")
            watched = await watch_until(watch, s, [f"m{i}" for i in range(5)])

            async def keep_publishing():
                for i in range(5, total):
                    await pub.publish_ok(s, f"m{i}", closure=f"m{i}", timeout=15)
                    await asyncio.sleep(0.02)

            publisher = asyncio.create_task(keep_publishing())
            await asyncio.sleep(0.3)  # some are missed, more arrive during the recovery
            async with await Client.connect(n2.url, name="a@2") as b:
                await b.subscribe([s], recover={s: {"epoch": last["epoch"], "seq": last["seq"]}})
                await publisher
                everything = watched + await watch_until(watch, s, [f"m{i}" for i in range(5, total)])
                got = await b.subject_frames_until(
                    s, lambda fs: any(f.get("content") == f"m{total - 1}" for f in fs), timeout=30)
                got += await b.quiet(lambda f: f.get("subject") == s, 1.0)
            return last, everything, got

    last, everything, got = run(scenario(), 180)
    statuses = [f for f in got if f.get("op") == "status"]
    assert [f["status"] for f in statuses] == ["DATA_SYNC"], summarize(statuses)
    sync_at = got.index(statuses[0])
    assert all(f["type"] == "recovered" for f in got[:sync_at]), summarize(got)
    assert all(f["type"] == "update" for f in got[sync_at + 1:]), summarize(got)
    contents = [f["content"] for f in got if f.get("op") == "message"]
    assert contents == [f"m{i}" for i in range(5, total)], f"gap or duplicate: {contents}"
    want_seqs = [f["seq"] for f in everything if f["content"] not in {f"m{i}" for i in range(5)}]
    assert [f["seq"] for f in got if f.get("op") == "message"] == want_seqs


def test_null_key_subject_recovers_across_nodes(nodes):
    """`/topic` (a null key) goes to partition 0 from Switchyard's producer: one epoch, recoverable anywhere."""
    n1, n2 = nodes
    s = f"/{unique_topic(PREFIX)}"

    async def scenario():
        async with await Client.connect(n1.url, name="pub@1") as pub, \
                await Client.connect(n2.url, name="watch@2") as watch:
            await watch.subscribe([s])
            await pub.publish_ok(s, "n0", closure="n0", timeout=15)
            first = await watch_until(watch, s, ["n0"])
            for i in (1, 2, 3):
                await pub.publish_ok(s, f"n{i}", closure=f"n{i}", timeout=15)
            rest = await watch_until(watch, s, ["n1", "n2", "n3"])
            async with await Client.connect(n2.url, name="back@2") as back:
                await back.subscribe([s], recover={s: {"epoch": first[0]["epoch"], "seq": first[0]["seq"]}})
                frames = await back.subject_frames_until(s, has_status, timeout=20)
            return first + rest, frames

    seen, frames = run(scenario(), 90)
    assert all(f["epoch"].endswith(".0") for f in seen), summarize(seen)
    assert kinds(frames) == [("recovered", f["seq"]) for f in seen[1:]] + [("status", "DATA_SYNC")], summarize(frames)

"""Issue 3, item 5: Kafka unreachable at start or going away later. The node starts (or stays up) and keeps its
WebSocket clients, `status` shows the Kafka stages' state "kafka unreachable", publishes with a closure get
FAILED within about PublishTimeout, and everything resumes by itself when Kafka is back.

Tansu keeps its data in memory: a Tansu started again on the same port is empty, so the topic comes back with a
new topic id and the partitions' epochs change."""

from __future__ import annotations

import time
import uuid

from e2e_helpers import Client, kinds, run, summarize, wait_until
from kafka_helpers import make_kafka_broker, make_tansu, produce_one, unique_topic  # noqa: F401 (fixtures)

PUBLISH_TIMEOUT = 3
SLACK = 2.0  # scheduling on 2 busy cores


def has_status(got):
    return any(f.get("op") == "status" for f in got)


def msgs_of(subject):
    return lambda f: f.get("op") == "message" and f.get("subject") == subject


async def timed_publish(client, subject, content, closure):
    t0 = time.monotonic()
    st = await client.publish(subject, content, closure=closure, timeout=PUBLISH_TIMEOUT + 15)
    return st, time.monotonic() - t0


async def publish_until_ok(client, subject, prefix, within=40.0):
    """Publishes fresh contents until one is OK (Kafka is back); returns (content, tries)."""
    deadline = time.monotonic() + within
    tries = []
    while time.monotonic() < deadline:
        content = f"{prefix}-{uuid.uuid4().hex[:6]}"
        st = await client.publish(subject, content, closure=content, timeout=PUBLISH_TIMEOUT + 15)
        tries.append(st)
        if st["status"] == "OK":
            return content, tries
        await _sleep(0.5)
    raise AssertionError(f"no publish OK within {within:.0f}s after Kafka came back: {tries[-5:]}")


async def _sleep(s):
    import asyncio
    await asyncio.sleep(s)


def test_status_shows_kafka_unreachable_when_kafka_is_down_at_start(make_tansu, make_kafka_broker):
    kafka = make_tansu(start=False)  # a free port nobody listens on
    node = make_kafka_broker(kafka.bootstrap, name="nokafka", topics=[unique_topic("st")],
                             PublishTimeout=PUBLISH_TIMEOUT)
    rows = node.status_json()
    assert all(r["state"] == "up" for r in rows), rows
    seen = []

    def unreachable():
        states = node.kafka_states()
        seen.append(states)
        return len(states) == 2 and all(v == "kafka unreachable" for v in states.values())

    try:
        wait_until(unreachable, 15, interval=0.5, what="both kafka stages to report 'kafka unreachable'")
    except AssertionError as e:
        raise AssertionError(f"{e}; states seen: {seen[-3:]}") from None
    log = node.log_text("kafka-out") + node.log_text("kafka-in")
    assert "Kafka unreachable" in log, "the stages did not log the condition"


def test_node_started_before_kafka_fails_publishes_then_resumes_by_itself(make_tansu, make_kafka_broker):
    kafka = make_tansu(start=False)
    topic = unique_topic("late")
    s = f"/{topic}/car1"
    node = make_kafka_broker(kafka.bootstrap, name="early", topics=[topic], PublishTimeout=PUBLISH_TIMEOUT)

    async def scenario():
        async with await Client.connect(node.url, name="pub") as pub, \
                await Client.connect(node.url, name="sub") as sub:
            await sub.subscribe([s])
            st, took = await timed_publish(pub, s, "while down", "d1")
            assert st["status"] == "FAILED", st
            assert took <= PUBLISH_TIMEOUT + SLACK, f"FAILED only after {took:.1f}s: {st}"
            await pub.ping_pong()  # clients stay connected
            await sub.ping_pong()

            kafka.start()
            ok_content, tries = await publish_until_ok(pub, s, "back")
            got = await sub.collect(msgs_of(s), lambda fs: any(f["content"] == ok_content for f in fs), 30,
                                    what=f"the record {ok_content!r}")
            # a record produced by a Kafka client after Kafka came up is consumed too
            rec = produce_one(kafka.bootstrap, topic, "car1", "from kafka")
            got += await sub.collect(msgs_of(s), lambda fs: any(f["content"] == "from kafka" for f in fs), 30,
                                     what="the record produced by confluent-kafka")
            return got, rec

    got, rec = run(scenario(), 150)
    assert "while down" not in [f["content"] for f in got], f"a FAILED publish was stored: {summarize(got)}"
    last = got[-1]
    assert (last["content"], last["seq"]) == ("from kafka", rec.offset), summarize(got)
    node.wait_kafka_state("ok", 15)


def test_kafka_going_away_and_coming_back(make_tansu, make_kafka_broker):
    kafka = make_tansu()
    topic = unique_topic("away")
    s = f"/{topic}/car2"
    node = make_kafka_broker(kafka.bootstrap, name="away", topics=[topic], PublishTimeout=PUBLISH_TIMEOUT)

    async def scenario():
        async with await Client.connect(node.url, name="pub") as pub, \
                await Client.connect(node.url, name="sub") as sub:
            await sub.subscribe([s])
            for i in range(3):
                await pub.publish_ok(s, f"m{i}", closure=f"m{i}", timeout=15)
            before = await sub.messages(s, 3, timeout=25)
            epoch1 = before[-1]["epoch"]

            kafka.stop()
            node.wait_kafka_state("kafka unreachable", 20)
            st, took = await timed_publish(pub, s, "while away", "w1")
            assert st["status"] == "FAILED", st
            assert took <= PUBLISH_TIMEOUT + SLACK, f"FAILED only after {took:.1f}s: {st}"
            await sub.ping_pong()
            # what the node holds is still served: a snapshot, and a recovery from the cache
            async with await Client.connect(node.url, name="snap") as snap:
                await snap.subscribe([s])
                snap_frames = await snap.messages(s, 1, timeout=10)
            async with await Client.connect(node.url, name="rec") as rec:
                await rec.subscribe([s], recover={s: {"epoch": epoch1, "seq": before[0]["seq"]}})
                rec_frames = await rec.subject_frames_until(s, has_status, timeout=15)

            kafka.start()  # same port, empty: the topic is recreated with a new id
            # A Kafka client recreates the topic first. Tansu 0.6 acknowledges a Produce for a topic it does not
            # have (kafka-out's librdkafka still knows the partition leader and sends the Produce without asking
            # for metadata, which would create the topic) and then never serves that record: the publish is OK
            # but the record is gone, and later produces to that partition fail (object store AlreadyExists).
            recreated = produce_one(kafka.bootstrap, topic, "car2", "recreated")
            ok_content, tries = await publish_until_ok(pub, s, "back")
            after = await sub.collect(msgs_of(s), lambda fs: any(f["content"] == ok_content for f in fs), 30,
                                      what=f"the record {ok_content!r}")
            # the subscriber's whole stream, in arrival order (messages and status frames of s)
            statuses = [f for f in sub.seen if f.get("op") in ("status", "message") and f.get("subject") == s]
            return before, epoch1, snap_frames, rec_frames, after, statuses, recreated

    before, epoch1, snap_frames, rec_frames, after, statuses, recreated = run(scenario(), 180)
    assert [f["content"] for f in before] == ["m0", "m1", "m2"]
    assert [(f["type"], f["content"]) for f in snap_frames] == [("snapshot", "m2")], summarize(snap_frames)
    assert kinds(rec_frames) == [("recovered", before[1]["seq"]), ("recovered", before[2]["seq"]),
                                 ("status", "DATA_SYNC")], summarize(rec_frames)
    new = after[-1]
    assert new["epoch"] != epoch1, f"the recreated topic kept the old epoch: {summarize(after)}"
    assert [f["content"] for f in after] == ["recreated", new["content"]], summarize(after)
    assert (after[0]["seq"], after[0]["epoch"]) == (recreated.offset, new["epoch"]), (summarize(after), recreated)
    assert "while away" not in [f["content"] for f in after], f"a FAILED publish was stored: {summarize(after)}"
    # the live subscriber is told its stream restarted (new epoch): DATA_RESYNC before the new epoch's first
    stream = [("status", f["status"]) if f["op"] == "status" else (f["epoch"] == epoch1, f["content"])
              for f in statuses]
    assert stream[:3] == [(True, "m0"), (True, "m1"), (True, "m2")], stream
    assert stream[3:5] == [("status", "DATA_RESYNC"), (False, "recreated")], stream
    node.wait_kafka_state("ok", 20)

"""Issue 3, item 1: a WebSocket publish is produced to Kafka. `/vehicles/car66/speed` → topic `vehicles`, key
`car66/speed`, value = the content; `/vehicles` → null key (on partition 0). publish_status OK comes with the
delivery report, so the record is in Kafka when the publisher hears OK. A topic that is not consumed is only
produced to: nothing comes back to subscribers.

Read back with two third-party clients: confluent-kafka and kcat."""

from __future__ import annotations

import base64
import os
import uuid

import pytest

from e2e_helpers import Client, run, running
from kafka_helpers import (KafkaBroker, kcat_read, read_topic, tansu, unique_topic,  # noqa: F401 (fixture)
                           produce_one, wait_for_records)

# The node consumes only topics starting with "back-": everything else is produce-only.
CONSUMED = "back"


@pytest.fixture(scope="module")
def node(tansu, tmp_path_factory):
    with running(KafkaBroker(tmp_path_factory.mktemp("kpub"), tansu.bootstrap, name="kpub",
                             topics_regex=rf"^{CONSUMED}-.*", PublishTimeout=5)) as b:
        yield b


def test_publish_with_closure_is_in_kafka_with_topic_key_and_value_when_ok(node, tansu):
    content = f"88-{uuid.uuid4().hex[:8]}"

    async def scenario():
        async with await Client.connect(node.url, name="pub") as pub:
            st = await pub.publish("/vehicles/car66/speed", content, closure="c1", timeout=15)
            assert st["status"] == "OK", st
            # OK means delivered: the record is there when the publisher hears OK, no waiting
            return read_topic(tansu.bootstrap, "vehicles", timeout=15)

    records = run(scenario(), 60)
    mine = [r for r in records if r.value == content.encode()]
    assert len(mine) == 1, f"expected exactly one record with value {content!r} in topic vehicles: {records}"
    assert mine[0].key == b"car66/speed", mine[0]


def test_single_segment_subject_is_produced_with_a_null_key_on_partition_0(node, tansu):
    topic = unique_topic("veh")
    contents = [f"n{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]

    async def scenario():
        async with await Client.connect(node.url, name="pub") as pub:
            for i, c in enumerate(contents):
                await pub.publish_ok(f"/{topic}", c, closure=f"n{i}", timeout=15)

    run(scenario(), 60)
    records = read_topic(tansu.bootstrap, topic)
    assert [r.value for r in records] == [c.encode() for c in contents], records
    assert all(r.key is None for r in records), records
    assert {r.partition for r in records} == {0}, records
    assert [r.offset for r in records] == [0, 1, 2], records


def test_publish_read_back_with_kcat(node, tansu):
    topic = unique_topic("kc")
    subjects = {f"/{topic}/car7/speed": "car7/speed", f"/{topic}/car8": "car8", f"/{topic}": None}

    async def scenario():
        async with await Client.connect(node.url, name="pub") as pub:
            for i, s in enumerate(subjects):
                await pub.publish_ok(s, f"v{i}", closure=f"k{i}", timeout=15)

    run(scenario(), 60)
    records = kcat_read(tansu.bootstrap, topic)
    got = {r.value.decode(): r.key for r in records}
    want = {f"v{i}": (None if k is None else k.encode()) for i, k in enumerate(subjects.values())}
    assert got == want, records


def test_binary_content_is_produced_as_raw_bytes(node, tansu):
    topic = unique_topic("bin")
    raw = bytes([0, 1, 2, 0xFF, 0xFE, 0x80]) + os.urandom(32)

    async def scenario():
        async with await Client.connect(node.url, name="pub") as pub:
            await pub.publish_ok(f"/{topic}/blob", base64.b64encode(raw).decode(), closure="b1", timeout=15,
                                 encoding="base64")

    run(scenario(), 60)
    records = read_topic(tansu.bootstrap, topic)
    assert [(r.key, r.value) for r in records] == [(b"blob", raw)], records


def test_unconsumed_topic_is_only_produced_to_nothing_comes_back(node, tansu):
    quiet_topic = unique_topic("vehicles")  # not matched by ^back-.*
    back_topic = unique_topic(CONSUMED)     # consumed: the control that proves the wait was long enough
    quiet, back = f"/{quiet_topic}/car66/speed", f"/{back_topic}/car66/speed"

    async def scenario():
        async with await Client.connect(node.url, name="sub") as sub, \
                await Client.connect(node.url, name="pub") as pub:
            await sub.subscribe([quiet, back])
            await pub.subscribe([quiet])  # the publisher itself gets nothing back either
            await pub.publish_ok(quiet, "q1", closure="q1", timeout=15)
            await pub.publish_ok(back, "b1", closure="b1", timeout=15)
            # the consumed topic's record comes back (a new topic: picked up by kafka-in's metadata refresh)
            m = await sub.messages(back, 1, timeout=25)
            assert m[0]["content"] == "b1", m
            await pub.publish_ok(quiet, "q2", closure="q2", timeout=15)
            # and once more after the consumed one came back: still nothing on the produce-only subject
            hits = await sub.quiet(lambda f: f.get("subject") == quiet, 4)
            hits += await pub.quiet(lambda f: f.get("subject") == quiet, 0.5)
            assert hits == [], f"a produce-only topic came back to subscribers: {hits}"

    run(scenario(), 90)
    # ... and it was produced all the same
    records = read_topic(tansu.bootstrap, quiet_topic)
    assert sorted(r.value for r in records) == [b"q1", b"q2"], records
    assert all(r.key == b"car66/speed" for r in records), records


def test_a_subject_published_through_switchyard_and_by_a_kafka_client_shares_its_partition(node, tansu):
    """kafka-out uses the Java client's partitioner (murmur2): a Kafka client using the same one puts a key on
    the same partition, so the subject keeps one epoch and one order."""
    topic = unique_topic(CONSUMED)
    s = f"/{topic}/car9"

    async def scenario():
        async with await Client.connect(node.url, name="sub") as sub, \
                await Client.connect(node.url, name="pub") as pub:
            await sub.subscribe([s])
            await pub.publish_ok(s, "from-ws", closure="w1", timeout=15)
            first = (await sub.messages(s, 1, timeout=25))[0]
            rec = produce_one(tansu.bootstrap, topic, "car9", "from-kafka")  # murmur2_random
            second = (await sub.messages(s, 1, timeout=15))[0]
            return first, second, rec

    first, second, rec = run(scenario(), 90)
    assert first["content"] == "from-ws" and second["content"] == "from-kafka", (first, second)
    assert first["epoch"] == second["epoch"], (first, second)
    assert second["epoch"].endswith(f".{rec.partition}") and second["seq"] == rec.offset, (second, rec)
    assert second["seq"] > first["seq"], (first, second)
    records = wait_for_records(tansu.bootstrap, topic, lambda rs: len(rs) == 2, what="both records")
    assert {r.partition for r in records} == {rec.partition}, records

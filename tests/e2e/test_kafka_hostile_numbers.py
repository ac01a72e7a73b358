"""Issue 7, back stages: numbers from outside never trap kafka-in. A recovery position beyond any Kafka offset
gets a clear answer (DATA_RESYNC), and a record with a far-future timestamp is delivered; kafka-in never
restarts and Kafka → WebSocket delivery goes on. A corrupt offset checkpoint (issue 12) is reported, naming the
file, and kafka-in starts as on a first run."""

from __future__ import annotations

import json

from confluent_kafka import Producer

from e2e_helpers import Client, run, running, summarize, wait_until
from kafka_helpers import (KAFKA_WAIT, KafkaBroker, epoch_of_record, produce_one, tansu,  # noqa: F401 (fixture)
                           unique_topic)

import pytest

TOPIC = unique_topic("hostile")
HUGE_SEQ = 9_300_000_000_000_000_000  # above Int64.max: no Kafka offset is that large


@pytest.fixture(scope="module")
def node(tansu, tmp_path_factory):
    first = produce_one(tansu.bootstrap, TOPIC, "car1", "hello")  # creates the topic before the node starts
    b = KafkaBroker(tmp_path_factory.mktemp("khostile"), tansu.bootstrap, name="khostile", topics=[TOPIC])
    with running(b):
        b.first_record = first
        yield b


def kafka_in_restarts(node) -> int:
    row = node.status_row("kafka-in")
    assert row is not None, "kafka-in is not in the status"
    return int(row["restarts"])


def is_msg(subject):
    return lambda f: f.get("op") == "message" and f.get("subject") == subject


def test_recover_from_a_seq_beyond_any_offset_resyncs_and_kafka_in_keeps_running(node, tansu):
    subject = f"/{TOPIC}/nokey"
    epoch = epoch_of_record(tansu.bootstrap, node.first_record)
    pid = node.pid("kafka-in")

    async def scenario():
        async with await Client.connect(node.url, name="recoverer") as client:
            await client.subscribe(subject, recover={subject: {"epoch": epoch, "seq": HUGE_SEQ}})
            status = await client.wait_for(lambda f: f.get("op") == "status" and f.get("subject") == subject,
                                           timeout=15, what="the recovery's status")
            produce_one(tansu.bootstrap, TOPIC, "nokey", "after the huge seq")
            live = await client.wait_for(is_msg(subject), timeout=KAFKA_WAIT, what="a live record")
            return status, live

    status, live = run(scenario(), 60)
    assert status["status"] == "DATA_RESYNC", status
    assert live["content"] == "after the huge seq", live
    assert node.pid("kafka-in") == pid and kafka_in_restarts(node) == 0, node.log_tails()


def test_a_record_with_a_far_future_timestamp_is_delivered_and_kafka_in_keeps_running(node, tansu):
    subject = f"/{TOPIC}/future"
    pid = node.pid("kafka-in")

    async def scenario():
        async with await Client.connect(node.url, name="future") as client:
            await client.subscribe(subject)
            producer = Producer({"bootstrap.servers": tansu.bootstrap})
            # One partition for both, so they arrive in order.
            producer.produce(TOPIC, key=b"future", value=b"from the far future", partition=0,
                             timestamp=2**63 - 1)
            assert producer.flush(KAFKA_WAIT) == 0, "the record was not delivered to Kafka"
            produce_one(tansu.bootstrap, TOPIC, "future", "from now", partition=0)
            frames = await client.collect(is_msg(subject), lambda got: len(got) >= 2, timeout=KAFKA_WAIT)
            return frames

    frames = run(scenario(), 60)
    assert [f["content"] for f in frames] == ["from the far future", "from now"], summarize(frames)
    assert node.pid("kafka-in") == pid and kafka_in_restarts(node) == 0, node.log_tails()


def test_a_corrupt_offset_checkpoint_is_reported_and_kafka_in_starts_from_the_warm_up_tail(node, tansu):
    checkpoint = node.run_dir / "kafka-in-0.offsets.json"
    checkpoint.write_text('{"%s-0": "not an offset"' % TOPIC)
    r = node.cli("restart", "kafka-in")
    assert r.rc == 0, r
    log = node.log_text("kafka-in")
    assert "offset checkpoint unreadable; starting from the warm-up tail" in log and str(checkpoint) in log, \
        node.log_tails()
    subject = f"/{TOPIC}/afterrestart"

    async def scenario():
        async with await Client.connect(node.url, name="after-restart") as client:
            await client.subscribe(subject)
            produce_one(tansu.bootstrap, TOPIC, "afterrestart", "after a corrupt checkpoint")
            return await client.wait_for(is_msg(subject), timeout=KAFKA_WAIT, what="a live record")

    assert run(scenario(), 60)["content"] == "after a corrupt checkpoint"

    def saved_offsets():  # the next checkpoint (written just after the record was forwarded) replaces the file
        try:
            saved = json.loads(checkpoint.read_text())
        except ValueError:
            return None
        return saved if saved and all(isinstance(v, int) for v in saved.values()) else None

    wait_until(saved_offsets, 10, what="a valid checkpoint in place of the corrupt one")

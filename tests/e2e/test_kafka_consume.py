"""Issue 3, item 2: a record produced by a Kafka client (confluent-kafka, kcat) on a consumed topic reaches every
WebSocket subscriber of `/topic/key` (`/topic` for a null key) with seq = its offset and epoch =
`<topic id>.<partition>`. `topics = a,b` and `topics.regex` both select what is consumed; a topic created later
that matches the regex is picked up by kafka-in's metadata refresh; other topics are not delivered."""

from __future__ import annotations

import base64
import time
import uuid

import pytest

from e2e_helpers import Client, run, running, summarize
from kafka_helpers import (KafkaBroker, kcat_produce, produce, produce_one, tansu,  # noqa: F401 (fixture)
                           unique_topic)

MODULE_TAG = uuid.uuid4().hex[:6]
LISTED = ["notifications", f"alerts-{MODULE_TAG}"]       # topics = a,b
REGEX_PREFIX = f"rx{MODULE_TAG}"                           # topics.regex = ^rx<tag>-.*
EARLY_TOPIC = f"{REGEX_PREFIX}-early"                      # exists before the regex node starts


def epoch_of(frame) -> tuple[str, str]:
    """(topic id part, partition part) of an epoch `<id>.<partition>`."""
    epoch = frame["epoch"]
    assert isinstance(epoch, str) and "." in epoch, f"epoch is not <topic-id>.<partition>: {frame}"
    ident, _, part = epoch.rpartition(".")
    assert ident and part.isdigit(), f"epoch is not <topic-id>.<partition>: {frame}"
    return ident, part


def is_msg(subject):
    return lambda f: f.get("op") == "message" and f.get("subject") == subject


@pytest.fixture(scope="module")
def list_node(tansu, tmp_path_factory):
    with running(KafkaBroker(tmp_path_factory.mktemp("klist"), tansu.bootstrap, name="klist", topics=LISTED)) as b:
        yield b


@pytest.fixture(scope="module")
def regex_node(tansu, tmp_path_factory):
    early = produce_one(tansu.bootstrap, EARLY_TOPIC, "k", "early-record")
    b = KafkaBroker(tmp_path_factory.mktemp("kregex"), tansu.bootstrap, name="kregex",
                    topics_regex=rf"^{REGEX_PREFIX}-.*")
    with running(b):
        b.early_record = early
        yield b


def test_record_reaches_every_subscriber_with_offset_as_seq_and_partition_epoch(list_node, tansu):
    s, other = "/notifications/car66", "/notifications/car67"

    async def scenario():
        clients = [await Client.connect(list_node.url, name=f"sub{i}") for i in range(3)]
        try:
            for c in clients:
                await c.subscribe([s, other])
            # a few records first, so offsets are not all 0; the same partition for car66 (one producer)
            recs = produce(tansu.bootstrap, "notifications",
                           [("car66", "speed 1"), ("car66", "speed 2"), ("car66", "speed 3")], partitioner=None)
            assert len({r.partition for r in recs}) == 1, recs
            got = [await c.messages(s, 3, timeout=25) for c in clients]
            stray = [await c.quiet(is_msg(other), 0.5) for c in clients]
            return recs, got, stray
        finally:
            for c in clients:
                await c.close()

    recs, got, stray = run(scenario(), 90)
    for frames in got:
        assert [f["content"] for f in frames] == ["speed 1", "speed 2", "speed 3"], summarize(frames)
        assert [f["seq"] for f in frames] == [r.offset for r in recs], (summarize(frames), recs)
        assert all(f["type"] == "update" for f in frames), summarize(frames)
        assert all(epoch_of(f)[1] == str(recs[0].partition) for f in frames), (summarize(frames), recs)
        assert len({f["epoch"] for f in frames}) == 1, summarize(frames)
    assert got[0] == got[1] == got[2]  # every subscriber got the same numbers
    assert stray == [[], [], []], f"another key's subscribers got car66's records: {stray}"


def test_null_key_record_reaches_the_topic_subject(list_node, tansu):
    s = "/notifications"

    async def scenario():
        async with await Client.connect(list_node.url, name="sub") as sub:
            await sub.subscribe([s])
            rec = produce_one(tansu.bootstrap, "notifications", None, "to everyone", partitioner=None)
            m = (await sub.messages(s, 1, timeout=25))[0]
            return rec, m

    rec, m = run(scenario(), 60)
    assert rec.key is None
    assert m["content"] == "to everyone" and m["seq"] == rec.offset, (m, rec)
    assert epoch_of(m)[1] == str(rec.partition), (m, rec)


def test_records_produced_with_kcat_on_the_second_listed_topic(list_node, tansu):
    topic = LISTED[1]
    keyed, bare = f"/{topic}/door/3", f"/{topic}"

    async def scenario():
        async with await Client.connect(list_node.url, name="sub") as sub:
            await sub.subscribe([keyed, bare])
            kcat_produce(tansu.bootstrap, topic, [("door/3", "open"), (None, "all clear")])
            a = (await sub.messages(keyed, 1, timeout=25))[0]
            b = (await sub.messages(bare, 1, timeout=25))[0]
            return a, b

    a, b = run(scenario(), 60)
    assert a["content"] == "open" and b["content"] == "all clear", (a, b)
    for m in (a, b):
        assert isinstance(m["seq"], int) and m["seq"] >= 0, m
        epoch_of(m)


def test_a_topic_not_listed_is_not_delivered(list_node, tansu):
    unlisted = unique_topic("notificationsx")

    async def scenario():
        async with await Client.connect(list_node.url, name="sub") as sub:
            await sub.subscribe([f"/{unlisted}/car66", "/notifications/car70"])
            produce_one(tansu.bootstrap, unlisted, "car66", "not for you")
            produce_one(tansu.bootstrap, "notifications", "car70", "control")
            await sub.messages("/notifications/car70", 1, timeout=25)
            return await sub.quiet(is_msg(f"/{unlisted}/car66"), 6)  # > one metadata refresh (5 s)

    hits = run(scenario(), 60)
    assert hits == [], f"an unlisted topic was delivered: {hits}"


def test_binary_record_value_reaches_websocket_as_base64(list_node, tansu):
    s = "/notifications/blob"
    raw = bytes([0xFF, 0x00, 0xC3, 0x28, 0x80]) + b"tail"

    async def scenario():
        async with await Client.connect(list_node.url, name="sub") as sub:
            await sub.subscribe([s])
            produce_one(tansu.bootstrap, "notifications", "blob", raw)
            return (await sub.messages(s, 1, timeout=25))[0]

    m = run(scenario(), 60)
    assert m.get("encoding") == "base64" and base64.b64decode(m["content"]) == raw, m


def test_a_record_whose_key_makes_no_valid_subject_is_skipped_and_consuming_goes_on(list_node, tansu):
    s = "/notifications/after-bad"

    async def scenario():
        async with await Client.connect(list_node.url, name="sub") as sub:
            await sub.subscribe([s])
            produce(tansu.bootstrap, "notifications", [("bad//key", "x"), ("/lead", "y"), ("after-bad", "fine")])
            return (await sub.messages(s, 1, timeout=25))[0]

    m = run(scenario(), 60)
    assert m["content"] == "fine", m
    row = list_node.status_row("kafka-in")
    assert row and row.get("state") == "up" and row.get("restarts") == 0, row


def test_regex_consumes_a_topic_that_existed_at_start(regex_node, tansu):
    early = regex_node.early_record
    s = f"/{EARLY_TOPIC}/k"

    async def scenario():
        async with await Client.connect(regex_node.url, name="sub") as sub:
            await sub.subscribe([s])
            return (await sub.messages(s, 1, timeout=20))[0]

    m = run(scenario(), 60)
    # a snapshot once the warm-up reached the cache, an update if the subscribe came first (test_kafka_warmup
    # checks the warm-up itself)
    assert (m["content"], m["seq"]) == ("early-record", early.offset), m
    assert m["type"] in ("snapshot", "update"), m
    assert epoch_of(m)[1] == str(early.partition), m


def test_regex_picks_up_a_topic_created_after_start_and_ignores_others(regex_node, tansu):
    late = f"{REGEX_PREFIX}-late-{uuid.uuid4().hex[:6]}"
    unmatched = f"r{REGEX_PREFIX}-{uuid.uuid4().hex[:6]}"  # starts with "r": does not match ^rx<tag>-
    s, u = f"/{late}/car1", f"/{unmatched}/car1"

    async def scenario():
        async with await Client.connect(regex_node.url, name="sub") as sub:
            await sub.subscribe([s, u])
            t0 = time.monotonic()
            rec = produce_one(tansu.bootstrap, late, "car1", "new topic")
            produce_one(tansu.bootstrap, unmatched, "car1", "not matched")
            m = (await sub.messages(s, 1, timeout=15))[0]
            took = time.monotonic() - t0
            hits = await sub.quiet(is_msg(u), 6)
            return rec, m, took, hits

    rec, m, took, hits = run(scenario(), 60)
    assert m["content"] == "new topic" and m["seq"] == rec.offset, (m, rec)
    assert epoch_of(m)[1] == str(rec.partition), m
    assert hits == [], f"a topic not matching the regex was delivered: {hits}"
    print(f"new topic picked up after {took:.1f}s")

"""Issue 3, item 6: producer and consumer properties pass straight through to librdkafka (compression.type, acks,
enable.idempotence, message.max.bytes, ...); an unknown or malformed librdkafka property stops start-up with
librdkafka's own message and the file and line."""

from __future__ import annotations

import re
import time

import pytest

from e2e_helpers import Client, processes_mentioning, run, wait_until
from kafka_helpers import make_kafka_broker, read_topic, tansu, unique_topic  # noqa: F401 (fixtures)

# A bad property makes its stage exit at once (status 2); the supervisor's start gives up after this long.
START_TIMEOUT = 8


def line_of(path, text) -> int:
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip() == text:
            return i
    raise AssertionError(f"{text!r} not in {path}")


def failed_start(node, monkeypatch, timeout=START_TIMEOUT):
    """Runs `switchyard start`, expecting it to fail; returns (result, seconds). Leaves nothing running."""
    monkeypatch.setenv("SWITCHYARD_START_TIMEOUT", str(timeout))
    t0 = time.monotonic()
    try:
        r = node.cli("start", timeout=timeout + 30)
    finally:
        took = time.monotonic() - t0
        node.stop()
    assert r.rc != 0, f"start succeeded with a bad Kafka property:\n{r.output}"
    wait_until(lambda: not processes_mentioning(str(node.dir)), 15, what="no process of the failed stack")
    return r, took


def test_producer_and_consumer_properties_pass_through(tansu, make_kafka_broker):
    topic = unique_topic("props")
    s = f"/{topic}/car1"
    node = make_kafka_broker(
        tansu.bootstrap, name="props", topics=[topic], PublishTimeout=5,
        producer_lines=["compression.type = lz4", "acks = all", "enable.idempotence = true", "linger.ms = 2",
                        "message.max.bytes = 2000", "client.id = e2e-kafka-out"],
        consumer_lines=["fetch.wait.max.ms = 50", "client.id = e2e-kafka-in", "check.crcs = true"])

    async def scenario():
        async with await Client.connect(node.url, name="pub") as pub, \
                await Client.connect(node.url, name="sub") as sub:
            await sub.subscribe([s])
            contents = [f"lz4-{i}-" + "x" * 200 for i in range(5)]
            for i, c in enumerate(contents):
                await pub.publish_ok(s, c, closure=f"p{i}", timeout=15)
            got = await sub.messages(s, 5, timeout=25)
            # message.max.bytes = 2000 reached librdkafka: a bigger record is refused by the producer itself
            big = await pub.publish(s, "y" * 5000, closure="big", timeout=15)
            return contents, got, big

    contents, got, big = run(scenario(), 90)
    assert [f["content"] for f in got] == contents
    assert big["status"] == "FAILED", big
    assert re.search(r"too large|MSG_SIZE_TOO_LARGE", big.get("reason", ""), re.I), big
    records = read_topic(tansu.bootstrap, topic)
    assert [r.value.decode() for r in records] == contents, records  # lz4 batches, read by confluent-kafka
    assert node.status_row("kafka-out")["restarts"] == 0


@pytest.mark.parametrize("which, line, words", [
    ("producer", "no.such.property = 1", ["no.such.property", "No such configuration property"]),
    ("producer", "acks = maybe", ["acks", "Invalid value", "maybe"]),
    ("consumer", "auto.offset.reset = sometimes", ["auto.offset.reset", "Invalid value", "sometimes"]),
    ("consumer", "fetch.wait.max.ms = soon", ["fetch.wait.max.ms", "soon"]),
    ("consumer", "this line has no separator", ["expected 'key = value'"]),
])
def test_bad_kafka_property_stops_start_with_librdkafkas_message_and_file_line(tansu, make_kafka_broker,
                                                                              monkeypatch, which, line, words):
    kw = {f"{which}_lines": ["linger.ms = 5" if which == "producer" else "fetch.wait.max.ms = 100", line]}
    node = make_kafka_broker(tansu.bootstrap, start=False, name="bad", topics=[unique_topic("bad")], **kw)
    path = node.producer_properties if which == "producer" else node.consumer_properties
    n = line_of(path, line)
    r, took = failed_start(node, monkeypatch)
    assert f"{path}:{n}" in r.output, f"no {path.name}:{n} in the start output:\n{r.output}"
    for w in words:
        assert w in r.output, f"{w!r} not in the start output:\n{r.output}"
    stage = "kafka-out" if which == "producer" else "kafka-in"
    assert f"{path}:{n}" in node.log_text(stage), node.log_text(stage)[-2000:]


def test_bad_kafka_property_is_a_configuration_error_reported_at_once(tansu, make_kafka_broker, monkeypatch):
    """The design's exit codes: 2 for a configuration error. A property librdkafka refuses is one: start should
    say so at once (the stage exits with status 2 right away) instead of restarting the stage until the start
    timeout and exiting 1."""
    node = make_kafka_broker(tansu.bootstrap, start=False, name="bad2", topics=[unique_topic("bad")],
                             producer_lines=["no.such.property = 1"])
    r, took = failed_start(node, monkeypatch, timeout=20)
    assert "No such configuration property" in r.output, r.output
    assert r.rc == 2, f"exit status {r.rc} after {took:.1f}s (2 = configuration error):\n{r.output}"
    assert took < 10, f"start took {took:.1f}s to report a configuration error"

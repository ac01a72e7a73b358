"""Issue 11 in Kafka mode: an MQTT publish is produced to Kafka (PUBACK only after Kafka's delivery report) and a
Kafka record reaches an MQTT subscriber, with the topic ⇄ subject ⇄ Kafka mapping of docs/MQTT.md."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid

import pytest

from e2e_helpers import free_port, pid_alive, run, running, wait_until
from kafka_helpers import KafkaBroker, produce_one, read_topic, tansu, unique_topic  # noqa: F401 (fixture)
from mqtt_helpers import Device, Paho, user_properties

pytestmark = pytest.mark.skipif(not shutil.which("mosquitto_pub"), reason="mosquitto-clients is not installed")

CONSUMED = "mqback"


@pytest.fixture(scope="module")
def node(tansu, tmp_path_factory):
    port = free_port()
    b = KafkaBroker(tmp_path_factory.mktemp("kmqtt"), tansu.bootstrap, name="kmqtt",
                    topics_regex=rf"^{CONSUMED}-.*", PublishTimeout=5, ListenMqtt=f"127.0.0.1:{port}")
    b.mqtt_port = port
    with running(b):
        yield b


def test_mqtt_publish_is_in_kafka_when_puback_comes(node, tansu):
    topic, value = unique_topic("mqout"), f"21.5-{uuid.uuid4().hex[:6]}"

    async def scenario():
        pub = await asyncio.create_subprocess_exec(
            "mosquitto_pub", "-h", "127.0.0.1", "-p", str(node.mqtt_port), "-V", "mqttv5", "-q", "1",
            "-t", f"{topic}/dev7/temp", "-m", value, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(pub.communicate(), 20)
        assert pub.returncode == 0, out  # mosquitto_pub exits 0 once its PUBACK came

    run(scenario(), 60)
    records = read_topic(tansu.bootstrap, topic, timeout=15)  # no waiting: PUBACK meant delivered
    assert [(r.key, r.value) for r in records] == [(b"dev7/temp", value.encode())], records


def first_line_while_producing(node, tansu, topic: str, filter_: str, records: list[tuple[str, str]],
                               version: str = "mqttv311") -> str:
    """`mosquitto_sub -t FILTER -C 1`'s first line (`%t %p`), producing `records` (key, value) every 3 s until it
    comes: kafka-in finds a new topic of its regex only at its next metadata refresh."""
    async def scenario():
        sub = await asyncio.create_subprocess_exec(
            "mosquitto_sub", "-h", "127.0.0.1", "-p", str(node.mqtt_port), "-V", version, "-q", "1",
            "-t", filter_, "-C", "1", "-W", "40", "-F", "%t %p", stdout=asyncio.subprocess.PIPE)
        try:
            deadline = time.monotonic() + 35
            line = b""
            while not line and time.monotonic() < deadline:
                for key, value in records:
                    produce_one(tansu.bootstrap, topic, key, value)
                try:
                    line = await asyncio.wait_for(sub.stdout.readline(), 3)
                except asyncio.TimeoutError:
                    pass
            return line.decode().strip()
        finally:
            if sub.returncode is None:
                sub.kill()
            await sub.wait()

    return run(scenario(), 60)


def test_kafka_record_reaches_an_mqtt_subscriber(node, tansu):
    topic = unique_topic(CONSUMED)
    line = first_line_while_producing(node, tansu, topic, f"{topic}/dev7/cmd", [("dev7/cmd", "reboot")])
    assert line == f"{topic}/dev7/cmd reboot"


def test_user_properties_are_kafka_headers_and_back(node, tansu):
    """MQTT 5 user properties → Kafka record headers; record headers → user properties of a v5 subscriber (a null
    value empty, a binary one dropped); a 3.1.1 subscriber gets the message without them."""
    out_topic, in_topic = unique_topic("mqout"), unique_topic(CONSUMED)
    publisher = Paho(node.mqtt_port, "mqttv5")
    try:
        rc = publisher.publish_and_wait(f"{out_topic}/dev7/temp", "21.5", qos=1,
                                        user_properties=[("unit", "C"), ("unit", "K"), ("trace", "t-1")])
        assert int(rc.value) == 0
    finally:
        publisher.close()
    (record,) = read_topic(tansu.bootstrap, out_topic, timeout=15)
    assert (record.key, record.value, record.headers) == \
        (b"dev7/temp", b"21.5", [("unit", b"C"), ("unit", b"K"), ("trace", b"t-1")])

    v5, v311 = Paho(node.mqtt_port, "mqttv5"), Paho(node.mqtt_port, "mqttv311")
    try:
        for client in (v5, v311):
            assert client.subscribe([(f"{in_topic}/dev7/cmd", 1)]) == [1]
        headers = [("unit", b"km/h"), ("null", None), ("binary", b"\xff\xfe"), ("trace", "t-2")]
        # kafka-in finds a new topic of its regex at its next metadata refresh: produce until one arrives.
        deadline, msg = time.monotonic() + 35, None
        while msg is None and time.monotonic() < deadline:
            produce_one(tansu.bootstrap, in_topic, "dev7/cmd", "reboot", headers=headers)
            try:
                msg = v5.messages.get(timeout=3)
            except Exception:
                pass
        assert msg is not None, "no message from Kafka"
        assert (msg.payload, user_properties(msg)) == (b"reboot", [("unit", "km/h"), ("null", ""), ("trace", "t-2")])
        plain = v311.messages.get(timeout=10)
        assert (plain.payload, user_properties(plain)) == (b"reboot", [])
    finally:
        v5.close()
        v311.close()


def test_a_persistent_session_recovers_what_it_missed_from_kafka_after_a_cache_restart(node, tansu):
    """A 3.1.1 device with clean session off leaves; records are produced; the cache is killed (-9) and restarted
    empty of them unless it reads them again: the device reconnects and gets them, from its session's position
    in the partition (docs/MQTT.md, "Persistent sessions")."""
    topic, cid = unique_topic(CONSUMED), f"dev-{uuid.uuid4().hex[:8]}"
    device = Device(node.mqtt_port, cid)
    device.subscribe(f"{topic}/dev7/cmd")
    got = device.first_while(lambda: produce_one(tansu.bootstrap, topic, "dev7/cmd", "first"))
    assert got and set(got) == {"first"}, got
    time.sleep(1.5)  # the acknowledged position is saved within a second
    device.close()
    for value in ("m1", "m2"):
        produce_one(tansu.bootstrap, topic, "dev7/cmd", value)
    old = node.kill_stage("cache")
    wait_until(lambda: not pid_alive(old), 10, what="cache gone")
    again = Device(node.mqtt_port, cid, retry_for=30)
    assert again.session_present is True
    assert again.payloads(2, timeout=30) == ["m1", "m2"]
    assert again.nothing_more() == []
    again.close()


def test_a_kafka_record_reaches_a_wildcard_subscriber(node, tansu):
    """A record on topic T with key car7/speed is the subject /T/car7/speed: `mosquitto_sub -t 'T/+/speed'` gets
    it, and not the records of T's other keys."""
    topic = unique_topic(CONSUMED)
    line = first_line_while_producing(node, tansu, topic, f"{topic}/+/speed",
                                      [("car7/fuel", "no"), ("car7/speed", "88")], version="mqttv5")
    assert line == f"{topic}/car7/speed 88"

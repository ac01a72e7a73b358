"""Issue 11, item 4 (second half): in Kafka mode a persistent MQTT session lives in the compacted session topic
(`MqttSessionTopic`) that every node reads, so a device that reconnects to ANOTHER node gets what it missed.
docs/MQTT.md, "Persistent sessions"."""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest

from e2e_helpers import Client, broker_factory, free_port, run
from kafka_helpers import (KafkaBroker, make_kafka_broker, make_tansu, produce_one, read_topic, tansu,  # noqa: F401
                           unique_topic)
from mqtt_helpers import Device

PREFIX = f"ks{uuid.uuid4().hex[:6]}"
SESSIONS = f"sessions-{PREFIX}"  # matched by kafka-in's topics.regex too: kafka-in must leave it alone


@pytest.fixture(scope="module")
def nodes(tansu, tmp_path_factory):
    def build(index: int) -> KafkaBroker:
        port = free_port()
        b = KafkaBroker(tmp_path_factory.mktemp(f"ksess{index + 1}"), tansu.bootstrap, name=f"ksess{index + 1}",
                        topics_regex=rf"^({PREFIX}-.*|{SESSIONS})", ListenMqtt=f"127.0.0.1:{port}", MqttSessionTopic=SESSIONS,
                        MqttSessionExpiry=300)
        b.mqtt_port = port
        return b

    with broker_factory(build) as make:
        yield [make(), make()]


def session_records(bootstrap: str, cid: str) -> list[dict | None]:
    """The records of `cid` in the session topic, oldest first (None: a tombstone)."""
    return [json.loads(r.value) if r.value else None for r in read_topic(bootstrap, SESSIONS)
            if r.key == cid.encode()]


def test_a_v5_device_reconnecting_to_the_other_node_gets_every_message_it_missed(nodes, tansu):
    node1, node2 = nodes
    topic, cid = unique_topic(PREFIX), f"dev-{uuid.uuid4().hex[:8]}"
    subject = f"/{topic}/dev7/cmd"
    device = Device(node1.mqtt_port, cid, version="mqttv5", expiry=300)
    assert device.session_present is False
    device.subscribe(f"{topic}/dev7/cmd")
    got = device.first_while(lambda: produce_one(tansu.bootstrap, topic, "dev7/cmd", "first"))
    assert got and set(got) == {"first"}, got
    time.sleep(1.5)  # the acknowledged position is saved within a second
    device.close()
    time.sleep(0.5)
    left = session_records(tansu.bootstrap, cid)[-1]
    assert left and left["clientID"] == cid and left["expirySeconds"] == 300, left
    position = left["positions"][subject]

    for value in ("m1", "m2", "m3"):
        produce_one(tansu.bootstrap, topic, "dev7/cmd", value)
    again = Device(node2.mqtt_port, cid, version="mqttv5", expiry=300)
    assert again.session_present is True, "node 2 found the session node 1 left"
    assert again.payloads(3, timeout=30) == ["m1", "m2", "m3"]
    assert again.nothing_more() == []
    time.sleep(1.5)
    again.close()
    time.sleep(0.5)
    taken_up = session_records(tansu.bootstrap, cid)[-1]
    assert taken_up["subscriptions"] == [{"filter": f"{topic}/dev7/cmd", "qos": 1}]
    # The same partition (epoch) and the numbers go on from where node 1 left them: nothing skipped or repeated.
    assert taken_up["positions"][subject]["epoch"] == position["epoch"]
    assert taken_up["positions"][subject]["seq"] == position["seq"] + 3, (position, taken_up)
    for node in nodes:
        assert not (node.run_dir / "mqtt-sessions").exists(), "Kafka mode keeps no session in RunDir"


def test_a_take_over_on_the_other_node_closes_the_old_connection(nodes, tansu):
    """MQTT 3.1.4: the server disconnects the client already connected with the identifier. Node 1 reads node 2's
    save of generation 1 from the session topic and closes its connection (v5: DISCONNECT 0x8E Session taken over)
    within a few seconds, without saving it again: every record after node 2's is of generation 1 (docs/MQTT.md,
    "Take-over")."""
    node1, node2 = nodes
    topic, cid = unique_topic(PREFIX), f"dev-{uuid.uuid4().hex[:8]}"
    old = Device(node1.mqtt_port, cid, version="mqttv5", expiry=300)
    old.subscribe(f"{topic}/dev7/cmd")
    got = old.first_while(lambda: produce_one(tansu.bootstrap, topic, "dev7/cmd", "first"))
    assert got, "kafka-in found the topic"
    time.sleep(1.5)
    new = Device(node2.mqtt_port, cid, version="mqttv5", expiry=300)
    assert new.session_present is True
    assert old.taken_over(5), "node 1 closed the old connection within a few seconds"
    assert old.disconnect_reason == 0x8E, old.disconnect_reason
    assert "taken over by a connection on another instance or node" in node1.log_text("ws-ingress")
    for value in ("m1", "m2"):
        produce_one(tansu.bootstrap, topic, "dev7/cmd", value)
    assert new.payloads(2, timeout=30) == ["m1", "m2"]
    assert new.connected.is_set() and not new.gone.is_set(), "the new connection is not closed by its own save"
    time.sleep(1.5)  # node 2 saves the moved positions
    new.close()
    time.sleep(1)
    records = session_records(tansu.bootstrap, cid)
    first_taken = next(i for i, r in enumerate(records) if r and r.get("generation") == 1)
    assert all(r and r.get("generation") == 1 for r in records[first_taken:]), records[first_taken:]
    assert len(records) > first_taken + 1, "node 2 saved the moved positions"


def test_a_clean_start_on_the_other_node_deletes_the_session_with_a_tombstone(nodes, tansu):
    node1, node2 = nodes
    topic, cid = unique_topic(PREFIX), f"dev-{uuid.uuid4().hex[:8]}"
    device = Device(node1.mqtt_port, cid, version="mqttv5", expiry=300)
    device.subscribe(f"{topic}/x")
    time.sleep(1.5)
    device.close()
    time.sleep(0.5)
    assert session_records(tansu.bootstrap, cid)[-1] is not None
    clean = Device(node2.mqtt_port, cid, version="mqttv5", clean=True)
    assert clean.session_present is False
    clean.close()
    time.sleep(0.5)
    assert session_records(tansu.bootstrap, cid)[-1] is None, "a tombstone ends it for every node"
    back = Device(node1.mqtt_port, cid, version="mqttv5", expiry=300)
    assert back.session_present is False, "node 1 read the tombstone"
    back.close()


def test_a_publish_cannot_write_into_the_session_topic_nor_a_subscriber_read_it(nodes, tansu):
    """A forged session (a publish on the session topic's subject) is refused by kafka-out, answered FAILED; kafka-in
    does not deliver the topic's records although its topics.regex matches the topic."""
    cid = f"dev-{uuid.uuid4().hex[:8]}"
    device = Device(nodes[0].mqtt_port, cid, version="mqttv5", expiry=300)
    time.sleep(1)
    device.close()
    time.sleep(0.5)
    assert session_records(tansu.bootstrap, cid), "saved"

    async def read_sessions():
        async with await Client.connect(nodes[1].url, retry_for=30) as ws:
            await ws.subscribe(f"/{SESSIONS}/{cid}", history=10)
            return await ws.quiet(lambda f: f.get("op") == "message", 3)

    assert run(read_sessions()) == []
    victim = f"victim-{uuid.uuid4().hex[:8]}"
    forged = json.dumps({"clientID": victim, "version": 5, "expirySeconds": 300, "expiresAt": 4e9,
                         "subscriptions": [{"filter": "secret/#", "qos": 1}], "positions": {}})

    async def scenario():
        async with await Client.connect(nodes[0].url, retry_for=30) as ws:
            return await ws.publish(f"/{SESSIONS}/{victim}", forged, closure="forge", timeout=15)

    status = run(scenario())
    assert status["status"] == "FAILED", status
    assert session_records(tansu.bootstrap, victim) == []


def connack(port: int, cid: str, version: int, clean: bool, expiry: int | None = None) -> int:
    """Sends a bare CONNECT and returns the CONNACK's return (3.1.1) or reason (v5) code."""
    props = b""
    if version == 5:
        props = (b"\x11" + expiry.to_bytes(4, "big")) if expiry else b""
        props = bytes([len(props)]) + props
    body = (b"\x00\x04MQTT" + bytes([version, 0x02 if clean else 0x00]) + b"\x00\x1e" + props
            + len(cid).to_bytes(2, "big") + cid.encode())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(bytes([0x10, len(body)]) + body)
        answer = b""
        while len(answer) < 4:
            chunk = s.recv(64)
            assert chunk, f"closed without CONNACK (got {answer!r})"
            answer += chunk
    assert answer[0] == 0x20, answer
    return answer[3]


def test_kafka_down_at_start_refuses_session_connects_server_unavailable_not_no_session(make_tansu,
                                                                                      make_kafka_broker):
    kafka = make_tansu(start=False)  # a free port nobody listens on yet
    port = free_port()
    node = make_kafka_broker(kafka.bootstrap, name="ksdown", topics=[unique_topic("ksdown")],
                             ListenMqtt=f"127.0.0.1:{port}", MqttSessionTopic=SESSIONS, HandshakeTimeout=4)
    cid = f"dev-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    assert connack(port, cid, 5, clean=False, expiry=300) == 0x88, "v5 Server unavailable"
    assert time.monotonic() - started < 4, "answered within HandshakeTimeout"
    assert connack(port, cid, 4, clean=False) == 0x03, "3.1.1 Server unavailable"
    assert connack(port, cid, 5, clean=True) == 0x00, "a connection without a session is not affected"
    assert "not read to its end in time" in node.log_text("ws-ingress")
    kafka.start()
    deadline = time.monotonic() + 45
    while connack(port, cid, 5, clean=False, expiry=300) != 0x00:
        assert time.monotonic() < deadline, "session CONNECTs accepted once Kafka is back"
        time.sleep(1)

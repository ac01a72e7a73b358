"""Issue 11, item 4: MQTT persistent sessions. A device with clean session off (v5: Clean Start 0 and a Session
Expiry Interval) that reconnects gets the QoS 1 messages it missed on its subscriptions, across a reconnect and a
`kill -9` of ws-ingress; a clean session discards the session; a v5 session expires. docs/MQTT.md, "Persistent
sessions"."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import uuid

import pytest

from e2e_helpers import Broker, Client, free_port, pid_alive, run, running, unique_subject, wait_until
from mqtt_helpers import Device, RawPublish, connect_packet, puback_packet, read_packet, subscribe_packet, topic_of

pytestmark = pytest.mark.skipif(not shutil.which("mosquitto_pub") or not shutil.which("mosquitto_sub"),
                                reason="mosquitto-clients is not installed (scripts/setup.sh installs it)")

MAX_EXPIRY = 60


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    port = free_port()
    b = Broker(tmp_path_factory.mktemp("mqtt-sessions"), name="mqtt-sessions", ListenMqtt=f"127.0.0.1:{port}",
               MqttSessionExpiry=str(MAX_EXPIRY))
    b.mqtt_port = port
    with running(b):
        yield b


def publish_by_websocket(b: Broker, subject: str, *contents: str):
    async def scenario():
        async with await Client.connect(b.url, retry_for=30) as ws:
            for i, content in enumerate(contents):
                status = await ws.publish_ok(subject, content, closure=f"c{i}", timeout=15)
                assert status["status"] == "OK", status

    run(scenario())


def publish_by_mqtt(b: Broker, subject: str, content: str):
    out = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(b.mqtt_port), "-q", "1", "-t",
                          topic_of(subject), "-m", content], capture_output=True, text=True, timeout=15)
    assert out.returncode == 0, out.stdout + out.stderr  # QoS 1: it waits for the PUBACK


def client_id() -> str:
    return f"dev-{uuid.uuid4().hex[:10]}"


def stored_session(b: Broker, cid: str) -> dict | None:
    """The session file of `cid` (named by two FNV-1a 64 hashes: of the identifier and of it reversed)."""
    def fnv1a(data: bytes) -> int:
        h = 0xcbf29ce484222325
        for byte in data:
            h = ((h ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
        return h
    data = cid.encode()
    path = b.run_dir / "mqtt-sessions" / f"{fnv1a(data):016x}{fnv1a(data[::-1]):016x}.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


# --- the tests -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_a_reconnecting_device_gets_the_qos1_messages_it_missed(broker, version):
    s, cid = unique_subject("sess"), client_id()
    device = Device(broker.mqtt_port, cid, version, expiry=3600)
    assert device.session_present is False
    if version == "mqttv5":
        assert device.connack_properties.SessionExpiryInterval == MAX_EXPIRY, "capped by MqttSessionExpiry"
    device.subscribe(topic_of(s))
    publish_by_websocket(broker, s, "m1")
    assert device.payloads(1) == ["m1"]
    device.close()

    publish_by_websocket(broker, s, "m2")
    publish_by_mqtt(broker, s, "m3")
    publish_by_websocket(broker, s, "m4")

    again = Device(broker.mqtt_port, cid, version, expiry=3600)
    assert again.session_present is True
    assert again.payloads(3) == ["m2", "m3", "m4"], "missed while away, in order, without subscribing again"
    assert again.nothing_more() == [], "m1 was acknowledged: not sent again"
    publish_by_websocket(broker, s, "m5")
    assert again.payloads(1) == ["m5"], "live again"
    again.close()


def test_resent_qos1_messages_keep_their_packet_identifiers(broker):
    """MQTT-4.4.0-1: a raw 3.1.1 device acknowledges m1 and not m2, m3, and goes; after its reconnect m2 and m3
    come again with DUP 1 and the packet identifiers they had (2 and 3: a renumbering would start at 1), and a new
    message takes neither while they await their PUBACK."""
    s, cid = unique_subject("sess-ids"), client_id()

    def connect(session_present: bool):
        sock = socket.create_connection(("127.0.0.1", broker.mqtt_port), timeout=10)
        sock.sendall(connect_packet(client_id=cid, keepalive=30, clean=False))
        first, body = read_packet(sock)
        assert first == 0x20 and body == bytes([int(session_present), 0]), (first, body)
        return sock

    sock = connect(session_present=False)
    sock.sendall(subscribe_packet(1, topic_of(s)))
    assert read_packet(sock) == (0x90, b"\x00\x01\x01"), "SUBACK, QoS 1"
    publish_by_websocket(broker, s, "m1")
    m1 = RawPublish(*read_packet(sock))
    sock.sendall(puback_packet(m1.packet_id))
    publish_by_websocket(broker, s, "m2", "m3")
    sent = [RawPublish(*read_packet(sock)) for _ in range(2)]
    assert [(p.payload, p.qos, p.dup) for p in sent] == [("m2", 1, False), ("m3", 1, False)]
    ids = [p.packet_id for p in sent]
    assert m1.packet_id not in ids
    sock.close()  # no PUBACK for m2, m3; no DISCONNECT
    wait_until(lambda: len((stored_session(broker, cid) or {}).get("unacknowledged") or []) == 2, 10,
               what="the session saved with its two unacknowledged messages")

    again = connect(session_present=True)
    resent = [RawPublish(*read_packet(again)) for _ in range(2)]
    assert [(p.payload, p.qos, p.dup, p.packet_id) for p in resent] == [("m2", 1, True, ids[0]), ("m3", 1, True, ids[1])]
    publish_by_websocket(broker, s, "m4")
    m4 = RawPublish(*read_packet(again))
    assert (m4.payload, m4.dup) == ("m4", False) and m4.packet_id not in ids, "not an identifier still in flight"
    for p in resent + [m4]:
        again.sendall(puback_packet(p.packet_id))
    again.close()


def test_a_wildcard_filter_comes_back_with_the_session_and_recovers_its_subjects(broker):
    """The session keeps a `+` filter and the position of each subject it delivered: after the reconnect, without
    a SUBSCRIBE, the QoS 1 message published while away on a subject the pattern had delivered arrives (recovered
    from its position), then live messages on matching subjects; the retained one is not sent again (docs/MQTT.md,
    "Wildcard subscriptions in a persistent session")."""
    base, cid = unique_subject("sess-wild"), client_id()
    device = Device(broker.mqtt_port, cid, "mqttv5", expiry=3600)
    publish_by_mqtt_retained = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.mqtt_port), "-q", "1", "-r",
                                "-t", topic_of(f"{base}/car1/speed"), "-m", "retained"]
    out = subprocess.run(publish_by_mqtt_retained, capture_output=True, text=True, timeout=15)
    assert out.returncode == 0, out.stdout + out.stderr
    device.subscribe(topic_of(f"{base}/+/speed"))
    assert device.payloads(1) == ["retained"]
    publish_by_websocket(broker, f"{base}/car1/speed", "seen")
    assert device.payloads(1) == ["seen"]
    position = lambda: (stored_session(broker, cid) or {}).get("positions", {}).get(f"{base}/car1/speed")
    wait_until(lambda: position() and position()["seq"] == position()["sentSeq"], 10, what="'seen' acknowledged, saved")
    device.close()

    publish_by_websocket(broker, f"{base}/car1/speed", "missed")
    again = Device(broker.mqtt_port, cid, "mqttv5", expiry=3600)
    assert again.session_present is True
    assert again.payloads(1) == ["missed"], "recovered from the subject's position, without a SUBSCRIBE"
    time.sleep(0.5)  # the restored pattern's interest reaches the fanout
    publish_by_websocket(broker, f"{base}/car2/speed", "live")
    publish_by_websocket(broker, f"{base}/car2/fuel", "other")
    publish_by_websocket(broker, f"{base}/car1/speed", "live1")
    assert again.payloads(2) == ["live", "live1"], "the restored pattern delivers, once per message"
    assert again.nothing_more() == [], "no retained message again, nothing of a non-matching subject"
    again.close()


def test_mosquitto_sub_with_a_persistent_session_gets_what_it_missed(broker):
    """mosquitto_sub -c subscribes again after reconnecting: the subscription it has resumes from its position."""
    s, cid = unique_subject("sess"), client_id()
    args = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.mqtt_port), "-c", "-i", cid, "-q", "1",
            "-t", topic_of(s)]
    first = subprocess.Popen(args + ["-C", "1"], stdout=subprocess.PIPE, text=True)
    wait_until(lambda: (stored_session(broker, cid) or {}).get("subscriptions"), 10, what="the subscription saved")
    publish_by_websocket(broker, s, "m1")
    assert first.communicate(timeout=10)[0].split() == ["m1"]
    publish_by_websocket(broker, s, "m2", "m3")
    second = subprocess.run(args + ["-W", "3"], capture_output=True, text=True, timeout=15)
    got = second.stdout.split()
    assert got[-2:] == ["m2", "m3"] and set(got) <= {"m1", "m2", "m3"}, got


def test_a_clean_session_discards_the_stored_one(broker):
    s, cid = unique_subject("sess"), client_id()
    device = Device(broker.mqtt_port, cid)
    device.subscribe(topic_of(s))
    device.close()
    clean = Device(broker.mqtt_port, cid, clean=True)
    assert clean.session_present is False
    publish_by_websocket(broker, s, "m1")
    assert clean.nothing_more() == [], "no subscription: the session was discarded"
    clean.close()
    again = Device(broker.mqtt_port, cid)
    assert again.session_present is False, "a clean session leaves no session behind"
    again.close()
    v5 = Device(broker.mqtt_port, cid, "mqttv5", expiry=60)
    v5.subscribe(topic_of(s))
    v5.close()
    start = Device(broker.mqtt_port, cid, "mqttv5", clean=True, expiry=60)
    assert start.session_present is False, "v5 Clean Start 1"
    start.close()


def test_a_v5_session_expires_after_its_interval(broker):
    s, cid = unique_subject("sess"), client_id()
    device = Device(broker.mqtt_port, cid, "mqttv5", expiry=1)
    assert device.connack_properties is None or not hasattr(device.connack_properties, "SessionExpiryInterval")
    device.subscribe(topic_of(s))
    device.close()
    time.sleep(2.5)
    publish_by_websocket(broker, s, "m1")
    again = Device(broker.mqtt_port, cid, "mqttv5", expiry=1)
    assert again.session_present is False
    assert again.nothing_more() == []
    again.close()


def test_a_second_connection_takes_the_session_over(broker):
    s, cid = unique_subject("sess"), client_id()
    first = Device(broker.mqtt_port, cid)
    first.subscribe(topic_of(s))
    second = Device(broker.mqtt_port, cid)
    assert second.session_present is True
    assert first.gone.wait(10), "the first connection is closed"
    first.client.loop_stop()  # no automatic reconnect taking it back
    publish_by_websocket(broker, s, "m1")
    assert second.payloads(1) == ["m1"]
    second.close()


def test_qos1_survives_a_kill_9_of_ws_ingress(broker):
    s, cid = unique_subject("sess"), client_id()
    device = Device(broker.mqtt_port, cid)
    device.subscribe(topic_of(s))
    publish_by_websocket(broker, s, "m1")
    assert device.payloads(1) == ["m1"]
    position = lambda: (stored_session(broker, cid) or {}).get("positions", {}).get(s)
    # The acknowledged position is saved within a second.
    wait_until(lambda: position() and position()["seq"] == position()["sentSeq"] > 0, 10, what="m1 acknowledged, saved")
    old = broker.kill_stage("ws-ingress")
    assert device.gone.wait(10)
    device.client.loop_stop()
    wait_until(lambda: not pid_alive(old), 10, what="ws-ingress gone")

    publish_by_websocket(broker, s, "m2", "m3")  # once the supervisor has restarted it
    publish_by_mqtt(broker, s, "m4")
    again = Device(broker.mqtt_port, cid, retry_for=30)
    assert again.session_present is True, "the session outlived the process"
    assert again.payloads(3) == ["m2", "m3", "m4"]
    assert again.nothing_more() == [], "m1 was acknowledged before the kill"
    again.close()


@pytest.fixture(scope="module")
def two_instances(tmp_path_factory):
    port = free_port()
    b = Broker(tmp_path_factory.mktemp("mqtt-sessions-2"), name="mqtt-sessions-2", ListenMqtt=f"127.0.0.1:{port}",
               IngressInstances="2")
    b.mqtt_port = port
    with running(b):
        yield b


def test_a_take_over_on_the_other_ingress_instance_closes_the_old_connection(two_instances):
    """IngressInstances = 2: a second connection with the client identifier of a connection open on the other
    instance announces its take-over (RunDir/mqtt-takeovers); that instance closes the old one within about a
    second (v5: DISCONNECT 0x8E). Tried until the two land on different instances."""
    b = two_instances
    for attempt in range(12):
        s, cid = unique_subject("takeover"), client_id()
        old = Device(b.mqtt_port, cid, "mqttv5", expiry=60)
        old.subscribe(topic_of(s))
        time.sleep(0.5)  # the session is saved (within 250 ms): the new connection continues it
        new = Device(b.mqtt_port, cid, "mqttv5", expiry=60)
        assert new.session_present is True
        assert old.taken_over(5), f"attempt {attempt}: the old connection is closed within a few seconds"
        assert old.disconnect_reason == 0x8E, old.disconnect_reason
        publish_by_websocket(b, s, "m1")
        assert new.payloads(1) == ["m1"], "the new connection keeps the session"
        new.close()
        logs = (b.log_text("ws-ingress", 0) + b.log_text("ws-ingress", 1)).splitlines()
        if any("taken over by a connection on another instance" in line and f"client={cid}" in line for line in logs):
            return
    pytest.fail("the two connections never landed on different instances")


def test_a_session_follows_the_device_to_another_ingress_instance(two_instances):
    """IngressInstances = 2 share the MQTT port (SO_REUSEPORT) and RunDir: whichever instance a reconnect lands
    on continues the session. The device reconnects until it lands on the other instance; every time, the message
    published while it was away arrives."""
    b = two_instances
    port = b.mqtt_port
    s, cid = unique_subject("sess"), client_id()

    def serving_instance() -> int:
        """The instance whose stats, written after now, count one MQTT connection (the other none)."""
        since = time.time()

        def one():
            counts = []
            for n in range(2):
                path = b.run_dir / f"ws-ingress-{n}.stats.json"
                try:
                    if path.stat().st_mtime <= since:
                        return None
                    counts.append(json.loads(path.read_text()).get("mqttConnections", 0))
                except (FileNotFoundError, json.JSONDecodeError):
                    return None
            return counts.index(1) + 1 if sorted(counts) == [0, 1] else None
        return wait_until(one, 10, 0.2, "one instance with the device") - 1

    device = Device(port, cid)
    device.subscribe(topic_of(s))
    publish_by_websocket(b, s, "m0")
    assert device.payloads(1) == ["m0"]
    first = previous = serving_instance()
    for attempt in range(1, 25):
        device.close()
        publish_by_websocket(b, s, f"away{attempt}")
        device = Device(port, cid)
        assert device.session_present is True
        assert device.payloads(1) == [f"away{attempt}"], f"attempt {attempt}"
        previous = serving_instance()
        if previous != first:
            break
    device.close()
    assert previous != first, "every reconnect landed on the same instance"

"""Issue 11: MQTT 3.1.1 and 5.0 on ws-ingress, with real clients (mosquitto_pub / mosquitto_sub, paho-mqtt) and
WebSocket clients of protocol v1 on the same subjects. docs/MQTT.md describes what is tested here."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import socket
import time

import pytest

from e2e_helpers import Broker, Client, free_port, run, running, unique_subject, wait_until
from token_helpers import AUDIENCE, ISSUER, SECRET, token
from mqtt_helpers import Paho, connect_packet, mqtt_string, packet, raw_connect, topic_of, user_properties

pytestmark = pytest.mark.skipif(not shutil.which("mosquitto_pub") or not shutil.which("mosquitto_sub"),
                                reason="mosquitto-clients is not installed (scripts/setup.sh installs it)")


@pytest.fixture(scope="module")
def mqtt_broker(tmp_path_factory):
    port = free_port()
    b = Broker(tmp_path_factory.mktemp("mqtt"), name="mqtt", ListenMqtt=f"127.0.0.1:{port}")
    b.mqtt_port = port
    with running(b):
        yield b


def is_msg(subject):
    return lambda f: f.get("op") == "message" and f.get("subject") == subject


async def mosquitto(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)


# --- the tests -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_mosquitto_pub_reaches_websocket_subscribers_with_seq_epoch_and_qos1_puback(mqtt_broker, version):
    s = unique_subject("mqtt")

    async def scenario():
        async with await Client.connect(mqtt_broker.url) as ws:
            assert (await ws.subscribe([s]))[s]["status"] == "ALLOW"
            for payload, extra in (("one", ["-q", "1"]), ("two", ["-q", "0", "-r"])):
                pub = await mosquitto("mosquitto_pub", "-h", "127.0.0.1", "-p", str(mqtt_broker.mqtt_port), "-V",
                                      version, "-t", topic_of(s), "-m", payload, *extra)
                out, _ = await asyncio.wait_for(pub.communicate(), 10)
                assert pub.returncode == 0, out  # QoS 1: mosquitto_pub waits for its PUBACK
            first, second = await ws.messages(s, 2)
            assert (first["content"], first["retained"], first.get("qos")) == ("one", False, None), first
            assert (second["content"], second["retained"], second.get("qos")) == ("two", True, "STANDARD"), second
            assert first["epoch"] and second["epoch"] == first["epoch"]
            assert second["seq"] == first["seq"] + 1

    run(scenario())


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_mosquitto_sub_gets_the_retained_snapshot_then_live_websocket_publishes(mqtt_broker, version):
    s = unique_subject("mqtt")

    async def scenario():
        async with await Client.connect(mqtt_broker.url) as ws:
            await ws.publish_ok(s, "snap")
            sub = await mosquitto("mosquitto_sub", "-h", "127.0.0.1", "-p", str(mqtt_broker.mqtt_port), "-V", version,
                                  "-t", topic_of(s), "-q", "1", "-C", "2", "-W", "15", "-F", "%r %q %p")
            try:
                line = await asyncio.wait_for(sub.stdout.readline(), 10)
                assert line.decode().strip() == "1 1 snap", "the snapshot, retain flag set"
                await ws.publish_ok(s, "live", retained=False)
                line = await asyncio.wait_for(sub.stdout.readline(), 10)
                assert line.decode().strip() == "0 1 live", "live: retain flag clear, QoS 1"
                await asyncio.wait_for(sub.wait(), 10)
                assert sub.returncode == 0
            finally:
                if sub.returncode is None:
                    sub.kill()

    run(scenario())


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_topics_without_a_subject_are_refused_and_wildcards_granted(mqtt_broker, version):
    v5 = version == "mqttv5"
    client = Paho(mqtt_broker.mqtt_port, version)
    try:
        codes = client.subscribe([("a/+", 1), ("$SYS/load", 0), ("ok/x", 2), ("$SYS/#", 0)])
        assert codes == ([1, 0x87, 1, 0x87] if v5 else [1, 0x80, 1, 0x80]), codes
        if v5:
            rc = client.publish_and_wait("$SYS/x", "no", qos=1)
            assert int(rc.value) == 0x90, f"PUBACK with Topic Name Invalid, got {rc}"
            assert client.client.is_connected()
    finally:
        client.close()
    if not v5:
        # 3.1.1 cannot refuse a PUBLISH: the connection is closed.
        sock = raw_connect(mqtt_broker.mqtt_port, client_id="bad-topic", keepalive=30)
        sock.sendall(packet(0x30, mqtt_string("/leading/slash") + b"x"))
        assert sock.recv(16) == b"", "closed"
        sock.close()


def test_paho_qos1_round_trip_and_websocket_subscribers_see_the_same_message(mqtt_broker):
    s = unique_subject("mqtt")

    async def scenario():
        async with await Client.connect(mqtt_broker.url) as ws:
            await ws.subscribe([s])
            client = Paho(mqtt_broker.mqtt_port, "mqttv5")
            try:
                assert client.subscribe([(topic_of(s), 1)]) == [1]
                rc = client.publish_and_wait(topic_of(s), "q1", qos=1)
                assert int(rc.value) == 0
                msg = client.messages.get(timeout=10)
                assert (msg.topic, msg.payload, msg.qos, msg.retain) == (topic_of(s), b"q1", 1, False)
            finally:
                client.close()
            (frame,) = await ws.messages(s, 1)
            assert frame["content"] == "q1" and frame["seq"] >= 1

    run(scenario())


def test_user_properties_reach_v5_subscribers_live_and_from_the_cache_but_not_311_nor_websocket(mqtt_broker):
    s = unique_subject("mqttprops")
    props = [("unit", "km/h"), ("unit", "m/s"), ("sensor", "\u00e9-7")]

    async def scenario():
        publisher = Paho(mqtt_broker.mqtt_port, "mqttv5")
        v5 = v311 = None
        try:
            rc = publisher.publish_and_wait(topic_of(s), "retained", qos=1, retain=True, user_properties=props)
            assert int(rc.value) == 0
            async with await Client.connect(mqtt_broker.url) as ws:
                await ws.subscribe([s])
                v5, v311 = Paho(mqtt_broker.mqtt_port, "mqttv5"), Paho(mqtt_broker.mqtt_port, "mqttv311")
                for client in (v5, v311):
                    assert client.subscribe([(topic_of(s), 1)]) == [1]
                snapshot = v5.messages.get(timeout=10)
                assert (snapshot.payload, snapshot.retain, user_properties(snapshot)) == (b"retained", True, props)
                assert v311.messages.get(timeout=10).payload == b"retained"
                publisher.publish_and_wait(topic_of(s), "live", qos=1, user_properties=props[:1])
                live = v5.messages.get(timeout=10)
                assert (live.payload, user_properties(live)) == (b"live", props[:1])
                assert v311.messages.get(timeout=10).payload == b"live"
                publisher.publish_and_wait(topic_of(s), "plain", qos=1)
                plain = v5.messages.get(timeout=10)
                assert (plain.payload, user_properties(plain)) == (b"plain", [])
                frames = await ws.messages(s, 3)
                assert [f["content"] for f in frames] == ["retained", "live", "plain"]
                assert all(set(f) == set(frames[2]) for f in frames), "WebSocket frames carry no headers"
        finally:
            for client in (publisher, v5, v311):
                if client:
                    client.close()

    run(scenario())


def test_mqtt_over_websocket_at_path_mqtt(mqtt_broker):
    s = unique_subject("mqttws")
    client = Paho(mqtt_broker.port, "mqttv311", transport="websockets")
    try:
        assert client.subscribe([(topic_of(s), 1)]) == [1]
        client.publish_and_wait(topic_of(s), "x" * 3000, qos=1)  # a packet larger than small WebSocket frames
        msg = client.messages.get(timeout=10)
        assert msg.payload == b"x" * 3000 and msg.qos == 1
    finally:
        client.close()


def test_will_is_published_on_an_abnormal_end_only(mqtt_broker):
    gone, polite = unique_subject("will"), unique_subject("will")

    async def scenario():
        async with await Client.connect(mqtt_broker.url) as ws:
            await ws.subscribe([gone, polite])
            abrupt = raw_connect(mqtt_broker.mqtt_port, client_id="dies", keepalive=60, will=(topic_of(gone), "offline"))
            clean = raw_connect(mqtt_broker.mqtt_port, client_id="leaves", keepalive=60, version=5,
                                will=(topic_of(polite), "offline"))
            clean.sendall(bytes([0xE0, 0]))  # DISCONNECT: the will is dropped
            time.sleep(0.2)
            clean.close()
            abrupt.close()  # no DISCONNECT
            (frame,) = await ws.messages(gone, 1)
            assert frame["content"] == "offline"
            assert await ws.quiet(is_msg(polite), 1.0) == []

    run(scenario())


def test_keepalive_expires_at_one_and_a_half_times(mqtt_broker):
    sock = raw_connect(mqtt_broker.mqtt_port, client_id="quiet", keepalive=1, version=5)
    started = time.monotonic()
    sock.settimeout(5)
    data = sock.recv(64)
    elapsed = time.monotonic() - started
    assert data[:1] == b"\xe0" and 0x8D in data[2:3], f"v5 DISCONNECT with Keep Alive timeout, got {data!r}"
    assert 1.4 <= elapsed <= 3.0, elapsed
    assert sock.recv(16) == b""
    sock.close()


def test_an_empty_retained_publish_clears_the_snapshot(mqtt_broker):
    s = unique_subject("mqtt")

    async def pub(*args):
        proc = await mosquitto("mosquitto_pub", "-h", "127.0.0.1", "-p", str(mqtt_broker.mqtt_port), "-t", topic_of(s),
                               "-q", "1", "-r", *args)
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0, out

    async def scenario():
        await pub("-m", "state")
        async with await Client.connect(mqtt_broker.url) as before:
            await before.subscribe([s])
            (snapshot,) = await before.messages(s, 1)
            assert (snapshot["content"], snapshot["type"]) == ("state", "snapshot")
            await pub("-n")  # a zero-length retained message
            (cleared,) = await before.messages(s, 1)
            assert cleared["content"] == "" and cleared["retained"], "delivered like any other"
        async with await Client.connect(mqtt_broker.url) as after:
            await after.subscribe([s])
            assert await after.quiet(is_msg(s), 1.0) == [], "no snapshot any more"

    run(scenario())


def test_no_puback_when_the_publish_is_not_stored(make_broker):
    """The cache does not answer (stopped): after PublishTimeout, v5 gets PUBACK 0x80 and 3.1.1 is disconnected;
    neither gets a PUBACK that says stored."""
    import signal
    port = free_port()
    b = make_broker(ListenMqtt=f"127.0.0.1:{port}", PublishTimeout=1)
    v5 = Paho(port, "mqttv5")
    v311 = raw_connect(port, client_id="old", keepalive=30)
    cache = b.pid("cache")
    os.kill(cache, signal.SIGSTOP)
    try:
        info = v5.client.publish("stuck/v5", "x", qos=1)
        v311.sendall(packet(0x32, mqtt_string("stuck/v311") + b"\x00\x01" + b"x"))
        info.wait_for_publish(timeout=8)
        assert int(v5.pubacks[info.mid].value) == 0x80, v5.pubacks
        v311.settimeout(8)
        assert v311.recv(16) == b"", "3.1.1: closed, no PUBACK"
    finally:
        os.kill(cache, signal.SIGCONT)
        v5.close()
        v311.close()


def test_mqtt_clients_are_refused_when_entitlement_asks_for_tokens(make_broker):
    """MQTT clients are anonymous (the token as the password is not read yet): with Entitlement = jwt their CONNECT
    is refused as not authorized (3.1.1 return code 5, v5 reason 0x87), never let in with every permission."""
    port = free_port()
    make_broker(ListenMqtt=f"127.0.0.1:{port}", Entitlement="jwt", JwtSecret="s" * 32)
    for version, expected in ((4, 0x05), (5, 0x87)):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(connect_packet(client_id=f"anon-{version}", keepalive=30, version=version))
            connack = sock.recv(64)
            assert connack[0] == 0x20, connack
            assert connack[3] == expected, f"MQTT {version}: CONNACK {connack.hex()}"


# --- wildcard subscriptions (+, #) -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sharded_broker(tmp_path_factory):
    """Two cache and two fanout shards: a pattern's interest must reach both fanouts, its retained request both
    caches."""
    port = free_port()
    b = Broker(tmp_path_factory.mktemp("mqtt-wild"), name="mqtt-wild", ListenMqtt=f"127.0.0.1:{port}",
               CacheInstances=2, FanoutInstances=2)
    b.mqtt_port = port
    with running(b):
        yield b


def unique_level(prefix: str = "wild") -> str:
    return unique_subject(prefix)[1:].replace("/", "-")


def drain(client: Paho, count: int, timeout: float = 10) -> list:
    return [client.messages.get(timeout=timeout) for _ in range(count)]


def assert_nothing_more(client: Paho, wait: float = 1.0) -> None:
    time.sleep(wait)
    assert client.messages.empty(), [m.topic for m in list(client.messages.queue)]


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_mosquitto_sub_pattern_gets_every_retained_match_then_live_ones_across_shards(sharded_broker, version):
    """Retained snapshots of every matching subject, whichever cache shard holds them; then live messages from
    WebSocket and mosquitto_pub; subjects the pattern does not match never arrive."""
    top = unique_level()
    cars = [f"car{n}" for n in range(6)]  # six subjects: both shards of each stage, by FNV-1a

    async def scenario():
        async with await Client.connect(sharded_broker.url) as ws:
            for car in cars:
                await ws.publish_ok(f"/{top}/{car}/speed", f"r-{car}")
            await ws.publish_ok(f"/{top}/car0/fuel", "no")
            await ws.publish_ok(f"/{top}", "no")
            sub = await mosquitto("mosquitto_sub", "-h", "127.0.0.1", "-p", str(sharded_broker.mqtt_port), "-V",
                                  version, "-t", f"{top}/+/speed", "-q", "1", "-C", str(len(cars) + 2), "-W", "20",
                                  "-F", "%r %q %t %p")
            try:
                lines = [(await asyncio.wait_for(sub.stdout.readline(), 10)).decode().strip() for _ in cars]
                assert sorted(lines) == sorted(f"1 1 {top}/{car}/speed r-{car}" for car in cars), lines
                await ws.publish_ok(f"/{top}/car9/fuel", "no", retained=False)
                await ws.publish_ok(f"/{top}/car9/speed", "ws", retained=False)
                line = await asyncio.wait_for(sub.stdout.readline(), 10)
                assert line.decode().strip() == f"0 1 {top}/car9/speed ws", "live: retain clear, QoS 1"
                pub = await mosquitto("mosquitto_pub", "-h", "127.0.0.1", "-p", str(sharded_broker.mqtt_port), "-V",
                                      version, "-t", f"{top}/car5/speed", "-m", "mp", "-q", "1")
                await asyncio.wait_for(pub.communicate(), 10)
                line = await asyncio.wait_for(sub.stdout.readline(), 10)
                assert line.decode().strip() == f"0 1 {top}/car5/speed mp"
                await asyncio.wait_for(sub.wait(), 10)
                assert sub.returncode == 0
            finally:
                if sub.returncode is None:
                    sub.kill()

    run(scenario())


def test_hash_matches_the_parent_and_overlapping_subscriptions_give_one_copy(sharded_broker):
    top = unique_level()
    client = Paho(sharded_broker.mqtt_port, "mqttv5")

    async def publish(subjects):
        async with await Client.connect(sharded_broker.url) as ws:
            for subject in subjects:
                await ws.publish_ok(subject, subject, retained=False)

    try:
        codes = client.subscribe([(f"{top}/#", 0), (f"{top}/car1/speed", 1), (f"{top}/+/speed", 1)])
        assert codes == [0, 1, 1], codes
        time.sleep(0.3)  # the pattern's interest reaches the fanouts right after the SUBACK
        run(publish([f"/{top}", f"/{top}/car1/speed", f"/{top}/car2/speed", f"/{top}/x/y/z", f"/{top}x/car1/speed"]))
        got = {m.topic: m for m in drain(client, 4)}
        assert sorted(got) == sorted([top, f"{top}/car1/speed", f"{top}/car2/speed", f"{top}/x/y/z"]), list(got)
        assert got[top].qos == 0, "vehicles/# matches vehicles, at its QoS 0"
        assert got[f"{top}/car1/speed"].qos == 1, "one copy at the highest granted QoS"
        assert_nothing_more(client)
    finally:
        client.close()


def test_unsubscribe_from_a_pattern_stops_delivery(sharded_broker):
    top = unique_level()
    client = Paho(sharded_broker.mqtt_port, "mqttv311")
    try:
        assert client.subscribe([(f"{top}/+", 1)]) == [1]
        time.sleep(0.3)
        client.publish_and_wait(f"{top}/a", "one", qos=1)
        assert client.messages.get(timeout=10).payload == b"one"
        client.client.unsubscribe(f"{top}/+")
        time.sleep(0.3)
        client.publish_and_wait(f"{top}/a", "two", qos=1)
        assert_nothing_more(client)
    finally:
        client.close()


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_a_pattern_beyond_the_tokens_permissions_is_denied(make_broker, version):
    port = free_port()
    make_broker(ListenMqtt=f"127.0.0.1:{port}", Entitlement="jwt", JwtSecret=SECRET, JwtIssuer=ISSUER,
                JwtAudience=AUDIENCE)
    jwt = token(permissions={"sub": ["/fleet/*"], "pub": ["/fleet/*"]})
    client = Paho(port, version, password=jwt)
    denied = 0x87 if version == "mqttv5" else 0x80
    try:
        codes = client.subscribe([("fleet/+/speed", 1), ("fleet/#", 1), ("+/speed", 1), ("#", 0)])
        assert codes == [1, denied, denied, denied], "fleet/# also matches fleet, which /fleet/* does not allow"
        time.sleep(0.3)
        client.publish_and_wait("fleet/t1/speed", "ok", qos=1)
        assert client.messages.get(timeout=10).topic == "fleet/t1/speed"
    finally:
        client.close()


def test_patterns_are_announced_again_to_restarted_fanouts(sharded_broker):
    """Both fanout shards restart and lose every interest: the ingress re-announces its patterns (peerUp), so the
    pattern subscriber keeps getting messages without subscribing again."""
    top = unique_level()
    client = Paho(sharded_broker.mqtt_port, "mqttv5")
    try:
        assert client.subscribe([(f"{top}/+/speed", 1)]) == [1]
        assert sharded_broker.cli("restart", "fanout").rc == 0
        deadline, got = time.monotonic() + 20, None
        while got is None and time.monotonic() < deadline:
            client.publish_and_wait(f"{top}/car1/speed", "after", qos=1)
            try:
                got = client.messages.get(timeout=1)
            except queue.Empty:
                pass
        assert got is not None and got.topic == f"{top}/car1/speed", "nothing after the fanouts restarted"
    finally:
        client.close()


def test_a_restarted_ingress_leaves_no_patterns_behind_at_the_fanouts(make_broker):
    """A killed ws-ingress cannot withdraw its patterns; the restarted one tells every fanout to forget them, or
    `#` would send it every message for ever."""
    port = free_port()
    b = make_broker(ListenMqtt=f"127.0.0.1:{port}", FanoutInstances=2)

    def fanout_patterns():
        counts = []
        for n in range(2):
            try:
                counts.append(json.loads((b.run_dir / f"fanout-{n}.stats.json").read_text()).get("patterns"))
            except (OSError, ValueError):
                counts.append(None)
        return counts

    client = Paho(port, "mqttv311")
    try:
        assert client.subscribe([("#", 0), ("a/+", 0)]) == [0, 0]
        wait_until(lambda: fanout_patterns() == [2, 2], 10, what="both fanouts to hold the 2 patterns")
        old = b.kill_stage("ws-ingress")
        wait_until(lambda: (b.status_row("ws-ingress") or {}).get("state") == "up" and b.pid("ws-ingress") != old,
                   20, what="ws-ingress to be restarted")
        wait_until(lambda: fanout_patterns() == [0, 0], 10, what="both fanouts to forget the patterns")
    finally:
        client.close()

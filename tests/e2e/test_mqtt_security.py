"""Issue 11, items 1 and 5: MQTT over TLS (`ListenMqttEncrypted`, the certificate of `ListenEncrypted` and its
reload) and entitlement for MQTT (the JWT as the MQTT password, the user name free; its `sub`/`pub` permissions on
every SUBSCRIBE and PUBLISH). Real clients: mosquitto_pub / mosquitto_sub with `--cafile`, paho-mqtt with
`tls_set`; tokens made with PyJWT; certificates with openssl (the helpers of test_e2e_tls.py)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from e2e_helpers import Broker, Client, free_port, run, running, unique_subject
from mqtt_helpers import Paho, connect_packet, mqtt_string, packet, topic_of
from tls_helpers import PKI, install, peer_certificate, pki, tls_params  # noqa: F401 (fixture)
from token_helpers import AUDIENCE, EVERYTHING, ISSUER, SECRET, token

pytestmark = pytest.mark.skipif(not shutil.which("mosquitto_pub") or not shutil.which("mosquitto_sub"),
                                reason="mosquitto-clients is not installed (scripts/setup.sh installs it)")

SECURE = {"sub": ["/secure/*"], "pub": ["/secure/*"]}


@pytest.fixture(scope="module")
def broker(tmp_path_factory, pki):
    """`Entitlement = jwt`, MQTT over TCP and over TLS, wss on the same certificate."""
    work = tmp_path_factory.mktemp("mqtt-sec")
    install(work, *pki.issue("first", serial=11))
    mqtt_port, mqtts_port = free_port(), free_port()
    b = Broker(work, name="mqtt-sec", ListenMqtt=f"127.0.0.1:{mqtt_port}",
               ListenMqttEncrypted=f"127.0.0.1:{mqtts_port}", Entitlement="jwt", JwtSecret=SECRET,
               JwtIssuer=ISSUER, JwtAudience=AUDIENCE, **tls_params(free_port()))
    b.mqtt_port, b.mqtts_port = mqtt_port, mqtts_port
    with running(b):
        yield b


def ws_url(broker: Broker) -> str:
    return f"{broker.url}?token={token(permissions=EVERYTHING)}"


def mosquitto(tool: str, broker: Broker, pki: PKI, version: str, password: str | None, *args: str,
              timeout: float = 10) -> subprocess.CompletedProcess:
    credentials = ["-u", "device", "-P", password] if password is not None else []
    return subprocess.run([tool, "-h", "127.0.0.1", "-p", str(broker.mqtts_port), "--cafile", str(pki.ca),
                           "-V", version, "-i", f"{tool}-{time.monotonic_ns()}", *credentials, *args],
                          capture_output=True, text=True, timeout=timeout)


def raw_connack(port: int, version: int, password: str | None, then: bytes = b"") -> tuple[bytes, socket.socket]:
    """CONNECT (and `then`, in the same write) on the plain MQTT port; the CONNACK's bytes and the socket."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(connect_packet(client_id=f"raw-{time.monotonic_ns()}", keepalive=30, version=version,
                                username="device" if password is not None else None, password=password) + then)
    return sock.recv(256), sock


def read_packets(sock: socket.socket, data: bytes, count: int) -> list[bytes]:
    """`count` whole packets (remaining lengths below 128), starting with the bytes in `data`."""
    packets = []
    while len(packets) < count:
        while len(data) < 2 or len(data) < 2 + data[1]:
            chunk = sock.recv(256)
            assert chunk, f"closed after {packets} {data.hex()}"
            data += chunk
        packets.append(data[:2 + data[1]])
        data = data[2 + data[1]:]
    return packets


def assert_closed(sock: socket.socket) -> None:
    try:
        assert sock.recv(16) == b"", "closed after the refusal"
    except ConnectionResetError:
        pass


def subscribe_packet(topic: str, version: int) -> bytes:
    props = b"\x00" if version == 5 else b""
    return packet(0x82, b"\x00\x01" + props + mqtt_string(topic) + b"\x01")


def publish_packet(topic: str, payload: bytes, version: int) -> bytes:
    return packet(0x30, mqtt_string(topic) + (b"\x00" if version == 5 else b"") + payload)


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_mosquitto_over_tls_with_a_token_as_the_password(broker, pki, version):
    s = unique_subject("secure")
    password = token(permissions=SECURE)

    async def scenario():
        async with await Client.connect(ws_url(broker)) as ws:
            assert (await ws.subscribe([s]))[s]["status"] == "ALLOW"
            pub = mosquitto("mosquitto_pub", broker, pki, version, password, "-t", topic_of(s), "-m", "over tls",
                            "-q", "1", "-r")
            assert pub.returncode == 0, pub.stdout + pub.stderr  # QoS 1: waited for its PUBACK
            [message] = await ws.messages(s, 1)
            assert message["content"] == "over tls"
        # A subscriber after the publish gets it as the retained snapshot, over TLS.
        sub = mosquitto("mosquitto_sub", broker, pki, version, password, "-t", topic_of(s), "-C", "1", "-W", "5")
        assert (sub.returncode, sub.stdout.strip()) == (0, "over tls"), sub.stdout + sub.stderr

    run(scenario())


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_mosquitto_with_an_expired_token_or_one_of_another_key_is_refused(broker, pki, version):
    for password in (token(expires_in=-5), token(key="another-secret-" + "x" * 32, permissions=SECURE)):
        pub = mosquitto("mosquitto_pub", broker, pki, version, password, "-t", "secure/x", "-m", "no", "-q", "1")
        output = (pub.stdout + pub.stderr).lower()
        assert pub.returncode != 0 and "bad user name or password" in output, output
    anonymous = mosquitto("mosquitto_pub", broker, pki, version, None, "-t", "secure/x", "-m", "no", "-q", "1")
    output = (anonymous.stdout + anonymous.stderr).lower()
    assert anonymous.returncode != 0 and "not authori" in output, output


@pytest.mark.parametrize("version, missing, bad", [(4, 0x05, 0x04), (5, 0x87, 0x86)])
def test_refusals_are_connack_codes_and_nothing_sent_before_the_verdict_is_processed(broker, version, missing, bad):
    s = unique_subject("secure")

    async def scenario():
        async with await Client.connect(ws_url(broker)) as ws:
            assert (await ws.subscribe([s]))[s]["status"] == "ALLOW"
            for password, code in ((None, missing), (token(expires_in=-5), bad), ("not.a.token", bad)):
                # The PUBLISH comes in the same write as the CONNECT: it must never reach anyone.
                connack, sock = raw_connack(broker.mqtt_port, version, password,
                                            then=publish_packet(topic_of(s), b"sneaked", version))
                with sock:
                    assert connack[0] == 0x20 and connack[3] == code, (password, connack.hex())
                    assert_closed(sock)
            assert await ws.quiet(lambda f: f.get("op") == "message", 1.0) == []
            # A granted token: the SUBSCRIBE sent with the CONNECT is answered after the verdict.
            connack, sock = raw_connack(broker.mqtt_port, version, token(permissions=SECURE),
                                        then=subscribe_packet(topic_of(s), version))
            with sock:
                granted, suback = read_packets(sock, connack, 2)
                assert granted[0] == 0x20 and granted[3] == 0, granted.hex()
                assert suback[0] == 0x90 and suback[-1] == 0x01, suback.hex()

    run(scenario())


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_paho_over_tls_gets_its_tokens_permissions(broker, pki, version):
    allowed, denied = unique_subject("secure"), unique_subject("other")
    client = Paho(broker.mqtts_port, version, ca_certs=str(pki.ca), password=token(permissions=SECURE))

    async def scenario():
        async with await Client.connect(ws_url(broker)) as ws:
            await ws.subscribe([allowed, denied])
            assert client.subscribe([(topic_of(allowed), 1), (topic_of(denied), 1)]) == \
                [1, 0x80 if version == "mqttv311" else 0x87]
            if version == "mqttv5":
                info = client.client.publish(topic_of(denied), "denied", qos=1)
                info.wait_for_publish(timeout=10)
                assert int(client.pubacks[info.mid].value) == 0x87, "PUBACK not authorized"
                client.client.publish(topic_of(denied), "denied at QoS 0", qos=0)
                assert client.publish_and_wait(topic_of(allowed), "allowed").value == 0
            else:
                client.client.publish(topic_of(denied), "denied", qos=1)
                rc = client.disconnects.get(timeout=10)  # 3.1.1 cannot say no: the connection is closed
                assert rc.is_failure, rc
                client.client.loop_stop()
                again = Paho(broker.mqtts_port, version, ca_certs=str(pki.ca), password=token(permissions=SECURE))
                again.publish_and_wait(topic_of(allowed), "allowed")
                again.close()
            [message] = await ws.messages(allowed, 1)
            assert message["content"] == "allowed"
            assert await ws.quiet(lambda f: f.get("op") == "message" and f.get("subject") == denied, 0.5) == [], \
                "a denied publish is never stored nor delivered"

    try:
        run(scenario())
    finally:
        client.close()


def test_a_will_the_token_may_not_publish_refuses_the_connect(broker):
    will_packet = connect_packet(client_id="will-denied", keepalive=30, version=5, will=("other/status", "gone"),
                                 username="device", password=token(permissions=SECURE))
    with socket.create_connection(("127.0.0.1", broker.mqtt_port), timeout=5) as sock:
        sock.sendall(will_packet)
        connack = sock.recv(256)
        assert connack[0] == 0x20 and connack[3] == 0x87, connack.hex()


def test_the_token_expiring_disconnects_with_maximum_connect_time(broker, pki):
    client = Paho(broker.mqtts_port, "mqttv5", ca_certs=str(pki.ca), password=token(expires_in=2, permissions=SECURE))
    try:
        began = time.monotonic()
        rc = client.disconnects.get(timeout=10)
        assert int(rc.value) == 0xA0, rc
        assert 0.5 < time.monotonic() - began < 5
    finally:
        client.client.loop_stop()


def test_reload_serves_new_mqtt_tls_connections_the_renewed_certificate(broker, pki):
    context = pki.client_context()
    assert peer_certificate(broker.mqtts_port, context) == pki.der("first")
    s = unique_subject("secure")
    before = Paho(broker.mqtts_port, "mqttv5", ca_certs=str(pki.ca), password=token(permissions=SECURE))
    try:
        install(broker.dir, *pki.issue("renewed", serial=12))
        result = broker.cli("reload", "ws-ingress")
        assert result.rc == 0, result
        assert peer_certificate(broker.mqtts_port, context) == pki.der("renewed")
        pub = mosquitto("mosquitto_pub", broker, pki, "mqttv5", token(permissions=SECURE), "-t", topic_of(s),
                        "-m", "renewed", "-q", "1")
        assert pub.returncode == 0, pub.stdout + pub.stderr
        assert before.publish_and_wait(topic_of(s), "still open").value == 0, "open connections keep theirs"
    finally:
        before.close()

"""Helpers for the MQTT end-to-end tests: raw packets (for what the clients do not let a test do: abrupt ends,
keepalive silence, refused connects) and a paho-mqtt client whose callbacks land in queues."""

from __future__ import annotations

import queue
import socket
import struct
import threading
import time
import uuid

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

VERSIONS = {"mqttv311": paho.MQTTv311, "mqttv5": paho.MQTTv5}


def topic_of(subject: str) -> str:
    return subject[1:]


# --- raw MQTT packets, for what the clients do not let us do (abrupt ends, keepalive silence) ----------------------

def mqtt_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">H", len(data)) + data


def packet(first: int, body: bytes) -> bytes:
    length, encoded = len(body), b""
    while True:
        byte, length = length % 128, length // 128
        encoded += bytes([byte | (0x80 if length else 0)])
        if not length:
            return bytes([first]) + encoded + body


def connect_packet(client_id: str, keepalive: int, version: int = 4, will: tuple[str, str] | None = None,
                   username: str | None = None, password: str | None = None, clean: bool = True) -> bytes:
    """`clean` False: clean session off (3.1.1), Clean Start 0 (v5; no Session Expiry Interval is sent)."""
    flags, payload = (0x02 if clean else 0x00), mqtt_string(client_id)
    props = b"\x00" if version == 5 else b""
    if will:
        flags |= 0x04 | (1 << 3)  # will, QoS 1
        payload += props + mqtt_string(will[0]) + mqtt_string(will[1])
    if username is not None:
        flags |= 0x80
        payload += mqtt_string(username)
    if password is not None:
        flags |= 0x40
        payload += mqtt_string(password)
    return packet(0x10, mqtt_string("MQTT") + bytes([version, flags]) + struct.pack(">H", keepalive) + props + payload)


def raw_connect(port: int, **kw) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(connect_packet(**kw))
    assert sock.recv(2)[0] == 0x20, "CONNACK"
    sock.recv(64)  # the rest of it
    return sock


def read_packet(sock: socket.socket) -> tuple[int, bytes]:
    """The next packet's first byte and body."""
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "connection closed"
            data += chunk
        return data
    first = exactly(1)[0]
    length, shift = 0, 0
    while True:
        byte = exactly(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return first, exactly(length)


class RawPublish:
    """A 3.1.1 PUBLISH as received."""

    def __init__(self, first: int, body: bytes):
        assert first >> 4 == 3, f"not a PUBLISH: {first:#x}"
        self.qos, self.dup = (first >> 1) & 3, bool(first & 0x08)
        length = struct.unpack(">H", body[:2])[0]
        self.topic, rest = body[2:2 + length].decode(), body[2 + length:]
        self.packet_id = struct.unpack(">H", rest[:2])[0] if self.qos else None
        self.payload = (rest[2:] if self.qos else rest).decode()


def subscribe_packet(packet_id: int, topic_filter: str, qos: int = 1) -> bytes:
    """A 3.1.1 SUBSCRIBE of one filter."""
    return packet(0x82, struct.pack(">H", packet_id) + mqtt_string(topic_filter) + bytes([qos]))


def puback_packet(packet_id: int) -> bytes:
    return packet(0x40, struct.pack(">H", packet_id))


# --- paho ------------------------------------------------------------------------------------------------------

class Paho:
    """A paho-mqtt client on its own network thread; callbacks land in queues."""

    def __init__(self, port: int, version: str = "mqttv311", transport: str = "tcp", client_id: str = "",
                 ca_certs: str | None = None, password: str | None = None):
        """`ca_certs`: TLS (`tls_set`) trusting that CA; `password`: the token, with a free user name."""
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{uuid.uuid4().hex[:8]}",
                                  protocol=VERSIONS[version], transport=transport)
        if transport == "websockets":
            self.client.ws_set_options(path="/mqtt")
        if ca_certs:
            self.client.tls_set(ca_certs=ca_certs)
        if password is not None:
            self.client.username_pw_set("device", password)
        self.disconnects: queue.Queue = queue.Queue()
        self.client.on_disconnect = lambda c, u, flags, rc, props: self.disconnects.put(rc)
        self.messages: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.pubacks: dict[int, object] = {}
        self.connected = threading.Event()
        self.client.on_connect = lambda c, u, flags, rc, props: self.connected.set()
        self.client.on_message = lambda c, u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda c, u, mid, codes, props: self.subacks.put([int(code.value) for code in codes])
        self.client.on_publish = lambda c, u, mid, rc, props: self.pubacks.__setitem__(mid, rc)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(10), "no CONNACK"

    def subscribe(self, filters: list[tuple[str, int]]) -> list[int]:
        self.client.subscribe(filters)
        return self.subacks.get(timeout=10)

    def publish_and_wait(self, topic: str, payload: str, qos: int = 1, retain: bool = False,
                         user_properties: list[tuple[str, str]] | None = None):
        """`user_properties`: MQTT 5 User Properties of the PUBLISH."""
        properties = None
        if user_properties:
            properties = Properties(PacketTypes.PUBLISH)
            properties.UserProperty = user_properties
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        info.wait_for_publish(timeout=10)
        assert info.is_published(), "no PUBACK"
        return self.pubacks.get(info.mid)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def user_properties(msg) -> list[tuple[str, str]]:
    """The User Properties of a message paho received (none for 3.1.1 or a PUBLISH without them)."""
    return list(getattr(msg.properties, "UserProperty", None) or []) if msg.properties else []


class Device:
    """A paho client, persistent unless `clean`: 3.1.1 clean session off, v5 Clean Start 0 with `expiry`. It does
    not subscribe again after reconnecting (paho does not): what it gets then comes from its session."""

    def __init__(self, port: int, client_id: str, version: str = "mqttv311", clean: bool = False,
                 expiry: int | None = None, retry_for: float = 0.0):
        kw = {"clean_session": clean} if version == "mqttv311" else {}
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=VERSIONS[version],
                                  **kw)
        self.messages: queue.Queue = queue.Queue()
        self.connected = threading.Event()
        self.gone = threading.Event()
        self.session_present = None
        self.connack_properties = None

        def on_connect(client, userdata, flags, reason, properties):
            self.session_present = flags.session_present
            self.connack_properties = properties
            self.connected.set()

        self.client.on_connect = on_connect
        self.client.on_message = lambda c, u, msg: self.messages.put(msg)
        self.disconnect_reason = None

        def on_disconnect(client, userdata, flags, reason, properties):
            self.disconnect_reason = reason.value if hasattr(reason, "value") else reason
            self.gone.set()

        self.client.on_disconnect = on_disconnect
        connect_kw = {}
        if version == "mqttv5":
            properties = Properties(PacketTypes.CONNECT)
            if expiry is not None:
                properties.SessionExpiryInterval = expiry
            connect_kw = {"clean_start": clean, "properties": properties}
        deadline = time.monotonic() + retry_for
        while True:
            try:
                self.client.connect("127.0.0.1", port, keepalive=30, **connect_kw)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        self.client.loop_start()
        assert self.connected.wait(10), "no CONNACK"

    def subscribe(self, topic: str):
        done = threading.Event()
        self.client.on_subscribe = lambda c, u, mid, codes, props: done.set()
        self.client.subscribe([(topic, 1)])
        assert done.wait(10), "no SUBACK"

    def payloads(self, n: int, timeout: float = 10) -> list[str]:
        return [self.messages.get(timeout=timeout).payload.decode() for _ in range(n)]

    def nothing_more(self, wait: float = 1.0) -> list[str]:
        time.sleep(wait)
        out = []
        while not self.messages.empty():
            out.append(self.messages.get().payload.decode())
        return out

    def first_while(self, send, timeout: float = 35) -> list[str]:
        """Calls `send()` every 2 s until payloads arrive (kafka-in finds a new topic of its regex only at its
        next metadata refresh); returns them."""
        deadline, got = time.monotonic() + timeout, []
        while not got and time.monotonic() < deadline:
            send()
            got = self.nothing_more(2)
        return got

    def taken_over(self, timeout: float) -> bool:
        """Whether the broker closed the connection within `timeout`; its network loop is then stopped, so that
        paho's automatic reconnect does not take the session back."""
        gone = self.gone.wait(timeout)
        if gone:
            self.client.loop_stop()
        return gone

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()

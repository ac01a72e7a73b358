#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets: fuzzing/corpus/{client-frame,envelope,ws-chain,mqtt-decoder}/.

Each seed is a small, meaningful input: client frames of protocol v1 (valid and typical mistakes), envelope
batches in the binary format of Sources/SwitchyardCore/EnvelopeCodec.swift (written here independently, so the
seeds also check that the documented format is the one the codec reads), and whole client connections for the
WebSocket chain (upgrade request, masked frames). Run it again after a change of either format:

    python3 fuzzing/make_corpus.py
"""
import hashlib
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ENVELOPE_VERSION = 3  # EnvelopeCodec.version

# --- client frames ------------------------------------------------------------------------------------------------

CLIENT_FRAMES = [
    {"op": "ping"},
    {"op": "connect", "token": "secret"},
    {"op": "connect"},
    {"op": "subscribe", "subjects": ["/a/b"]},
    {"op": "subscribe", "subjects": ["/vehicles/car66/speed", "/a"], "history": 10},
    {"op": "subscribe", "subjects": ["/a/b"], "recover": {"/a/b": {"epoch": "E1", "seq": 41}}},
    {"op": "subscribe", "subjects": ["/a/b"], "history": 0, "recover": {"/a/b": {"epoch": "", "seq": 18446744073709551615}}},
    {"op": "subscribe", "subjects": ["bad", "/a//b", "/a/b/", ""]},
    {"op": "subscribe", "subjects": "/a"},
    {"op": "subscribe", "subjects": ["/a"], "history": -1},
    {"op": "subscribe", "subjects": ["/a"], "history": 1.5},
    {"op": "subscribe", "subjects": ["/a"], "recover": {"/a": {"epoch": 3, "seq": -1}}},
    {"op": "unsubscribe", "subjects": ["/a/b"]},
    {"op": "unsubscribe", "subjects": []},
    {"op": "publish", "subject": "/a/b", "content": "hello"},
    {"op": "publish", "subject": "/a/b", "content": "hello", "closure": "c1", "retained": False, "qos": "STANDARD"},
    {"op": "publish", "subject": "/a/b", "content": "aGVsbG8=", "encoding": "base64", "closure": "c2"},
    {"op": "publish", "subject": "/a/b", "content": "!!!", "encoding": "base64"},
    {"op": "publish", "subject": "/a/b", "content": "x", "qos": "GUARANTEED", "retained": True},
    {"op": "publish", "subject": "/a/b", "content": "x", "qos": "FAST"},
    {"op": "publish", "subject": "/a/b", "content": "x", "encoding": "utf16"},
    {"op": "publish", "subject": "/a/b"},
    {"op": "publish", "content": "x"},
    {"op": "publish", "subject": "/a/b", "content": "\u00e9\u4e2d\U0001F600"},
    {"op": "publish", "subject": "/a/b", "content": {"nested": [1, 2, 3]}},
    {"op": "nope"},
    {"op": 1},
    {"subjects": ["/a"]},
]
CLIENT_RAW = [
    b"", b"{}", b"[]", b"null", b"\"op\"", b"{\"op\":", b"{\"op\":\"ping\"", b"{\"op\":\"ping\"}}",
    b"{\"op\":\"ping\",\"op\":\"publish\"}", b"\xff\xfe{\"op\":\"ping\"}", b"{\"op\":\"p\\u0069ng\"}",
    b"{\"op\":\"subscribe\",\"subjects\":[\"/a\"],\"history\":1e400}",
    b"[" * 64 + b"]" * 64,
]

# --- envelopes ----------------------------------------------------------------------------------------------------

def u8(v): return struct.pack(">B", v)
def u32(v): return struct.pack(">I", v)
def u16(v): return struct.pack(">H", v)
def u64(v): return struct.pack(">Q", v)
def string(s): b = s.encode() if isinstance(s, str) else s; return u32(len(b)) + b

def message(subject="/a/b", content=b"hello", seq=42, previous=41, epoch="e1", flags=0b11, closure="", ts=1_700_000_000_000_000_000,
            headers=()):
    return (string(subject) + string(content) + u64(seq) + u64(previous) + string(epoch) + u8(flags) + string(closure)
            + u64(ts) + u16(len(headers)) + b"".join(string(name) + string(value) for name, value in headers))

def envelope(kind, body): return u32(1 + len(body)) + u8(kind) + body

def batch(envelopes, count=None, version=ENVELOPE_VERSION):
    return b"SY" + u8(version) + u8(0) + u32(len(envelopes) if count is None else count) + b"".join(envelopes)

PUBLISH = envelope(1, u64(7) + string("ipc:///tmp/ws-ingress-0.ipc") + message(closure="c1", flags=0b1011))
ACK_OK = envelope(2, u64(7) + u8(0) + string(""))
ACK_FAILED = envelope(2, u64(8) + u8(1) + string("broker down"))
MESSAGE = envelope(3, message())
BINARY_MESSAGE = envelope(3, message(content=bytes(range(256)), flags=0b111, subject="/vehicles/car66/speed"))
SUB_SNAPSHOT = envelope(4, u64(9) + string("ipc:///x") + string("/a") + u32(3) + u8(1) + u8(0))
SUB_HISTORY = envelope(4, u64(10) + string("ipc:///x") + string("/a") + u32(0) + u8(0) + u8(1) + u32(5))
SUB_RECOVER = envelope(4, u64(11) + string("ipc:///x") + string("/a") + u32(1) + u8(1) + u8(2) + string("e1") + u64(40))
REPLY = envelope(5, u64(9) + string("/a") + u8(2) + u8(1) + string("e1") + u64(42) + u32(2) + message() + message(seq=43))
REPLY_EMPTY = envelope(5, u64(9) + string("/a") + u8(1) + u8(2) + string("e2") + u64(0) + u32(0))
INTEREST = envelope(6, string("/a/b") + u32(2) + u8(0))
INTEREST_ADD = envelope(6, string("/a/b") + u32(2) + u8(1))
PEER_UP = envelope(7, string("fanout") + u32(1))
PATTERN_INTEREST = envelope(8, string("/vehicles/+/speed") + u32(2) + u8(1))
PATTERN_SUBSCRIBE = envelope(9, u64(12) + string("ipc:///x") + string("/vehicles/#"))
UNKNOWN = envelope(99, b"future kind")
EVERY = [PUBLISH, ACK_OK, ACK_FAILED, MESSAGE, BINARY_MESSAGE, SUB_SNAPSHOT, SUB_HISTORY, SUB_RECOVER, REPLY,
         REPLY_EMPTY, INTEREST, INTEREST_ADD, PEER_UP, PATTERN_INTEREST, PATTERN_SUBSCRIBE]

ENVELOPE_SEEDS = {f"one-{i:02d}": batch([e]) for i, e in enumerate(EVERY)}
ENVELOPE_SEEDS.update({
    "empty": batch([]),
    "every-kind": batch(EVERY),
    "unknown-kind": batch([UNKNOWN, MESSAGE]),
    "many-messages": batch([MESSAGE] * 20),
    "utf8-strings": batch([envelope(3, message(subject="/\u00e9/\u4e2d", epoch="\U0001F600", closure="c\u00e9"))]),
    "invalid-utf8": batch([envelope(3, message(subject=b"/\xff\xfe", epoch=b"\xc3"))]),
    "count-too-big": batch([MESSAGE], count=0xFFFFFFFF),
    "length-too-big": b"SY" + u8(ENVELOPE_VERSION) + u8(0) + u32(1) + u32(0xFFFFFFF0) + u8(3),
    "reply-count-huge": batch([envelope(5, u64(9) + string("/a") + u8(2) + u8(1) + string("e1") + u64(42) + u32(0xFFFFFFFF))]),
    "old-version": batch([MESSAGE], version=1),
    "headers": batch([envelope(3, message(headers=[("unit", "km/h"), ("unit", ""), ("\u00e9", "\U0001F600")]))]),
    "header-count-huge": batch([envelope(3, message()[:-2] + u16(0xFFFF))]),
    "bad-bool": batch([envelope(6, string("/a/b") + u32(2) + u8(2))]),
    "bad-start": batch([envelope(4, u64(9) + string("ipc:///x") + string("/a") + u32(3) + u8(1) + u8(7))]),
    "trailing": batch([MESSAGE]) + b"\x00",
    "inner-trailing": batch([envelope(7, string("fanout") + u32(1) + b"xx")]),
    "truncated": batch([MESSAGE])[:-3],
})

# --- WebSocket connections ----------------------------------------------------------------------------------------

UPGRADE = 1          # mode byte: a valid upgrade request first, then these bytes in one read
RAW = 0              # mode byte: only these bytes (HTTP side)
NOT_READING = 3      # mode byte: as UPGRADE, and the client does not read (the channel is not writable)
def split(mode, n): return mode | (n << 2)  # reads of n * 4 bytes

def frame(payload, opcode=1, fin=True, mask=b"\x11\x22\x33\x44", rsv=0):
    if isinstance(payload, str): payload = payload.encode()
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    n = len(payload)
    mbit = 0x80 if mask is not None else 0
    if n < 126: head += bytes([mbit | n])
    elif n < 65536: head += bytes([mbit | 126]) + struct.pack(">H", n)
    else: head += bytes([mbit | 127]) + struct.pack(">Q", n)
    if mask is None: return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

def text(obj): return frame(json.dumps(obj, separators=(",", ":")))
CLOSE = frame(struct.pack(">H", 1000) + b"bye", opcode=8)

WS_SEEDS = {
    "ping-frame": bytes([UPGRADE]) + frame(b"hi", opcode=9),
    "op-ping": bytes([UPGRADE]) + text({"op": "ping"}) + CLOSE,
    "subscribe-unsubscribe": bytes([UPGRADE]) + text({"op": "subscribe", "subjects": ["/a/b", "/c"], "history": 5})
        + text({"op": "unsubscribe", "subjects": ["/a/b"]}),
    "recover": bytes([UPGRADE]) + text({"op": "subscribe", "subjects": ["/a"], "recover": {"/a": {"epoch": "E", "seq": 4}}}),
    "publish": bytes([UPGRADE]) + text({"op": "publish", "subject": "/a/b", "content": "hi", "closure": "c1"}),
    "publish-base64": bytes([UPGRADE]) + text({"op": "publish", "subject": "/a", "content": "aGk=", "encoding": "base64"}),
    "invalid": bytes([UPGRADE]) + frame(b"{nope") + text({"op": "x"}) + text({"op": "subscribe", "subjects": ["bad"]}),
    "binary": bytes([UPGRADE]) + frame(b"\x00\x01", opcode=2),
    "fragmented": bytes([UPGRADE]) + frame(b'{"op":', fin=False) + frame(b'"ping"}', opcode=0),
    "zero-mask": bytes([UPGRADE]) + frame(b'{"op":"subscribe","subjects":["/a"],"history":3}', mask=b"\0\0\0\0"),
    "unmasked": bytes([UPGRADE]) + frame(b'{"op":"ping"}', mask=None),
    "reserved-bits": bytes([UPGRADE]) + frame(b'{"op":"ping"}', rsv=4),
    "reserved-opcode": bytes([UPGRADE]) + frame(b"", opcode=3),
    "control-too-long": bytes([UPGRADE]) + frame(b"p" * 130, opcode=9),
    "close-no-code": bytes([UPGRADE]) + frame(b"", opcode=8),
    "close-bad-code": bytes([UPGRADE]) + frame(struct.pack(">H", 999), opcode=8),
    "pong": bytes([UPGRADE]) + frame(b"x", opcode=10),
    "length-64bit": bytes([UPGRADE]) + b"\x81\xff" + struct.pack(">Q", 1 << 62) + b"\x00\x00\x00\x00",
    "length-16bit": bytes([UPGRADE]) + frame(json.dumps({"op": "publish", "subject": "/a", "content": "y" * 300})),
    "not-reading": bytes([NOT_READING]) + text({"op": "subscribe", "subjects": ["/a", "/b"], "history": 2})
        + b"".join(text({"op": "ping"}) for _ in range(20)) + frame(b"x" * 100, opcode=9),
    "split-reads": bytes([split(UPGRADE, 1)]) + text({"op": "subscribe", "subjects": ["/a"]}) + text({"op": "ping"}),
    "split-reads-7": bytes([split(UPGRADE, 7)]) + text({"op": "publish", "subject": "/a", "content": "z" * 40}),
    "http-health": bytes([RAW]) + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "http-metrics": bytes([RAW]) + b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    "http-root": bytes([RAW]) + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "http-404": bytes([RAW]) + b"GET /nope?x=1 HTTP/1.0\r\n\r\n",
    "http-post-chunked": bytes([RAW]) + b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "http-pipelined": bytes([RAW]) + b"GET /health HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\n\r\n",
    "upgrade-wrong-path": bytes([RAW]) + b"GET /other HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    "upgrade-no-key": bytes([RAW]) + b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
    "upgrade-version-8": bytes([RAW]) + b"GET /?token=t HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
    "not-http": bytes([RAW]) + b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
    "header-garbage": bytes([RAW]) + b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n",
}


# --- MQTT byte streams (byte 0: 0 = before CONNECT, 1 = 3.1.1, 2 = 5.0; then the client's bytes) ------------------

def mqtt_varint(n):
    out = b""
    while True:
        byte, n = n % 128, n // 128
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def mqtt_str(s): b = s.encode() if isinstance(s, str) else s; return struct.pack(">H", len(b)) + b
def mqtt_packet(first, body): return bytes([first]) + mqtt_varint(len(body)) + body
def props(*entries): body = b"".join(entries); return mqtt_varint(len(body)) + body


USER_PROP = b"\x26" + mqtt_str("k") + mqtt_str("v")
CONNECT_311 = mqtt_packet(0x10, mqtt_str("MQTT") + bytes([4, 0x02]) + struct.pack(">H", 60) + mqtt_str("dev1"))
CONNECT_311_WILL = mqtt_packet(0x10, mqtt_str("MQTT") + bytes([4, 0xEE]) + struct.pack(">H", 30) + mqtt_str("dev2")
                               + mqtt_str("dev/2/status") + mqtt_str("gone") + mqtt_str("user") + mqtt_str("pw"))
CONNECT_5 = mqtt_packet(0x10, mqtt_str("MQTT") + bytes([5, 0x06]) + struct.pack(">H", 10)
                        + props(b"\x11\x00\x00\x00\x3c", b"\x21\x00\x14", b"\x27\x00\x01\x00\x00", USER_PROP)
                        + mqtt_str("") + props(b"\x18\x00\x00\x00\x05", b"\x01\x01") + mqtt_str("w/t") + mqtt_str("bye"))
CONNECT_31 = mqtt_packet(0x10, mqtt_str("MQIsdp") + bytes([3, 0x02]) + struct.pack(">H", 60) + mqtt_str("old"))
PUB_311 = [mqtt_packet(0x30, mqtt_str("a/b") + b"hello"), mqtt_packet(0x33, mqtt_str("a/b") + b"\x00\x07" + b"\x00\xff"),
           mqtt_packet(0x3A, mqtt_str("a") + b"\x00\x08" + b"dup"), mqtt_packet(0x34, mqtt_str("a") + b"\x00\x09")]
PUB_5 = [mqtt_packet(0x32, mqtt_str("a/b") + b"\x00\x01" + props(b"\x01\x01", b"\x03" + mqtt_str("text/plain"), USER_PROP) + b"x"),
         mqtt_packet(0x30, mqtt_str("") + props(b"\x23\x00\x01") + b"alias")]
SUB_311 = mqtt_packet(0x82, b"\x00\x01" + mqtt_str("a/b") + b"\x01" + mqtt_str("a/+") + b"\x02" + mqtt_str("$SYS/x") + b"\x00")
SUB_5 = mqtt_packet(0x82, b"\x00\x02" + props(b"\x0b\x05") + mqtt_str("a/b") + b"\x2e")
UNSUB_311 = mqtt_packet(0xA2, b"\x00\x03" + mqtt_str("a/b"))
UNSUB_5 = mqtt_packet(0xA2, b"\x00\x03" + props() + mqtt_str("a/b"))
ACKS_311 = [mqtt_packet(0x40, b"\x00\x01"), mqtt_packet(0x62, b"\x00\x02"), mqtt_packet(0x50, b"\x00\x03"),
            mqtt_packet(0x70, b"\x00\x04")]
ACKS_5 = [mqtt_packet(0x40, b"\x00\x01\x10"), mqtt_packet(0x40, b"\x00\x01\x80" + props(b"\x1f" + mqtt_str("why")))]
PING, DISCONNECT = mqtt_packet(0xC0, b""), mqtt_packet(0xE0, b"")

MQTT_SEEDS = {
    "connect-311": b"\x00" + CONNECT_311,
    "connect-311-will-user": b"\x00" + CONNECT_311_WILL,
    "connect-5-properties-will": b"\x00" + CONNECT_5,
    "connect-31": b"\x00" + CONNECT_31,
    "session-311": b"\x01" + b"".join(PUB_311 + [SUB_311, UNSUB_311] + ACKS_311 + [PING, DISCONNECT]),
    "session-5": b"\x02" + b"".join(PUB_5 + [SUB_5, UNSUB_5] + ACKS_5 + [PING, mqtt_packet(0xE0, b"\x04" + props())]),
    "suback-connack-5": b"\x02" + mqtt_packet(0x90, b"\x00\x01" + props() + b"\x01\xa2") + mqtt_packet(0x20, b"\x00\x00" + props(b"\x24\x01")),
    "split-remaining-length": b"\x01" + mqtt_packet(0x30, mqtt_str("t") + b"p" * 300),
    "too-long-length": b"\x01\x30\xff\xff\xff\xff\x01",
    "not-minimal-length": b"\x01\xc0\x80\x00",
    "qos3": b"\x01\x36\x05\x00\x01a\x00\x01",
    "bad-utf8": b"\x01\x30\x04\x00\x02\xc3\x28",
}

# MQTT over WebSocket for ws-chain: the upgrade at /mqtt, then binary messages carrying MQTT (a packet split
# across two messages, then several in one).
MQTT_UPGRADE = (b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Protocol: mqtt\r\n\r\n")
WS_SEEDS.update({
    "mqtt-over-websocket-311": bytes([RAW]) + MQTT_UPGRADE + frame(CONNECT_311[:5], opcode=2)
        + frame(CONNECT_311[5:] + SUB_311, opcode=2) + frame(b"".join(PUB_311 + [PING, DISCONNECT]), opcode=2),
    "mqtt-over-websocket-5": bytes([RAW]) + MQTT_UPGRADE + frame(CONNECT_5 + SUB_5 + b"".join(PUB_5), opcode=2)
        + frame(b"\x32\xff\xff\x7f", opcode=2),
})


def write(target, seeds):
    folder = os.path.join(HERE, "corpus", target)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for name, data in seeds.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    print(f"{target}: {len(seeds)} seeds")


def main():
    frames = {f"frame-{i:02d}": json.dumps(obj).encode() for i, obj in enumerate(CLIENT_FRAMES)}
    frames.update({f"raw-{hashlib.sha1(data).hexdigest()[:8]}": data for data in CLIENT_RAW})
    write("client-frame", frames)
    write("envelope", ENVELOPE_SEEDS)
    write("ws-chain", WS_SEEDS)
    write("mqtt-decoder", MQTT_SEEDS)


if __name__ == "__main__":
    main()

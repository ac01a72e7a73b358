"""Issue 7: the WebSocket edge of ws-ingress speaks RFC 6455 as browsers and the Autobahn suite expect, and its
handshake has limits. Our own conformance suite on raw sockets, one test per case, against real stages started
by the real supervisor: a default stack (`broker`) and one with `HandshakeTimeout = 1` and `MaxConnections = 3`.

Close codes: 1002 for protocol violations, 1007 for invalid UTF-8, the client's own code echoed for a valid close;
HTTP 426 for another WebSocket version, 503 beyond MaxConnections."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import time

import pytest

from e2e_helpers import Broker, running, unique_subject, wait_until

TIMEOUT = 5.0

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


def frame_bytes(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0, masked: bool = True) -> bytes:
    """A client frame; `rsv` is OR-ed into the first byte (0x40 = RSV1, 0x20 = RSV2, 0x10 = RSV3)."""
    n = len(payload)
    first = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if masked else 0
    if n < 126:
        header = bytes([first, mask_bit | n])
    elif n < 65536:
        header = bytes([first, mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([first, mask_bit | 127]) + n.to_bytes(8, "big")
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return code.to_bytes(2, "big") + reason


def upgrade_request(port: int, version: str = "13") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n").encode()


def http_exchange(port: int, request: bytes, timeout: float = TIMEOUT) -> bytes:
    """Sends a request and reads the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def closed_within(sock: socket.socket, seconds: float) -> bytes | None:
    """Reads until EOF (or a reset); returns what was read, or None when still open after `seconds`."""
    sock.settimeout(seconds)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except socket.timeout:
        return None
    except ConnectionResetError:
        pass
    return data


class RawWebSocket:
    """A hand-rolled WebSocket client: sends any frame, even one a real client never would."""

    def __init__(self, port: int, timeout: float = TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.sendall(upgrade_request(port))
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            assert chunk, f"server closed during the handshake: {self.buf!r}"
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), f"handshake refused: {head!r}"

    def send(self, opcode: int, payload: bytes = b"", **kw):
        self.sock.sendall(frame_bytes(opcode, payload, **kw))

    def send_json(self, obj: dict):
        self.send(TEXT, json.dumps(obj).encode())

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed with {len(self.buf)} of {n} bytes read")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def recv_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame, which must be whole and unmasked."""
        first, second = self._read(2)
        assert first & 0x80 and not first & 0x70, f"server frame with fin unset or RSV bits: {first:#x}"
        assert not second & 0x80, "server frames must not be masked"
        n = second & 0x7F
        if n == 126:
            n = int.from_bytes(self._read(2), "big")
        elif n == 127:
            n = int.from_bytes(self._read(8), "big")
        return first & 0x0F, self._read(n)

    def recv_json(self, pred, what: str) -> dict:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            opcode, payload = self.recv_frame()
            if opcode == TEXT:
                obj = json.loads(payload)
                if pred(obj):
                    return obj
        raise AssertionError(f"no {what} within {TIMEOUT}s")

    def expect_close(self) -> bytes:
        """Skips data frames up to the server's close frame, checks the TCP connection then ends; returns the
        close payload."""
        while True:
            opcode, payload = self.recv_frame()
            if opcode == CLOSE:
                break
            assert opcode in (TEXT, PONG), f"unexpected frame {opcode:#x} before the close"
        self.sock.settimeout(TIMEOUT)
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            self.sock.sendall(frame_bytes(CLOSE, payload[:2]))  # our answer to a close the server started
            assert self.sock.recv(1) == b"", "the connection stays open after the close frame"
        return payload

    def expect_close_code(self, code: int):
        payload = self.expect_close()
        assert len(payload) >= 2, f"close frame without a code: {payload!r}"
        got = int.from_bytes(payload[:2], "big")
        assert got == code, f"close code {got} ({payload[2:]!r}), expected {code}"

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()


@pytest.fixture
def ws(broker):
    client = RawWebSocket(broker.port)
    yield client
    client.close()


@pytest.fixture(scope="module")
def edge_broker(tmp_path_factory):
    with running(Broker(tmp_path_factory.mktemp("edge"), name="edge", HandshakeTimeout=1, MaxConnections=3)) as b:
        yield b


# --- protocol violations: 1002 ----------------------------------------------------------------------------------

def test_unmasked_frame_closes_with_1002(ws):
    ws.send(TEXT, b'{"op":"ping"}', masked=False)
    ws.expect_close_code(1002)


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10], ids=["rsv1", "rsv2", "rsv3"])
def test_reserved_bit_closes_with_1002(ws, rsv):
    ws.send(TEXT, b'{"op":"ping"}', rsv=rsv)
    ws.expect_close_code(1002)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcode_closes_with_1002(ws, opcode):
    ws.send(opcode, b"x")
    ws.expect_close_code(1002)


def test_continuation_with_nothing_to_continue_closes_with_1002(ws):
    ws.send(CONTINUATION, b'{"op":"ping"}')
    ws.expect_close_code(1002)


def test_new_message_inside_a_fragmented_one_closes_with_1002(ws):
    ws.send(TEXT, b'{"op":', fin=False)
    ws.send(TEXT, b'{"op":"ping"}')
    ws.expect_close_code(1002)


def test_fragmented_ping_closes_with_1002(ws):
    ws.send(PING, b"part", fin=False)
    ws.expect_close_code(1002)


def test_ping_of_126_bytes_closes_with_1002(ws):
    ws.send(PING, b"p" * 126)
    ws.expect_close_code(1002)


# --- UTF-8: 1007 -----------------------------------------------------------------------------------------------

def test_invalid_utf8_text_closes_with_1007(ws):
    ws.send(TEXT, b'{"op":"ping","x":"\xc0\xaf"}')
    ws.expect_close_code(1007)


def test_invalid_utf8_across_fragments_closes_with_1007(ws):
    ws.send(TEXT, b'{"op":"ping","x":"\xe2\x82', fin=False)  # a euro sign begun...
    ws.send(CONTINUATION, b'A"}')  # ...and not finished
    ws.expect_close_code(1007)


# --- fragmented messages that work ------------------------------------------------------------------------------

def publish_fragments(ws: RawWebSocket, subject: str, fragments: list[bytes], ping: bytes | None = None) -> dict:
    """Subscribes, sends a publish split into `fragments` (a ping after the first when given) and returns the
    delivered message."""
    ws.send_json({"op": "subscribe", "subjects": [subject]})
    st = ws.recv_json(lambda f: f.get("op") == "subscribed", "subscribed")
    assert st["status"] == "ALLOW", st
    for i, fragment in enumerate(fragments):
        ws.send(TEXT if i == 0 else CONTINUATION, fragment, fin=i == len(fragments) - 1)
        if i == 0 and ping is not None:
            ws.send(PING, ping)
            opcode, payload = ws.recv_frame()
            assert (opcode, payload) == (PONG, ping), f"expected the pong between fragments: {opcode:#x} {payload!r}"
    status = ws.recv_json(lambda f: f.get("op") == "publish_status", "publish_status")
    assert status["status"] == "OK", status
    return ws.recv_json(lambda f: f.get("op") == "message", "the published message")


def test_fragmented_publish_with_a_ping_between_is_delivered(ws):
    s = unique_subject("frag")
    text = json.dumps({"op": "publish", "subject": s, "content": "in three parts", "closure": "c1"}).encode()
    message = publish_fragments(ws, s, [text[:10], text[10:30], text[30:]], ping=b"between")
    assert message["content"] == "in three parts", message


def test_utf8_split_mid_code_point_across_fragments_is_valid(ws):
    s = unique_subject("utf8")
    text = json.dumps({"op": "publish", "subject": s, "content": "price: €5, clef: 𝄞", "closure": "c2"},
                      ensure_ascii=False).encode()
    euro = text.index("€".encode())
    clef = text.index("𝄞".encode())
    message = publish_fragments(ws, s, [text[:euro + 1], text[euro + 1:euro + 2], text[euro + 2:clef + 3],
                                        text[clef + 3:]])
    assert message["content"] == "price: €5, clef: 𝄞", message


# --- ping and close --------------------------------------------------------------------------------------------

def test_ping_is_answered_with_the_same_payload(ws):
    payload = bytes(range(125))
    ws.send(PING, payload)
    assert ws.recv_frame() == (PONG, payload)
    ws.send(PING, b"")
    assert ws.recv_frame() == (PONG, b"")


@pytest.mark.parametrize("code", [1000, 3000, 4999])
def test_valid_close_is_echoed_then_the_connection_closes(ws, code):
    ws.send(CLOSE, close_payload(code, "bye ✓".encode()))
    opcode, payload = ws.recv_frame()
    assert opcode == CLOSE and payload[:2] == code.to_bytes(2, "big"), (opcode, payload)
    assert closed_within(ws.sock, TIMEOUT) == b"", "the server did not close the TCP connection"


def test_empty_close_is_answered_with_an_empty_close(ws):
    ws.send(CLOSE, b"")
    opcode, payload = ws.recv_frame()
    assert opcode == CLOSE and payload in (b"", close_payload(1000)), (opcode, payload)
    assert closed_within(ws.sock, TIMEOUT) == b""


@pytest.mark.parametrize("code", [999, 1005, 1006, 1015, 2999, 5000])
def test_close_code_that_must_not_be_sent_closes_with_1002(ws, code):
    ws.send(CLOSE, close_payload(code))
    ws.expect_close_code(1002)


def test_close_with_one_byte_payload_closes_with_1002(ws):
    ws.send(CLOSE, b"\x03")
    ws.expect_close_code(1002)


def test_binary_message_gets_invalid_frame_and_the_connection_stays_open(ws):
    ws.send(BINARY, b"\x00\x01", fin=False)
    ws.send(CONTINUATION, b"\x02")
    error = ws.recv_json(lambda f: f.get("op") == "error", "error")
    assert error["code"] == "INVALID_FRAME", error
    ws.send_json({"op": "ping"})
    ws.recv_json(lambda f: f.get("op") == "pong", "pong")


def ingress_rss_kib(broker) -> int:
    with open(f"/proc/{broker.pid('ws-ingress')}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_ping_flood_from_a_client_that_never_reads_is_closed_with_1008_and_does_not_grow_memory(broker):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", broker.port))
    try:
        sock.sendall(upgrade_request(broker.port))
        time.sleep(0.2)
        before = ingress_rss_kib(broker)
        burst = frame_bytes(PING, b"p" * 125) * 1000
        sent = 0
        try:
            for _ in range(5):  # 5,000 pings at once: 1,000 beyond the rate close the connection
                sock.sendall(burst)
                sent += 1000
        except OSError:
            pass  # the server closed the flood
        grown = ingress_rss_kib(broker) - before
        assert grown < 20 * 1024, f"ws-ingress grew by {grown} KiB while a client that never reads sent pings"
        data = closed_within(sock, 10) or b""
        close_at = data.rfind(bytes([0x88]))
        assert close_at >= 0 and data[close_at + 2:close_at + 4] == (1008).to_bytes(2, "big"), \
            f"no close 1008 after {sent} pings (PingRateLimit 10/s): {data[-40:]!r}"
    finally:
        sock.close()
    RawWebSocket(broker.port).close()  # and the ingress still accepts


# --- handshake ------------------------------------------------------------------------------------------------

def test_wrong_websocket_version_gets_426_with_version_13(broker):
    answer = http_exchange(broker.port, upgrade_request(broker.port, version="8"))
    head = answer.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 426"), head
    assert "\r\nsec-websocket-version: 13" in head.lower(), head


def test_malformed_upgrade_gets_400(broker):
    request = upgrade_request(broker.port).replace(b"Sec-WebSocket-Key", b"X-Not-The-Key")
    answer = http_exchange(broker.port, request)
    assert answer.startswith(b"HTTP/1.1 400"), answer


def test_connection_that_sends_nothing_is_closed_after_the_handshake_timeout(edge_broker):
    with socket.create_connection(("127.0.0.1", edge_broker.port)) as sock:
        started = time.monotonic()
        assert closed_within(sock, 4) == b"", "a silent connection was not closed"
        assert 0.5 < time.monotonic() - started < 3, "closed too early or too late for HandshakeTimeout = 1"
    # a plain HTTP request that completes in time is answered as before
    answer = http_exchange(edge_broker.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok\n"), answer


def test_slowloris_partial_headers_are_dropped(edge_broker):
    with socket.create_connection(("127.0.0.1", edge_broker.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 4:
            try:
                sock.sendall(b"X-Slow: " + str(time.monotonic()).encode() + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_within(sock, 0.25) is not None:
                closed = True
                break
        assert closed, "a client trickling its headers kept its connection open"
        assert time.monotonic() - started < 3


def test_upgrade_beyond_max_connections_gets_503_until_one_closes(edge_broker):
    held = [RawWebSocket(edge_broker.port) for _ in range(3)]
    try:
        stats = edge_broker.run_dir / "ws-ingress-0.stats.json"
        wait_until(lambda: json.loads(stats.read_text()).get("tcpConnections") == 3, 5,
                   what="the tcpConnections gauge to count the 3 connections")
        answer = http_exchange(edge_broker.port, upgrade_request(edge_broker.port))
        head = answer.split(b"\r\n\r\n", 1)[0].decode()
        assert head.startswith("HTTP/1.1 503"), head
        assert "\r\nretry-after: " in head.lower(), head
        held.pop().close()
        deadline = time.monotonic() + TIMEOUT
        while True:  # the closed connection stops counting
            try:
                held.append(RawWebSocket(edge_broker.port))
                break
            except AssertionError:
                assert time.monotonic() < deadline, "no upgrade accepted after a connection closed"
                time.sleep(0.1)
    finally:
        for client in held:
            client.close()

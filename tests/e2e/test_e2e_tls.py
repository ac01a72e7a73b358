"""Issue 8 (security), contract 4: TLS. `ListenEncrypted` serves the same endpoint as `Listen` over TLS 1.2/1.3
(wss://, https://) with `TLSCertificateFile` (a PEM chain) and `TLSKeyFile`; `./switchyard reload ws-ingress` loads
renewed files for new connections without dropping open ones.

Certificates are made at test time with the openssl command line: a CA and server certificates it signs (for
127.0.0.1). The clients are real: Python's `ssl` with `websockets`, and `openssl s_client`."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time

import pytest

from e2e_helpers import Broker, Client, free_port, run, running, unique_subject, wait_until
from tls_helpers import HANDSHAKE_TIMEOUT, PKI, install, peer_certificate, pki, tls_params  # noqa: F401 (fixture)

UPGRADE = ("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")


def tls_request(port: int, context: ssl.SSLContext, request: str) -> tuple[int, str]:
    """The status code and text of the answer to one HTTP request over TLS (the server closes after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(request.encode())
            data = b""
            try:
                while chunk := tls.recv(65536):
                    data += chunk
            except ssl.SSLError:  # closed without close_notify after the answer
                pass
    return int(data.split(b" ", 2)[1]), data.decode(errors="replace")


def s_client(port: int, pki: PKI, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(pki.ca),
                           "-verify_return_error", *options],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)


def ingress_stats(broker: Broker, key: str) -> int:
    return sum(int(r.get(key) or 0) for r in broker.status_json() if r.get("stage") == "ws-ingress")


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory, pki):
    """Two ingress instances sharing the TLS port (SO_REUSEPORT)."""
    work = tmp_path_factory.mktemp("tls")
    install(work, *pki.issue("first", serial=1))
    b = Broker(work, name="tls", IngressInstances=2, AllowedOrigins="https://app.example.com",
               **tls_params(free_port()))
    b.tls_port = int(b.params["ListenEncrypted"].rsplit(":", 1)[1])
    with running(b):
        yield b


def test_wss_round_trip_with_a_plain_websocket_client_on_the_same_hub(tls_broker, pki):
    async def scenario():
        subject = unique_subject("tls")
        wss_url = f"wss://127.0.0.1:{tls_broker.tls_port}/"
        async with await Client.connect(wss_url, "wss-sub", ssl=pki.client_context()) as subscriber, \
                await Client.connect(wss_url + "ws", "wss-pub", ssl=pki.client_context()) as publisher, \
                await Client.connect(tls_broker.url, "plain-pub") as plain:
            tls_object = subscriber.ws.transport.get_extra_info("ssl_object")
            assert tls_object.version() == "TLSv1.3"
            await subscriber.subscribe(subject)
            await publisher.publish_ok(subject, "over wss")
            await plain.publish_ok(subject, "over ws")
            frames = await subscriber.messages(subject, 2)
            assert [f["content"] for f in frames] == ["over wss", "over ws"]
            assert (await publisher.ping_pong())["op"] == "pong"
    run(scenario(), timeout=60)


def test_http_answers_are_the_same_over_tls(tls_broker, pki):
    context = pki.client_context()
    port = tls_broker.tls_port
    status, text = tls_request(port, context, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, text.endswith("ok\n")) == (200, True), text
    assert tls_request(port, context, "GET /switchyard.js HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
    assert tls_request(port, context, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 404
    assert tls_request(port, context, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 426
    assert tls_request(port, context, UPGRADE + "Sec-WebSocket-Version: 8\r\n\r\n")[0] == 426
    assert tls_request(port, context, UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "short") +
                       "Sec-WebSocket-Version: 13\r\n\r\n")[0] == 400
    assert tls_request(port, context, UPGRADE + "Sec-WebSocket-Version: 13\r\n"
                       "Origin: https://evil.example.com\r\n\r\n")[0] == 403


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
def test_tls_1_0_and_1_1_are_refused_by_the_server(tls_broker, pki, version):
    # SECLEVEL=0 lets this client offer the old versions: the refusal must be the server's alert.
    result = s_client(tls_broker.tls_port, pki, version, "-cipher", "DEFAULT@SECLEVEL=0")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "alert protocol version" in output, output


@pytest.mark.parametrize("version,name", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_tls_1_2_and_1_3_are_accepted(tls_broker, pki, version, name):
    result = s_client(tls_broker.tls_port, pki, version)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"Protocol  : {name}" in output or f"New, {name}" in output, output
    assert "Verify return code: 0 (ok)" in output, output


def test_plain_http_on_the_tls_port_fails_cleanly_and_the_stage_lives_on(tls_broker, pki):
    pids = [tls_broker.pid("ws-ingress", n) for n in (0, 1)]
    failures_before = ingress_stats(tls_broker, "tlsHandshakeFailures")
    wait_until(lambda: ingress_stats(tls_broker, "tcpConnections") == 0, 10,
               what="the connections of earlier tests to close")
    with socket.create_connection(("127.0.0.1", tls_broker.tls_port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):  # at most a TLS alert, then the close
            data += chunk
    assert not data.startswith(b"HTTP/"), data
    assert len(data) < 100, data
    wait_until(lambda: ingress_stats(tls_broker, "tlsHandshakeFailures") > failures_before, 5,
               what="tlsHandshakeFailures to count the plain request")
    assert [tls_broker.pid("ws-ingress", n) for n in (0, 1)] == pids
    wait_until(lambda: ingress_stats(tls_broker, "tcpConnections") == 0, 5,
               what="the refused connection to be released")
    assert tls_request(tls_broker.tls_port, pki.client_context(),
                       "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200


def test_a_connection_that_never_sends_a_client_hello_is_closed_after_the_handshake_timeout(tls_broker):
    with socket.create_connection(("127.0.0.1", tls_broker.tls_port), timeout=HANDSHAKE_TIMEOUT + 5) as sock:
        began = time.monotonic()
        assert sock.recv(4096) == b""
        waited = time.monotonic() - began
    assert HANDSHAKE_TIMEOUT - 0.5 <= waited <= HANDSHAKE_TIMEOUT + 3, waited


def test_reload_serves_new_connections_the_renewed_certificate_and_keeps_open_ones(tls_broker, pki):
    context = pki.client_context()
    port = tls_broker.tls_port

    def certificates_served(count: int = 6) -> set[bytes]:  # several connections: both instances answer
        return {peer_certificate(port, context) for _ in range(count)}

    async def scenario():
        subject = unique_subject("reload")
        async with await Client.connect(f"wss://127.0.0.1:{port}/", "wss-sub", ssl=context) as subscriber, \
                await Client.connect(tls_broker.url, "plain-pub") as publisher:
            await subscriber.subscribe(subject)
            tls_object = subscriber.ws.transport.get_extra_info("ssl_object")
            assert tls_object.getpeercert(binary_form=True) == pki.der("first")
            assert certificates_served() == {pki.der("first")}

            install(tls_broker.dir, *pki.issue("renewed", serial=2))
            result = tls_broker.cli("reload", "ws-ingress")
            assert result.rc == 0 and "reloaded (2 instances)" in result.output, result
            assert certificates_served() == {pki.der("renewed")}
            await publisher.publish_ok(subject, "after the reload")
            assert [f["content"] for f in await subscriber.messages(subject, 1)] == ["after the reload"]
            assert tls_object.getpeercert(binary_form=True) == pki.der("first")

            # A broken key: the command fails visibly and the renewed certificate keeps serving.
            key = tls_broker.dir / "tls" / "server.key"
            key.write_text("-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
            result = tls_broker.cli("reload", "ws-ingress")
            assert result.rc == 1, result
            assert "still serving the previous certificate" in result.output and str(key) in result.output, result
            assert certificates_served() == {pki.der("renewed")}
            await publisher.publish_ok(subject, "after the failed reload")
            assert [f["content"] for f in await subscriber.messages(subject, 1)] == ["after the failed reload"]
            install(tls_broker.dir, *pki.issue("renewed", serial=2))
    run(scenario(), timeout=90)


def test_tls_connections_count_against_max_connections(tmp_path, pki):
    install(tmp_path, *pki.issue("limited", serial=3))
    b = Broker(tmp_path, name="tls-limited", MaxConnections=3, **tls_params(free_port()))
    port = int(b.params["ListenEncrypted"].rsplit(":", 1)[1])
    context = pki.client_context()
    held = []
    try:
        b.start()
        for _ in range(3):
            held.append(context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                                            server_hostname="127.0.0.1"))
        status, text = tls_request(port, context, UPGRADE + "Sec-WebSocket-Version: 13\r\n\r\n")
        assert status == 503, text
    finally:
        for sock in held:
            sock.close()
        b.stop()


@pytest.mark.parametrize("problem", ["key does not match", "missing certificate file", "no TLSKeyFile"])
def test_a_bad_certificate_setting_stops_start_up_with_a_clear_message(tmp_path, pki, problem):
    chain, key = pki.issue("startup", serial=4)
    _, other_key = pki.issue("other", serial=5)
    install(tmp_path, chain, other_key if problem == "key does not match" else key)
    params = tls_params(free_port())
    if problem == "missing certificate file":
        params["TLSCertificateFile"] = "tls/nowhere.pem"
    if problem == "no TLSKeyFile":
        del params["TLSKeyFile"]
    b = Broker(tmp_path, name="tls-bad", **params)
    try:
        result = b.cli("start", timeout=60)
        assert result.rc == 2, result
        expected = {"key does not match": "this key does not match the certificate",
                    "missing certificate file": f"{tmp_path}/tls/nowhere.pem: cannot read the file",
                    "no TLSKeyFile": "parameter 'ListenEncrypted': needs TLSKeyFile"}[problem]
        assert expected in result.output, result
        assert f"{b.conf}:" in result.output, result  # the configuration file and line
    finally:
        b.stop()

"""Issue 8, contracts 1-3: entitlement. `Entitlement = jwt` with `JwtSecret` (HS256/384/512) or `JwtPublicKeyFile`
(RSA, EC), tokens made here with PyJWT: refused tokens get HTTP 401 before the upgrade (URL or header) or close 1008
(`connect`) and nothing they sent is processed; `permissions` decide subscribes (history included) and publishes;
`TOKEN_TO_EXPIRE` / `TOKEN_EXPIRED` and a refresh with `connect` on the same connection. `Entitlement = basic`:
anyone subscribes, the allow token publishes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import subprocess
import time
import uuid

import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from e2e_helpers import BIN_DIR, REPO, Broker, Client, run, running
from browser_helpers import browser, open_harness  # noqa: F401 (fixture)
from token_helpers import ALLOW_TOKEN, AUDIENCE, EVERYTHING, ISSUER, SECRET, token

def unsigned(claims: dict) -> str:
    """An `alg: none` token (PyJWT makes them on request)."""
    return jwt.encode(claims, None, algorithm="none")


def hmac_token(claims: dict, key: bytes) -> str:
    """An HS256 token made by hand: PyJWT refuses to use a PEM public key as an HMAC secret (the classic
    algorithm-confusion attack this builds)."""
    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")
    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(claims).encode())
    return (signing_input + b"." + b64(hmac.new(key, signing_input, hashlib.sha256).digest())).decode()


def subject(prefix: str) -> str:
    return f"/{prefix}/{uuid.uuid4().hex[:8]}"


def upgrade_status(port: int, path: str = "/", headers: str = "") -> tuple[int, str]:
    request = (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request.encode())
        data = b""
        while b"\r\n\r\n" not in data and (chunk := sock.recv(4096)):
            data += chunk
        if not data.startswith(b"HTTP/1.1 101"):
            while chunk := sock.recv(4096):
                data += chunk
    return int(data.split(b" ", 2)[1]), data.decode(errors="replace")


async def expect_closed(client: Client, code: int = 1008, reason_part: str = "", timeout: float = 10) -> str:
    closed = await client.wait_closed(timeout)
    assert closed.rcvd is not None and closed.rcvd.code == code, (closed, client.seen)
    assert reason_part in closed.rcvd.reason, closed.rcvd.reason
    return closed.rcvd.reason


@pytest.fixture(scope="module")
def hs_broker(tmp_path_factory):
    with running(Broker(tmp_path_factory.mktemp("ent-hs"), name="enths", Entitlement="jwt", JwtSecret=SECRET,
                        JwtIssuer=ISSUER, JwtAudience=AUDIENCE, TokenExpireNotice=1, HandshakeTimeout=2)) as b:
        yield b


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def keyed_broker(tmp_path_factory, name: str, key):
    work = tmp_path_factory.mktemp(name)
    (work / "keys").mkdir()
    (work / "keys" / "jwt.pem").write_bytes(public_pem(key))
    return Broker(work, name=name, Entitlement="jwt", JwtPublicKeyFile="keys/jwt.pem")


@pytest.fixture(scope="module")
def rsa_broker(tmp_path_factory, rsa_key):
    with running(keyed_broker(tmp_path_factory, "entrsa", rsa_key)) as b:
        yield b


@pytest.fixture(scope="module")
def ec_broker(tmp_path_factory, ec_key):
    with running(keyed_broker(tmp_path_factory, "entec", ec_key)) as b:
        yield b


@pytest.fixture(scope="module")
def basic_broker(tmp_path_factory):
    with running(Broker(tmp_path_factory.mktemp("ent-basic"), name="entbasic", Entitlement="basic",
                        EntitlementAllowToken=ALLOW_TOKEN)) as b:
        yield b


def refused_tokens(rsa_key) -> dict[str, str]:
    now = time.time()
    return {
        "expired": token(expires_in=-10),
        "not yet valid": token(not_before=60),
        "wrong key": token(key="another-secret-" + uuid.uuid4().hex * 2),
        "alg none": unsigned({"exp": int(now + 60), "iss": ISSUER, "aud": AUDIENCE, "permissions": EVERYTHING}),
        "RS256 for an HMAC key": token(key=rsa_key, algorithm="RS256"),
        "wrong issuer": token(issuer="evil"),
        "no issuer": token(issuer=None),
        "wrong audience": token(audience="someone-else"),
        "no exp": jwt.encode({"iss": ISSUER, "aud": AUDIENCE}, SECRET, algorithm="HS256"),
        "malformed": "not.a.token",
        "bad permission entry": token(permissions={"sub": ["no-leading-slash"]}),
    }


def test_refused_tokens_in_the_url_or_header_get_401_before_the_upgrade(hs_broker, rsa_key):
    for name, bad in refused_tokens(rsa_key).items():
        status, text = upgrade_status(hs_broker.port, f"/?token={bad}")
        assert status == 401, (name, text)
        assert "WWW-Authenticate: Bearer" in text, text
        status, text = upgrade_status(hs_broker.port, headers=f"Authorization: Bearer {bad}\r\n")
        assert status == 401, (name, text)
    good = token(permissions=EVERYTHING)
    assert upgrade_status(hs_broker.port, f"/?token={good}")[0] == 101
    assert upgrade_status(hs_broker.port, headers=f"Authorization: Bearer {good}\r\n")[0] == 101
    for digest in ("HS384", "HS512"):
        assert upgrade_status(hs_broker.port, f"/ws?token={token(algorithm=digest)}")[0] == 101, digest


def test_refused_tokens_in_connect_close_1008_and_nothing_sent_after_them_is_processed(hs_broker, rsa_key):
    watched = subject("refused")

    async def scenario():
        async with await Client.connect(f"{hs_broker.url}?token={token(permissions=EVERYTHING)}", name="w") as watcher:
            assert (await watcher.subscribe(watched))[watched]["status"] == "ALLOW"
            for name, bad in refused_tokens(rsa_key).items():
                async with await Client.connect(hs_broker.url, name=name) as client:
                    await client.send({"op": "connect", "token": bad})
                    await client.publish(watched, f"from {name}", closure="c", wait=False)
                    await client.subscribe(watched, wait=False)
                    reason = await expect_closed(client)
                    assert "token" in reason, (name, reason)
                    assert not [f for f in client.seen if f.get("op") in ("publish_status", "subscribed")], client.seen
            assert await watcher.quiet(lambda f: f.get("op") == "message", 0.5) == []

    run(scenario(), 60)


def test_without_a_token_the_first_frame_must_be_connect_and_come_in_time(hs_broker):
    async def scenario():
        async with await Client.connect(hs_broker.url, name="sub-first") as client:
            await client.subscribe("/a/b", wait=False)
            assert "token is required" in await expect_closed(client)
        async with await Client.connect(hs_broker.url, name="bad-json") as client:
            await client.send("{not json")
            await expect_closed(client)
        async with await Client.connect(hs_broker.url, name="binary") as client:
            await client.send(b"\x00\x01")
            await expect_closed(client)
        async with await Client.connect(hs_broker.url, name="silent") as client:
            started = time.monotonic()
            assert "no token within 2 s" in await expect_closed(client, timeout=6)
            assert time.monotonic() - started >= 1.5

    run(scenario(), 30)


def test_permissions_decide_subscribes_history_and_publishes(hs_broker):
    base = subject("perm")
    owner_token = token(permissions={"all": [f"{base}/*"]})
    limited = token(permissions={"sub": [f"{base}/exact", f"{base}/feed/*"], "pub": [f"{base}/in/*"],
                                 "all": [f"{base}/both"]})

    async def scenario():
        async with await Client.connect(hs_broker.url, name="owner") as owner, \
                await Client.connect(hs_broker.url, name="limited") as client:
            await owner.send({"op": "connect", "token": owner_token})
            await client.send({"op": "connect", "token": limited})
            for i in range(3):  # history the limited client must not see
                await owner.publish_ok(f"{base}/secret", f"s{i}", closure=f"s{i}")
            await owner.publish_ok(f"{base}/exact", "e0", closure="e0")

            answers = await client.subscribe([f"{base}/exact", f"{base}/feed/x/y", f"{base}/both", f"{base}/secret",
                                              f"{base}/exact/below", f"{base}/feed", f"{base}/in/x"], history=10)
            assert {s: a["status"] for s, a in answers.items()} == {
                f"{base}/exact": "ALLOW", f"{base}/feed/x/y": "ALLOW", f"{base}/both": "ALLOW",
                f"{base}/secret": "DENY", f"{base}/exact/below": "DENY", f"{base}/feed": "DENY",
                f"{base}/in/x": "DENY"}, answers
            history = await client.messages(f"{base}/exact", 1)
            assert history[0]["content"] == "e0"
            assert await client.quiet(lambda f: f.get("subject") == f"{base}/secret", 0.5) == []

            assert (await client.publish(f"{base}/in/x/y", "ok", closure="p1"))["status"] == "OK"
            assert (await client.publish(f"{base}/both", "ok", closure="p2"))["status"] == "OK"
            for i, denied in enumerate([f"{base}/exact", f"{base}/in", f"{base}/feed/x", f"{base}/secret"]):
                status = await client.publish(denied, "no", closure=f"d{i}")
                assert status["status"] == "DENY", status
            await client.publish(f"{base}/secret", "no closure")
            error = await client.wait_for(lambda f: f.get("op") == "error")
            assert error["code"] == "DENY", error

            # A denied publish never reached the cache: the owner's history of the subject is unchanged.
            await owner.subscribe(f"{base}/secret", history=10)
            got = await owner.messages(f"{base}/secret", 3)
            assert [m["content"] for m in got] == ["s0", "s1", "s2"]
            assert await owner.quiet(lambda f: f.get("op") == "message", 0.5) == []

    run(scenario(), 60)


def test_expiry_notice_then_expired_then_close(hs_broker):
    async def scenario():
        async with await Client.connect(hs_broker.url, name="short") as client:
            started = time.monotonic()
            await client.send({"op": "connect", "token": token(expires_in=3, permissions=EVERYTHING)})
            notice = await client.wait_for(lambda f: f.get("op") == "status", 5)
            assert notice == {"op": "status", "status": "TOKEN_TO_EXPIRE"}, notice
            assert 1.2 < time.monotonic() - started < 2.9
            expired = await client.wait_for(lambda f: f.get("op") == "status", 5)
            assert expired == {"op": "status", "status": "TOKEN_EXPIRED"}, expired
            assert "token expired" in await expect_closed(client, timeout=3)
            assert time.monotonic() - started >= 2.5

    run(scenario(), 30)


def test_a_fresh_token_on_the_same_connection_replaces_permissions_and_lifetime(hs_broker):
    base = subject("refresh")

    async def scenario():
        async with await Client.connect(hs_broker.url, name="owner") as owner, \
                await Client.connect(hs_broker.url, name="refresher") as client:
            await owner.send({"op": "connect", "token": token(permissions=EVERYTHING)})
            await client.send({"op": "connect", "token": token(expires_in=2, permissions={"sub": [f"{base}/*"]})})
            answers = await client.subscribe([f"{base}/kept", f"{base}/dropped"])
            assert all(a["status"] == "ALLOW" for a in answers.values()), answers
            assert (await client.publish(f"{base}/kept", "x", closure="before"))["status"] == "DENY"

            await client.send({"op": "connect", "token": token(expires_in=60, permissions={
                "sub": [f"{base}/kept"], "pub": [f"{base}/kept"]})})
            denied = await client.wait_for(lambda f: f.get("op") == "subscribed")
            assert denied["subject"] == f"{base}/dropped" and denied["status"] == "DENY", denied
            assert (await client.publish(f"{base}/kept", "mine", closure="after"))["status"] == "OK"
            await owner.publish_ok(f"{base}/dropped", "gone", closure="o1")
            await owner.publish_ok(f"{base}/kept", "still", closure="o2")
            got = await client.wait_for(lambda f: f.get("op") == "message" and f.get("content") == "still")
            assert got["subject"] == f"{base}/kept"
            # The first token's end passes: no TOKEN_EXPIRED, the connection stays open.
            await asyncio.sleep(2.5)
            await client.ping_pong()
            assert not [f for f in client.seen if f.get("op") == "status" and "TOKEN" in f.get("status", "")]
            assert not [f for f in client.seen if f.get("content") == "gone"]

    run(scenario(), 60)


def test_an_invalid_refresh_closes_the_connection(hs_broker):
    async def scenario():
        async with await Client.connect(f"{hs_broker.url}?token={token(permissions=EVERYTHING)}", name="c") as client:
            await client.ping_pong()
            await client.send({"op": "connect", "token": token(expires_in=-5)})
            await client.publish("/a/b", "after the bad refresh", closure="x", wait=False)
            assert "expired" in await expect_closed(client)
            assert not [f for f in client.seen if f.get("op") == "publish_status"]

    run(scenario(), 30)


def test_refusals_are_counted_in_metrics(hs_broker, rsa_key):
    upgrade_status(hs_broker.port, f"/?token={token(expires_in=-10)}")
    with socket.create_connection(("127.0.0.1", hs_broker.monitor_port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    text = data.decode()
    assert "token_refused_expired" in text, text[-3000:]


def test_rsa_key_accepts_rs256_384_512_and_refuses_other_algorithms(rsa_broker, rsa_key, ec_key):
    for algorithm in ("RS256", "RS384", "RS512"):
        assert upgrade_status(rsa_broker.port, f"/?token={token(rsa_key, algorithm, issuer=None, audience=None)}")[0] == 101
    refused = {
        "ES256": token(ec_key, "ES256"),
        "HS256 keyed with the public key": hmac_token({"exp": int(time.time() + 60), "permissions": EVERYTHING},
                                                      public_pem(rsa_key)),
        "PS256": token(rsa_key, "PS256"),
        "other RSA key": token(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
    }
    for name, bad in refused.items():
        assert upgrade_status(rsa_broker.port, f"/?token={bad}")[0] == 401, name


def test_ec_key_accepts_es256_and_refuses_rs256(ec_broker, ec_key, rsa_key):
    good = token(ec_key, "ES256", permissions=EVERYTHING)

    async def scenario():
        async with await Client.connect(f"{ec_broker.url}?token={good}", name="ec") as client:
            s = subject("ec")
            assert (await client.subscribe(s))[s]["status"] == "ALLOW"
            assert (await client.publish(s, "x", closure="c"))["status"] == "OK"

    run(scenario(), 30)
    assert upgrade_status(ec_broker.port, f"/?token={token(rsa_key, 'RS256')}")[0] == 401
    assert upgrade_status(ec_broker.port, f"/?token={token(ec.generate_private_key(ec.SECP256R1()), 'ES256')}")[0] == 401


def test_basic_anyone_subscribes_and_only_the_allow_token_publishes(basic_broker):
    s = subject("basic")

    async def scenario():
        async with await Client.connect(basic_broker.url, name="anon") as anon, \
                await Client.connect(f"{basic_broker.url}?token={ALLOW_TOKEN}", name="pub") as publisher, \
                await Client.connect(basic_broker.url, name="later") as later:
            assert (await anon.subscribe(s))[s]["status"] == "ALLOW"
            assert (await anon.publish(s, "x", closure="a"))["status"] == "DENY"
            assert (await publisher.publish(s, "hello", closure="b"))["status"] == "OK"
            assert (await anon.messages(s, 1))[0]["content"] == "hello"
            await later.send({"op": "connect", "token": ALLOW_TOKEN})
            assert (await later.publish(s, "via connect", closure="c"))["status"] == "OK"

    run(scenario(), 30)
    assert upgrade_status(basic_broker.port, "/?token=wrong")[0] == 401

    async def wrong_in_connect():
        async with await Client.connect(basic_broker.url, name="wrong") as client:
            await client.send({"op": "connect", "token": ALLOW_TOKEN + "x"})
            await expect_closed(client, reason_part="token not accepted")

    run(wrong_in_connect(), 30)


def test_client_library_sees_401_as_a_refused_handshake(hs_broker):
    async def scenario():
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            await Client.connect(f"{hs_broker.url}?token={token(expires_in=-10)}")
        assert refused.value.response.status_code == 401

    run(scenario(), 30)


def test_a_key_file_that_holds_no_public_key_stops_start_up_naming_file_and_line(tmp_path, rsa_key):
    private_pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    (tmp_path / "private.pem").write_bytes(private_pem)  # a private key where the public one belongs
    b = Broker(tmp_path, name="badkey", Entitlement="jwt", JwtPublicKeyFile="private.pem")
    started = time.monotonic()
    try:
        r = b.cli("start", timeout=30)
    finally:
        b.stop()
    assert r.rc == 2, r
    line = next(i for i, text in enumerate(b.conf.read_text().splitlines(), 1) if text.startswith("JwtPublicKeyFile"))
    assert f"badkey.conf:{line}: parameter 'JwtPublicKeyFile'" in r.output, r.output
    assert "private.pem" in r.output, r.output
    assert time.monotonic() - started < 20


def test_switchyard_cli_presents_its_token(hs_broker):
    s = subject("cli")
    good = token(permissions={"all": [s]})

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN_DIR / "switchyard-cli"), *args, "--url", hs_broker.url], capture_output=True,
                              text=True, timeout=30, cwd=REPO)

    r = cli("pub", s, "hello", "--token", good)
    assert r.returncode == 0, r
    r = cli("sub", s, "--token", good, "--history", "1", "--count", "1", "--format", "content")
    assert (r.returncode, r.stdout) == (0, "hello\n"), r
    r = cli("pub", s + "/other", "no", "--token", good)
    assert r.returncode == 1 and "DENY" in r.stderr, r


def test_javascript_client_presents_refreshes_and_loses_its_token(hs_broker, browser):  # noqa: F811
    """clients/js/switchyard.js in headless Chromium: `token` goes out with `connect`, `setToken` refreshes on the
    same connection (no TOKEN_EXPIRED, publishes still OK), a refused token surfaces as a 1008 disconnect."""
    open_harness(browser, hs_broker)
    s = subject("js")
    short = token(expires_in=3, permissions={"all": [s]})
    fresh = token(expires_in=60, permissions={"all": [s]})
    expired = token(expires_in=-10, permissions={"all": [s]})
    result = browser.execute_async_script("""
        const [server, subject, short, fresh, expired] = arguments;
        const done = arguments[arguments.length - 1];
        const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));
        (async () => {
            const client = new T.SY.SwitchyardClient({ servers: [server], token: short });
            const statuses = [];
            client.onStatus(e => statuses.push(e.status));
            const got = [];
            client.subscribe([subject], m => got.push(m.content), {});
            while (!statuses.includes("SUBSCRIBE_ALLOW")) await sleep(50);
            const r = { first: await client.publish(subject, "one") };
            while (!statuses.includes("TOKEN_TO_EXPIRE")) await sleep(50);
            client.setToken(fresh);
            await sleep(2500);  // past the first token's exp
            r.second = await client.publish(subject, "two");
            await sleep(200);
            r.got = got;
            r.statuses = statuses;
            r.connected = client.connected;
            client.close();
            const refused = new T.SY.SwitchyardClient({ servers: [server], token: expired,
                                                        reconnect: { minDelayMs: 60000, maxDelayMs: 60000 } });
            r.refused = await new Promise(resolve => refused.onStatus(e => e.status === "DISCONNECTED" && resolve(e)));
            refused.close();
            return r;
        })().then(done, e => done(String(e)));
    """, hs_broker.url, s, short, fresh, expired)
    assert isinstance(result, dict), result
    assert result["first"] == "OK" and result["second"] == "OK", result
    assert result["got"] == ["one", "two"], result
    assert "TOKEN_TO_EXPIRE" in result["statuses"] and "TOKEN_EXPIRED" not in result["statuses"], result
    assert result["statuses"].count("CONNECTED") == 1 and result["connected"], result
    assert result["refused"]["code"] == 1008 and "expired" in result["refused"]["reason"], result

"""Issue 8, contracts 1-3 in Kafka mode: a publish outside a token's permissions gets `publish_status` DENY and is
never produced (read back with a confluent-kafka consumer); a subscribe outside them gets DENY and no recovery from
Kafka; refresh and expiry behave as in standalone mode. Tokens are made here with PyJWT (RS256, the key file in the
node's folder)."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from e2e_helpers import Client, run, running
from kafka_helpers import KafkaBroker, read_topic, tansu, unique_topic  # noqa: F401 (fixture)

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def token(expires_in: float = 60, **permissions: list[str]) -> str:
    return jwt.encode({"exp": time.time() + expires_in, "permissions": permissions}, KEY, algorithm="RS256")


@pytest.fixture(scope="module")
def node(tansu, tmp_path_factory):
    work = tmp_path_factory.mktemp("kent")
    (work / "jwt.pem").write_bytes(KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    with running(KafkaBroker(work, tansu.bootstrap, name="kent", topics_regex=r"^kent-.*", PublishTimeout=5,
                             Entitlement="jwt", JwtPublicKeyFile="jwt.pem", TokenExpireNotice=1)) as b:
        yield b


def test_a_denied_publish_is_never_produced_to_kafka(node, tansu):
    topic = unique_topic("kent")
    allowed, denied = f"/{topic}/open/x", f"/{topic}/closed"
    marker = uuid.uuid4().hex[:8]

    async def scenario():
        async with await Client.connect(f"{node.url}?token={token(pub=[f'/{topic}/open/*'])}", name="pub") as pub:
            for i in range(3):
                status = await pub.publish(denied, f"denied-{marker}-{i}", closure=f"d{i}", timeout=15)
                assert status["status"] == "DENY", status
            status = await pub.publish(allowed, f"allowed-{marker}", closure="ok", timeout=15)
            assert status["status"] == "OK", status

    run(scenario(), 60)
    # OK came with Kafka's delivery report: the allowed record is there, and nothing else.
    records = read_topic(tansu.bootstrap, topic, timeout=20)
    assert [(r.key, r.value) for r in records] == [(b"open/x", f"allowed-{marker}".encode())], records


def test_subscribe_outside_the_permissions_is_denied_without_recovery(node, tansu):
    topic = unique_topic("kent")
    secret, public = f"/{topic}/secret", f"/{topic}/public"

    async def scenario():
        async with await Client.connect(f"{node.url}?token={token(all=['/*'])}", name="owner") as owner:
            await owner.publish_ok(secret, "hidden", closure="s", timeout=15)
            await owner.publish_ok(public, "shown", closure="p", timeout=15)
        async with await Client.connect(node.url, name="reader") as reader:
            await reader.send({"op": "connect", "token": token(sub=[public])})
            answers = await reader.subscribe([secret, public], history=10,
                                             recover={secret: {"epoch": "x", "seq": 0}}, timeout=15)
            assert answers[secret]["status"] == "DENY" and answers[public]["status"] == "ALLOW", answers
            assert (await reader.messages(public, 1, timeout=15))[0]["content"] == "shown"
            assert await reader.quiet(lambda f: f.get("subject") == secret, 1.0) == []

    run(scenario(), 60)


def test_refresh_and_expiry_in_kafka_mode(node):
    topic = unique_topic("kent")
    a, b = f"/{topic}/a", f"/{topic}/b"

    async def scenario():
        async with await Client.connect(node.url, name="client") as client:
            await client.send({"op": "connect", "token": token(sub=[a, b])})
            answers = await client.subscribe([a, b], timeout=15)
            assert all(x["status"] == "ALLOW" for x in answers.values()), answers
            await client.send({"op": "connect", "token": token(expires_in=3, sub=[a])})
            denied = await client.wait_for(lambda f: f.get("op") == "subscribed", 5)
            assert denied["subject"] == b and denied["status"] == "DENY", denied
            notice = await client.wait_for(lambda f: f.get("op") == "status" and "subject" not in f, 5)
            assert notice["status"] == "TOKEN_TO_EXPIRE", notice
            expired = await client.wait_for(lambda f: f.get("op") == "status" and "subject" not in f, 5)
            assert expired["status"] == "TOKEN_EXPIRED", expired
            closed = await client.wait_closed(5)
            assert closed.rcvd.code == 1008 and closed.rcvd.reason == "token expired", closed

    run(scenario(), 60)

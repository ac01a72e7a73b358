"""Issue 7 (a hostile edge), the ingress hub: answers of any size are streamed without costing the client its
connection (and without crashing ws-ingress), and the per-connection limits give clear answers: subjects per
connection, subscribe and publish rates, the closure counted in MessageSizeLimit, the idle timeout, and live
messages held for a pending subscribe bounded by bytes (dropped and asked again, nothing lost)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from websockets.exceptions import ConnectionClosed

from e2e_helpers import Broker, Client, run, running, unique_subject

LIMITS = dict(
    ClientBufferLimit=65536,
    MessageSizeLimit=1024 * 1024,
    PublishRateLimit=200,
    SubscribeRateLimit=5,
    MaxSubjectsPerConnection=10,
    IdleTimeout=3,
)


@pytest.fixture(scope="module")
def edge_broker(tmp_path_factory):
    with running(Broker(tmp_path_factory.mktemp("edge"), name="edge", **LIMITS)) as b:
        yield b


@pytest.fixture(scope="module")
def default_broker(tmp_path_factory):
    with running(Broker(tmp_path_factory.mktemp("defaults"), name="defaults")) as b:
        yield b


def fnv1a64(text: str) -> int:
    h = 0xcbf29ce484222325
    for byte in text.encode():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def close_code(closed: ConnectionClosed) -> int | None:
    return closed.rcvd.code if closed.rcvd is not None else None


async def publish_all(pub: Client, subject: str, count: int, size: int):
    """Publishes `count` messages of `size` bytes (each starting with its number) and waits until all are stored."""
    for i in range(1, count + 1):
        await pub.publish(subject, f"{i:06d}".ljust(size, "x"), closure=f"p{i}", wait=False)
    for i in range(1, count + 1):
        st = await pub.wait_status(f"p{i}", timeout=30)
        assert st["status"] == "OK", st


async def initial_answer(client: Client, subject: str, count: int, kind: str, timeout: float = 60) -> list[dict]:
    """Messages 1...count of `subject` as `kind`; a recovery ends with DATA_SYNC (a history answer has no status,
    docs/PROTOCOL.md)."""
    recovered = kind == "recovered"
    frames = await client.subject_frames_until(
        subject, lambda got: len(got) >= count + (1 if recovered else 0), timeout=timeout)
    if recovered:
        assert frames[-1] == {"op": "status", "subject": subject, "status": "DATA_SYNC"}, frames[-1]
        frames = frames[:-1]
    assert [f.get("seq") for f in frames] == list(range(1, count + 1))
    assert all(m["type"] == kind and m["content"].startswith(f"{m['seq']:06d}") for m in frames)
    return frames


def test_big_history_answer_with_default_limits_neither_crashes_nor_disconnects(default_broker):
    """100 messages of 100 KB (10 MB, more than the 4 MiB ClientBufferLimit) as one history answer: ws-ingress
    died of it (SIGILL); now the client gets all of it and stays connected, and so does one that recovers all
    100 (then DATA_SYNC)."""
    b = default_broker
    subject = "/big/hist"
    ingress_pid = b.pid("ws-ingress")

    async def scenario():
        async with await Client.connect(b.url, name="pub") as pub, \
                await Client.connect(b.url, name="sub") as sub, \
                await Client.connect(b.url, name="recoverer") as recoverer:
            await publish_all(pub, subject, 100, 100 * 1024)
            await sub.subscribe(subject, history=100)
            first = await initial_answer(sub, subject, 100, "historical")
            await recoverer.subscribe(subject, recover={subject: {"epoch": first[0]["epoch"], "seq": 0}})
            await initial_answer(recoverer, subject, 100, "recovered")
            await pub.publish_ok(subject, "live")
            for client in (sub, recoverer):
                live = await client.messages(subject, 1)
                assert live[0]["content"] == "live" and live[0]["seq"] == 101 and live[0]["type"] == "update"
                await client.ping_pong()

    run(scenario(), 120)
    row = b.status_row("ws-ingress")
    assert row is not None and row.get("restarts") == 0, row
    assert b.pid("ws-ingress") == ingress_pid, "ws-ingress was restarted"


def test_answer_bigger_than_a_small_client_buffer_is_paced(edge_broker):
    """ClientBufferLimit 64 KiB, a 1.5 MB recovery answer: all of it arrives, in order, then live messages."""
    b = edge_broker
    subject = unique_subject("paced")

    async def scenario():
        async with await Client.connect(b.url, name="pub") as pub, \
                await Client.connect(b.url, name="sub") as sub:
            await publish_all(pub, subject, 60, 25 * 1024)
            await sub.subscribe(subject, history=60)
            # A live message published while the answer is on its way comes after it, once.
            await pub.publish_ok(subject, "000061 live")
            await initial_answer(sub, subject, 60, "historical")
            live = await sub.messages(subject, 1)
            assert live[0]["seq"] == 61 and live[0]["type"] == "update"
            await sub.ping_pong()

    run(scenario(), 90)


def test_publish_rate_limit_answers_then_closes_persistent_abuse(edge_broker):
    b = edge_broker
    subject = unique_subject("rate")

    async def scenario():
        async with await Client.connect(b.url, name="pub") as pub:
            for i in range(300):
                await pub.publish(subject, "x", closure=f"r{i}", wait=False)
            statuses = [await pub.wait_status(f"r{i}", timeout=20) for i in range(300)]
            ok = [s for s in statuses if s["status"] == "OK"]
            limited = [s for s in statuses if s["status"] == "FAILED" and "rate limited" in s.get("reason", "")]
            assert len(ok) >= 200, f"the burst (one second's worth) is accepted: {len(ok)} OK"
            assert limited, "the publishes beyond the rate were refused"
            assert len(ok) + len(limited) == 300
            # Without a closure: an error frame.
            for _ in range(250):
                await pub.publish(subject, "y")
            err = await pub.wait_for(lambda f: f.get("op") == "error", what="RATE_LIMITED error")
            assert err["code"] == "RATE_LIMITED"

        async with await Client.connect(b.url, name="flood") as flood:
            frame = '{"op":"publish","subject":"%s","content":"z"}' % subject
            try:
                for _ in range(3000):
                    await flood.ws.send(frame)
            except ConnectionClosed:
                pass
            closed = await flood.wait_closed(timeout=20)
            assert close_code(closed) == 1008, closed

    run(scenario(), 90)


def test_subscribe_rate_and_subject_limits(edge_broker):
    """MaxSubjectsPerConnection 10, SubscribeRateLimit 5: a reconnecting client resubscribes all 10 subjects
    with recovery in one frame; beyond the rate it gets RATE_LIMITED, beyond 10 subjects DENY."""
    b = edge_broker
    subjects = [unique_subject("limit") for _ in range(11)]

    async def scenario():
        async with await Client.connect(b.url, name="sub") as sub:
            recover = {s: {"epoch": "gone", "seq": 3} for s in subjects[:10]}
            answers = await sub.subscribe(subjects[:10], recover=recover)
            assert all(a["status"] == "ALLOW" for a in answers.values()), answers
            await sub.send({"op": "subscribe", "subjects": [subjects[10]]})
            err = await sub.wait_for(lambda f: f.get("op") == "error", what="RATE_LIMITED error")
            assert err["code"] == "RATE_LIMITED" and "subjects per second" in err["reason"]
            await asyncio.sleep(0.5)  # 2.5 tokens
            denied = await sub.subscribe(subjects[10])
            assert denied[subjects[10]]["status"] == "DENY", denied
            assert "subject limit" in denied[subjects[10]]["reason"]
            # Every one of the 10 got its answer.
            for s in subjects[:10]:
                await sub.wait_for(lambda f, s=s: f.get("op") == "status" and f.get("subject") == s,
                                   what=f"status of {s}")
            # Resubscribing a subject it has is not a new subject.
            again = await sub.subscribe(subjects[0])
            assert again[subjects[0]]["status"] == "ALLOW"

        async with await Client.connect(b.url, name="greedy") as greedy:
            # More subjects in one frame than the limit: the first 10 are taken, the rest denied.
            answers = await greedy.subscribe(subjects + [unique_subject("limit")])
            assert [answers[s]["status"] for s in subjects[:10]] == ["ALLOW"] * 10, answers
            assert [a["status"] for s, a in answers.items() if s not in subjects[:10]] == ["DENY"] * 2, answers

    run(scenario(), 60)


def test_closure_counts_in_the_message_size_limit(default_broker):
    b = default_broker
    limit = 128 * 1024  # the default MessageSizeLimit

    async def scenario():
        async with await Client.connect(b.url, name="pub") as pub:
            subject = unique_subject("size")
            ok = await pub.publish(subject, "x" * (limit - 24), closure="c" * 24)
            assert ok["status"] == "OK", ok
            too_big = await pub.publish(subject, "x" * (limit - 24), closure="c" * 25)
            assert too_big["status"] == "MESSAGE_SIZE_LIMIT_EXCEEDED", too_big

    run(scenario(), 60)


def test_idle_connection_is_closed_and_ping_keeps_a_client_alive(edge_broker):
    b = edge_broker

    async def scenario():
        async with await Client.connect(b.url, name="idle") as idle, \
                await Client.connect(b.url, name="pinger") as pinger, \
                await Client.connect(b.url, name="subscriber") as subscriber:
            await subscriber.subscribe(unique_subject("idle"))

            async def keep_pinging():
                for _ in range(12):  # 6 s, twice the IdleTimeout
                    await pinger.ping_pong()
                    await asyncio.sleep(0.5)

            pinging = asyncio.create_task(keep_pinging())
            loop = asyncio.get_running_loop()
            started = loop.time()
            closed = await idle.wait_closed(timeout=10)
            assert close_code(closed) == 1001 and closed.rcvd.reason == "idle", closed
            assert loop.time() - started >= 2
            await pinging
            await subscriber.ping_pong()  # a subscribed client is not idle

    run(scenario(), 60)


def test_live_messages_held_past_the_byte_bound_are_dropped_and_asked_again(make_broker):
    """A subscribe waits for its turn (MaxSubscribesInFlight 1, behind 999 others of the same frame) while live
    messages of its subject pour in, far more than MaxPendingSubscribeBytes: what was held is dropped and the
    cache asked again, and the client gets every message exactly once, in order, and stays connected."""
    b = make_broker(MaxSubscribesInFlight=1, MaxPendingSubscribeBytes=65536, MaxCachedMessagesPerSubject=20000)
    tag = uuid.uuid4().hex[:8]
    hot = f"/held/hot{tag}"
    fillers = [f"/held/filler{tag}/{i}" for i in range(999)]

    async def scenario():
        async with await Client.connect(b.url, name="pub") as pub, \
                await Client.connect(b.url, name="watcher") as watcher, \
                await Client.connect(b.url, name="sub") as sub:
            await watcher.subscribe(hot)  # the ingress has the hot subject's interest
            await pub.publish_ok(hot, "000001")
            await watcher.messages(hot, 1)
            count = 3000

            async def flood():
                for i in range(2, count + 1):
                    await pub.publish(hot, f"{i:06d}".ljust(1024, "x"))
                    if i % 50 == 0:
                        await asyncio.sleep(0)

            flooding = asyncio.create_task(flood())
            await sub.subscribe(fillers + [hot], history=20000)
            await flooding
            await pub.publish_ok(hot, f"{count + 1:06d} last", timeout=30)
            frames = await sub.subject_frames_until(hot, lambda got: bool(got) and got[-1].get("seq") == count + 1,
                                                    timeout=60)
            seqs = [f.get("seq") for f in frames]
            assert seqs == list(range(1, count + 2)), f"{len(seqs)} frames, first {seqs[:3]}, last {seqs[-3:]}"
            await sub.ping_pong()

    run(scenario(), 150)
    assert "asked again" in b.log_text("ws-ingress"), "the live messages never passed the byte bound"

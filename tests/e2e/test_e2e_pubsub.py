"""Issue 2, item 2: publish/subscribe, publish_status, seq/epoch, per-subject order, several subscribers."""

from __future__ import annotations

import asyncio
import base64
import os

from e2e_helpers import Client, run, summarize, unique_subject


def is_msg(subject):
    return lambda f: f.get("op") == "message" and f.get("subject") == subject


def test_publish_with_closure_gets_ok_and_subscribers_get_seq_1_2_3(broker):
    s = unique_subject("pub")
    other = unique_subject("pub")

    async def scenario():
        subs = [await Client.connect(broker.url, name=f"sub{i}") for i in range(2)]
        bystander = await Client.connect(broker.url, name="bystander")
        pub = await Client.connect(broker.url, name="pub")
        for c in subs:
            st = await c.subscribe([s])
            assert st[s]["status"] == "ALLOW", st
        assert (await bystander.subscribe([other]))[other]["status"] == "ALLOW"

        for i in (1, 2, 3):
            st = await pub.publish(s, f"hello-{i}", closure=f"c{i}")
            assert st["op"] == "publish_status" and st["status"] == "OK", st

        for c in subs:
            msgs = await c.messages(s, 3)
            assert [m["seq"] for m in msgs] == [1, 2, 3], summarize(msgs)
            assert [m["content"] for m in msgs] == ["hello-1", "hello-2", "hello-3"]
            assert all(m["type"] == "update" for m in msgs), summarize(msgs)
            assert all(m["closure"] == f"c{i}" for i, m in zip((1, 2, 3), msgs)), summarize(msgs)
            epochs = {m["epoch"] for m in msgs}
            assert len(epochs) == 1 and isinstance(msgs[0]["epoch"], str) and msgs[0]["epoch"], epochs
        epoch_seen = {m["epoch"] for c in subs for m in c.seen if m.get("op") == "message"}
        assert len(epoch_seen) == 1, f"subscribers saw different epochs: {epoch_seen}"

        # nothing of /s leaks to a subscriber of another subject
        leaked = await bystander.quiet(lambda f: f.get("subject") == s, 0.5)
        assert leaked == [], summarize(leaked)
        for c in subs + [bystander, pub]:
            await c.close()

    run(scenario(), 60)


def test_publisher_without_closure_gets_no_status_but_message_is_delivered(broker):
    s = unique_subject("noclosure")

    async def scenario():
        async with await Client.connect(broker.url) as sub, await Client.connect(broker.url) as pub:
            await sub.subscribe([s])
            await pub.publish(s, "x")
            m = (await sub.messages(s, 1))[0]
            assert m["seq"] == 1 and m["content"] == "x" and "closure" not in m, m
            stray = await pub.quiet(lambda f: f.get("op") == "publish_status", 0.5)
            assert stray == [], f"publish without closure got a publish_status: {stray}"

    run(scenario(), 30)


def test_order_of_1000_messages_to_several_subscribers(broker):
    s = unique_subject("order")
    n = 1000

    async def scenario():
        subs = [await Client.connect(broker.url, name=f"sub{i}") for i in range(3)]
        for c in subs:
            await c.subscribe([s])
        pub = await Client.connect(broker.url, name="pub")
        for i in range(1, n):
            await pub.publish(s, f"m{i}")
        st = await pub.publish(s, f"m{n}", closure="last", timeout=30)
        assert st["status"] == "OK", st

        for c in subs:
            msgs = await c.messages(s, n, timeout=60)
            seqs = [m["seq"] for m in msgs]
            assert seqs == list(range(1, n + 1)), f"{c.name}: seqs out of order or missing; first bad at " \
                f"{next((i for i, q in enumerate(seqs) if q != i + 1), None)}"
            assert [m["content"] for m in msgs] == [f"m{i}" for i in range(1, n + 1)]
            assert len({m["epoch"] for m in msgs}) == 1
        for c in subs + [pub]:
            await c.close()

    run(scenario(), 120)


def test_each_subject_has_its_own_seq_and_order(broker):
    a, b = unique_subject("multi"), unique_subject("multi")

    async def scenario():
        async with await Client.connect(broker.url) as sub, await Client.connect(broker.url) as pub:
            st = await sub.subscribe([a, b])
            assert st[a]["status"] == "ALLOW" and st[b]["status"] == "ALLOW"
            for i in range(1, 51):
                await pub.publish(a, f"a{i}")
                await pub.publish(b, f"b{i}")
            await pub.publish_ok(a, "a51")
            ma = await sub.messages(a, 51, timeout=30)
            mb = await sub.messages(b, 50, timeout=30)
            assert [m["seq"] for m in ma] == list(range(1, 52))
            assert [m["seq"] for m in mb] == list(range(1, 51))
            assert [m["content"] for m in ma] == [f"a{i}" for i in range(1, 52)]
            assert [m["content"] for m in mb] == [f"b{i}" for i in range(1, 51)]

    run(scenario(), 60)


def test_publisher_subscribed_to_its_own_subject_receives_its_message(broker):
    s = unique_subject("self")

    async def scenario():
        async with await Client.connect(broker.url) as c:
            await c.subscribe([s])
            await c.publish_ok(s, "me")
            m = (await c.messages(s, 1))[0]
            assert (m["content"], m["seq"], m["type"]) == ("me", 1, "update")

    run(scenario(), 30)


def test_binary_content_base64_round_trip(broker):
    s = unique_subject("bin")
    payload = bytes(range(256)) + os.urandom(64)
    b64 = base64.b64encode(payload).decode()

    async def scenario():
        async with await Client.connect(broker.url) as sub, await Client.connect(broker.url) as pub:
            await sub.subscribe([s])
            await pub.publish_ok(s, b64, encoding="base64")
            m = (await sub.messages(s, 1))[0]
            assert m.get("encoding") == "base64", m
            assert base64.b64decode(m["content"]) == payload

    run(scenario(), 30)


def test_unsubscribe_stops_delivery(broker):
    s = unique_subject("unsub")

    async def scenario():
        async with await Client.connect(broker.url, name="leaver") as leaver, \
                await Client.connect(broker.url, name="stayer") as stayer, \
                await Client.connect(broker.url, name="pub") as pub:
            await leaver.subscribe([s])
            await stayer.subscribe([s])
            await pub.publish_ok(s, "one")
            assert (await leaver.messages(s, 1))[0]["content"] == "one"
            await leaver.send({"op": "unsubscribe", "subjects": [s]})
            await asyncio.sleep(0.5)
            await pub.publish_ok(s, "two")
            assert [m["content"] for m in await stayer.messages(s, 2)] == ["one", "two"]
            late = await leaver.quiet(is_msg(s), 1.0)
            assert late == [], f"delivered after unsubscribe: {summarize(late)}"
            await leaver.ping_pong()

    run(scenario(), 30)


def test_ws_path_and_ping_pong(broker):
    async def scenario():
        for path in ("/", "/ws"):
            url = broker.url.rstrip("/") + path
            async with await Client.connect(url, name=f"path{path}") as c:
                pong = await c.ping_pong()
                assert pong == {"op": "pong"} or pong.get("op") == "pong"
                # WebSocket-level ping: the server answers with a pong frame
                waiter = await c.ws.ping(b"e2e")
                await asyncio.wait_for(waiter, 5)

    run(scenario(), 30)


def test_content_with_quotes_escapes_and_unicode_round_trips_exactly(broker):
    s = unique_subject("text")
    contents = [
        'quote " backslash \\ slash / newline \n tab \t cr \r',
        "control \u0001\u001f and nul \u0000 inside",
        "ünïcödé ✓ 汉字 🚀 and </script>",
        '{"op":"publish","subject":"/x","content":"nested json"}',
        "",
    ]

    async def scenario():
        async with await Client.connect(broker.url) as sub, await Client.connect(broker.url) as pub:
            await sub.subscribe([s])
            for i, c in enumerate(contents):
                await pub.publish_ok(s, c, closure=f'cl "{i}" \\ ✓')
            got = await sub.messages(s, len(contents))
            assert [m["content"] for m in got] == contents
            assert [m["closure"] for m in got] == [f'cl "{i}" \\ ✓' for i in range(len(contents))]

    run(scenario(), 30)


def test_message_at_the_default_size_limit_is_delivered_intact(broker):
    s = unique_subject("big")
    # MessageSizeLimit default: 128 KiB of content and closure (publish_ok's closure "c-xxxxxxxx" is 10 bytes)
    content = "".join(chr(ord("a") + i % 26) for i in range(131072 - 10))

    async def scenario():
        async with await Client.connect(broker.url) as sub, await Client.connect(broker.url) as pub:
            await sub.subscribe([s])
            await pub.publish_ok(s, content)
            st = await pub.publish(s, content + "!", closure="c-too-big!")
            assert st["status"] == "MESSAGE_SIZE_LIMIT_EXCEEDED", st
            m = (await sub.messages(s, 1, timeout=15))[0]
            assert m["content"] == content

    run(scenario(), 30)


def test_subscribing_twice_on_one_connection_delivers_once(broker):
    s = unique_subject("twice")

    async def scenario():
        async with await Client.connect(broker.url) as sub, await Client.connect(broker.url) as pub:
            await sub.subscribe([s])
            await sub.subscribe([s])
            await pub.publish_ok(s, "once")
            assert [m["seq"] for m in await sub.messages(s, 1)] == [1]
            extra = await sub.quiet(is_msg(s), 0.7)
            assert extra == [], f"delivered twice: {summarize(extra)}"
            # unsubscribe and subscribe again on the same connection: live again
            await sub.send({"op": "unsubscribe", "subjects": [s]})
            await sub.subscribe([s])
            frames = await sub.subject_frames_until(s, lambda g: len(g) >= 1)
            assert frames[0]["type"] == "snapshot" and frames[0]["seq"] == 1, summarize(frames)
            await pub.publish_ok(s, "again")
            m = (await sub.messages(s, 1))[0]
            assert (m["type"], m["seq"], m["content"]) == ("update", 2, "again")

    run(scenario(), 30)


def test_token_on_url_and_connect_op_are_accepted(broker):
    async def scenario():
        for url in (broker.url + "?token=abc", broker.url.rstrip("/") + "/ws?token=abc"):
            s = unique_subject("token")
            async with await Client.connect(url) as c:
                await c.send({"op": "connect", "token": "abc"})
                await c.subscribe([s])
                await c.publish_ok(s, url)
                assert (await c.messages(s, 1))[0]["content"] == url
                errors = await c.quiet(lambda f: f.get("op") == "error", 0.3)
                assert errors == [], errors

    run(scenario(), 30)


def test_messages_of_every_frame_length_class_reach_every_subscriber_intact_and_in_order(broker):
    """A delivery's frame is built once (header and payload in one buffer) and written below the frame encoder
    (ClientWire): frames of a 1-byte, a 2-byte and an 8-byte length field reach each subscriber as a client's
    WebSocket library parses them, in publish order, with replies to its own requests in between."""
    s = unique_subject("lengths")
    contents = ["short", "m" * 200, "L" * 70_000, "after"]

    async def scenario():
        subs = [await Client.connect(broker.url, name=f"sub{i}") for i in range(2)]
        async with await Client.connect(broker.url, name="pub") as pub:
            for c in subs:
                assert (await c.subscribe([s]))[s]["status"] == "ALLOW"
            for content in contents:
                assert (await pub.publish(s, content, closure="c"))["status"] == "OK"
            for c in subs:
                await c.ping_pong()  # a reply through the whole pipeline, between the deliveries
                msgs = await c.messages(s, len(contents))
                assert [m["content"] for m in msgs] == contents, summarize(msgs)
                assert [m["seq"] for m in msgs] == [1, 2, 3, 4], summarize(msgs)
                await c.close()

    run(scenario(), 60)

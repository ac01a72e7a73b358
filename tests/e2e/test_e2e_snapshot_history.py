"""Issue 2, item 3: the retained snapshot for a new subscriber, and `history: n`."""

from __future__ import annotations

from e2e_helpers import Client, kinds, run, summarize, unique_subject


def upto_seq(seq):
    """done() for subject_frames_until: stop once a message with this seq arrived."""
    return lambda got: any(f.get("op") == "message" and f.get("seq") == seq for f in got)


def test_new_subscriber_gets_last_retained_message_as_snapshot_then_updates(broker):
    s = unique_subject("snap")

    async def scenario():
        async with await Client.connect(broker.url, name="pub") as pub:
            for i in (1, 2, 3):
                await pub.publish_ok(s, f"v{i}")
            async with await Client.connect(broker.url, name="late") as late:
                st = await late.subscribe([s])
                assert st[s]["status"] == "ALLOW"
                snap = (await late.subject_frames_until(s, lambda g: len(g) >= 1))[0]
                assert snap["op"] == "message" and snap["type"] == "snapshot", snap
                assert (snap["seq"], snap["content"]) == (3, "v3"), snap
                assert isinstance(snap["epoch"], str) and snap["epoch"]

                await pub.publish_ok(s, "v4")
                rest = await late.subject_frames_until(s, upto_seq(4))
                assert kinds(rest) == [("update", 4)], f"expected only the live update after the snapshot: " \
                    f"{summarize(rest)}"
                assert rest[0]["epoch"] == snap["epoch"]

    run(scenario(), 30)


def test_subject_without_messages_gives_no_snapshot(broker):
    s = unique_subject("empty")

    async def scenario():
        async with await Client.connect(broker.url) as sub, await Client.connect(broker.url) as pub:
            await sub.subscribe([s])
            await pub.publish_ok(s, "first")
            frames = await sub.subject_frames_until(s, upto_seq(1))
            assert kinds(frames) == [("update", 1)], summarize(frames)

    run(scenario(), 30)


def test_retained_false_is_delivered_but_never_becomes_the_snapshot(broker):
    only_volatile = unique_subject("volatile")
    mixed = unique_subject("mixed")

    async def scenario():
        async with await Client.connect(broker.url, name="pub") as pub, \
                await Client.connect(broker.url, name="live") as live:
            await live.subscribe([only_volatile, mixed])
            await pub.publish_ok(only_volatile, "x1", retained=False)
            await pub.publish_ok(mixed, "r1", retained=True)
            await pub.publish_ok(mixed, "r2", retained=False)

            got = await live.messages(mixed, 2)
            assert [m["content"] for m in got] == ["r1", "r2"]
            assert got[1].get("retained") is False, f"retained:false publish delivered as {got[1]}"
            v = (await live.messages(only_volatile, 1))[0]
            assert v["content"] == "x1" and v.get("retained") is False, v

            async with await Client.connect(broker.url, name="late") as late:
                await late.subscribe([only_volatile, mixed])
                await pub.publish_ok(only_volatile, "x2", retained=False)
                await pub.publish_ok(mixed, "r3")
                f1 = await late.subject_frames_until(only_volatile, upto_seq(2))
                assert kinds(f1) == [("update", 2)], f"no snapshot expected for a subject with only " \
                    f"retained:false messages: {summarize(f1)}"
                f2 = await late.subject_frames_until(mixed, upto_seq(3))
                assert kinds(f2) == [("snapshot", 1), ("update", 3)], summarize(f2)
                assert f2[0]["content"] == "r1"

    run(scenario(), 30)


def test_history_n_returns_the_n_most_recent_oldest_first_then_live(broker):
    s = unique_subject("hist")

    async def scenario():
        async with await Client.connect(broker.url, name="pub") as pub:
            for i in range(1, 11):
                await pub.publish_ok(s, f"h{i}")
            async with await Client.connect(broker.url, name="h4") as h4:
                st = await h4.subscribe([s], history=4)
                assert st[s]["status"] == "ALLOW"
                hist = await h4.subject_frames_until(s, lambda g: len(g) >= 4, timeout=10)
                assert kinds(hist) == [("historical", q) for q in (7, 8, 9, 10)], summarize(hist)
                assert [m["content"] for m in hist] == ["h7", "h8", "h9", "h10"]
                await pub.publish_ok(s, "h11")
                rest = await h4.subject_frames_until(s, upto_seq(11))
                assert kinds(rest) == [("update", 11)], f"no snapshot expected with history: {summarize(rest)}"

    run(scenario(), 30)


def test_history_larger_than_cache_returns_everything_held(broker):
    s = unique_subject("hist")

    async def scenario():
        async with await Client.connect(broker.url, name="pub") as pub:
            for i in range(1, 6):
                await pub.publish_ok(s, f"h{i}")
            async with await Client.connect(broker.url, name="h50") as c:
                await c.subscribe([s], history=50)
                await pub.publish_ok(s, "h6")
                frames = await c.subject_frames_until(s, upto_seq(6))
                assert kinds(frames) == [("historical", q) for q in range(1, 6)] + [("update", 6)], \
                    summarize(frames)

    run(scenario(), 30)


def test_history_is_bounded_by_max_cached_messages(limits_broker):
    s = unique_subject("histcount")

    async def scenario():
        async with await Client.connect(limits_broker.url, name="pub") as pub:
            for i in range(1, 21):
                await pub.publish_ok(s, f"h{i}")
            async with await Client.connect(limits_broker.url, name="h10") as c:
                await c.subscribe([s], history=10)
                await pub.publish_ok(s, "h21")
                frames = await c.subject_frames_until(s, upto_seq(21))
                # MaxCachedMessagesPerSubject = 5: only 16..20 are still held
                assert kinds(frames) == [("historical", q) for q in range(16, 21)] + [("update", 21)], \
                    summarize(frames)

    run(scenario(), 30)

"""Issue 2, item 5 (client side): invalid subjects, frames that cannot be understood, oversized content and
oversized frames. After every error that is not a close, the same connection must still work."""

from __future__ import annotations

import pytest

from e2e_helpers import Client, run, summarize, unique_subject

INVALID_SUBJECTS = ["a/b", "/a//b", "/", "/a/", "", "//", "//a", "/a b/c", "/" + "t" * 250 + "/x", "/a/b/"]


async def still_usable(c: Client, url: str):
    """The connection answers a ping and still delivers a publish to itself."""
    await c.ping_pong()
    s = unique_subject("usable")
    await c.subscribe([s])
    await c.publish_ok(s, "still here")
    m = (await c.messages(s, 1))[0]
    assert m["content"] == "still here"


def is_error(f):
    return f.get("op") == "error"


def test_subscribe_to_invalid_subjects_gets_invalid_with_reason(broker):
    good = unique_subject("good")

    async def scenario():
        async with await Client.connect(broker.url) as c:
            st = await c.subscribe(INVALID_SUBJECTS + [good])
            for s in INVALID_SUBJECTS:
                assert st[s]["status"] == "INVALID", f"{s!r}: {st[s]}"
                assert isinstance(st[s].get("reason"), str) and st[s]["reason"], f"{s!r} has no reason: {st[s]}"
            assert st[good]["status"] == "ALLOW", st[good]
            await still_usable(c, broker.url)

    run(scenario(), 30)


def test_longest_valid_topic_segment_is_allowed(broker):
    s = "/" + "t" * 249 + "/x"

    async def scenario():
        async with await Client.connect(broker.url) as c:
            st = await c.subscribe([s, "/A-z_0.9/ok"])
            assert st[s]["status"] == "ALLOW", st[s]
            assert st["/A-z_0.9/ok"]["status"] == "ALLOW"

    run(scenario(), 30)


@pytest.mark.parametrize("subject", ["a/b", "/a//b", "/", "/a/", "//a"])
def test_publish_to_invalid_subject_fails_with_reason(broker, subject):
    async def scenario():
        async with await Client.connect(broker.url) as c:
            st = await c.publish(subject, "x", closure="bad")
            assert st["status"] == "FAILED", st
            assert isinstance(st.get("reason"), str) and st["reason"], st
            # without a closure there is nothing to answer to: an error frame
            await c.publish(subject, "x")
            err = await c.wait_for(is_error, what="error frame for a publish to an invalid subject")
            assert err.get("code") and err.get("reason"), err
            await still_usable(c, broker.url)

    run(scenario(), 30)


@pytest.mark.parametrize("raw", ["this is not json", "{\"op\": \"publish\", ", "{op: subscribe}", "\x00\x01"])
def test_non_json_frame_gets_invalid_json_error(broker, raw):
    async def scenario():
        async with await Client.connect(broker.url) as c:
            await c.send(raw)
            err = await c.wait_for(is_error, what="error frame")
            assert err["code"] == "INVALID_JSON", err
            assert err.get("reason"), err
            await still_usable(c, broker.url)

    run(scenario(), 30)


@pytest.mark.parametrize("frame", [{"op": "frobnicate"}, {"op": "PUBLISH", "subject": "/a", "content": "x"}])
def test_unknown_op_gets_unknown_op_error(broker, frame):
    async def scenario():
        async with await Client.connect(broker.url) as c:
            await c.send(frame)
            err = await c.wait_for(is_error, what="error frame")
            assert err["code"] == "UNKNOWN_OP", err
            await still_usable(c, broker.url)

    run(scenario(), 30)


@pytest.mark.parametrize("frame", [
    {"op": "publish"},
    {"op": "publish", "subject": "/a/b"},
    {"op": "publish", "subject": 42, "content": "x"},
    {"op": "publish", "subject": "/a/b", "content": {"not": "a string"}},
    {"op": "subscribe"},
    {"op": "subscribe", "subjects": "/a/b"},
    {"op": "subscribe", "subjects": ["/a/b"], "history": "ten"},
    {"op": "subscribe", "subjects": ["/a/b"], "recover": {"/a/b": {"epoch": 1}}},
    {"op": "unsubscribe", "subjects": 7},
    {"subject": "/a/b"},
    {"op": 5},
])
def test_missing_or_ill_typed_fields_get_invalid_frame_error(broker, frame):
    async def scenario():
        async with await Client.connect(broker.url) as c:
            await c.send(frame)
            err = await c.wait_for(is_error, what=f"error frame for {frame}")
            assert err["code"] == "INVALID_FRAME", err
            await still_usable(c, broker.url)

    run(scenario(), 30)


@pytest.mark.parametrize("raw", ["[1, 2, 3]", "\"publish\"", "42", "null"])
def test_json_that_is_not_an_object_gets_an_error(broker, raw):
    async def scenario():
        async with await Client.connect(broker.url) as c:
            await c.send(raw)
            err = await c.wait_for(is_error, what="error frame")
            assert err["code"] in ("INVALID_FRAME", "INVALID_JSON"), err
            await still_usable(c, broker.url)

    run(scenario(), 30)


def test_content_above_message_size_limit_is_refused(limits_broker):
    # MessageSizeLimit = 1024 bytes of content and closure
    s = unique_subject("size")

    async def scenario():
        async with await Client.connect(limits_broker.url, name="sub") as sub, \
                await Client.connect(limits_broker.url, name="pub") as pub:
            await sub.subscribe([s])
            st = await pub.publish(s, "x" * 1022, closure="big")
            assert st["status"] == "MESSAGE_SIZE_LIMIT_EXCEEDED", st
            st = await pub.publish(s, "y" * 1020, closure="fits")
            assert st["status"] == "OK", st
            msgs = await sub.messages(s, 1)
            assert msgs[0]["content"] == "y" * 1020 and msgs[0]["seq"] == 1, summarize(msgs)
            leaked = await sub.quiet(lambda f: f.get("op") == "message" and f.get("subject") == s, 0.5)
            assert leaked == [], f"the refused message was delivered: {summarize(leaked)}"
            await still_usable(pub, limits_broker.url)

    run(scenario(), 30)


def test_frame_above_the_frame_limit_is_closed_with_1009(limits_broker):
    # frame limit = 2 * MessageSizeLimit + 64 KiB = 67584 bytes
    s = unique_subject("frame")

    async def scenario():
        async with await Client.connect(limits_broker.url, name="big") as c, \
                await Client.connect(limits_broker.url, name="other") as other:
            await c.ping_pong()
            await c.send({"op": "publish", "subject": s, "content": "z" * 200_000, "closure": "huge"})
            closed = await c.wait_closed(timeout=10)
            assert closed.rcvd is not None, f"closed without a close frame: {closed!r}"
            assert closed.rcvd.code == 1009, f"close code {closed.rcvd.code} ({closed.rcvd.reason!r})"
            # the broker itself is unharmed
            await still_usable(other, limits_broker.url)

    run(scenario(), 30)

"""Issue 2, item 7: per-connection outbound queues are bounded. A client that stops reading is disconnected
(with a log line) while a normal subscriber of the same subject keeps receiving every message."""

from __future__ import annotations

import asyncio

from e2e_helpers import Client, RawSlowClient, run, unique_subject

CLIENT_BUFFER_LIMIT = 65536
CONTENT = 8192          # bytes per message
ROUND = 200             # messages per round (~1.6 MB)
MAX_ROUNDS = 40         # ~64 MB at most, far beyond any socket buffers


def test_client_that_stops_reading_is_disconnected_and_others_get_everything(make_broker):
    # At so small a limit the fast subscriber needs the kernel's autotuned send buffer (ClientSendBuffer 0) to
    # take the publisher's bursts of 1.6 MB; the slow one fills it and is cut all the same.
    b = make_broker(ClientBufferLimit=CLIENT_BUFFER_LIMIT, ClientSendBuffer=0)
    s = unique_subject("slow")
    log_start = len(b.log_text("ws-ingress"))

    def slow_logged() -> bool:
        return "slow" in b.log_text("ws-ingress")[log_start:].lower()

    slow = RawSlowClient(b.port, rcvbuf=4096)
    try:
        slow.send_json({"op": "subscribe", "subjects": [s]})
        slow.read_until(b"subscribed")  # then it never reads again

        async def scenario():
            async with await Client.connect(b.url, name="fast") as fast, \
                    await Client.connect(b.url, name="pub") as pub:
                await fast.subscribe([s])
                published = 0
                received = []
                for rnd in range(MAX_ROUNDS):
                    for i in range(ROUND):
                        published += 1
                        body = f"{published:08d}".ljust(CONTENT, "x")
                        if i == ROUND - 1:
                            await pub.publish_ok(s, body, timeout=30)
                        else:
                            await pub.publish(s, body)
                    # lockstep: the fast subscriber catches up before the next round
                    received += await fast.messages(s, published - len(received), timeout=30)
                    if await asyncio.to_thread(slow_logged):
                        break
                seqs = [m["seq"] for m in received]
                assert seqs == list(range(1, published + 1)), "the normal subscriber missed or reordered messages"
                assert all(m["content"].startswith(f"{m['seq']:08d}") for m in received)
                assert slow_logged(), \
                    f"no log line about a slow client in ws-ingress after {published} messages " \
                    f"({published * CONTENT >> 20} MiB) to a client that reads nothing"
                # after the slow one is gone the fast one still gets live messages
                await pub.publish_ok(s, "after")
                last = await fast.messages(s, 1)
                assert last[0]["content"] == "after" and last[0]["seq"] == published + 1
                return published

        run(scenario(), 240)

        closed, code = slow.drain_until_closed(timeout=15)
        assert closed, "the slow client's connection was not closed by the server"
        assert code in (None, 1008), f"slow client closed with code {code}, expected 1008"
    finally:
        slow.close()


def test_client_that_reads_nothing_is_cut_after_the_slow_client_timeout_whatever_its_backlog(make_broker):
    """A subscriber at a low rate never fills a large ClientBufferLimit; SlowClientTimeout cuts it all the same
    (the kernel's part is bounded by ClientSendBuffer), while a reading subscriber keeps everything."""
    b = make_broker(ClientBufferLimit=64 * 1024 * 1024, SlowClientTimeout=2, ClientSendBuffer=16384)
    s = unique_subject("stalled")
    slow = RawSlowClient(b.port, rcvbuf=4096)
    try:
        slow.send_json({"op": "subscribe", "subjects": [s]})
        slow.read_until(b"subscribed")  # then it never reads again

        async def scenario():
            # max_queue=None: the websockets library keeps reading while the loop below publishes (with its
            # default of 16 frames it would stop, and the "fast" subscriber would stall and be cut as well)
            async with await Client.connect(b.url, name="fast", max_queue=None) as fast, \
                    await Client.connect(b.url, name="pub") as pub:
                await fast.subscribe([s])
                loop = asyncio.get_running_loop()
                started = loop.time()
                published = 0
                while loop.time() - started < 20 and "slow client disconnected" not in b.log_text("ws-ingress"):
                    for _ in range(20):  # ~80 KiB/s: far below the buffer limit within the test
                        published += 1
                        await pub.publish(s, f"{published:08d}".ljust(CONTENT, "x"))
                    await asyncio.sleep(0.1)
                cut_after = loop.time() - started
                received = await fast.messages(s, published, timeout=30)
                assert [m["seq"] for m in received] == list(range(1, published + 1))
                return cut_after, published

        cut_after, published = run(scenario(), 90)
        assert "took none of its messages for 2 s" in b.log_text("ws-ingress"), \
            f"no stalled-client line after {cut_after:.1f} s and {published * CONTENT >> 10} KiB"
        assert cut_after < 15, f"the stalled client was cut only after {cut_after:.1f} s"
        closed, code = slow.drain_until_closed(timeout=15)
        assert closed and code in (None, 1008), f"closed {closed}, code {code}"
    finally:
        slow.close()

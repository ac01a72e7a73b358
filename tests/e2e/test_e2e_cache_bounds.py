"""Issue 7, back stages: the cache is bounded by `CacheMaxBytes`. Past the bound the least recently used subject
goes first, then the written subject's own oldest messages; a recovery from before what was evicted gets
DATA_RESYNC (never a silent gap), one from after it DATA_SYNC, and the cache never restarts."""

from __future__ import annotations

from e2e_helpers import Client, kinds, run, summarize, unique_subject, wait_until

MAX_BYTES = 1024 * 1024
CONTENT = "x" * (100 * 1024)  # 10 of these fit the bound, the 11th does not


def has_status(got):
    return any(f.get("op") == "status" for f in got)


def test_cache_bytes_stay_bounded_and_evictions_resync(make_broker):
    broker = make_broker(name="bounded", CacheMaxBytes=MAX_BYTES)
    cold, hot = unique_subject("cold"), unique_subject("hot")

    async def scenario():
        async with await Client.connect(broker.url, name="pub") as pub:
            await pub.publish_ok(cold, "a cold snapshot")
            for i in range(1, 31):
                await pub.publish_ok(hot, f"{i}:{CONTENT}")
            async with await Client.connect(broker.url, name="sub") as sub:
                await sub.subscribe([hot])
                epoch = (await sub.wait_for(lambda f: f.get("op") == "message" and f.get("subject") == hot,
                                            what="the hot snapshot"))["epoch"]
            async with await Client.connect(broker.url, name="late") as late:
                await late.subscribe([hot], recover={hot: {"epoch": epoch, "seq": 1}})
                evicted = await late.subject_frames_until(hot, has_status)
            async with await Client.connect(broker.url, name="recent") as recent:
                await recent.subscribe([hot], recover={hot: {"epoch": epoch, "seq": 27}})
                kept = await recent.subject_frames_until(hot, has_status)
            async with await Client.connect(broker.url, name="cold") as cold_sub:
                await cold_sub.subscribe([cold], history=5)
                cold_frames = await cold_sub.quiet(lambda f: f.get("op") == "message", 1.0)
            return evicted, kept, cold_frames

    evicted, kept, cold_frames = run(scenario(), 90)
    assert kinds(evicted)[-1] == ("status", "DATA_RESYNC"), summarize(evicted)
    assert [f["seq"] for f in evicted if f.get("op") == "message"] == [30], "the snapshot comes with the resync"
    assert kinds(kept) == [("recovered", 28), ("recovered", 29), ("recovered", 30), ("status", "DATA_SYNC")], \
        summarize(kept)
    assert cold_frames == [], f"the least recently used subject should be gone: {summarize(cold_frames)}"
    # The cache's gauges reach its stats file within about two seconds.
    row = wait_until(lambda: (lambda r: r if r and int(r.get("cacheBytes", 0)) > 0 else None)(
        broker.status_row("cache")), 5, what="the cache's cacheBytes gauge")
    assert int(row["restarts"]) == 0, row
    assert 0 < int(row.get("cacheBytes", 0)) <= MAX_BYTES, row
    assert int(row.get("cacheEvictedSubjects", 0)) >= 1, row

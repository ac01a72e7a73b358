"""Issue 3, item 4: a node that starts (or whose cache restarts) warms its cache from Kafka, the last
MaxCachedMessagesPerSubject records of each partition, so snapshot, history and recovery work on a fresh node at
once. A client whose position is older than the cache holds but still in Kafka is recovered from Kafka itself
(deep recovery: every missed record, then DATA_SYNC, not DATA_RESYNC)."""

from __future__ import annotations


from e2e_helpers import Client, kinds, run, summarize, wait_until
from kafka_helpers import epoch_of_record, make_kafka_broker, produce, tansu, unique_topic  # noqa: F401 (fixtures)


def has_status(got):
    return any(f.get("op") == "status" for f in got)


def msgs_of(subject):
    return lambda f: f.get("op") == "message" and f.get("subject") == subject


def recover(subject, epoch, seq):
    return {subject: {"epoch": epoch, "seq": seq}}


def produce_subject(tansu, topic, key, n, tag="r", others=2):
    """n records of `key` (and `others` records of another key in between, so a subject's offsets have holes);
    returns the records of `key`, in order."""
    pairs = []
    for i in range(n):
        pairs.append((key, f"{tag}{i}"))
        if i < others:
            pairs.append(("other", f"o{i}"))
    return [r for r in produce(tansu.bootstrap, topic, pairs) if r.key == key.encode()]


def cached_messages(node) -> int:
    row = node.status_row("cache") or {}
    return int(row.get("cachedMessages") or 0)


def test_fresh_node_serves_snapshot_history_and_recovery_from_the_warmed_cache(tansu, make_kafka_broker):
    topic = unique_topic("warm")
    s = f"/{topic}/car1"
    recs = produce_subject(tansu, topic, "car1", 8)
    node = make_kafka_broker(tansu.bootstrap, name="fresh", topics=[topic])  # started after the records
    # the cache holds the partitions' tails (8 records of car1 + 2 of another key) once warmed up
    wait_until(lambda: cached_messages(node) >= 10, 15, what="the warm-up to fill the cache (cachedMessages)")

    async def scenario():
        async with await Client.connect(node.url, name="snap") as snap, \
                await Client.connect(node.url, name="hist") as hist, \
                await Client.connect(node.url, name="rec") as rec:
            await snap.subscribe([s])
            await hist.subscribe([s], history=3)
            await rec.subscribe([s], recover=recover(s, "?", 0))  # an unknown epoch: resync, with the snapshot
            resync = await rec.subject_frames_until(s, has_status, timeout=15)
            snap_frames = await snap.quiet(msgs_of(s), 1.0)
            hist_frames = await hist.quiet(msgs_of(s), 0.2)
            return snap_frames, hist_frames, resync

    snap_frames, hist_frames, resync = run(scenario(), 60)
    assert [(f["type"], f["content"], f["seq"]) for f in snap_frames] == \
        [("snapshot", "r7", recs[-1].offset)], summarize(snap_frames)
    assert [(f["type"], f["content"]) for f in hist_frames] == \
        [("historical", "r5"), ("historical", "r6"), ("historical", "r7")], summarize(hist_frames)
    assert kinds(resync) == [("snapshot", recs[-1].offset), ("status", "DATA_RESYNC")], summarize(resync)
    epoch = resync[0]["epoch"]
    assert epoch.endswith(f".{recs[0].partition}"), resync

    # recovery on the fresh node from a position the client got elsewhere (the records came from Kafka)
    async def recover_scenario():
        async with await Client.connect(node.url, name="back") as back:
            await back.subscribe([s], recover=recover(s, epoch, recs[4].offset))
            return await back.subject_frames_until(s, has_status, timeout=20)

    frames = run(recover_scenario(), 60)
    assert kinds(frames) == [("recovered", r.offset) for r in recs[5:]] + [("status", "DATA_SYNC")], \
        summarize(frames)
    assert [f["content"] for f in frames[:-1]] == ["r5", "r6", "r7"]


def test_fresh_node_serves_snapshot_history_and_recovery_right_after_start(tansu, make_kafka_broker):
    """`./switchyard start` returns once every stage is ready; subscribes sent at that moment should already be
    answered from the warmed-up cache (issue 3: "recovery and snapshots work on a fresh node immediately"), not
    get the old records later as live updates."""
    topic = unique_topic("warm0")
    s = f"/{topic}/k"
    recs = produce_subject(tansu, topic, "k", 5, others=0)
    epoch = epoch_of_record(tansu.bootstrap, recs[0])  # <topic id>.<partition>, from Kafka's own metadata
    node = make_kafka_broker(tansu.bootstrap, name="fresh0", topics=[topic])

    async def scenario():
        async with await Client.connect(node.url, name="snap") as snap, \
                await Client.connect(node.url, name="hist") as hist, \
                await Client.connect(node.url, name="rec") as rec:
            await snap.subscribe([s])
            await hist.subscribe([s], history=2)
            await rec.subscribe([s], recover=recover(s, epoch, recs[2].offset))
            rec_frames = await rec.subject_frames_until(s, has_status, timeout=20)
            rec_frames += await rec.quiet(msgs_of(s), 0.2)
            snap_frames = await snap.quiet(msgs_of(s), 1.0)
            hist_frames = await hist.quiet(msgs_of(s), 0.2)
            return snap_frames, hist_frames, rec_frames

    snap_frames, hist_frames, rec_frames = run(scenario(), 60)
    cached = cached_messages(node)
    assert kinds(rec_frames) == [("recovered", recs[3].offset), ("recovered", recs[4].offset),
                                 ("status", "DATA_SYNC")], summarize(rec_frames)
    assert [(f["type"], f["content"]) for f in snap_frames] == [("snapshot", "r4")], \
        f"subscribe right after start (the cache holds {cached} messages now): {summarize(snap_frames)}"
    assert [(f["type"], f["content"]) for f in hist_frames] == [("historical", "r3"), ("historical", "r4")], \
        summarize(hist_frames)


def test_deep_recovery_from_kafka_when_the_position_is_older_than_the_cache(tansu, make_kafka_broker):
    topic = unique_topic("deep")
    s = f"/{topic}/car2"
    node = make_kafka_broker(tansu.bootstrap, name="deep", topics=[topic], MaxCachedMessagesPerSubject=3)

    async def scenario():
        async with await Client.connect(node.url, name="pub") as pub, \
                await Client.connect(node.url, name="watch") as watch:
            await watch.subscribe([s])
            await pub.publish_ok(s, "m0", closure="m0", timeout=15)
            seen = await watch.messages(s, 1, timeout=25)  # the topic is consumed now
            for i in range(1, 12):
                await pub.publish_ok(s, f"m{i}", closure=f"m{i}", timeout=15)
                await pub.publish_ok(f"/{topic}/x{i}", "noise", closure=f"x{i}", timeout=15)
            seen += await watch.messages(s, 11, timeout=25)
            assert [f["content"] for f in seen] == [f"m{i}" for i in range(12)], summarize(seen)
            epoch = seen[0]["epoch"]
            # the cache holds m9..m11; m2 is 9 messages back
            async with await Client.connect(node.url, name="back") as back:
                await back.subscribe([s], recover=recover(s, epoch, seen[2]["seq"]))
                frames = await back.subject_frames_until(s, has_status, timeout=25)
                await pub.publish_ok(s, "after", closure="after", timeout=15)
                after = await back.messages(s, 1, timeout=15)
                extra = await back.quiet(msgs_of(s), 0.5)
            # and from within the cache, for comparison
            async with await Client.connect(node.url, name="near") as near:
                await near.subscribe([s], recover=recover(s, epoch, seen[9]["seq"]))
                near_frames = await near.subject_frames_until(s, has_status, timeout=15)
            return seen, frames, after + extra, near_frames

    seen, frames, after, near_frames = run(scenario(), 120)
    assert kinds(frames) == [("recovered", f["seq"]) for f in seen[3:]] + [("status", "DATA_SYNC")], \
        summarize(frames)
    assert [f["content"] for f in frames[:-1]] == [f"m{i}" for i in range(3, 12)]
    assert [(f["type"], f["content"]) for f in after] == [("update", "after")], summarize(after)
    assert [(f.get("type"), f.get("content")) for f in near_frames] == \
        [("recovered", "m10"), ("recovered", "m11"), ("recovered", "after"), (None, None)], summarize(near_frames)
    assert near_frames[-1]["status"] == "DATA_SYNC", summarize(near_frames)
    assert "deep recovery" in node.log_text("kafka-in"), "kafka-in logged no deep recovery"


def test_deep_recovery_on_a_fresh_node_with_a_small_cache(tansu, make_kafka_broker):
    topic = unique_topic("deep0")
    s = f"/{topic}/car3"
    recs = produce_subject(tansu, topic, "car3", 10, others=4)
    node = make_kafka_broker(tansu.bootstrap, name="deep0", topics=[topic], MaxCachedMessagesPerSubject=3)
    epoch_box = {}

    async def scenario():
        async with await Client.connect(node.url, name="probe") as probe:
            await probe.subscribe([s], history=1)
            m = (await probe.messages(s, 1, timeout=15))[0]
            epoch_box["epoch"] = m["epoch"]
        async with await Client.connect(node.url, name="back") as back:
            await back.subscribe([s], recover=recover(s, epoch_box["epoch"], recs[0].offset))
            return await back.subject_frames_until(s, has_status, timeout=25)

    frames = run(scenario(), 60)
    assert kinds(frames) == [("recovered", r.offset) for r in recs[1:]] + [("status", "DATA_SYNC")], \
        summarize(frames)


def test_unknown_epoch_gives_data_resync_and_a_position_ahead_gives_data_sync_with_nothing(tansu,
                                                                                          make_kafka_broker):
    topic = unique_topic("ep")
    s = f"/{topic}/car4"
    recs = produce_subject(tansu, topic, "car4", 3, others=0)
    node = make_kafka_broker(tansu.bootstrap, name="ep", topics=[topic])

    async def scenario():
        async with await Client.connect(node.url, name="probe") as probe:
            await probe.subscribe([s], history=1)
            epoch = (await probe.messages(s, 1, timeout=15))[0]["epoch"]
        ident, _, part = epoch.rpartition(".")
        async with await Client.connect(node.url, name="old") as old:
            # a recreated topic has another id: an epoch of the same partition with an unknown topic id
            await old.subscribe([s], recover=recover(s, "AAAAAAAAAAAAAAAAAAAAAA." + part, 1))
            stale = await old.subject_frames_until(s, has_status, timeout=20)
        async with await Client.connect(node.url, name="ahead") as ahead:
            await ahead.subscribe([s], recover=recover(s, epoch, recs[-1].offset + 50))
            ahead_frames = await ahead.subject_frames_until(s, has_status, timeout=20)
        return stale, ahead_frames

    stale, ahead_frames = run(scenario(), 60)
    assert kinds(stale) == [("snapshot", recs[-1].offset), ("status", "DATA_RESYNC")], summarize(stale)
    assert kinds(ahead_frames) == [("status", "DATA_SYNC")], summarize(ahead_frames)


def test_cache_restart_rewarms_and_clients_recover_with_data_sync(tansu, make_kafka_broker):
    topic = unique_topic("rw")
    s = f"/{topic}/car5"
    node = make_kafka_broker(tansu.bootstrap, name="rw", topics=[topic])

    async def scenario():
        async with await Client.connect(node.url, name="pub") as pub, \
                await Client.connect(node.url, name="stay") as stay:
            await stay.subscribe([s])
            await pub.publish_ok(s, "m0", closure="m0", timeout=15)
            seen = await stay.messages(s, 1, timeout=25)
            async with await Client.connect(node.url, name="a") as a:
                await a.subscribe([s], history=1)
                for i in range(1, 5):
                    await pub.publish_ok(s, f"m{i}", closure=f"m{i}", timeout=15)
                first = await a.messages(s, 5, timeout=15)
            seen += await stay.messages(s, 4, timeout=15)
            last = first[-1]
            assert last["content"] == "m4", summarize(first)

            old_pid = node.pid("cache")
            r = node.cli("restart", "cache", timeout=60)
            assert r.rc == 0, r
            wait_until(lambda: node.pid("cache") != old_pid, 10, what="a new cache pid")
            for i in range(5, 8):
                await pub.publish_ok(s, f"m{i}", closure=f"m{i}", timeout=15)
            # the client that stayed connected keeps receiving, and the re-warm does not replay m0..m4 to it
            seen += await stay.messages(s, 3, timeout=20)
            stay_extra = await stay.quiet(msgs_of(s), 2.0)

            async with await Client.connect(node.url, name="a2") as a2:
                await a2.subscribe([s], recover=recover(s, last["epoch"], last["seq"]))
                back = await a2.subject_frames_until(s, has_status, timeout=20)
            async with await Client.connect(node.url, name="a3") as a3:
                await a3.subscribe([s], recover=recover(s, last["epoch"], first[1]["seq"]))
                older = await a3.subject_frames_until(s, has_status, timeout=20)
            async with await Client.connect(node.url, name="h") as h:
                await h.subscribe([s], history=100)
                hist = await h.quiet(msgs_of(s), 1.0)
            return seen, stay_extra, back, older, hist

    seen, stay_extra, back, older, hist = run(scenario(), 150)
    contents = [f["content"] for f in seen]
    assert contents == [f"m{i}" for i in range(8)], summarize(seen)
    assert stay_extra == [], f"the connected client got records again after the cache restart: {summarize(stay_extra)}"
    by = {f["content"]: f["seq"] for f in seen}
    assert kinds(back) == [("recovered", by[f"m{i}"]) for i in range(5, 8)] + [("status", "DATA_SYNC")], \
        summarize(back)
    assert kinds(older) == [("recovered", by[f"m{i}"]) for i in range(2, 8)] + [("status", "DATA_SYNC")], \
        summarize(older)
    # the re-warmed cache holds the whole subject again (the partition's tail)
    assert [(f["type"], f["content"]) for f in hist] == [("historical", f"m{i}") for i in range(8)], summarize(hist)

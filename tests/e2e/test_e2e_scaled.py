"""Several instances per stage (IngressInstances/CacheInstances/FanoutInstances = 2): subjects are sharded over
the caches and fanouts, clients land on either ingress (SO_REUSEPORT), and every subscriber still gets every
message of its subjects once, in order, with contiguous seqs; recovery works across ingress instances."""

from __future__ import annotations

import asyncio

import pytest

from e2e_helpers import Client, kinds, run, summarize, unique_subject

SUBJECTS = 12
SUBSCRIBERS = 24
PER_SUBJECT = 60


@pytest.fixture(scope="module")
def scaled_broker(tmp_path_factory):
    from e2e_helpers import Broker, running
    with running(Broker(tmp_path_factory.mktemp("scaled"), name="scaled", IngressInstances=2, CacheInstances=2,
                        FanoutInstances=2)) as b:
        yield b


def test_status_shows_every_instance(scaled_broker):
    rows = scaled_broker.status_json()
    got = sorted((r["stage"], int(r["instance"])) for r in rows)
    want = sorted([("ws-ingress", 0), ("ws-ingress", 1), ("cache", 0), ("cache", 1), ("fanout", 0),
                   ("fanout", 1), ("router", 0)])
    assert got == want, rows
    assert all(r["state"] == "up" and r["pid"] for r in rows), rows


def test_sharded_pubsub_keeps_per_subject_order_for_every_subscriber(scaled_broker):
    subjects = [unique_subject(f"shard{i}") for i in range(SUBJECTS)]

    async def scenario():
        subs = [await Client.connect(scaled_broker.url, name=f"sub{i}") for i in range(SUBSCRIBERS)]
        wanted = {}
        for i, c in enumerate(subs):
            mine = [subjects[(i + k) % SUBJECTS] for k in range(3)]
            wanted[c.name] = mine
            st = await c.subscribe(mine)
            assert all(v["status"] == "ALLOW" for v in st.values()), st
        pubs = [await Client.connect(scaled_broker.url, name=f"pub{i}") for i in range(3)]

        async def publish(p, my_subjects):
            for n in range(1, PER_SUBJECT + 1):
                for s in my_subjects:
                    await p.publish(s, f"{s}#{n}", closure=f"{s}#{n}" if n == PER_SUBJECT else None, wait=False)
            for s in my_subjects:
                st = await p.wait_status(f"{s}#{PER_SUBJECT}", timeout=30)
                assert st["status"] == "OK", st

        # each subject has exactly one publisher, so its publish order is defined
        await asyncio.gather(*(publish(p, subjects[i::3]) for i, p in enumerate(pubs)))

        async def check(c):
            for s in wanted[c.name]:
                msgs = await c.messages(s, PER_SUBJECT, timeout=60)
                assert [m["seq"] for m in msgs] == list(range(1, PER_SUBJECT + 1)), \
                    f"{c.name} {s}: {summarize(msgs)}"
                assert [m["content"] for m in msgs] == [f"{s}#{n}" for n in range(1, PER_SUBJECT + 1)]
            extra = await c.quiet(lambda f: f.get("op") == "message", 0.3)
            assert extra == [], f"{c.name} got duplicates or foreign messages: {summarize(extra)}"

        await asyncio.gather(*(check(c) for c in subs))
        for c in subs + pubs:
            await c.close()

    run(scenario(), 180)


def test_recovery_on_whichever_ingress_the_client_lands(scaled_broker):
    s = unique_subject("scaled-rec")

    async def scenario():
        async with await Client.connect(scaled_broker.url, name="pub") as pub:
            async with await Client.connect(scaled_broker.url, name="first") as a:
                await a.subscribe([s])
                for i in range(1, 4):
                    await pub.publish_ok(s, f"m{i}")
                msgs = await a.messages(s, 3)
            epoch = msgs[-1]["epoch"]
            for i in range(4, 8):
                await pub.publish_ok(s, f"m{i}")
            for attempt in range(4):  # new connections spread over both ingress instances
                async with await Client.connect(scaled_broker.url, name=f"back{attempt}") as b:
                    await b.subscribe([s], recover={s: {"epoch": epoch, "seq": 3}})
                    frames = await b.subject_frames_until(s, lambda g: any(f.get("op") == "status" for f in g))
                    assert kinds(frames) == [("recovered", q) for q in range(4, 8)] + [("status", "DATA_SYNC")], \
                        summarize(frames)

    run(scenario(), 60)

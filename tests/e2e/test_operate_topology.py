"""Issue 12, item 1: the topology tells the truth. `switchyard scale` (and the `...Instances` parameters) accept
only what the pipeline routes by: ws-ingress, cache, fanout and kafka-out 1-64; router and kafka-in exactly 1
(ws-ingress and kafka-in send to router-0; every kafka-in consumes every partition). Every count accepted keeps
messages flowing with each subject's order; every count refused is refused with exit status 2, one line with the
reason, and nothing changes.

One standalone stack and one Kafka stack are reused for all their scale steps (module fixtures, steps in order).
"""

from __future__ import annotations

import uuid

import pytest

from e2e_helpers import Broker, Client, run, running, summarize, unique_subject
from kafka_helpers import KafkaBroker, produce_one, tansu, unique_topic  # noqa: F401 (fixture)

SUBJECTS = 6
PER_SUBJECT = 8

# (stage, count) in the order they run on one stack: up, then back down to 1.
STANDALONE_STEPS = [("cache", 3), ("fanout", 2), ("ws-ingress", 2), ("router", 1),
                    ("cache", 1), ("fanout", 1), ("ws-ingress", 1)]
KAFKA_STEPS = [("kafka-out", 2), ("kafka-in", 1), ("kafka-out", 1)]

STANDALONE_REFUSALS = [("router", 2, "router runs exactly 1 instance, not 2"),
                       ("router", 0, "router runs exactly 1 instance, not 0"),
                       ("cache", 0, "cache runs 1-64 instances, not 0"),
                       ("fanout", 0, "fanout runs 1-64 instances, not 0"),
                       ("ws-ingress", 0, "ws-ingress runs 1-64 instances, not 0"),
                       ("cache", 65, "cache runs 1-64 instances, not 65")]
KAFKA_REFUSALS = [("kafka-in", 2, "kafka-in runs exactly 1 instance, not 2"),
                  ("kafka-in", 0, "kafka-in runs exactly 1 instance, not 0"),
                  ("kafka-out", 0, "kafka-out runs 1-64 instances, not 0")]


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    with running(Broker(tmp_path_factory.mktemp("topo"), name="topo")) as b:
        yield b


@pytest.fixture(scope="module")
def kafka_node(tansu, tmp_path_factory):
    topic = unique_topic("topo")
    produce_one(tansu.bootstrap, topic, "init", "created")  # the topic exists before kafka-in assigns it
    b = KafkaBroker(tmp_path_factory.mktemp("ktopo"), tansu.bootstrap, name="ktopo", topics=[topic],
                    PublishTimeout=10)
    b.topic = topic
    with running(b):
        b.wait_kafka_state("ok", 30)
        yield b


def instances(broker) -> dict[str, list[tuple[int, int, str]]]:
    """stage → [(instance, pid, state)] from `status --json`."""
    out: dict[str, list[tuple[int, int, str]]] = {}
    for row in broker.status_json():
        out.setdefault(row["stage"], []).append((int(row["instance"]), row.get("pid"), row["state"]))
    return {stage: sorted(rows) for stage, rows in out.items()}


async def assert_flow_keeps_order(broker, subjects: list[str], what: str):
    """A fresh subscriber gets every publish of every subject once, in publish order, seqs rising.

    It asks for the subjects' history: with several ingress instances the subscriber and the publisher may be on
    different ones, so a publish can reach the cache before the subscribe does; the history answer then holds it
    (merged with the live messages without gap or duplicate) where a plain subscribe would get only the latest."""
    async with await Client.connect(broker.url, name="sub", retry_for=5.0) as sub, \
            await Client.connect(broker.url, name="pub", retry_for=5.0) as pub:
        st = await sub.subscribe(subjects, history=PER_SUBJECT)
        assert all(v["status"] == "ALLOW" for v in st.values()), st
        for n in range(PER_SUBJECT):
            for s in subjects:
                await pub.publish(s, f"{s}#{n}", closure=f"{s}#{n}", wait=False)
        for n in range(PER_SUBJECT):
            for s in subjects:
                status = await pub.wait_status(f"{s}#{n}", timeout=30)
                assert status["status"] == "OK", f"{what}: {status}"
        for s in subjects:
            msgs = await sub.messages(s, PER_SUBJECT, timeout=30)
            assert [m["content"] for m in msgs] == [f"{s}#{n}" for n in range(PER_SUBJECT)], \
                f"{what}: {s}: {summarize(msgs)}"
            seqs = [m["seq"] for m in msgs]
            assert seqs == sorted(set(seqs)), f"{what}: {s}: seqs not rising: {seqs}"
        extra = await sub.quiet(lambda f: f.get("op") == "message", 0.3)
        assert extra == [], f"{what}: duplicates or foreign messages: {summarize(extra)}"


def scale_and_check(broker, stage: str, count: int, subjects: list[str]):
    r = broker.cli("scale", stage, str(count))
    assert r.rc == 0, r
    rows = instances(broker)[stage]
    assert [(n, state) for n, _, state in rows] == [(n, "up") for n in range(count)], rows
    assert len({pid for _, pid, _ in rows}) == count, rows
    run(assert_flow_keeps_order(broker, subjects, f"after scale {stage} {count}"), 90)


@pytest.mark.parametrize("stage,count", STANDALONE_STEPS, ids=[f"{s}-{c}" for s, c in STANDALONE_STEPS])
def test_standalone_scale_accepted_keeps_flow_and_order(standalone, stage, count):
    subjects = [unique_subject(f"topo-{stage}-{count}-{i}") for i in range(SUBJECTS)]
    scale_and_check(standalone, stage, count, subjects)


@pytest.mark.parametrize("stage,count,said", STANDALONE_REFUSALS,
                         ids=[f"{s}-{c}" for s, c, _ in STANDALONE_REFUSALS])
def test_standalone_scale_refused_with_the_reason(standalone, stage, count, said):
    before = instances(standalone)
    r = standalone.cli("scale", stage, str(count))
    assert r.rc == 2, r
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], r
    assert instances(standalone) == before


@pytest.mark.parametrize("stage,count", KAFKA_STEPS, ids=[f"{s}-{c}" for s, c in KAFKA_STEPS])
def test_kafka_scale_accepted_keeps_flow_and_order(kafka_node, stage, count):
    tag = uuid.uuid4().hex[:6]
    subjects = [f"/{kafka_node.topic}/{stage}-{count}-{tag}-{i}" for i in range(SUBJECTS)]
    scale_and_check(kafka_node, stage, count, subjects)


@pytest.mark.parametrize("stage,count,said", KAFKA_REFUSALS, ids=[f"{s}-{c}" for s, c, _ in KAFKA_REFUSALS])
def test_kafka_scale_refused_with_the_reason(kafka_node, stage, count, said):
    before = instances(kafka_node)
    r = kafka_node.cli("scale", stage, str(count))
    assert r.rc == 2 and said in r.output, r
    assert instances(kafka_node) == before


@pytest.mark.parametrize("parameter,value,said", [
    ("CacheInstances", "0", "cache runs 1-64 instances, not 0"),
    ("FanoutInstances", "65", "fanout runs 1-64 instances, not 65"),
    ("IngressInstances", "0", "ws-ingress runs 1-64 instances, not 0"),
    ("KafkaOutInstances", "0", "kafka-out runs 1-64 instances, not 0"),
])
def test_config_refuses_counts_the_pipeline_cannot_use(tmp_path, parameter, value, said):
    b = Broker(tmp_path, name="badcount", **{parameter: value})
    r = b.cli("start")
    assert r.rc == 2 and said in r.output and parameter in r.output, r
    assert not b.run_dir.exists() or not (b.run_dir / "supervisor.pid").exists()

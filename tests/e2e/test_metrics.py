"""Issue 12, item 2 (metrics): every stage exports swift-metrics through swift-prometheus into `<RunDir>/<stage>-<n>.prom`;
ws-ingress's monitor `/metrics` merges them into one valid exposition. After real traffic (subscribe, publish with
acks) the histograms have counts, every family is typed once, and every metric the Grafana dashboard
(compose/grafana/switchyard.json) queries is exported. The Kafka variant checks the Kafka latency histograms."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e_helpers import REPO, Broker, Client, run, running, unique_subject, wait_until
from kafka_helpers import KafkaBroker, tansu, unique_topic  # noqa: F401 (fixture)
from operate_fixtures import http_get

DASHBOARD = REPO / "compose" / "grafana" / "switchyard.json"
# Exported only in Kafka mode (kafka-out, kafka-in): checked by the Kafka variant.
KAFKA_ONLY = {"switchyard_kafka_produce_seconds", "switchyard_kafka_consume_seconds", "switchyard_producer_queue"}
HISTOGRAMS = ("switchyard_publish_ack_seconds", "switchyard_hop_seconds", "switchyard_batch_envelopes")
PROMQL_WORDS = {"sum", "by", "rate", "max", "min", "le", "histogram_quantile", "job", "stage", "stage_instance"}


def dashboard_metrics() -> set[str]:
    """The metric families the dashboard's expressions query (`_bucket`/`_sum`/`_count` belong to their
    histogram, `_total` to its counter as prometheus_client names it)."""
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    names = {n for e in exprs for n in re.findall(r"\b(switchyard_[a-z0-9_]+)", e)}
    assert len(names) >= 10, names
    return {re.sub(r"_(bucket|sum|count|total)$", "", n) for n in names}


def scrape(b: Broker) -> tuple[str, dict]:
    code, text = http_get(b.monitor_port, "/metrics")
    assert code == 200, text[:400]
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return text, families


def histogram_count(family, **labels) -> float:
    return sum(s.value for s in family.samples
               if s.name.endswith("_count") and all(s.labels.get(k) == v for k, v in labels.items()))


def assert_one_type_line_per_family(text: str):
    typed = re.findall(r"^# TYPE (\S+) ", text, re.M)
    assert len(typed) == len(set(typed)), "a family typed twice"
    assert not any('instance="' in line.replace('stage_instance="', "") for line in text.splitlines()), \
        "a bare instance label would collide with Prometheus's own"


async def traffic(url: str, subject: str, count: int):
    async with await Client.connect(url, name="sub") as sub, await Client.connect(url, name="pub") as pub:
        await sub.subscribe(subject)
        for i in range(count):
            status = await pub.publish_ok(subject, f"m{i}", closure=f"c{i}", timeout=15)
            assert status["status"] == "OK", status
        assert [m["content"] for m in await sub.messages(subject, count)] == [f"m{i}" for i in range(count)]


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    with running(Broker(tmp_path_factory.mktemp("metrics"), name="metrics", IngressInstances=2)) as b:
        yield b


def test_metrics_after_traffic_have_histograms_and_every_dashboard_metric(standalone):
    b = standalone
    run(traffic(b.url, unique_subject("metrics"), 20), 60)

    def counted(families) -> bool:
        acks, hops = families.get("switchyard_publish_ack_seconds"), families.get("switchyard_hop_seconds")
        return bool(acks and hops and histogram_count(acks) >= 20
                    and all(histogram_count(hops, stage=stage) for stage in ("router", "cache", "fanout")))

    # Each instance writes its file once a second: wait for the last ones to show the traffic.
    text, families = wait_until(lambda: (lambda t, f: (t, f) if counted(f) else None)(*scrape(b)), 10,
                                interval=0.5, what="the publishes in every stage's histograms")
    assert_one_type_line_per_family(text)
    for name in HISTOGRAMS:
        assert families[name].type == "histogram", (name, families[name].type)
    assert histogram_count(families["switchyard_publish_ack_seconds"], stage="ws-ingress") >= 20
    for stage in ("router", "cache", "fanout"):
        assert histogram_count(families["switchyard_hop_seconds"], stage=stage) > 0, stage
        assert histogram_count(families["switchyard_batch_envelopes"], stage=stage) > 0, stage
    buckets = [s for s in families["switchyard_publish_ack_seconds"].samples if s.name.endswith("_bucket")]
    assert {s.labels["le"] for s in buckets} >= {"5e-05", "10.0", "+Inf"} or \
        {float(s.labels["le"]) for s in buckets} >= {5e-05, 10.0, float("inf")}, buckets[:3]
    # The stats files' figures are still there, once each, labelled by stage and stage_instance.
    for name, kind in (("switchyard_messages_in", "counter"), ("switchyard_ready", "gauge"),
                       ("switchyard_queue_depth", "gauge"), ("switchyard_connections", "gauge"),
                       ("switchyard_uptime_seconds", "gauge"), ("switchyard_rate_in", "gauge")):
        assert families[name].type == kind, (name, families[name].type)
    ready = {(s.labels["stage"], s.labels["stage_instance"]) for s in families["switchyard_ready"].samples}
    assert ("ws-ingress", "1") in ready and ("cache", "0") in ready, ready
    missing = sorted(dashboard_metrics() - KAFKA_ONLY - set(families))
    assert not missing, f"the dashboard queries metrics /metrics does not export: {missing}"


def test_the_dashboard_is_a_grafana_dashboard_with_latency_quantiles():
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert dash["uid"] == "switchyard" and all(p.get("title") for p in dash["panels"])
    quantiles = [e for e in exprs if "histogram_quantile" in e]
    assert {m for e in quantiles for m in re.findall(r"(switchyard_\w+)_bucket", e)} >= \
        set(HISTOGRAMS[:2]) | {"switchyard_kafka_produce_seconds", "switchyard_kafka_consume_seconds"}
    assert all(w in PROMQL_WORDS or w.startswith("switchyard_") or w in ("__rate_interval",)
               for e in exprs for w in re.findall(r"\b([a-z_]{2,})\s*\(", e)), exprs


def test_kafka_histograms(tansu, tmp_path_factory):
    topic = unique_topic("back")
    with running(KafkaBroker(tmp_path_factory.mktemp("kmetrics"), tansu.bootstrap, name="kmetrics",
                             topics_regex=r"^back-.*", PublishTimeout=5)) as b:
        run(traffic(b.url, f"/{topic}/k-{uuid.uuid4().hex[:6]}", 5), 90)

        def counted():
            _, families = scrape(b)
            produce = families.get("switchyard_kafka_produce_seconds")
            consume = families.get("switchyard_kafka_consume_seconds")
            return families if produce and consume and histogram_count(produce) >= 5 and \
                histogram_count(consume) > 0 else None

        families = wait_until(counted, 10, interval=0.5, what="the Kafka histograms in /metrics")
        assert histogram_count(families["switchyard_kafka_produce_seconds"], stage="kafka-out") >= 5
        assert histogram_count(families["switchyard_kafka_consume_seconds"], stage="kafka-in") > 0
        assert histogram_count(families["switchyard_batch_envelopes"], stage="kafka-in") > 0
        missing = sorted(dashboard_metrics() - set(families))
        assert not missing, f"the dashboard queries metrics /metrics does not export: {missing}"

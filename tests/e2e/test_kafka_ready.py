"""Issue 8: `/ready` on the monitor port in Kafka mode is 503 with the reason while Kafka is unreachable and 200
once Kafka answers and the caches are warm (what HAProxy in compose/ checks)."""

from __future__ import annotations

from e2e_helpers import http_get, wait_until
from kafka_helpers import make_kafka_broker, make_tansu, unique_topic  # noqa: F401 (fixtures)


def test_ready_waits_for_kafka(make_tansu, make_kafka_broker):
    kafka = make_tansu(start=False)  # a free port nobody listens on yet
    node = make_kafka_broker(kafka.bootstrap, name="ready", topics=[unique_topic("ready")])
    answer = wait_until(lambda: (lambda a: a if "kafka unreachable" in a[1] else None)(
        http_get(node.monitor_port, "/ready")), timeout=20, interval=0.5, what="/ready naming Kafka")
    assert answer[0] == 503 and "kafka-out-0: kafka unreachable" in answer[1], answer
    assert http_get(node.monitor_port, "/health")[0] == 200
    kafka.start()
    wait_until(lambda: http_get(node.monitor_port, "/ready") == (200, "ready\n"), timeout=40, interval=0.5,
               what="/ready 200 once Kafka is back")

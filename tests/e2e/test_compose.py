"""Issue 3, item 7: compose/ holds a Docker Compose deployment: an Apache Kafka container in KRaft mode and two
Switchyard nodes built from compose/Dockerfile, behind one published port (an HAProxy container).

No Docker engine runs here: `docker-compose -f compose/docker-compose.yml config` (the Python docker-compose
from requirements-dev.txt) validates the file and resolves it, and the tests check the resolved structure and
the files it refers to (Dockerfile, node config, Kafka properties, load balancer config)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from e2e_helpers import REPO, STAGE_BINARIES

COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
NODES = ("node1", "node2")


def docker_compose() -> str:
    venv_bin = Path(sys.executable).parent / "docker-compose"
    found = str(venv_bin) if os.access(venv_bin, os.X_OK) else shutil.which("docker-compose")
    if not found:
        pytest.fail("docker-compose is not installed: pip install -r requirements-dev.txt (make setup)", pytrace=False)
    return found


@pytest.fixture(scope="module")
def resolved() -> dict:
    import yaml  # PyYAML comes with docker-compose
    proc = subprocess.run([docker_compose(), "-f", str(COMPOSE_FILE), "config"], cwd=REPO, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr.decode(errors='replace')}"
    return yaml.safe_load(proc.stdout)


def read_conf(path: Path) -> dict[str, str]:
    """`Key = Value` lines (switchyard.conf and .properties alike), comments dropped."""
    out = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip() if path.suffix == ".conf" else raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not 'key = value': {raw!r}"
        out[key.strip()] = value.strip()
    return out


def test_config_validates_and_resolves(resolved):
    assert set(resolved["services"]) == {"kafka", "kafka-init", *NODES, "lb"}, list(resolved["services"])


def test_one_published_port_on_the_load_balancer(resolved):
    published = {name: svc.get("ports", []) for name, svc in resolved["services"].items() if svc.get("ports")}
    assert list(published) == ["lb"], f"services publishing ports: {published}"
    (port,) = published["lb"]
    assert (int(port["published"]), int(port["target"])) == (8800, 8800), port


def test_kafka_runs_in_kraft_mode(resolved):
    kafka = resolved["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:"), kafka["image"]
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}, env
    node_id = str(env["KAFKA_NODE_ID"])
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node_id}@kafka:9093", env
    assert "CONTROLLER://:9093" in env["KAFKA_LISTENERS"] and env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092", env
    assert env.get("CLUSTER_ID"), "KRaft storage needs a cluster id"
    assert str(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == "1"  # one broker
    everything = repr(resolved).lower()
    assert "zookeeper" not in everything, "a ZooKeeper reference in a KRaft deployment"
    assert "healthcheck" in kafka and "9092" in " ".join(kafka["healthcheck"]["test"])


def test_nodes_are_built_from_the_dockerfile_and_wait_for_kafka(resolved):
    for name in NODES:
        node = resolved["services"][name]
        build = node["build"]
        assert Path(build["context"]).resolve() == REPO, build
        assert build["dockerfile"] == "compose/Dockerfile", build
        assert node["depends_on"]["kafka"]["condition"] == "service_healthy", node["depends_on"]
        assert node["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
        mounts = {v.split(":")[1]: Path(v.split(":")[0]) for v in node["volumes"]}
        assert mounts["/etc/switchyard/switchyard.conf"] == COMPOSE_DIR / "node" / "switchyard.conf", mounts
        assert mounts["/etc/switchyard/kafka"] == COMPOSE_DIR / "node" / "kafka", mounts
        assert not node.get("ports"), f"{name} publishes a port of its own"
        assert "8801/ready" in " ".join(node["healthcheck"]["test"]), node["healthcheck"]
    lb = resolved["services"]["lb"]
    assert {n: lb["depends_on"][n]["condition"] for n in NODES} == {n: "service_healthy" for n in NODES}


def test_node_config_is_kafka_mode_against_the_kafka_service():
    conf = read_conf(COMPOSE_DIR / "node" / "switchyard.conf")
    assert conf["ClusterEngine"] == "kafka", conf
    assert conf["Listen"].rsplit(":", 1)[1] == "8800", conf
    assert conf["MonitorListen"].rsplit(":", 1)[1] == "8801", "the load balancer checks /ready on port 8801"
    consumer_path = COMPOSE_DIR / "node" / "kafka" / "consumer.properties"
    producer_path = COMPOSE_DIR / "node" / "kafka" / "producer.properties"
    # relative to the config's folder, /etc/switchyard, where node/kafka is mounted
    assert conf.get("KafkaConsumerConfig", "kafka/consumer.properties") == "kafka/consumer.properties"
    assert conf.get("KafkaProducerConfig", "kafka/producer.properties") == "kafka/producer.properties"
    consumer, producer = read_conf(consumer_path), read_conf(producer_path)
    assert consumer["bootstrap.servers"] == producer["bootstrap.servers"] == "kafka:9092"
    assert consumer.get("topics") or consumer.get("topics.regex"), consumer


def test_kafka_properties_are_accepted_by_librdkafka():
    """The properties files pass straight through to librdkafka: check them with confluent-kafka's own
    librdkafka (constructing a client validates every property; it does not need the broker)."""
    from confluent_kafka import Consumer, KafkaException, Producer
    consumer = {k: v for k, v in read_conf(COMPOSE_DIR / "node" / "kafka" / "consumer.properties").items()
                if k not in ("topics", "topics.regex")}
    producer = read_conf(COMPOSE_DIR / "node" / "kafka" / "producer.properties")
    try:
        Producer({**producer, "log_level": 0}).flush(0)
        Consumer({**consumer, "group.id": "compose-check", "log_level": 0}).close()
    except KafkaException as e:
        raise AssertionError(f"librdkafka refused a property: {e}") from None


def test_load_balancer_sends_websockets_to_both_nodes():
    cfg = (COMPOSE_DIR / "lb" / "haproxy.cfg").read_text()
    assert re.search(r"^\s*bind\s+\S*:8800\b", cfg, re.M), "the frontend does not listen on the published port"
    servers = re.findall(r"^\s*server\s+(\S+)\s+(\S+)", cfg, re.M)
    assert sorted(addr for _, addr in servers) == ["node1:8800", "node2:8800"], servers
    assert re.search(r"^\s*timeout\s+tunnel\s+\S+", cfg, re.M), "WebSocket connections need a tunnel timeout"
    assert re.search(r"^\s*option\s+httpchk\s+GET\s+/ready\b", cfg, re.M), "no readiness check of the nodes"
    assert re.search(r"check port 8801\b", cfg), "the readiness check goes to the monitor port"


def test_dockerfile_builds_every_stage_and_runs_the_supervisor():
    text = (COMPOSE_DIR / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms and re.fullmatch(r"swift:\$\{SWIFT_VERSION\}-bookworm|swift:6\.\d+(\.\d+)?-bookworm", froms[0]), froms
    default = re.search(r"^ARG SWIFT_VERSION=(6\.\d+(\.\d+)?)$", text, re.M)
    assert default, "no default Swift 6.x version"
    assert "scripts/build-librdkafka.sh" in text and (REPO / "scripts" / "build-librdkafka.sh").is_file()
    assert "libnanomsg-dev" in text and "libssl-dev" in text
    for stage in STAGE_BINARIES:
        assert stage in text, f"the image does not build {stage}"
    # every COPY from the build context names something in the repository
    for m in re.finditer(r"^COPY\s+(?!--from)(.+)$", text, re.M):
        *sources, _dest = m.group(1).split()
        for src in sources:
            assert (REPO / src).exists(), f"COPY {src}: not in the repository"
    # the runtime finds librdkafka where the build's rpath says, and runs the supervisor in the foreground
    rpath = re.search(r"-rpath -Xlinker ([^\s;]+)", text)
    assert rpath and f"/out/lib/ {rpath.group(1)}/" in text.replace("COPY --from=build ", ""), \
        "librdkafka is not copied to the rpath directory"
    assert re.search(r'^ENTRYPOINT \["/opt/switchyard/switchyard"\]', text, re.M)
    assert re.search(r'^CMD \["run", "-c", "/etc/switchyard/switchyard.conf"\]', text, re.M)
    assert "SWITCHYARD_BIN=" in text

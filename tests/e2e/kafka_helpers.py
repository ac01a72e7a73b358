"""Helpers and fixtures for the Kafka-mode end-to-end tests (issue 3).

- `Tansu`: one Tansu broker (Apache-Kafka-compatible, memory storage) started and stopped through
  `scripts/tansu.sh` on a free loopback port, in its own directory. Stopping and starting it again on the same
  port gives an *empty* broker (memory storage): topics are recreated with new topic ids, so epochs change.
- `KafkaBroker`: a `Broker` (e2e_helpers) in Kafka mode: `ClusterEngine = kafka`, and its own
  `kafka/consumer.properties` / `kafka/producer.properties` beside its config (the default, relative paths).
- confluent-kafka helpers (`produce`, `read_topic`, `wait_for_records`, `topic_partitions`) and kcat helpers
  (`kcat_produce`, `kcat_read`; Debian's kcat runs with the librdkafka built by scripts/build-librdkafka.sh).
- fixtures, imported by the test modules that use them: `tansu` (one per module), `make_tansu` and
  `make_kafka_broker` (per test, stopped at teardown).

Every wait is bounded. A running Tansu is added to e2e_helpers.ACTIVE_BROKERS (it has `name`, `dir` and
`log_tails()`), so a failing test's report carries its log next to the stages' logs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pytest
from confluent_kafka import KafkaError, Producer, Consumer, TopicPartition

from e2e_helpers import ACTIVE_BROKERS, BIN_DIR, REPO, Broker, broker_factory, free_port, wait_until

TANSU_SCRIPT = REPO / "scripts" / "tansu.sh"
KAFKA_STAGES = ("kafka-out", "kafka-in")
RDKAFKA_LIB = REPO / ".deps" / "librdkafka" / "lib"
KCAT = shutil.which("kcat")
KAFKA_WAIT = 20.0  # default bound for one Kafka client operation (produce + delivery, read to the end)

# kafka-out's default partitioner (the Java client's), so a key lands on the same partition whether a test
# produces it with confluent-kafka or a WebSocket client publishes it through Switchyard.
SWITCHYARD_PARTITIONER = "murmur2_random"


def unique_topic(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _prerequisites() -> list[str]:
    missing = []
    for stage in KAFKA_STAGES:
        if not os.access(BIN_DIR / stage, os.X_OK):
            missing.append(f"{BIN_DIR / stage} is missing: run `make build`")
    if not os.access(TANSU_SCRIPT, os.X_OK):
        missing.append(f"{TANSU_SCRIPT} is missing or not executable")
    return missing


def ensure_kafka_prerequisites():
    missing = _prerequisites()
    if missing:
        pytest.fail("Kafka end-to-end tests need the Kafka stages and scripts/tansu.sh:\n  " + "\n  ".join(missing),
                    pytrace=False)


# --- Tansu ---------------------------------------------------------------------------------------------------

class Tansu:
    """One Tansu broker on 127.0.0.1:port; its pid, port and log live in `dir` (scripts/tansu.sh)."""

    def __init__(self, workdir: Path, port: int | None = None, name: str = "tansu"):
        ensure_kafka_prerequisites()
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.name = name
        self.running = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _script(self, *args: str, timeout: float = 40.0) -> tuple[int | None, str]:
        # Output to a file, not a pipe: the broker it starts must not hold our pipe open.
        out_path = self.dir / f".tansu-{uuid.uuid4().hex[:8]}.out"
        with open(out_path, "w+b") as out:
            try:
                rc = subprocess.run([str(TANSU_SCRIPT), *args], cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = None
            out.seek(0)
            text = out.read().decode(errors="replace")
        out_path.unlink(missing_ok=True)
        return rc, text

    def start(self) -> "Tansu":
        rc, out = self._script("start", str(self.port), str(self.dir))
        if rc != 0:
            raise AssertionError(f"scripts/tansu.sh start {self.port} failed (rc={rc}):\n{out}\n{self.log_tails()}")
        self.running = True
        if self not in ACTIVE_BROKERS:
            ACTIVE_BROKERS.append(self)
        return self

    def stop(self):
        rc, out = self._script("stop", str(self.dir))
        self.running = False
        assert rc == 0, f"scripts/tansu.sh stop failed (rc={rc}):\n{out}"

    def forget(self):
        """Stops it and drops it from the failure reports (teardown)."""
        try:
            self.stop()
        finally:
            if self in ACTIVE_BROKERS:
                ACTIVE_BROKERS.remove(self)

    def log_tails(self, lines: int = 30) -> str:
        path = self.dir / "tansu.log"
        try:
            tail = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"[{self.name}] no log at {path}"
        return f"----- [{self.name}] {path} (last {len(tail)} lines) -----\n" + "\n".join(tail)


@pytest.fixture(scope="module")
def tansu(tmp_path_factory):
    """One Tansu per test module; tests use their own topics."""
    t = Tansu(tmp_path_factory.mktemp("tansu"))
    t.start()
    try:
        yield t
    finally:
        t.forget()


@pytest.fixture
def make_tansu(tmp_path):
    """Factory: make_tansu(start=True, port=None) -> Tansu, stopped at teardown."""
    made: list[Tansu] = []

    def make(start: bool = True, port: int | None = None) -> Tansu:
        t = Tansu(tmp_path / f"tansu{len(made)}", port=port, name=f"tansu{len(made)}")
        made.append(t)
        if start:
            t.start()
        return t

    yield make
    for t in made:
        t.forget()


# --- a Switchyard node in Kafka mode -------------------------------------------------------------------------

class KafkaBroker(Broker):
    """A Switchyard stack with `ClusterEngine = kafka`. Its Kafka properties files are written beside its config
    as kafka/consumer.properties and kafka/producer.properties (the defaults, relative to the config's folder):

        bootstrap.servers = <bootstrap>
        topics = a,b                       (when `topics` is given)
        topics.regex = ...                 (when `topics_regex` is given)
        <consumer_lines> / <producer_lines>  (raw lines, so a test can also write malformed ones)
    """

    def __init__(self, workdir: Path, bootstrap: str, name: str = "knode", topics: Sequence[str] = (),
                 topics_regex: str | None = None, consumer_lines: Iterable[str] = (),
                 producer_lines: Iterable[str] = (), **params: Any):
        ensure_kafka_prerequisites()
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.topics_regex = topics_regex
        self.consumer_lines = list(consumer_lines)
        self.producer_lines = list(producer_lines)
        params = {"ClusterEngine": "kafka", **params}
        super().__init__(workdir, name=name, **params)

    @property
    def consumer_properties(self) -> Path:
        return self.dir / "kafka" / "consumer.properties"

    @property
    def producer_properties(self) -> Path:
        return self.dir / "kafka" / "producer.properties"

    def write_config(self, extra_lines: Iterable[str] = ()) -> Path:
        kafka_dir = self.dir / "kafka"
        kafka_dir.mkdir(parents=True, exist_ok=True)
        consumer = [f"# kafka-in properties for {self.name} (e2e)", f"bootstrap.servers = {self.bootstrap}"]
        if self.topics:
            consumer.append(f"topics = {','.join(self.topics)}")
        if self.topics_regex:
            consumer.append(f"topics.regex = {self.topics_regex}")
        consumer += self.consumer_lines
        producer = [f"# kafka-out properties for {self.name} (e2e)", f"bootstrap.servers = {self.bootstrap}"]
        producer += self.producer_lines
        self.consumer_properties.write_text("\n".join(consumer) + "\n")
        self.producer_properties.write_text("\n".join(producer) + "\n")
        return super().write_config(extra_lines)

    def stage_states(self) -> dict[str, str]:
        """stage name (e.g. kafka-in-0) → the stage's own state (`stageState`) from `status --json`."""
        return {row.get("name") or f"{row.get('stage')}-{row.get('instance', 0)}": row.get("stageState")
                for row in self.status_json()}

    def kafka_states(self) -> dict[str, str | None]:
        states = self.stage_states()
        return {name: state for name, state in states.items() if name.startswith("kafka-")}

    def wait_kafka_state(self, state: str, timeout: float = 30.0) -> dict:
        """Waits until every kafka stage reports `state` (e.g. "ok", "kafka unreachable")."""
        return wait_until(lambda: (lambda s: s if s and all(v == state for v in s.values()) else None)(
            self.kafka_states()), timeout, interval=0.5, what=f"kafka stages in state {state!r}")


@pytest.fixture
def make_kafka_broker(tmp_path):
    """Factory: make_kafka_broker(bootstrap, start=True, name="knode", topics=..., ...) -> KafkaBroker,
    stopped at teardown."""
    def build(index: int, bootstrap: str, name: str = "knode", **kw) -> KafkaBroker:
        return KafkaBroker(tmp_path / f"{name}{index}", bootstrap, name=name, **kw)

    with broker_factory(build) as make:
        yield make


# --- confluent-kafka -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] | None = None  # as confluent-kafka gives them (read_topic only)

    @property
    def epoch_suffix(self) -> str:
        return f".{self.partition}"


def produce(bootstrap: str, topic: str, records: Sequence[tuple[bytes | str | None, bytes | str]],
            partitioner: str | None = SWITCHYARD_PARTITIONER, partition: int | None = None,
            timeout: float = KAFKA_WAIT, headers: list[tuple[str, bytes | str | None]] | None = None,
            **conf) -> list[Record]:
    """Produces (key, value) pairs in order with one confluent-kafka producer (each with `headers`, if given);
    returns them as delivered (partition, offset), in the order given. Fails if any is not delivered within
    `timeout`."""
    config = {"bootstrap.servers": bootstrap, "client.id": "e2e-producer", "linger.ms": 5,
              "message.timeout.ms": int(timeout * 1000), **conf}
    if partitioner:
        config["partitioner"] = partitioner
    p = Producer(config)
    reports: dict[int, Any] = {}

    def report(i):
        return lambda err, msg: reports.__setitem__(i, (err, msg))

    def enc(x):
        return x.encode() if isinstance(x, str) else x

    for i, (key, value) in enumerate(records):
        kw = {} if partition is None else {"partition": partition}
        if headers:
            kw["headers"] = headers
        p.produce(topic, key=enc(key), value=enc(value), on_delivery=report(i), **kw)
    left = p.flush(timeout)
    assert left == 0 and len(reports) == len(records), \
        f"{left} of {len(records)} records to {topic} not delivered within {timeout:.0f}s"
    out = []
    for i in range(len(records)):
        err, msg = reports[i]
        assert err is None, f"record {i} to {topic} failed: {err}"
        out.append(Record(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value()))
    return out


def produce_one(bootstrap: str, topic: str, key, value, **kw) -> Record:
    return produce(bootstrap, topic, [(key, value)], **kw)[0]


def topic_partitions(bootstrap: str, topic: str, timeout: float = KAFKA_WAIT) -> list[int]:
    """The topic's partitions (waits until the topic exists; does not create it)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"e2e-{uuid.uuid4().hex[:8]}",
                  "allow.auto.create.topics": False})
    try:
        def partitions():
            md = c.list_topics(topic, timeout=5)
            t = md.topics.get(topic)
            if t is None or t.error is not None or not t.partitions:
                return None
            return sorted(t.partitions)
        return wait_until(partitions, timeout, interval=0.3, what=f"topic {topic} to exist")
    finally:
        c.close()


def topic_id(bootstrap: str, topic: str, timeout: float = KAFKA_WAIT) -> str:
    """The topic's id as Kafka's tools print it (base64url): the first part of Switchyard's epoch
    `<topic id>.<partition>`."""
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import AdminClient
    topic_partitions(bootstrap, topic, timeout)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    desc = admin.describe_topics(TopicCollection([topic]))[topic].result(timeout)
    # librdkafka prints the UUID in standard base64; Kafka's own tools (and Switchyard) use base64url, unpadded.
    return str(desc.topic_id).replace("+", "-").replace("/", "_").rstrip("=")


def epoch_of_record(bootstrap: str, record: Record) -> str:
    """The epoch Switchyard gives the record's partition."""
    return f"{topic_id(bootstrap, record.topic)}.{record.partition}"


def read_topic(bootstrap: str, topic: str, timeout: float = KAFKA_WAIT) -> list[Record]:
    """Every record of every partition of `topic`, read from the beginning to the end (partition-EOF events,
    not watermarks: Tansu's ListOffsets is off by a batch), sorted by (partition, offset)."""
    parts = topic_partitions(bootstrap, topic, timeout)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"e2e-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "enable.partition.eof": True, "client.id": "e2e-reader"})
    try:
        c.assign([TopicPartition(topic, p, 0) for p in parts])  # offset 0: Tansu keeps everything
        eof: set[int] = set()
        got: list[Record] = []
        deadline = time.monotonic() + timeout
        while len(eof) < len(parts):
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic}: no end of partitions {sorted(set(parts) - eof)} after "
                                     f"{timeout:.0f}s; got {got}")
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                    continue
                raise AssertionError(f"reading {topic}: {m.error()}")
            eof.discard(m.partition())
            got.append(Record(m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.headers()))
        return sorted(got, key=lambda r: (r.partition, r.offset))
    finally:
        c.close()


def wait_for_records(bootstrap: str, topic: str, pred: Callable[[list[Record]], Any], timeout: float = KAFKA_WAIT,
                     what: str = "records") -> list[Record]:
    """Reads the topic again until `pred(records)` holds."""
    deadline = time.monotonic() + timeout
    last: list[Record] = []
    while time.monotonic() < deadline:
        try:
            last = read_topic(bootstrap, topic, timeout=max(1.0, deadline - time.monotonic()))
        except AssertionError:
            last = []
        if pred(last):
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} in {topic}; last read: {last}")


# --- kcat ----------------------------------------------------------------------------------------------------

def kcat_env() -> dict[str, str]:
    env = dict(os.environ)
    if RDKAFKA_LIB.is_dir():  # Debian 12's kcat links librdkafka 2.0.2, which cannot talk to Tansu
        env["LD_LIBRARY_PATH"] = str(RDKAFKA_LIB) + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH")
                                                     else "")
    return env


def kcat(args: Sequence[str], input: bytes | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess:
    if KCAT is None:
        pytest.fail("kcat is not installed (scripts/build-librdkafka.sh installs it)", pytrace=False)
    try:
        proc = subprocess.run([KCAT, *args], input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=kcat_env(), timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"kcat {' '.join(args)} did not finish within {timeout:.0f}s: {e}")
    assert proc.returncode == 0, (f"kcat {' '.join(args)} failed (rc={proc.returncode}):\n"
                                  f"{proc.stderr.decode(errors='replace')}")
    return proc


def kcat_produce(bootstrap: str, topic: str, records: Sequence[tuple[str | None, str]]):
    """Produces `key:value` lines with kcat (-K:); a None key gives a line without the delimiter: a null key."""
    lines = []
    for key, value in records:
        assert "\n" not in value and (key is None or ":" not in key), "kcat lines cannot hold these"
        lines.append(value if key is None else f"{key}:{value}")
    kcat(["-P", "-b", bootstrap, "-t", topic, "-K:"], input=("\n".join(lines) + "\n").encode())


def kcat_read(bootstrap: str, topic: str) -> list[Record]:
    """Every record of `topic` as kcat sees it (-C -e: until the end of every partition, JSON envelopes)."""
    proc = kcat(["-C", "-b", bootstrap, "-t", topic, "-e", "-q", "-J"])
    out = []
    for line in proc.stdout.decode(errors="replace").splitlines():
        if not line.strip():
            continue
        j = json.loads(line)
        key = j.get("key")
        value = j.get("payload")
        out.append(Record(j["topic"], j["partition"], j["offset"], None if key is None else key.encode(),
                          None if value is None else value.encode()))
    return sorted(out, key=lambda r: (r.partition, r.offset))

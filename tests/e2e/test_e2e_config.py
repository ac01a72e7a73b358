"""Issue 2, items 1 and 5 (config): the shipped switchyard.conf, and config errors that stop start-up with a
message naming the file, the line and the parameter."""

from __future__ import annotations

import re
import shutil

import pytest

from e2e_helpers import REPO, Broker, Client, processes_mentioning, run, running, unique_subject

SHIPPED = REPO / "switchyard.conf"

# DESIGN.md §5: the shipped standalone config.
EXPECTED_SHIPPED = {
    "Listen": "*:8800",
    "ClusterEngine": "none",
    "MaxCachedMessagesPerSubject": "1000",
    "CacheExpireTime": "180",
    "RunDir": "var/run",
    "LogFolder": "var/log",
    "LogLevel": "INFO",
    "KafkaConsumerConfig": "kafka/consumer.properties",
    "KafkaProducerConfig": "kafka/producer.properties",
}


def parse_conf(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        k, _, v = line.partition("=")
        out[k.strip()] = v.strip()
    return out


def test_shipped_config_is_the_standalone_config_of_the_design():
    params = parse_conf(SHIPPED.read_text())
    assert params == EXPECTED_SHIPPED


def test_shipped_config_starts_a_working_broker(tmp_path):
    """`make run` uses switchyard.conf: the same file (only the port changed) must start and serve."""
    work = tmp_path / "shipped"
    work.mkdir()
    if (REPO / "kafka").is_dir():
        shutil.copytree(REPO / "kafka", work / "kafka")
    b = Broker(work, name="switchyard")
    text = SHIPPED.read_text()
    text, n = re.subn(r"(?m)^(\s*Listen\s*=\s*)\S+", rf"\g<1>127.0.0.1:{b.port}", text)
    assert n == 1
    text += f"MonitorListen = 127.0.0.1:{b.monitor_port}\n"  # the default port may be taken on a shared host
    b.conf.write_text(text)  # RunDir/LogFolder stay relative: to the config file's folder
    b.run_dir, b.log_dir = work / "var" / "run", work / "var" / "log"
    with running(b):
        s = unique_subject("shipped")

        async def scenario():
            async with await Client.connect(b.url) as c:
                await c.subscribe([s])
                await c.publish_ok(s, "hello")
                assert (await c.messages(s, 1))[0]["content"] == "hello"

        run(scenario(), 30)
        assert b.pid_file("cache").exists(), \
            f"RunDir = var/run should be relative to the config file's folder ({work})"
        assert b.log_path("ws-ingress").exists(), \
            f"LogFolder = var/log should be relative to the config file's folder ({work})"


def start_must_fail(b: Broker, line_no: int, parameter: str | None):
    r = b.cli("start", timeout=60)
    try:
        assert r.rc != 0, f"start succeeded with a bad config:\n{b.conf.read_text()}\n{r.output}"
        out = r.output
        assert b.conf.name in out, f"the message does not name the file {b.conf.name}:\n{out}"
        assert re.search(rf"(line\s*{line_no}\b|:{line_no}\b)", out, re.I), \
            f"the message does not name line {line_no}:\n{out}"
        if parameter:
            assert parameter in out, f"the message does not name the parameter {parameter}:\n{out}"
        left = processes_mentioning(str(b.dir))
        assert not left, f"a failed start left processes behind: {left}"
    finally:
        b.cli("stop", timeout=60)  # in case it did start something


def bad_config_broker(tmp_path, param: str, value: str) -> tuple[Broker, int]:
    """A config whose only problem is `param = value`; returns it and that line's number."""
    b = Broker(tmp_path, name="badconf")
    b.params.pop(param, None)
    bad_line = f"{param} = {value}"
    b.write_config(extra_lines=["", "# the next line is wrong", bad_line, "# end"])
    lines = b.conf.read_text().splitlines()
    return b, lines.index(bad_line) + 1


def test_unknown_parameter_stops_start(tmp_path):
    b, line_no = bad_config_broker(tmp_path, "MaxCachedMesagesPerSubject", "10")
    start_must_fail(b, line_no, "MaxCachedMesagesPerSubject")


@pytest.mark.parametrize("param,value", [
    ("CacheExpireTime", "soon"),
    ("MaxCachedMessagesPerSubject", "-5"),
    ("Listen", "nowhere"),
    ("Listen", "127.0.0.1:99999"),
    ("ClusterEngine", "zookeeper"),
    ("LogLevel", "LOUDEST"),
    ("MessageSizeLimit", "12abc"),
])
def test_bad_value_stops_start(tmp_path, param, value):
    b, line_no = bad_config_broker(tmp_path, param, value)
    start_must_fail(b, line_no, param)


def test_line_without_equals_sign_stops_start(tmp_path):
    b = Broker(tmp_path, name="badconf")
    b.write_config(extra_lines=["", "JustSomeWords", "# end"])
    line_no = b.conf.read_text().splitlines().index("JustSomeWords") + 1
    start_must_fail(b, line_no, None)


def test_optional_parameters_with_their_defaults_are_accepted(make_broker):
    b = make_broker(MessageSizeLimit=131072, ClientBufferLimit=4194304, PublishTimeout=10,
                    IngressInstances=1, CacheInstances=1, FanoutInstances=1, LogRotateLimit=104857600,
                    MaxCachedMessagesPerSubject=1000, CacheExpireTime=180)
    s = unique_subject("defaults")

    async def scenario():
        async with await Client.connect(b.url) as c:
            await c.subscribe([s])
            await c.publish_ok(s, "ok")
            assert (await c.messages(s, 1))[0]["seq"] == 1

    run(scenario(), 30)

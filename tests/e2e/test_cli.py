"""Issue 9: switchyard-cli against real stacks.

- `pub` publishes its CONTENT or each line of standard input and exits 0 once every publish_status is OK; it
  exits 1 with the status on stderr on MESSAGE_SIZE_LIMIT_EXCEEDED or FAILED, and 3 when no server answers.
- `sub` prints one JSON line (subject, seq, epoch, type, content) or the bare content per message, works at the
  head of a shell pipe, and exits after --count messages; it exits 1 when every subject is refused.
- `sub` keeps going across a ws-ingress restart mid-stream: every confirmed message once, in consecutive seqs.
- `sub` notices a server that went silent (SIGSTOP) through its keepalive, and reconnects once it is back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest

from e2e_helpers import BIN_DIR, REPO, free_port, unique_subject, wait_until
from operate_fixtures import frozen_bin  # noqa: F401  (fixtures)

CLI = BIN_DIR / "switchyard-cli"


@pytest.fixture(scope="module", autouse=True)
def cli_built():
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: run `make build`")


def cli(*args: str, stdin: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *args], input=stdin, capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def test_pub_lines_then_sub_history_through_a_pipe(broker):
    subject = unique_subject("cli")
    r = cli("pub", subject, "--url", broker.url, stdin="alpha\nbeta\ngamma\n")
    assert r.returncode == 0, r
    r = cli("pub", subject, "delta", "--url", broker.url, "--closure", "c9", "--retained", "false")
    assert r.returncode == 0, r

    # sub at the head of a pipe: its lines flow through as they arrive, and it exits after --count
    pipe = subprocess.run(f"'{CLI}' sub '{subject}' --url '{broker.url}' --history 4 --count 4 --format content"
                          " | tr a-z A-Z", shell=True, capture_output=True, text=True, timeout=30)
    assert pipe.returncode == 0, pipe
    assert pipe.stdout.split("\n") == ["ALPHA", "BETA", "GAMMA", "DELTA", ""], pipe

    r = cli("sub", subject, "--url", broker.url, "--history", "2", "--count", "2")
    assert r.returncode == 0, r
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(m["subject"], m["seq"], m["type"], m["content"]) for m in lines] == \
        [(subject, 3, "historical", "gamma"), (subject, 4, "historical", "delta")], lines
    assert lines[1]["closure"] == "c9" and lines[1]["retained"] is False and lines[0]["epoch"], lines


def test_pub_exits_non_zero_with_the_status(limits_broker):
    subject = unique_subject("cli")
    r = cli("pub", subject, "x" * 2000, "--url", limits_broker.url)
    assert r.returncode == 1 and "MESSAGE_SIZE_LIMIT_EXCEEDED" in r.stderr, r
    r = cli("pub", "no-slash", "x", "--url", limits_broker.url)
    assert r.returncode == 1 and "FAILED" in r.stderr, r
    # one bad line among good ones: the good ones are published, the run still fails
    r = cli("pub", subject, "--url", limits_broker.url, stdin="ok1\n" + "y" * 2000 + "\nok2\n")
    assert r.returncode == 1 and r.stderr.count("MESSAGE_SIZE_LIMIT_EXCEEDED") == 1, r
    r = cli("sub", subject, "--url", limits_broker.url, "--history", "2", "--count", "2", "--format", "content")
    assert r.returncode == 0 and r.stdout == "ok1\nok2\n", r

    r = cli("sub", "no-slash", "--url", limits_broker.url, "--count", "1")
    assert r.returncode == 1 and "INVALID" in r.stderr and r.stdout == "", r

    r = cli("pub", subject, "x", "--url", f"ws://127.0.0.1:{free_port()}/")
    assert r.returncode == 3 and "cannot connect" in r.stderr, r
    r = cli("pub", subject, "x", "--url", "http://nowhere/")
    assert r.returncode == 64 and "--url" in r.stderr, r


def test_sub_recovers_across_an_ingress_restart_mid_stream(make_broker, frozen_bin, tmp_path):  # noqa: F811
    b = make_broker(name="clirestart", PublishTimeout=3)
    subject = unique_subject("cli")
    out_path, err_path = tmp_path / "sub.out", tmp_path / "sub.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        sub = subprocess.Popen([str(CLI), "sub", subject, "--url", b.url], stdout=out, stderr=err)
    ok: list[str] = []
    stop = threading.Event()

    def keep_publishing():
        n = 0
        while not stop.is_set():
            n += 1
            if cli("pub", subject, f"m{n}", "--url", b.url).returncode == 0:
                ok.append(f"m{n}")
            time.sleep(0.02)

    publisher = threading.Thread(target=keep_publishing)
    try:
        wait_until(lambda: "connected" in err_path.read_text(), 10, 0.1, "sub connected")
        publisher.start()
        wait_until(lambda: len(ok) >= 10, 15, 0.1, "first publishes")
        r = b.cli("restart", "ws-ingress")
        assert r.rc == 0, r
        count = len(ok)
        wait_until(lambda: len(ok) >= count + 10, 20, 0.1, "publishes after the restart")
    finally:
        stop.set()
        if publisher.is_alive():
            publisher.join(30)
    try:
        last = ok[-1]
        wait_until(lambda: f'"content":"{last}"' in out_path.read_text(), 15, 0.1, "sub printed the last message")
    finally:
        sub.send_signal(signal.SIGINT)
        sub.wait(10)
    messages = [json.loads(line) for line in out_path.read_text().splitlines()]
    seqs = [m["seq"] for m in messages]
    assert all(b == a + 1 for a, b in zip(seqs, seqs[1:])), f"gap or duplicate in {seqs}"
    missing = set(ok) - {m["content"] for m in messages}
    assert not missing, f"sub missed confirmed messages {sorted(missing)}"
    stderr = err_path.read_text()
    assert "1012" in stderr and stderr.count("connected to") >= 2, stderr


def test_sub_notices_a_silent_server_and_reconnects(make_broker, tmp_path):
    b = make_broker(name="clisilent")
    subject = unique_subject("cli")
    out_path, err_path = tmp_path / "sub.out", tmp_path / "sub.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        sub = subprocess.Popen([str(CLI), "sub", subject, "--url", b.url, "--keepalive", "1", "--count", "2",
                                "--format", "content"], stdout=out, stderr=err)
    try:
        wait_until(lambda: "connected" in err_path.read_text(), 10, 0.1, "sub connected")
        assert cli("pub", subject, "before", "--url", b.url).returncode == 0
        wait_until(lambda: out_path.read_text() == "before\n", 10, 0.1, "sub printed the first message")
        ingress = b.pid("ws-ingress")
        os.kill(ingress, signal.SIGSTOP)
        try:
            wait_until(lambda: "no answer to ping" in err_path.read_text(), 10, 0.1, "sub noticed the silence")
        finally:
            os.kill(ingress, signal.SIGCONT)
        assert cli("pub", subject, "after", "--url", b.url).returncode == 0
        assert sub.wait(20) == 0
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    assert out_path.read_text() == "before\nafter\n"
    assert err_path.read_text().count("connected to") >= 2, err_path.read_text()

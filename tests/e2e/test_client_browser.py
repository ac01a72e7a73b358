"""Issue 9: the JavaScript client (clients/js/switchyard.js) and the demo page, in a real headless Chromium
against real stacks started by the supervisor.

- ws-ingress serves the demo page at `/` and the client at `/switchyard.js` (GET and HEAD; other methods 405).
- The demo page shows live data: every simulated car's speed and seq arrive in its table; a notification sent
  from its form comes back; a screenshot is saved under the test's temporary folder. On a Kafka-mode node
  configured like `make run-kafka` (consuming `notifications` only) the speeds land in topic `vehicles` and the
  notification comes back through Kafka.
- publish() resolves "OK" and rejects with the server's status (MESSAGE_SIZE_LIMIT_EXCEEDED, FAILED) or the
  client's own (QUEUE_FULL, CLOSED); binary content round-trips as a Uint8Array.
- While a publisher keeps publishing, subscribers see every seq exactly once across kill -9 of ws-ingress and
  across `scale ws-ingress 2` then `1`; a standalone cache restart is surfaced as DATA_RESYNC.

Chromium runs headless and only ever loads pages from 127.0.0.1.
"""

from __future__ import annotations

import http.client
import time
from pathlib import Path

import pytest

from browser_helpers import browser, browser_wait, open_harness, summary  # noqa: F401 (fixture)
from e2e_helpers import Broker, free_port, pid_alive, running, unique_subject, wait_until
from kafka_helpers import make_kafka_broker, read_topic, tansu  # noqa: F401  (fixtures)
from operate_fixtures import frozen_bin  # noqa: F401  (fixtures)

def http_request(port: int, method: str, path: str) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def assert_consecutive(messages: list[dict], who: str):
    seqs = [m["seq"] for m in messages]
    assert seqs, f"{who} received nothing"
    assert len({m["epoch"] for m in messages}) == 1, f"{who}: epochs changed: {sorted({m['epoch'] for m in messages})}"
    gaps = [(a, b) for a, b in zip(seqs, seqs[1:]) if b != a + 1]
    assert not gaps, f"{who}: seq not consecutive (gap or duplicate) at {gaps[:10]} of {len(seqs)} messages"


# --- the files ws-ingress serves --------------------------------------------------------------------------

def test_ingress_serves_the_demo_page_and_the_client(broker):
    status, headers, body = http_request(broker.port, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html"), (status, headers)
    assert headers["cache-control"] == "no-cache" and b"/demo.js" in body
    status, headers, body = http_request(broker.port, "GET", "/switchyard.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript"), (status, headers)
    assert b"export class SwitchyardClient" in body
    repo_copy = Path(__file__).resolve().parents[2] / "clients" / "js" / "switchyard.js"
    assert body == repo_copy.read_bytes(), "the served client is not clients/js/switchyard.js (stale build?)"
    status, headers, body = http_request(broker.port, "HEAD", "/demo.js")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0, (status, headers)
    status, headers, _ = http_request(broker.port, "POST", "/switchyard.js")
    assert status == 405 and headers["allow"] == "GET, HEAD", (status, headers)
    assert http_request(broker.port, "GET", "/nope.js")[0] == 404
    assert http_request(broker.port, "GET", "/ws")[0] == 426


def test_demo_page_shows_live_data(broker, browser, tmp_path):
    browser.get(f"http://127.0.0.1:{broker.port}/?cars=3")
    browser_wait(browser, "return document.getElementById('connection').textContent === 'CONNECTED'", 15,
                 "the demo page connected")
    # every car's row gets a speed and a seq from the subscription (one publish per car per second)
    rows = browser_wait(browser, """
        const rows = [...document.querySelectorAll('#vehicles tr')].map(r => ({
            car: r.dataset.car, speed: r.querySelector('.speed').textContent,
            seq: r.querySelector('.seq').textContent, ack: r.querySelector('.ack').textContent }));
        return rows.every(r => Number(r.seq) >= 2 && r.ack.startsWith('OK')) ? rows : null;
    """, 20, "every car shows a live speed and seq")
    assert [r["car"] for r in rows] == ["car1", "car2", "car3"]
    assert all(0 <= int(r["speed"]) <= 180 for r in rows), rows

    browser.find_element("id", "notify-text").send_keys("road works ahead")
    browser.find_element("css selector", "#notify button").click()
    browser_wait(browser, "return document.getElementById('notifications').textContent"
                          ".includes('/notifications/car1') && document.getElementById('notify-result')"
                          ".textContent.endsWith('OK')", 10, "the notification came back")

    shot = tmp_path / "demo.png"
    assert browser.save_screenshot(str(shot))
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, f"screenshot {shot}: {len(data)} bytes"
    counters = browser.execute_script("return window.switchyardDemo.counters")
    assert counters["received"] >= 6 and counters["failed"] == 0, counters


def test_demo_page_in_kafka_mode_publishes_speeds_into_topic_vehicles(tansu, make_kafka_broker,  # noqa: F811
                                                                      browser):
    node = make_kafka_broker(tansu.bootstrap, name="kdemo", topics=["notifications"])
    browser.get(f"http://127.0.0.1:{node.port}/?cars=2")
    browser_wait(browser, "return [...document.querySelectorAll('#vehicles .ack')]"
                          ".every(c => c.textContent.startsWith('OK'))", 30, "Kafka confirmed every car's publish")
    browser.find_element("id", "notify-car").send_keys("car2")
    browser.find_element("id", "notify-text").send_keys("service due")
    browser.find_element("css selector", "#notify button").click()
    browser_wait(browser, "return document.getElementById('notifications').textContent"
                          ".includes('/notifications/car2')", 20, "the notification came back through Kafka")
    keys = {r.key for r in read_topic(tansu.bootstrap, "vehicles")}
    assert keys == {b"car1/speed", b"car2/speed"}, keys
    notes = read_topic(tansu.bootstrap, "notifications")
    assert [(r.key, r.value) for r in notes] == [(b"car2", b"service due")], notes


# --- publish results -----------------------------------------------------------------------------------------

def test_publish_resolves_ok_and_rejects_with_the_status(limits_broker, browser):
    open_harness(browser, limits_broker)
    subject = unique_subject("js")
    dead = f"ws://127.0.0.1:{free_port()}/"
    result = browser.execute_async_script("""
        const [server, dead, subject] = arguments;
        const done = arguments[arguments.length - 1];
        const outcome = p => p.then(v => v, e => (e instanceof T.SY.PublishError ? e.status : "not a PublishError"));
        (async () => {
            const client = new T.SY.SwitchyardClient({ servers: [server] });
            const binary = new Promise(resolve => client.subscribe([subject], resolve, {}));
            await new Promise(resolve => client.onStatus(e => e.status === "SUBSCRIBE_ALLOW" && resolve()));
            const r = {
                ok: await outcome(client.publish(subject, new Uint8Array([0, 1, 254, 255]), { closure: "c1" })),
                tooLarge: await outcome(client.publish(subject, "x".repeat(2000))),
                invalid: await outcome(client.publish("no-slash", "x")),
            };
            const message = await binary;
            r.binary = { content: Array.from(message.content), isBytes: message.content instanceof Uint8Array,
                         closure: message.closure, seq: message.seq };
            client.close();
            r.afterClose = await outcome(client.publish(subject, "late"));
            // Nothing listens at `dead`: two publishes wait for a connection, the third finds the queue full.
            const offline = new T.SY.SwitchyardClient({ servers: [dead], maxQueuedPublishes: 2 });
            const waiting = [offline.publish(subject, "a"), offline.publish(subject, "b")].map(outcome);
            r.queueFull = await outcome(offline.publish(subject, "c"));
            offline.close();
            r.waiting = await Promise.all(waiting);
            return r;
        })().then(done, e => done(String(e)));
    """, limits_broker.url, dead, subject)
    assert isinstance(result, dict), result
    assert result["ok"] == "OK", result
    assert result["tooLarge"] == "MESSAGE_SIZE_LIMIT_EXCEEDED", result
    assert result["invalid"] == "FAILED", result
    assert result["binary"] == {"content": [0, 1, 254, 255], "isBytes": True, "closure": "c1", "seq": 1}, result
    assert result["afterClose"] == "CLOSED" and result["queueFull"] == "QUEUE_FULL", result
    assert result["waiting"] == ["CLOSED", "CLOSED"], result


# --- recovery across ingress and cache failures ---------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory, frozen_bin):  # noqa: F811
    with running(Broker(tmp_path_factory.mktemp("jsrecovery"), name="jsrecovery", PublishTimeout=3)) as b:
        yield b


def run_stream(driver, broker: Broker, action, subscribers: int = 3):
    """Subscribers and a publisher (50 publishes/s) in the page; `action()` runs mid-stream; then every message
    the publisher had confirmed must reach every subscriber, in consecutive seqs. Returns the subscribers' records."""
    open_harness(driver, broker)
    subject = unique_subject("js")
    servers = [broker.url]
    names = [f"sub{i}" for i in range(subscribers)]
    for name in names:
        driver.execute_script("T.subscriber(arguments[0], arguments[1], [arguments[2]])", name, servers, subject)
    driver.execute_script("T.publisher('pub', arguments[0], arguments[1], 20)", servers, subject)
    browser_wait(driver, "return arguments[0].every(n => T.clients[n].messages.length >= 20)", 15,
                 "subscribers receive the stream", names)
    try:
        action(names)
        ok_before = len(summary(driver, "pub")["ok"])
        browser_wait(driver, "return T.clients.pub.ok.length >= arguments[0] + 50", 30,
                     "the publisher publishes again after the action", ok_before)
    finally:
        driver.execute_script("T.stop('pub')")
    ok = summary(driver, "pub")["ok"]
    browser_wait(driver, """
        const last = arguments[1];
        return arguments[0].every(n => T.clients[n].messages.some(m => m.content === last));
    """, 15, "every subscriber got the last confirmed message", names, ok[-1])
    subs = {name: summary(driver, name) for name in names}
    driver.execute_script("T.closeAll()")
    for name, record in subs.items():
        assert_consecutive(record["messages"], name)
        missing = set(ok) - {m["content"] for m in record["messages"]}
        assert not missing, f"{name} missed {len(missing)} confirmed messages, e.g. {sorted(missing)[:5]}"
        assert not [s for s in record["statuses"] if s["status"] == "DATA_RESYNC"], record["statuses"]
    return subs


def test_no_gap_no_duplicate_across_kill_9_of_ws_ingress(stack, browser):
    def kill(names):
        old = stack.pid("ws-ingress")
        stack.kill_stage("ws-ingress")
        wait_until(lambda: not pid_alive(old), 10, 0.1, "ws-ingress gone")
        browser_wait(browser, "return arguments[0].every(n => T.clients[n].statuses.filter("
                              "s => s.status === 'CONNECTED').length >= 2)", 30,
                     "every subscriber reconnected", names)

    subs = run_stream(browser, stack, kill)
    for name, record in subs.items():
        kinds = [s["status"] for s in record["statuses"]]
        assert "DISCONNECTED" in kinds and kinds.count("CONNECTED") >= 2, f"{name}: {kinds}"


def ingress_connections(broker: Broker) -> dict[int, int]:
    return {int(r["instance"]): int(r.get("connections") or 0) for r in broker.status_json()
            if r.get("stage") == "ws-ingress" and r.get("state") == "up"}


def test_no_gap_no_duplicate_across_scale_ws_ingress_2_then_1(stack, browser):
    def scale(names):
        r = stack.cli("scale", "ws-ingress", "2")
        assert r.rc == 0, r
        # Move subscribers to ingress 1 (a reconnect lands on either: SO_REUSEPORT) until it holds at least two
        # connections: one publisher at most, so at least one subscriber is closed by the scale-down.
        for _ in range(10):
            for name in names:
                browser.execute_script("T.dropConnection(arguments[0])", name)
            time.sleep(0.3)
            browser_wait(browser, "return arguments[0].every(n => T.clients[n].client.connected)", 15,
                         "subscribers reconnected", names)
            if ingress_connections(stack).get(1, 0) >= 2:
                break
        assert ingress_connections(stack).get(1, 0) >= 2, ingress_connections(stack)
        r = stack.cli("scale", "ws-ingress", "1")
        assert r.rc == 0, r

    subs = run_stream(browser, stack, scale, subscribers=4)
    closes = [s.get("code") for r in subs.values() for s in r["statuses"] if s["status"] == "DISCONNECTED"]
    assert 1012 in closes, f"no subscriber was closed by the scale-down: {closes}"
    # every other drop was ours (seen as 1005/1006 from the browser's side)
    assert set(closes) <= {1005, 1006, 1012}, closes


def test_cache_restart_surfaces_data_resync(stack, browser):
    open_harness(browser, stack)
    subject = unique_subject("js")
    browser.execute_script("T.subscriber('s', [arguments[0]], [arguments[1]])", stack.url, subject)
    browser.execute_script("T.publisher('pub', [arguments[0]], arguments[1], 50)", stack.url, subject)
    browser_wait(browser, "return T.clients.s.messages.length >= 5", 15, "the subscriber receives")
    r = stack.cli("restart", "cache")
    assert r.rc == 0, r
    record = browser_wait(browser, """
        const r = T.summary('s');
        return r.statuses.some(s => s.status === 'DATA_RESYNC') && new Set(r.messages.map(m => m.epoch)).size === 2
            ? r : null;""", 20, "DATA_RESYNC and the new epoch")
    browser.execute_script("T.closeAll()")
    resync = [s for s in record["statuses"] if s["status"] == "DATA_RESYNC"]
    assert resync and all(s["subject"] == subject for s in resync), record["statuses"]
    # within each epoch the seqs are consecutive: no gap and no duplicate around the resync
    for epoch in {m["epoch"] for m in record["messages"]}:
        assert_consecutive([m for m in record["messages"] if m["epoch"] == epoch], f"epoch {epoch}")

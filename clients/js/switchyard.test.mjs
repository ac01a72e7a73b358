// Unit tests of switchyard.js's decisions against a scripted fake WebSocket:
//   node --test clients/js/switchyard.test.mjs
// (The end-to-end tests run the module in Chromium against real stacks: tests/e2e/test_client_browser.py.)
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { SwitchyardClient, backoffDelay, decodeBase64, encodeBase64 } from "./switchyard.js";

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

/** Waits (up to 5 s) until `condition()` holds: timers run late on a loaded machine, so no fixed sleeps. */
async function until(condition, what = "condition") {
    for (const started = Date.now(); !condition(); await sleep(2)) {
        if (Date.now() - started > 5000) throw new Error(`timed out waiting for ${what}`);
    }
}

/** Opens asynchronously like a browser's WebSocket; the test plays the server with `receive`. */
function fakeWebSocketClass() {
    const sockets = [];
    class FakeWebSocket {
        constructor(url) {
            this.url = url;
            this.sent = [];
            sockets.push(this);
            setTimeout(() => this.onopen?.(), 1);
        }
        send(text) { this.sent.push(JSON.parse(text)); }
        close(code = 1005) { setTimeout(() => this.onclose?.({ code, reason: "" }), 1); }
        receive(frame) { this.onmessage?.({ data: JSON.stringify(frame) }); }
    }
    return { FakeWebSocket, sockets };
}

/** Every client a test made is closed after it, also when an assertion failed, so no timer keeps Node alive. */
const clients = [];
afterEach(() => { for (const client of clients.splice(0)) client.close(); });

function makeClient(options = {}) {
    const { FakeWebSocket, sockets } = fakeWebSocketClass();
    const client = new SwitchyardClient({ servers: ["ws://a/", "ws://b/"], WebSocket: FakeWebSocket,
                                          reconnect: { minDelayMs: 5, maxDelayMs: 20 }, ...options });
    const events = [];
    client.onStatus(event => events.push(event));
    clients.push(client);
    return { client, sockets, events };
}

const message = (seq, epoch = "E", type = "update") =>
    ({ op: "message", subject: "/a/b", content: `m${seq}`, seq, epoch, type, retained: true });

test("resubscribes with the last position after a reconnect, elsewhere, and never delivers twice", async () => {
    const { client, sockets, events } = makeClient({ token: "t" });
    const seqs = [];
    client.subscribe(["/a/b"], m => seqs.push(m.seq), { history: 3 });
    await until(() => sockets[0]?.sent.length >= 2, "the first connection's subscribe");
    assert.deepEqual(sockets[0].sent, [{ op: "connect", token: "t" },
                                       { op: "subscribe", subjects: ["/a/b"], history: 3 }]);
    for (const seq of [1, 2, 2, 1]) sockets[0].receive(message(seq));
    sockets[0].close(1012);
    await until(() => sockets[1]?.sent.length >= 2, "the second connection's subscribe");
    assert.notEqual(sockets[1].url, sockets[0].url, "1012: reconnect to the next server");
    assert.deepEqual(sockets[1].sent[1],
                     { op: "subscribe", subjects: ["/a/b"], recover: { "/a/b": { epoch: "E", seq: 2 } } });
    sockets[1].receive(message(2, "E", "recovered"));
    sockets[1].receive(message(3, "E", "recovered"));
    sockets[1].receive({ op: "status", subject: "/a/b", status: "DATA_SYNC" });
    assert.deepEqual(seqs, [1, 2, 3]);
    assert.deepEqual(events.map(e => e.status),
                     ["CONNECTED", "DISCONNECTED", "CONNECTED", "DATA_SYNC"]);
    assert.equal(events[1].code, 1012);
    client.close();
});

test("a new epoch after DATA_RESYNC is delivered from its first message", async () => {
    const { client, sockets, events } = makeClient();
    const received = [];
    client.subscribe("/a/b", m => received.push(`${m.epoch}${m.seq}`));
    await until(() => sockets[0]?.sent.length >= 1, "the subscribe");
    sockets[0].receive(message(7));
    sockets[0].receive({ op: "status", subject: "/a/b", status: "DATA_RESYNC" });
    sockets[0].receive(message(1, "F", "snapshot"));
    assert.deepEqual(received, ["E7", "F1"]);
    assert.deepEqual(events.at(-1), { status: "DATA_RESYNC", subject: "/a/b" });
    client.close();
});

test("publish resolves OK, rejects with the server's status, and fails in-flight publishes on a drop", async () => {
    const { client, sockets, events } = makeClient();
    await until(() => events.length >= 1, "the connection");
    const ok = client.publish("/a/b", "x");
    const bad = client.publish("/a/b", new Uint8Array([1, 2, 3]), { closure: "c1", retained: false });
    const [first, second] = sockets[0].sent;
    assert.deepEqual(second, { op: "publish", subject: "/a/b", content: "AQID", encoding: "base64", closure: "c1",
                               retained: false });
    sockets[0].receive({ op: "publish_status", closure: first.closure, status: "OK" });
    sockets[0].receive({ op: "publish_status", closure: "c1", status: "MESSAGE_SIZE_LIMIT_EXCEEDED" });
    assert.equal(await ok, "OK");
    await assert.rejects(bad, { name: "PublishError", status: "MESSAGE_SIZE_LIMIT_EXCEEDED" });
    const lost = client.publish("/a/b", "y");
    sockets[0].close(1006);
    await assert.rejects(lost, { status: "CONNECTION_LOST" });
    client.close();
});

test("publishes made while disconnected wait in a bounded queue and go out on the next connection", async () => {
    const { client, sockets } = makeClient({ maxQueuedPublishes: 1 });
    const queued = client.publish("/a/b", "q");  // the socket is not open yet
    await assert.rejects(client.publish("/a/b", "r"), { status: "QUEUE_FULL" });
    await until(() => sockets[0]?.sent.some(f => f.op === "publish"), "the queued publish");
    const sent = sockets[0].sent.find(f => f.op === "publish");
    assert.equal(sent.content, "q");
    sockets[0].receive({ op: "publish_status", closure: sent.closure, status: "OK" });
    assert.equal(await queued, "OK");
    client.close();
    await assert.rejects(client.publish("/a/b", "late"), { status: "CLOSED" });
});

test("refusals and server errors become status events", async () => {
    const { client, sockets, events } = makeClient();
    client.subscribe(["/a/b", "/c"], () => {});
    await until(() => sockets[0]?.sent.length >= 1, "the subscribe");
    sockets[0].receive({ op: "subscribed", subject: "/c", status: "DENY", reason: "no" });
    sockets[0].receive({ op: "error", code: "RATE_LIMITED", reason: "too many publishes" });
    sockets[0].receive({ op: "status", status: "TOKEN_TO_EXPIRE" });
    assert.deepEqual(events.slice(1), [
        { status: "SUBSCRIBE_DENY", subject: "/c", reason: "no" },
        { status: "RATE_LIMITED", code: "RATE_LIMITED", reason: "too many publishes" },
        { status: "TOKEN_TO_EXPIRE" },
    ]);
    sockets[0].close(1006);
    await until(() => sockets[1]?.sent.length >= 1, "the resubscribe");
    assert.deepEqual(sockets[1].sent[0].subjects, ["/a/b"], "a denied subject is not subscribed again");
    client.close();
});

test("the servers must be WebSocket URLs", () => {
    const { FakeWebSocket } = fakeWebSocketClass();
    for (const servers of [[], ["http://a/"], ["ws://"], [42], undefined]) {
        assert.throws(() => new SwitchyardClient({ servers, WebSocket: FakeWebSocket }), TypeError);
    }
});

test("backoff grows exponentially with jitter up to the maximum", () => {
    for (const [failures, low, high] of [[0, 125, 250], [3, 1000, 2000], [20, 5000, 10000]]) {
        for (let i = 0; i < 50; i++) {
            const delay = backoffDelay(failures, 250, 10000);
            assert.ok(delay >= low && delay <= high, `${failures} failures: ${delay}`);
        }
    }
});

test("base64 round-trips every byte", () => {
    const bytes = Uint8Array.from({ length: 256 }, (_, i) => i);
    assert.equal(encodeBase64(new Uint8Array([0, 1, 254, 255, 7])), "AAH+/wc=");
    for (let n = 0; n < 5; n++) assert.deepEqual(decodeBase64(encodeBase64(bytes.slice(n))), bytes.slice(n));
});

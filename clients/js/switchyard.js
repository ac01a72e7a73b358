// Switchyard JavaScript client: one dependency-free ES module for browsers (and Node 22+, whose global
// WebSocket it uses; older runtimes pass a WebSocket class in the options).
//
//   import { SwitchyardClient } from "./switchyard.js";
//   const client = new SwitchyardClient({ servers: ["ws://127.0.0.1:8800/"] });
//   client.subscribe(["/a/b"], message => console.log(message.content));
//   await client.publish("/a/b", "hello");
//
// Recovery: the client remembers the {epoch, seq} of the last message it delivered on every subject and hands
// it back when it (re)subscribes after a reconnect, so across a reconnect nothing is missed (the server sends
// DATA_RESYNC when it cannot fill the gap) and nothing is delivered twice. See docs/CLIENTS.md.

/** Statuses surfaced through `onStatus`. */
export const Status = Object.freeze({
    CONNECTED: "CONNECTED",
    DISCONNECTED: "DISCONNECTED",
    DATA_SYNC: "DATA_SYNC",
    DATA_RESYNC: "DATA_RESYNC",
    SUBSCRIBE_ALLOW: "SUBSCRIBE_ALLOW",
    SUBSCRIBE_DENY: "SUBSCRIBE_DENY",
    SUBSCRIBE_INVALID: "SUBSCRIBE_INVALID",
    TOKEN_TO_EXPIRE: "TOKEN_TO_EXPIRE",
    TOKEN_EXPIRED: "TOKEN_EXPIRED",
    RATE_LIMITED: "RATE_LIMITED",
    SERVER_ERROR: "SERVER_ERROR",
});

/** Statuses a `publish` promise rejects with, besides the server's own (FAILED, DENY, ...). */
export const PublishFailure = Object.freeze({
    /** The connection was lost after the publish was sent: it may or may not have been stored. */
    CONNECTION_LOST: "CONNECTION_LOST",
    /** Too many publishes waited for a connection (`maxQueuedPublishes`). */
    QUEUE_FULL: "QUEUE_FULL",
    /** No publish_status within `publishTimeoutMs`. */
    TIMEOUT: "TIMEOUT",
    /** `close()` was called before the publish was answered. */
    CLOSED: "CLOSED",
    /** The subject or content was not acceptable (checked before sending). */
    INVALID: "INVALID",
});

const DEFAULTS = Object.freeze({
    reconnect: { minDelayMs: 250, maxDelayMs: 10000 },
    maxQueuedPublishes: 1000,
    publishTimeoutMs: 30000,
    keepaliveMs: 15000,
});

const RECONNECT_NOW_CLOSE_CODE = 1012;

/**
 * A publish/subscribe client that stays connected: it rotates over `servers`, reconnects with exponential
 * backoff and jitter, and recovers every subscription with its last {epoch, seq}.
 */
export class SwitchyardClient {
    /**
     * @param {object} options
     * @param {string[]} options.servers WebSocket URLs; the client starts on a random one and rotates on failure.
     * @param {string} [options.token] sent with a `connect` frame on every connection.
     * @param {{minDelayMs?: number, maxDelayMs?: number}} [options.reconnect] backoff bounds.
     * @param {number} [options.maxQueuedPublishes] publishes that may wait for a connection (default 1000).
     * @param {number} [options.publishTimeoutMs] how long a publish waits for its status (default 30000).
     * @param {number} [options.keepaliveMs] idle time before a ping; no answer within as long again means the
     *     connection is dead (default 15000; 0 disables).
     * @param {typeof WebSocket} [options.WebSocket] the WebSocket class (default: the global one).
     */
    constructor(options = {}) {
        const servers = Array.isArray(options.servers) ? options.servers : [];
        if (servers.length === 0) throw new TypeError("SwitchyardClient: `servers` needs at least one URL");
        for (const server of servers) {
            if (typeof server !== "string" || !/^wss?:\/\/[^/?#]/i.test(server)) {
                throw new TypeError(`SwitchyardClient: ${server} is not a ws:// or wss:// URL`);
            }
        }
        this._servers = servers;
        this._serverIndex = Math.floor(Math.random() * servers.length);
        this._token = options.token;
        this._minDelayMs = positive(options.reconnect?.minDelayMs, DEFAULTS.reconnect.minDelayMs);
        this._maxDelayMs = Math.max(this._minDelayMs,
                                    positive(options.reconnect?.maxDelayMs, DEFAULTS.reconnect.maxDelayMs));
        this._maxQueuedPublishes = nonNegative(options.maxQueuedPublishes, DEFAULTS.maxQueuedPublishes);
        this._publishTimeoutMs = positive(options.publishTimeoutMs, DEFAULTS.publishTimeoutMs);
        this._keepaliveMs = nonNegative(options.keepaliveMs, DEFAULTS.keepaliveMs);
        this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
        if (typeof this._WebSocket !== "function") {
            throw new TypeError("SwitchyardClient: no WebSocket class (pass options.WebSocket)");
        }

        /** subject → {onMessage, history, epoch, seq}; epoch/seq are those of the last delivered message. */
        this._subscriptions = new Map();
        /** closure → publishes waiting for their publish_status, oldest first (closures may repeat). */
        this._inFlight = new Map();
        /** Publishes made while disconnected, sent on the next connection. */
        this._queue = [];
        this._statusListeners = new Set();
        this._closureCounter = 0;
        this._closurePrefix = `sy-${Math.random().toString(36).slice(2, 8)}-`;
        this._socket = null;
        this._connected = false;
        this._closed = false;
        this._failures = 0;
        this._reconnectTimer = null;
        this._keepaliveTimer = null;
        this._lastFrameAt = 0;
        this._pingSent = false;
        this._connect();
    }

    /** Whether a WebSocket connection is open now. */
    get connected() { return this._connected; }

    /** The URL of the current (or last tried) server. */
    get server() { return this._servers[this._serverIndex]; }

    /**
     * Calls `listener({status, subject?, reason?, code?, server?})` for every status event.
     * @returns {() => void} a function that removes the listener.
     */
    onStatus(listener) {
        this._statusListeners.add(listener);
        return () => this._statusListeners.delete(listener);
    }

    /**
     * Subscribes to `subjects`; `onMessage({subject, content, seq, epoch, type, retained, closure})` gets each
     * message (content is a Uint8Array for binary messages). Subscribing again to a subject replaces its handler
     * and keeps its recovery position.
     * @param {string[]|string} subjects
     * @param {(message: object) => void} onMessage
     * @param {{history?: number}} [options] `history: n` asks for the n most recent messages on the first subscribe.
     */
    subscribe(subjects, onMessage, options = {}) {
        const list = toSubjectList(subjects);
        if (typeof onMessage !== "function") throw new TypeError("subscribe: onMessage must be a function");
        const history = Number.isInteger(options.history) && options.history > 0 ? options.history : 0;
        const fresh = [];
        for (const subject of list) {
            const existing = this._subscriptions.get(subject);
            if (existing) {
                existing.onMessage = onMessage;
            } else {
                this._subscriptions.set(subject, { onMessage, history, epoch: null, seq: null });
                fresh.push(subject);
            }
        }
        if (this._connected && fresh.length > 0) this._sendSubscribes(fresh);
    }

    /** Stops the subscriptions to `subjects`: no more messages, no recovery position kept. */
    unsubscribe(subjects) {
        const list = toSubjectList(subjects).filter(subject => this._subscriptions.delete(subject));
        if (this._connected && list.length > 0) this._send({ op: "unsubscribe", subjects: list });
    }

    /**
     * Publishes `content` (a string, or a Uint8Array sent base64-encoded) on `subject`.
     * @param {string} subject
     * @param {string|Uint8Array} content
     * @param {{closure?: string, retained?: boolean, qos?: "GUARANTEED"|"STANDARD"}} [options]
     * @returns {Promise<"OK">} resolves "OK" once the message is stored; rejects with a PublishError whose
     *     `status` is the server's (FAILED, DENY, MESSAGE_SIZE_LIMIT_EXCEEDED, RATE_LIMITED, ...) or one of
     *     PublishFailure.
     */
    publish(subject, content, options = {}) {
        if (this._closed) return Promise.reject(new PublishError(PublishFailure.CLOSED, "the client is closed"));
        if (typeof subject !== "string" || subject.length === 0) {
            return Promise.reject(new PublishError(PublishFailure.INVALID, "subject must be a non-empty string"));
        }
        const frame = { op: "publish", subject };
        if (content instanceof Uint8Array) {
            frame.content = encodeBase64(content);
            frame.encoding = "base64";
        } else if (typeof content === "string") {
            frame.content = content;
        } else {
            return Promise.reject(new PublishError(PublishFailure.INVALID, "content must be a string or Uint8Array"));
        }
        frame.closure = typeof options.closure === "string" && options.closure.length > 0
            ? options.closure : this._closurePrefix + (++this._closureCounter);
        if (typeof options.retained === "boolean") frame.retained = options.retained;
        if (options.qos === "STANDARD" || options.qos === "GUARANTEED") frame.qos = options.qos;

        return new Promise((resolve, reject) => {
            const publish = { frame, resolve, reject, timer: null };
            if (this._connected) {
                this._sendPublish(publish);
            } else if (this._queue.length >= this._maxQueuedPublishes) {
                reject(new PublishError(PublishFailure.QUEUE_FULL,
                                        `${this._queue.length} publishes already wait for a connection`));
            } else {
                publish.timer = setTimeout(() => {
                    const index = this._queue.indexOf(publish);
                    if (index >= 0) this._queue.splice(index, 1);
                    reject(new PublishError(PublishFailure.TIMEOUT, "no connection within publishTimeoutMs"));
                }, this._publishTimeoutMs);
                this._queue.push(publish);
            }
        });
    }

    /** Replaces the token: sent now if connected, and on every later connection. */
    setToken(token) {
        this._token = token;
        if (this._connected && typeof token === "string") this._send({ op: "connect", token });
    }

    /** Closes the connection for good: no reconnect; unanswered publishes reject with CLOSED. */
    close() {
        if (this._closed) return;
        this._closed = true;
        clearTimeout(this._reconnectTimer);
        this._stopKeepalive();
        const socket = this._socket;
        this._socket = null;
        const wasConnected = this._connected;
        this._connected = false;
        if (socket) {
            detach(socket);
            try { socket.close(1000, "client closed"); } catch { /* already closing */ }
        }
        this._failPublishes(PublishFailure.CLOSED, "the client was closed");
        if (wasConnected) this._emit({ status: Status.DISCONNECTED, reason: "client closed" });
    }

    // --- connection life cycle ----------------------------------------------------------------------------

    _connect() {
        if (this._closed) return;
        const url = this._servers[this._serverIndex];
        let socket;
        try {
            socket = new this._WebSocket(url);
        } catch (error) {
            this._connectionLost({ reason: `cannot open ${url}: ${error?.message ?? error}` });
            return;
        }
        this._socket = socket;
        socket.onopen = () => this._opened(socket);
        socket.onmessage = event => this._received(socket, event.data);
        socket.onclose = event => {
            if (socket === this._socket) this._connectionLost({ code: event.code, reason: event.reason });
        };
        socket.onerror = () => { /* a close event follows */ };
    }

    _opened(socket) {
        if (socket !== this._socket) return;
        this._connected = true;
        this._lastFrameAt = Date.now();
        if (typeof this._token === "string") this._send({ op: "connect", token: this._token });
        this._sendSubscribes([...this._subscriptions.keys()]);
        const queued = this._queue;
        this._queue = [];
        for (const publish of queued) {
            clearTimeout(publish.timer);
            this._sendPublish(publish);
        }
        this._startKeepalive();
        this._emit({ status: Status.CONNECTED, server: this.server });
    }

    /** The socket closed or failed: publishes in flight fail, then reconnect after a backoff. */
    _connectionLost({ code, reason }) {
        const socket = this._socket;
        this._socket = null;
        if (socket) detach(socket);
        this._stopKeepalive();
        const wasConnected = this._connected;
        this._connected = false;
        this._failInFlight(PublishFailure.CONNECTION_LOST,
                           "the connection was lost before the publish was confirmed; it may have been stored");
        if (this._closed) return;
        const event = { status: Status.DISCONNECTED, server: this.server };
        if (code !== undefined) event.code = code;
        if (reason) event.reason = reason;
        this._emit(event);

        // Another server next time; a 1012 ("restarting, reconnect elsewhere") means now, without backoff.
        this._serverIndex = (this._serverIndex + 1) % this._servers.length;
        let delay;
        if (code === RECONNECT_NOW_CLOSE_CODE) {
            this._failures = 0;
            delay = Math.random() * this._minDelayMs;
        } else {
            if (wasConnected) this._failures = 0;
            delay = backoffDelay(this._failures, this._minDelayMs, this._maxDelayMs);
            this._failures += 1;
        }
        this._reconnectTimer = setTimeout(() => this._connect(), delay);
    }

    _startKeepalive() {
        if (this._keepaliveMs <= 0) return;
        this._pingSent = false;
        this._keepaliveTimer = setInterval(() => {
            const idle = Date.now() - this._lastFrameAt;
            if (this._pingSent && idle >= 2 * this._keepaliveMs) {
                this._socket?.close(4000, "keepalive timeout");
                this._connectionLost({ reason: "no answer to ping" });
            } else if (!this._pingSent && idle >= this._keepaliveMs) {
                this._pingSent = true;
                this._send({ op: "ping" });
            }
        }, Math.max(250, Math.floor(this._keepaliveMs / 4)));
    }

    _stopKeepalive() {
        clearInterval(this._keepaliveTimer);
        this._keepaliveTimer = null;
    }

    // --- outgoing ----------------------------------------------------------------------------------------

    _send(frame) {
        try {
            this._socket?.send(JSON.stringify(frame));
            return true;
        } catch {
            return false;
        }
    }

    /**
     * Subscribes `subjects` on the current connection: those with a position recover from it, the others ask
     * for what their `history` option says (one frame per distinct history count).
     */
    _sendSubscribes(subjects) {
        const recover = {};
        const recovering = [];
        const byHistory = new Map();
        for (const subject of subjects) {
            const subscription = this._subscriptions.get(subject);
            if (!subscription) continue;
            if (subscription.epoch !== null && subscription.seq !== null) {
                recover[subject] = { epoch: subscription.epoch, seq: subscription.seq };
                recovering.push(subject);
            } else {
                const group = byHistory.get(subscription.history) ?? [];
                group.push(subject);
                byHistory.set(subscription.history, group);
            }
        }
        if (recovering.length > 0) this._send({ op: "subscribe", subjects: recovering, recover });
        for (const [history, group] of byHistory) {
            const frame = { op: "subscribe", subjects: group };
            if (history > 0) frame.history = history;
            this._send(frame);
        }
    }

    _sendPublish(publish) {
        const closure = publish.frame.closure;
        const waiting = this._inFlight.get(closure) ?? [];
        waiting.push(publish);
        this._inFlight.set(closure, waiting);
        publish.timer = setTimeout(() => {
            if (this._takeInFlight(closure, publish)) {
                publish.reject(new PublishError(PublishFailure.TIMEOUT, "no publish_status within publishTimeoutMs"));
            }
        }, this._publishTimeoutMs);
        this._send(publish.frame);
    }

    /** Removes `publish` (or the oldest publish with `closure`) from the in-flight table and returns it. */
    _takeInFlight(closure, publish = undefined) {
        const waiting = this._inFlight.get(closure);
        if (!waiting) return undefined;
        const index = publish ? waiting.indexOf(publish) : 0;
        if (index < 0) return undefined;
        const [taken] = waiting.splice(index, 1);
        if (waiting.length === 0) this._inFlight.delete(closure);
        clearTimeout(taken.timer);
        return taken;
    }

    _failInFlight(status, reason) {
        const waiting = [...this._inFlight.values()].flat();
        this._inFlight.clear();
        for (const publish of waiting) {
            clearTimeout(publish.timer);
            publish.reject(new PublishError(status, reason));
        }
    }

    _failPublishes(status, reason) {
        this._failInFlight(status, reason);
        const queued = this._queue;
        this._queue = [];
        for (const publish of queued) {
            clearTimeout(publish.timer);
            publish.reject(new PublishError(status, reason));
        }
    }

    // --- incoming ----------------------------------------------------------------------------------------

    _received(socket, data) {
        if (socket !== this._socket) return;
        this._lastFrameAt = Date.now();
        this._pingSent = false;
        if (typeof data !== "string") return;  // the protocol sends text frames only
        let frame;
        try {
            frame = JSON.parse(data);
        } catch {
            return;
        }
        if (frame === null || typeof frame !== "object") return;
        switch (frame.op) {
        case "message": this._message(frame); break;
        case "subscribed": this._subscribed(frame); break;
        case "status": this._status(frame); break;
        case "publish_status": this._publishStatus(frame); break;
        case "error": this._error(frame); break;
        default: break;  // pong, and ops of later protocol versions
        }
    }

    _message(frame) {
        const subscription = this._subscriptions.get(frame.subject);
        if (!subscription || typeof frame.seq !== "number" || typeof frame.epoch !== "string") return;
        // The server hands over exactly; this guards the promise "never twice" against anything replayed.
        if (subscription.epoch === frame.epoch && subscription.seq !== null && frame.seq <= subscription.seq) return;
        subscription.epoch = frame.epoch;
        subscription.seq = frame.seq;
        const message = {
            subject: frame.subject,
            content: frame.encoding === "base64" ? decodeBase64(String(frame.content ?? "")) : frame.content,
            seq: frame.seq,
            epoch: frame.epoch,
            type: frame.type,
            retained: frame.retained === true,
            closure: frame.closure,
        };
        if (frame.qos !== undefined) message.qos = frame.qos;
        try {
            subscription.onMessage(message);
        } catch (error) {
            reportListenerError(error);
        }
    }

    _subscribed(frame) {
        const subject = frame.subject;
        if (frame.status === "ALLOW") {
            this._emit({ status: Status.SUBSCRIBE_ALLOW, subject });
            return;
        }
        // DENY and INVALID end the subscription: the server will not deliver it.
        this._subscriptions.delete(subject);
        const status = frame.status === "DENY" ? Status.SUBSCRIBE_DENY : Status.SUBSCRIBE_INVALID;
        this._emit(withReason({ status, subject }, frame.reason));
    }

    _status(frame) {
        if (typeof frame.status !== "string") return;
        const event = { status: frame.status };
        if (typeof frame.subject === "string") event.subject = frame.subject;
        this._emit(withReason(event, frame.reason));
    }

    _publishStatus(frame) {
        const publish = this._takeInFlight(frame.closure);
        if (!publish) return;
        if (frame.status === "OK") publish.resolve("OK");
        else publish.reject(new PublishError(String(frame.status), frame.reason));
    }

    _error(frame) {
        const code = typeof frame.code === "string" ? frame.code : "ERROR";
        // An error that names a closure answers that publish.
        if (typeof frame.closure === "string") {
            const publish = this._takeInFlight(frame.closure);
            if (publish) publish.reject(new PublishError(code, frame.reason));
        }
        const status = code === "RATE_LIMITED" ? Status.RATE_LIMITED : Status.SERVER_ERROR;
        this._emit(withReason({ status, code }, frame.reason));
    }

    _emit(event) {
        for (const listener of [...this._statusListeners]) {
            try {
                listener(event);
            } catch (error) {
                reportListenerError(error);
            }
        }
    }
}

/** Why a publish was not confirmed: `status` is the server's status or one of PublishFailure. */
export class PublishError extends Error {
    constructor(status, reason) {
        super(reason ? `${status}: ${reason}` : status);
        this.name = "PublishError";
        this.status = status;
        if (reason !== undefined) this.reason = reason;
    }
}

/** The delay before reconnect attempt `failures` (0-based): exponential, capped, with "equal jitter". */
export function backoffDelay(failures, minDelayMs, maxDelayMs) {
    const exponential = Math.min(maxDelayMs, minDelayMs * 2 ** Math.min(failures, 30));
    return exponential / 2 + Math.random() * exponential / 2;
}

function toSubjectList(subjects) {
    const list = typeof subjects === "string" ? [subjects] : subjects;
    if (!Array.isArray(list) || list.some(s => typeof s !== "string")) {
        throw new TypeError("subjects must be a string or an array of strings");
    }
    return [...new Set(list)];
}

function positive(value, fallback) {
    return Number.isFinite(value) && value > 0 ? value : fallback;
}

function nonNegative(value, fallback) {
    return Number.isFinite(value) && value >= 0 ? value : fallback;
}

function withReason(event, reason) {
    if (typeof reason === "string" && reason.length > 0) event.reason = reason;
    return event;
}

function detach(socket) {
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
}

function reportListenerError(error) {
    // A throwing listener must not break the client; surface it where the runtime reports errors.
    setTimeout(() => { throw error; }, 0);
}

const BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64_VALUES = (() => {
    const values = new Int16Array(128).fill(-1);
    for (let i = 0; i < BASE64.length; i++) values[BASE64.charCodeAt(i)] = i;
    return values;
})();

/** Standard base64 with padding. */
export function encodeBase64(bytes) {
    let out = "";
    let i = 0;
    for (; i + 2 < bytes.length; i += 3) {
        const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
        out += BASE64[n >> 18] + BASE64[(n >> 12) & 63] + BASE64[(n >> 6) & 63] + BASE64[n & 63];
    }
    const rest = bytes.length - i;
    if (rest === 1) {
        const n = bytes[i] << 16;
        out += BASE64[n >> 18] + BASE64[(n >> 12) & 63] + "==";
    } else if (rest === 2) {
        const n = (bytes[i] << 16) | (bytes[i + 1] << 8);
        out += BASE64[n >> 18] + BASE64[(n >> 12) & 63] + BASE64[(n >> 6) & 63] + "=";
    }
    return out;
}

/** Decodes standard base64 (padding optional); characters outside the alphabet are skipped. */
export function decodeBase64(text) {
    const out = new Uint8Array(Math.floor(text.length * 3 / 4));
    let length = 0;
    let buffer = 0;
    let bits = 0;
    for (let i = 0; i < text.length; i++) {
        const code = text.charCodeAt(i);
        const value = code < 128 ? BASE64_VALUES[code] : -1;
        if (value < 0) continue;
        buffer = (buffer << 6) | value;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[length++] = (buffer >> bits) & 0xff;
        }
    }
    return out.slice(0, length);
}

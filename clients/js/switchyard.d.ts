// Types for switchyard.js, the Switchyard JavaScript client (docs/CLIENTS.md).

export type ClientStatus =
    | "CONNECTED" | "DISCONNECTED"
    | "DATA_SYNC" | "DATA_RESYNC"
    | "SUBSCRIBE_ALLOW" | "SUBSCRIBE_DENY" | "SUBSCRIBE_INVALID"
    | "TOKEN_TO_EXPIRE" | "TOKEN_EXPIRED"
    | "RATE_LIMITED" | "SERVER_ERROR"
    | (string & {});

export interface StatusEvent {
    status: ClientStatus;
    /** The subject the event is about (DATA_SYNC, DATA_RESYNC, SUBSCRIBE_*). */
    subject?: string;
    reason?: string;
    /** The WebSocket close code (DISCONNECTED) or the server's error code (RATE_LIMITED, SERVER_ERROR). */
    code?: number | string;
    /** The server connected to or lost (CONNECTED, DISCONNECTED). */
    server?: string;
}

export type MessageType = "update" | "snapshot" | "recovered" | "historical";

export interface Message {
    subject: string;
    /** A string, or the bytes of a binary message. */
    content: string | Uint8Array;
    seq: number;
    epoch: string;
    type: MessageType;
    retained: boolean;
    closure?: string;
    qos?: "STANDARD";
}

export interface ClientOptions {
    /** WebSocket URLs; the client starts on a random one and rotates on failure. */
    servers: string[];
    /** Sent with a `connect` frame on every connection. */
    token?: string;
    /** Reconnect backoff bounds (defaults 250 and 10000 ms). */
    reconnect?: { minDelayMs?: number; maxDelayMs?: number };
    /** Publishes that may wait for a connection (default 1000); more reject with QUEUE_FULL. */
    maxQueuedPublishes?: number;
    /** How long a publish waits for its status once sent, and at most in the queue (default 30000). */
    publishTimeoutMs?: number;
    /** Idle time before a ping; no answer within as long again drops the connection (default 15000, 0: off). */
    keepaliveMs?: number;
    /** The WebSocket class (default: globalThis.WebSocket). */
    WebSocket?: new (url: string) => WebSocket;
}

export interface PublishOptions {
    /** Echoed to subscribers in `message.closure`; generated when not given. */
    closure?: string;
    /** Whether the message becomes the subject's snapshot (server default: true). */
    retained?: boolean;
    /** GUARANTEED (the server's default) is kept for recovery; STANDARD is not. */
    qos?: "GUARANTEED" | "STANDARD";
}

export type PublishStatus =
    | "FAILED" | "DENY" | "MESSAGE_SIZE_LIMIT_EXCEEDED" | "RATE_LIMITED"
    | "CONNECTION_LOST" | "QUEUE_FULL" | "TIMEOUT" | "CLOSED" | "INVALID"
    | (string & {});

export declare class PublishError extends Error {
    readonly status: PublishStatus;
    readonly reason?: string;
}

export declare const Status: Readonly<Record<
    "CONNECTED" | "DISCONNECTED" | "DATA_SYNC" | "DATA_RESYNC" | "SUBSCRIBE_ALLOW" | "SUBSCRIBE_DENY" |
    "SUBSCRIBE_INVALID" | "TOKEN_TO_EXPIRE" | "TOKEN_EXPIRED" | "RATE_LIMITED" | "SERVER_ERROR", string>>;

export declare const PublishFailure: Readonly<Record<
    "CONNECTION_LOST" | "QUEUE_FULL" | "TIMEOUT" | "CLOSED" | "INVALID", string>>;

export declare class SwitchyardClient {
    constructor(options: ClientOptions);
    /** Whether a WebSocket connection is open now. */
    readonly connected: boolean;
    /** The URL of the current (or last tried) server. */
    readonly server: string;
    /** Adds a status listener; returns a function that removes it. */
    onStatus(listener: (event: StatusEvent) => void): () => void;
    subscribe(subjects: string | string[], onMessage: (message: Message) => void,
              options?: { history?: number }): void;
    unsubscribe(subjects: string | string[]): void;
    /** Resolves "OK" once stored; rejects with a PublishError otherwise. */
    publish(subject: string, content: string | Uint8Array, options?: PublishOptions): Promise<"OK">;
    setToken(token: string): void;
    close(): void;
}

export declare function backoffDelay(failures: number, minDelayMs: number, maxDelayMs: number): number;
export declare function encodeBase64(bytes: Uint8Array): string;
export declare function decodeBase64(text: string): Uint8Array;

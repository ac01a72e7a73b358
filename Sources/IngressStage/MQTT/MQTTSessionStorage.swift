import NIOCore

/// What a CONNECT finds in the session store.
public struct MQTTSessionLoaded: Equatable, Sendable {
    /// The stored session; nil: none, expired or unreadable.
    public var record: MQTTSessionRecord?
    /// Whether a new session may be kept (`MqttMaxSessions`).
    public var hasRoom: Bool
    /// The store cannot say now (Kafka mode: the session topic was not read up to its end in time): the CONNECT
    /// is answered Server unavailable rather than as if there were no session.
    public var isUnavailable: Bool

    public init(record: MQTTSessionRecord?, hasRoom: Bool, isUnavailable: Bool = false) {
        self.record = record
        self.hasRoom = hasRoom
        self.isUnavailable = isUnavailable
    }

    public static let unavailable = MQTTSessionLoaded(record: nil, hasRoom: false, isUnavailable: true)
}

/// Where persistent MQTT sessions live (docs/MQTT.md, "Persistent sessions"): files in the RunDir of one node
/// (`MQTTSessionStore`, standalone), or a compacted Kafka topic every node reads (`KafkaMQTTSessionStore` in
/// IngressService, `ClusterEngine = kafka`). Called on the event loop; no method blocks it.
public protocol MQTTSessionStorage: AnyObject, Sendable {
    /// The client's stored session, completed on `eventLoop`.
    func load(_ clientID: String, on eventLoop: EventLoop) -> EventLoopFuture<MQTTSessionLoaded>
    func save(_ record: MQTTSessionRecord)
    func delete(_ clientID: String)
    /// A connection of this instance took `clientID`'s stored session up (or discarded it) as `generation`: the
    /// instance or node holding an older connection of the client closes it (docs/MQTT.md, "Take-over").
    func announceTakeOver(of clientID: String, generation: UInt64)
    /// The sessions other instances and nodes took up since the last call: client → the generation it was taken
    /// up as (`UInt64.max`: discarded). Polled by the hub every second; completed on `eventLoop`.
    func takeOvers(on eventLoop: EventLoop) -> EventLoopFuture<[String: UInt64]>
    /// Removes expired sessions (every 10 minutes).
    func sweep()
    /// Writes what was saved before it (up to a few seconds) and stops: ws-ingress shuts down. Blocks.
    func close()
}

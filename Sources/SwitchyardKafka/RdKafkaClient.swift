import CRdKafka
import NIOConcurrencyHelpers

/// Owns one `rd_kafka_t` handle and its main event queue; both are freed in deinit. Used by one producer or
/// consumer, whose poll thread serves the main queue (logs, errors, delivery reports) through `serveMainQueue`.
// @unchecked Sendable: immutable handles (librdkafka is thread-safe); `reachable` is locked; one poll thread serves.
final class RdKafkaClient: @unchecked Sendable {
    let handle: OpaquePointer
    private let mainQueue: OpaquePointer
    private let destroyFlags: Int32
    let onEvent: @Sendable (KafkaEvent) -> Void
    /// nil until known.
    private let reachable = NIOLockedValueBox<Bool?>(nil)

    /// Creates the handle. `forced` properties are applied after the file's (and win); librdkafka's log lines
    /// and client errors come back as `KafkaEvent`s on the poll thread.
    init(type: rd_kafka_type_t, config: KafkaConfig, forced: [(String, String)], events: Int32,
         destroyFlags: Int32 = 0, onEvent: @escaping @Sendable (KafkaEvent) -> Void) throws {
        let conf = try config.makeNativeConf()
        do {
            for (key, value) in forced + [("log.queue", "true")] {
                try KafkaConfig.apply(.init(key: key, value: value, line: 0), to: conf, file: config.file)
            }
        } catch {
            rd_kafka_conf_destroy(conf)
            throw error
        }
        rd_kafka_conf_set_events(conf, events | SY_RD_KAFKA_EVENT_LOG | SY_RD_KAFKA_EVENT_ERROR)

        var errbuf = [CChar](repeating: 0, count: 512)
        guard let rk = rd_kafka_new(type, conf, &errbuf, errbuf.count) else {
            // rd_kafka_new frees the configuration only on success.
            rd_kafka_conf_destroy(conf)
            let message = errbuf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            throw KafkaConfigError(file: config.file, line: 0, parameter: "",
                                   problem: "cannot create the Kafka client: \(message)")
        }
        self.handle = rk
        self.mainQueue = rd_kafka_queue_get_main(rk)
        self.destroyFlags = destroyFlags
        self.onEvent = onEvent
        // Logs go to the main queue, served by the poll thread (never from librdkafka's own threads).
        rd_kafka_set_log_queue(rk, nil)
    }

    deinit {
        rd_kafka_queue_destroy(mainQueue)
        if destroyFlags != 0 {
            rd_kafka_destroy_flags(handle, destroyFlags)
        } else {
            rd_kafka_destroy(handle)
        }
    }

    var isReachable: Bool? { reachable.withLockedValue { $0 } }

    /// The value of a property as the running client has it (what it was given, or librdkafka's default).
    func effectiveProperty(_ key: String) -> String? {
        guard let conf = rd_kafka_conf(handle) else { return nil }
        return KafkaConfig.nativeValue(of: key, in: conf)
    }

    /// Records whether the cluster answers; reports a change as a `.reachability` event.
    func setReachable(_ value: Bool, reason: @autoclosure () -> String) {
        let changed = reachable.withLockedValue { state -> Bool in
            if state == value { return false }
            state = value
            return true
        }
        if changed { onEvent(.reachability(reachable: value, reason: reason())) }
    }

    /// Serves the main queue: waits up to `timeoutMs` for the first event, then takes what else is ready
    /// (at most `maxEvents`). Delivery-report events go to `onDeliveryReport`; the event is destroyed after.
    func serveMainQueue(timeoutMs: Int32, maxEvents: Int = 64, onDeliveryReport: ((OpaquePointer) -> Void)? = nil) {
        var timeout = timeoutMs
        for _ in 0..<maxEvents {
            guard let event = rd_kafka_queue_poll(mainQueue, timeout) else { return }
            timeout = 0
            defer { rd_kafka_event_destroy(event) }
            switch rd_kafka_event_type(event) {
            case SY_RD_KAFKA_EVENT_DR:
                onDeliveryReport?(event)
            case SY_RD_KAFKA_EVENT_LOG:
                var fac: UnsafePointer<CChar>?
                var str: UnsafePointer<CChar>?
                var level: Int32 = 0
                if rd_kafka_event_log(event, &fac, &str, &level) == 0 {
                    onEvent(.log(level: level, facility: fac.map { String(cString: $0) } ?? "",
                                 message: str.map { String(cString: $0) } ?? ""))
                }
            case SY_RD_KAFKA_EVENT_ERROR:
                handleErrorEvent(event)
            default:
                break
            }
        }
    }

    private func handleErrorEvent(_ event: OpaquePointer) {
        let err = rd_kafka_event_error(event)
        let reason = rd_kafka_event_error_string(event).map { String(cString: $0) }
        if rd_kafka_event_error_is_fatal(event) != 0 {
            var errbuf = [CChar](repeating: 0, count: 512)
            let fatal = rd_kafka_fatal_error(handle, &errbuf, errbuf.count)
            let message = errbuf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            onEvent(.error(KafkaError(fatal, reason: message.isEmpty ? reason : message, isFatal: true)))
            return
        }
        let error = KafkaError(err, reason: reason)
        if err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN {
            setReachable(false, reason: error.message)
        }
        onEvent(.error(error))
    }

    /// A cheap round trip (Metadata for no topics): true when the cluster answered within `timeoutMs`.
    func probe(timeoutMs: Int32) -> KafkaError? {
        var md: UnsafePointer<rd_kafka_metadata>?
        let err = rd_kafka_metadata(handle, 0, nil, &md, timeoutMs)
        if let md { rd_kafka_metadata_destroy(md) }
        return err == RD_KAFKA_RESP_ERR_NO_ERROR ? nil : KafkaError(err)
    }
}

/// Milliseconds of a `Duration`, clamped to Int32 for librdkafka timeouts.
func milliseconds(_ d: Duration) -> Int32 {
    let (seconds, attoseconds) = d.components
    let ms = seconds * 1000 + attoseconds / 1_000_000_000_000_000
    return Int32(clamping: max(0, ms))
}

import Foundation
import Logging
import SwitchyardCore

/// Per subject: numbers messages (standalone) or keeps Kafka's numbers, holds the history and the snapshot,
/// answers subscribes, acknowledges stored publishes, and passes every message and interest change on to the
/// subject's fanout shard — one pipe, so an interest always reaches the fanout in order with the messages.
///
/// In Kafka mode, a recovery from further back than the cache holds is passed to kafka-in, which reads it from
/// Kafka (deep recovery); its answer comes back here and goes on to the subscriber's ingress. At most
/// `maxPendingDeepRecoveries` wait for kafka-in; a recovery beyond them is answered with a resync at once.
public final class Cache: EnvelopeHandler {
    /// How long a deep recovery may take before it is forgotten (the ingress asks again by itself).
    static let deepRecoveryTimeout: UInt64 = 30_000_000_000
    /// Deep recoveries waiting for kafka-in at once (kafka-in itself runs `MaxDeepRecoveries` at a time).
    static let maxPendingDeepRecoveries = 4096

    private let context: StageContext
    public let store: SubjectStore
    private var lastExpiry: UInt64 = 0
    private var deepRecoveries = PendingDeepRecoveries(capacity: Cache.maxPendingDeepRecoveries,
                                                       timeout: Cache.deepRecoveryTimeout)

    public init(context: StageContext) {
        self.context = context
        let config = context.config
        store = SubjectStore(epoch: Self.newEpoch(instance: context.instance),
                             maxMessagesPerSubject: config.maxCachedMessagesPerSubject,
                             maxAge: UInt64(config.cacheExpireTime) * 1_000_000_000,
                             maxBytes: config.cacheMaxBytes, maxSubjects: config.cacheMaxSubjects,
                             backedByKafka: config.clusterEngine == .kafka)
    }

    /// A fresh standalone epoch: the start time and instance, unique across restarts.
    static func newEpoch(instance: Int) -> String {
        String(wallClockNanoseconds() / 1_000_000, radix: 36) + "-\(instance)"
    }

    public func handle(_ envelope: Envelope, outbox: Outbox) {
        let topology = context.topology
        switch envelope {
        case .publish(let publish):
            guard context.config.clusterEngine == .none else {
                context.logger.warning("publish reached the cache in Kafka mode; dropped",
                                       metadata: ["subject": "\(publish.message.subject)"])
                return
            }
            var published = publish.message
            if published.timestamp == 0 { published.timestamp = wallClockNanoseconds() }
            let message = store.append(published, now: monotonicNanoseconds())
            outbox.send(.message(message), to: fanoutAddress(message.subject, topology))
            if publish.message.flags.contains(.wantsAck) {
                outbox.send(.publishAck(PublishAck(requestID: publish.requestID, status: .ok)), to: publish.replyTo,
                            delivery: .reply)
            }
        case .message(let message):
            if store.insert(message, now: monotonicNanoseconds()) {
                outbox.send(envelope, to: fanoutAddress(message.subject, topology))
            }
        case .subscribe(let subscribe):
            if subscribe.registersInterest {
                let interest = Interest(subject: subscribe.subject, ingress: subscribe.ingress, isAdded: true)
                store.noteInterest(interest, now: monotonicNanoseconds())
                outbox.send(.interest(interest), to: fanoutAddress(subscribe.subject, topology))
            }
            if let reply = store.reply(to: subscribe) {
                send(reply, answering: subscribe, outbox: outbox)
            } else {
                askKafka(subscribe, outbox: outbox, topology)
            }
        case .subscribeReply(let reply):
            answerFromKafka(reply, outbox: outbox)
        case .interest(let interest):
            store.noteInterest(interest, now: monotonicNanoseconds())
            outbox.send(envelope, to: fanoutAddress(interest.subject, topology))
        case .patternSubscribe(let subscribe):
            answer(subscribe, outbox: outbox)
        case .publishAck, .peerUp, .patternInterest:
            context.logger.warning("unexpected envelope for the cache dropped",
                                   metadata: ["envelope": "\(envelope.kindName)"])
        }
    }

    /// In Kafka mode a (re)started cache is empty: kafka-in reads the recent records again to warm it.
    public func started(outbox: Outbox) {
        guard context.config.clusterEngine == .kafka else { return }
        let peerUp = Envelope.peerUp(PeerUp(stage: StageName.cache.rawValue, instance: UInt32(context.instance)))
        outbox.send(peerUp, to: context.topology.address(.kafkaIn, 0), delivery: .bestEffort)
    }

    private func askKafka(_ subscribe: Subscribe, outbox: Outbox, _ topology: Topology) {
        guard let id = deepRecoveries.add(subscribe, now: monotonicNanoseconds()) else {
            context.logger.debug("deep recovery refused: too many pending",
                                 metadata: ["subject": "\(subscribe.subject)"])
            context.metrics.addToGauge("deepRecoveriesRefused", 1)
            outbox.send(.subscribeReply(store.resyncReply(to: subscribe)), to: subscribe.replyTo, delivery: .reply)
            return
        }
        var request = subscribe
        request.requestID = id
        request.replyTo = context.inboundAddress
        request.registersInterest = false
        outbox.send(.subscribe(request), to: topology.address(.kafkaIn, 0))
    }

    /// Sends a subscribe's answer; one too large to encode (logged by the outbox) becomes a resync, so the
    /// subscriber is never left with a gap.
    private func send(_ reply: SubscribeReply, answering subscribe: Subscribe, outbox: Outbox) {
        guard !outbox.send(.subscribeReply(reply), to: subscribe.replyTo, delivery: .reply), reply.status == .sync
        else { return }
        outbox.send(.subscribeReply(store.resyncReply(to: subscribe)), to: subscribe.replyTo, delivery: .reply)
    }

    /// A subscribe to a pattern: the retained snapshots this shard holds of matching subjects (every shard
    /// answers; the ingress sends what each has). An invalid pattern gets an empty answer.
    private func answer(_ subscribe: PatternSubscribe, outbox: Outbox) {
        let snapshots = (try? SubjectPattern(subscribe.pattern)).map {
            store.snapshots(matching: $0, limit: PatternSubscribe.maxSnapshots, maxBytes: PatternSubscribe.maxSnapshotBytes)
        } ?? []
        let reply = SubscribeReply(requestID: subscribe.requestID, subject: subscribe.pattern, kind: .snapshot,
                                   status: .none, messages: snapshots, epoch: "", lastSeq: 0)
        outbox.send(.subscribeReply(reply), to: subscribe.replyTo, delivery: .reply)
    }

    /// kafka-in's answer: recovered from Kafka, or a resync (then with the snapshot this cache holds).
    private func answerFromKafka(_ reply: SubscribeReply, outbox: Outbox) {
        guard let subscribe = deepRecoveries.take(reply.requestID) else { return }
        var answer = reply.status == .resync ? store.resyncReply(to: subscribe) : reply
        answer.requestID = subscribe.requestID
        send(answer, answering: subscribe, outbox: outbox)
    }

    public func tick(now: UInt64, outbox: Outbox) {
        guard elapsedNanoseconds(from: lastExpiry, to: now) >= 1_000_000_000 else { return }
        lastExpiry = now
        store.expire(now: now)
        deepRecoveries.expire(now: now)
        let metrics = context.metrics
        metrics.setGauge("subjects", store.subjectCount)
        metrics.setGauge("cachedMessages", store.messageCount)
        metrics.setGauge("cacheBytes", store.bytesHeld)
        metrics.setGauge("cacheEvictedSubjects", store.evictedSubjects)
        metrics.setGauge("cacheShedMessages", store.shedMessages)
        metrics.setGauge("pendingDeepRecoveries", deepRecoveries.count)
    }

    private func fanoutAddress(_ subject: String, _ topology: Topology) -> String {
        topology.address(.fanout, topology.shard(.fanout, for: subject))
    }
}

import Foundation
import SwitchyardCore

/// Per subject: numbers messages (standalone) or keeps Kafka's numbers, holds the history and the snapshot,
/// answers subscribes, acknowledges stored publishes, and passes every message and interest change on to the
/// subject's fanout shard — one pipe, so an interest always reaches the fanout in order with the messages.
public final class Cache: EnvelopeHandler {
    private let context: StageContext
    public let store: SubjectStore
    private var lastExpiry: UInt64 = 0

    public init(context: StageContext) {
        self.context = context
        let config = context.config
        store = SubjectStore(epoch: Self.newEpoch(instance: context.instance),
                             maxMessagesPerSubject: config.maxCachedMessagesPerSubject,
                             maxAge: UInt64(config.cacheExpireTime) * 1_000_000_000)
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
                context.logger.warn("publish reached the cache in Kafka mode; dropped", ["subject": publish.message.subject])
                return
            }
            let message = store.append(publish.message, now: wallClockNanoseconds())
            outbox.send(.message(message), to: fanoutAddress(message.subject, topology))
            if publish.message.flags.contains(.wantsAck) {
                outbox.send(.publishAck(PublishAck(requestID: publish.requestID, status: .ok)), to: publish.replyTo,
                            delivery: .reply)
            }
        case .message(let message):
            store.insert(message)
            outbox.send(envelope, to: fanoutAddress(message.subject, topology))
        case .subscribe(let subscribe):
            if subscribe.registersInterest {
                let interest = Interest(subject: subscribe.subject, ingress: subscribe.ingress, isAdded: true)
                outbox.send(.interest(interest), to: fanoutAddress(subscribe.subject, topology))
            }
            outbox.send(.subscribeReply(store.reply(to: subscribe)), to: subscribe.replyTo, delivery: .reply)
        case .interest(let interest):
            outbox.send(envelope, to: fanoutAddress(interest.subject, topology))
        case .publishAck, .subscribeReply, .peerUp:
            context.logger.warn("unexpected envelope for the cache dropped", ["envelope": envelope.kindName])
        }
    }

    public func tick(now: UInt64, outbox: Outbox) {
        guard now - lastExpiry >= 1_000_000_000 else { return }
        lastExpiry = now
        store.expire(now: now)
        context.metrics.setGauge("subjects", store.subjectCount)
        context.metrics.setGauge("cachedMessages", store.messageCount)
    }

    private func fanoutAddress(_ subject: String, _ topology: Topology) -> String {
        topology.address(.fanout, topology.shard(.fanout, for: subject))
    }
}

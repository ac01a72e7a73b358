import Logging
import SwitchyardCore

/// The only stage that knows the shard map: sends each envelope on to the stage instance that owns its subject.
///
/// Publishes go to the cache in standalone mode and to kafka-out in Kafka mode (the record then comes back
/// through kafka-in); subscribes, interest changes and Kafka records go to the subject's cache shard, which keeps
/// them in order with the subject's messages.
public final class Router: EnvelopeHandler {
    private let context: StageContext

    public init(context: StageContext) {
        self.context = context
    }

    public func handle(_ envelope: Envelope, outbox: Outbox) {
        let topology = context.topology
        switch envelope {
        case .publish(let publish):
            let stage: StageName = context.config.clusterEngine == .kafka ? .kafkaOut : .cache
            outbox.send(envelope, to: topology.address(stage, topology.shard(stage, for: publish.message.subject)))
        case .subscribe(let subscribe):
            outbox.send(envelope, to: cacheAddress(for: subscribe.subject, topology))
        case .interest(let interest):
            outbox.send(envelope, to: cacheAddress(for: interest.subject, topology))
        case .message(let message):
            outbox.send(envelope, to: cacheAddress(for: message.subject, topology))
        case .publishAck, .subscribeReply, .peerUp:
            context.logger.warning("unexpected envelope for the router dropped",
                                   metadata: ["envelope": "\(envelope.kindName)"])
        }
    }

    private func cacheAddress(for subject: String, _ topology: Topology) -> String {
        topology.address(.cache, topology.shard(.cache, for: subject))
    }
}

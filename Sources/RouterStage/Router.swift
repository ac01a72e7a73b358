import Logging
import SwitchyardCore

/// The only stage that knows the shard map: sends each envelope on to the stage instance that owns its subject.
///
/// Publishes go to the cache in standalone mode and to kafka-out in Kafka mode (the record then comes back
/// through kafka-in); subscribes, interest changes and Kafka records go to the subject's cache shard, which keeps
/// them in order with the subject's messages. A pattern (MQTT wildcards) can match subjects of every shard: its
/// interest goes to every fanout shard (straight: the cache does not need it), and a subscribe to it to every
/// cache shard, each of which answers with the retained snapshots it holds.
public final class Router: EnvelopeHandler {
    private let context: StageContext

    public init(context: StageContext) {
        self.context = context
    }

    public func handle(_ envelope: Envelope, outbox: Outbox) {
        let topology = context.topology
        switch Self.route(of: envelope, topology: topology, engine: context.config.clusterEngine) {
        case .shard(let address):
            outbox.send(envelope, to: address)
        case .everyShard(let stage):
            for instance in 0..<topology.count(stage) { outbox.send(envelope, to: topology.address(stage, instance)) }
        case .nowhere:
            context.logger.warning("unexpected envelope for the router dropped",
                                   metadata: ["envelope": "\(envelope.kindName)"])
        }
    }

    /// Where an envelope goes.
    enum Route: Equatable {
        /// The one instance that owns the envelope's subject.
        case shard(String)
        /// Every instance of a stage: a pattern's envelopes.
        case everyShard(StageName)
        /// The router does not take it.
        case nowhere
    }

    static func route(of envelope: Envelope, topology: Topology, engine: ClusterEngine) -> Route {
        func shardOf(_ stage: StageName, _ subject: String) -> Route {
            .shard(topology.address(stage, topology.shard(stage, for: subject)))
        }
        switch envelope {
        case .publish(let publish):
            return shardOf(engine == .kafka ? .kafkaOut : .cache, publish.message.subject)
        case .subscribe(let subscribe):
            return shardOf(.cache, subscribe.subject)
        case .interest(let interest):
            return shardOf(.cache, interest.subject)
        case .message(let message):
            return shardOf(.cache, message.subject)
        case .patternInterest:
            return .everyShard(.fanout)
        case .patternSubscribe:
            return .everyShard(.cache)
        case .peerUp(let peer) where peer.stage == StageName.ingress.rawValue:
            return .everyShard(.fanout)  // the fanouts forget the ingress's old patterns
        case .publishAck, .subscribeReply, .peerUp:
            return .nowhere
        }
    }
}

import Logging
import SwitchyardCore

/// Per subject, which ingress instances have subscribers; forwards each message once to each of them.
public final class Fanout: EnvelopeHandler {
    private let context: StageContext
    /// Subject → the ingress instances with at least one subscriber.
    private var interested: [String: Set<UInt32>] = [:]

    public init(context: StageContext) {
        self.context = context
    }

    public func handle(_ envelope: Envelope, outbox: Outbox) {
        switch envelope {
        case .message(let message):
            guard let ingresses = interested[message.subject] else { return }
            let topology = context.topology
            // An ingress that is gone (killed, scaled away) or stuck must not stall the others: sends to it give up
            // after a timeout, and an ingress that comes back repairs what it missed from the cache.
            for ingress in ingresses {
                outbox.send(envelope, to: topology.address(.ingress, Int(ingress)), delivery: .reply)
            }
        case .interest(let interest):
            if interest.isAdded {
                interested[interest.subject, default: []].insert(interest.ingress)
            } else if var ingresses = interested[interest.subject] {
                ingresses.remove(interest.ingress)
                interested[interest.subject] = ingresses.isEmpty ? nil : ingresses
            }
            context.metrics.setGauge("subjects", interested.count)
        case .publish, .publishAck, .subscribe, .subscribeReply, .peerUp:
            context.logger.warning("unexpected envelope for the fanout dropped",
                                   metadata: ["envelope": "\(envelope.kindName)"])
        }
    }

    /// Forgets ingress instances that were scaled away.
    public func topologyChanged(_ topology: Topology, outbox: Outbox) {
        let count = UInt32(topology.count(.ingress))
        for (subject, ingresses) in interested {
            let kept = ingresses.filter { $0 < count }
            interested[subject] = kept.isEmpty ? nil : kept
        }
    }
}

import Logging
import SwitchyardCore

/// Per subject and per pattern, which ingress instances have subscribers; forwards each message once to each
/// ingress interested in its subject or in a pattern matching it.
public final class Fanout: EnvelopeHandler {
    private let context: StageContext
    private let interest = FanoutInterest()

    public init(context: StageContext) {
        self.context = context
    }

    public func handle(_ envelope: Envelope, outbox: Outbox) {
        switch envelope {
        case .message(let message):
            let topology = context.topology
            // An ingress that is gone (killed, scaled away) or stuck must not stall the others: sends to it give up
            // after a timeout, and an ingress that comes back repairs what it missed from the cache.
            interest.forEachIngress(interestedIn: message.subject) { ingress in
                outbox.send(envelope, to: topology.address(.ingress, Int(ingress)), delivery: .reply)
            }
        case .interest(let change):
            interest.apply(change)
            context.metrics.setGauge("subjects", interest.subjectCount)
        case .patternInterest(let change):
            if !interest.apply(change) {
                context.logger.warning("pattern interest with an invalid pattern dropped",
                                       metadata: ["pattern": "\(change.pattern)"])
            }
            context.metrics.setGauge("patterns", interest.patternCount)
        case .peerUp(let peer) where peer.stage == StageName.ingress.rawValue:
            // A (re)started ingress: the patterns its previous process announced are gone with it.
            interest.forgetPatterns(of: peer.instance)
            context.metrics.setGauge("patterns", interest.patternCount)
        case .publish, .publishAck, .subscribe, .subscribeReply, .peerUp, .patternSubscribe:
            context.logger.warning("unexpected envelope for the fanout dropped",
                                   metadata: ["envelope": "\(envelope.kindName)"])
        }
    }

    /// Forgets ingress instances that were scaled away, for subjects and patterns.
    public func topologyChanged(_ topology: Topology, outbox: Outbox) {
        interest.keepIngresses(below: UInt32(topology.count(.ingress)))
    }
}

import NIOCore
import SwitchyardCore
import XCTest
@testable import RouterStage

final class RouterRouteTests: XCTestCase {
    let topology = Topology(runDir: "/run", instances: ["cache": 3, "fanout": 2, "kafka-out": 2])

    func route(_ envelope: Envelope, _ engine: ClusterEngine = .none) -> Router.Route {
        Router.route(of: envelope, topology: topology, engine: engine)
    }

    func testSubjectEnvelopesGoToTheirShard() {
        let subject = "/vehicles/car7/speed"
        let cache = Router.Route.shard(topology.address(.cache, topology.shard(.cache, for: subject)))
        let message = Message(subject: subject, content: ByteBuffer())
        XCTAssertEqual(route(.message(message)), cache)
        XCTAssertEqual(route(.interest(Interest(subject: subject, ingress: 0, isAdded: true))), cache)
        XCTAssertEqual(route(.subscribe(Subscribe(requestID: 1, replyTo: "r", subject: subject, ingress: 0,
                                                  registersInterest: true, start: .snapshot))), cache)
        let publish = Envelope.publish(Publish(requestID: 1, replyTo: "r", message: message))
        XCTAssertEqual(route(publish), cache)
        XCTAssertEqual(route(publish, .kafka),
                       .shard(topology.address(.kafkaOut, topology.shard(.kafkaOut, for: subject))))
    }

    func testAPatternsInterestGoesToEveryFanoutAndItsSubscribeToEveryCache() {
        XCTAssertEqual(route(.patternInterest(PatternInterest(pattern: "/vehicles/+/speed", ingress: 0, isAdded: true))),
                       .everyShard(.fanout))
        XCTAssertEqual(route(.patternSubscribe(PatternSubscribe(requestID: 1, replyTo: "r", pattern: "/#"))),
                       .everyShard(.cache))
    }

    func testARestartedIngressTellsEveryFanout() {
        XCTAssertEqual(route(.peerUp(PeerUp(stage: "ws-ingress", instance: 1))), .everyShard(.fanout))
    }

    func testAnswersAreNotTheRoutersToRoute() {
        XCTAssertEqual(route(.peerUp(PeerUp(stage: "cache", instance: 0))), .nowhere)
        XCTAssertEqual(route(.publishAck(PublishAck(requestID: 1, status: .ok))), .nowhere)
    }
}

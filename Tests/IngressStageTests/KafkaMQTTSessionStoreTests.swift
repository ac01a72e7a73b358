import Foundation
import NIOCore
import NIOPosix
import SwitchyardCore
import SwitchyardKafka
import SwitchyardKafkaTesting
import XCTest
@testable import IngressService
@testable import IngressStage

private func session(_ clientID: String, seq: UInt64 = 4, expiresAt: Double = 2_000_000_000,
                     generation: UInt64? = nil) -> MQTTSessionRecord {
    MQTTSessionRecord(clientID: clientID, version: 5, expirySeconds: 60, expiresAt: expiresAt,
                      subscriptions: [.init(filter: "a/b", qos: 1)],
                      positions: ["/a/b": MQTTSubjectPosition(epoch: "e", seq: seq, sentSeq: seq + 2)],
                      generation: generation)
}

final class MQTTSessionTableTests: XCTestCase {
    func testOwnWritesApplyAtOnceAndOlderRecordsReadBeforeThemAreSkipped() {
        var table = MQTTSessionTable(maxSessions: 10)
        XCTAssertEqual(.applied, table.write("dev", session("dev", seq: 1), id: 1))
        XCTAssertEqual(.applied, table.write("dev", session("dev", seq: 2), id: 2))
        XCTAssertEqual(table.load("dev", now: 0).record, session("dev", seq: 2), "read-your-writes")
        table.read("dev", session("dev", seq: 1), ownID: 1, now: 0)
        table.read("dev", session("other-node", seq: 9), ownID: nil, now: 0)
        XCTAssertEqual(table.load("dev", now: 0).record, session("dev", seq: 2), "both are before write 2 in the topic")
        table.read("dev", session("dev", seq: 2), ownID: 2, now: 0)
        table.read("dev", session("dev", seq: 7), ownID: nil, now: 0)
        XCTAssertEqual(table.load("dev", now: 0).record, session("dev", seq: 7), "after ours: the last write wins")
        table.read("dev", nil, ownID: nil, now: 0)
        XCTAssertEqual(table.load("dev", now: 0), MQTTSessionLoaded(record: nil, hasRoom: true), "tombstone")
    }

    func testDeletingASessionNotHeldWritesNoTombstoneOnceCaughtUp() {
        var table = MQTTSessionTable(maxSessions: 10)
        XCTAssertEqual(table.write("clean", nil, id: 1, isCaughtUp: false), .applied, "it may be in the unread part")
        table.read("clean", nil, ownID: 1, now: 0)
        XCTAssertEqual(table.write("clean", nil, id: 2), .nothingToDelete, "every clean CONNECT deletes")
        table.read("dev", session("dev"), ownID: nil, now: 0)
        XCTAssertEqual(table.write("dev", nil, id: 3), .applied)
        XCTAssertEqual(table.write("dev", nil, id: 4), .applied, "our tombstone not read back yet: written again")
    }

    func testAFailedWriteNoLongerHoldsBackOtherWriters() {
        var table = MQTTSessionTable(maxSessions: 10)
        XCTAssertEqual(.applied, table.write("dev", session("dev", seq: 1), id: 5))
        table.writeFailed("dev", id: 5)
        table.read("dev", session("dev", seq: 8), ownID: nil, now: 0)
        XCTAssertEqual(table.load("dev", now: 0).record?.positions["/a/b"]?.seq, 8)
    }

    func testASaveOfAnOlderGenerationIsNotAppliedNeitherWrittenNorRead() {
        // Node B took the session up (generation 1); node A's connection, still open, saves generation 0.
        var nodeA = MQTTSessionTable(maxSessions: 10)
        nodeA.read("dev", session("dev", seq: 1), ownID: nil, now: 0)
        nodeA.read("dev", session("dev", seq: 2, generation: 1), ownID: nil, now: 0)
        XCTAssertEqual(nodeA.write("dev", session("dev", seq: 3), id: 1), .takenOver)
        XCTAssertEqual(nodeA.load("dev", now: 0).record?.generation, 1)
        // A saved before it read B's record: B's (newer generation) still counts, A's read back does not undo it.
        var racing = MQTTSessionTable(maxSessions: 10)
        racing.read("dev", session("dev", seq: 1), ownID: nil, now: 0)
        XCTAssertEqual(racing.write("dev", session("dev", seq: 3), id: 1), .applied)
        racing.read("dev", session("dev", seq: 2, generation: 1), ownID: nil, now: 0)
        racing.read("dev", session("dev", seq: 3), ownID: 1, now: 0)
        XCTAssertEqual(racing.load("dev", now: 0).record, session("dev", seq: 2, generation: 1))
        // Any other node reading the topic in that order ends the same.
        var other = MQTTSessionTable(maxSessions: 10)
        for record in [session("dev", seq: 1), session("dev", seq: 2, generation: 1), session("dev", seq: 3)] {
            other.read("dev", record, ownID: nil, now: 0)
        }
        XCTAssertEqual(other.load("dev", now: 0).record, session("dev", seq: 2, generation: 1))
    }

    func testBoundsAndExpiry() {
        var table = MQTTSessionTable(maxSessions: 2)
        XCTAssertEqual(.applied, table.write("a", session("a"), id: 1))
        table.read("b", session("b", expiresAt: 50), ownID: nil, now: 0)
        XCTAssertEqual(table.write("c", session("c"), id: 2), .noRoom, "MqttMaxSessions")
        table.read("c", session("c"), ownID: nil, now: 0)
        XCTAssertNil(table.load("c", now: 0).record, "not held beyond MqttMaxSessions")
        XCTAssertFalse(table.load("c", now: 0).hasRoom)
        XCTAssertEqual(table.load("b", now: 60), MQTTSessionLoaded(record: nil, hasRoom: true), "expired: dropped")
        table.read("b", session("b", expiresAt: 50), ownID: nil, now: 60)
        XCTAssertNil(table.load("b", now: 60).record, "an expired record read is none")
        table.read("b", session("b", expiresAt: 100), ownID: nil, now: 60)
        XCTAssertEqual(table.removeExpired(now: 200), ["b"])
        XCTAssertNotNil(table.load("a", now: 200).record)
    }

    func testCatchUpNeedsEveryPartitionOfTheFirstAssignmentAtItsEnd() {
        var gate = MQTTSessionCatchUp()
        XCTAssertFalse(gate.reachedEnd(of: 0), "nothing assigned yet")
        XCTAssertFalse(gate.assigned([0, 1]))
        XCTAssertFalse(gate.reachedEnd(of: 0))
        XCTAssertFalse(gate.reachedEnd(of: 0))
        XCTAssertTrue(gate.reachedEnd(of: 1))
        XCTAssertTrue(gate.isDone)
        XCTAssertFalse(gate.topicCreated(), "once")
        var created = MQTTSessionCatchUp()
        XCTAssertTrue(created.topicCreated())
        XCTAssertFalse(created.assigned([0]))
    }
}

final class KafkaMQTTSessionStoreTests: XCTestCase {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let logger = LogWriter(stage: "ws-ingress", instance: 0, level: .error).makeLogger()

    override func tearDown() {
        try? group.syncShutdownGracefully()
    }

    func config(_ servers: String) -> KafkaConfig {
        KafkaConfig(properties: ["bootstrap.servers": servers, "log_level": "0", "linger.ms": "1"])
    }

    func store(_ servers: String, wait: TimeAmount = .seconds(10)) throws -> KafkaMQTTSessionStore {
        try KafkaMQTTSessionStore(producerConfig: config(servers), consumerConfig: config(servers), topic: "sessions",
                                  maxSessions: 1000, catchUpWait: wait, topicIDs: false, logger: logger)
    }

    func load(_ store: KafkaMQTTSessionStore, _ clientID: String) throws -> MQTTSessionLoaded {
        try store.load(clientID, on: group.next()).wait()
    }

    func testASessionSavedOnOneStoreIsFoundByAnotherAndATombstoneDeletesIt() throws {
        let cluster = try KafkaMockCluster(brokers: 1)
        try cluster.createTopic("sessions", partitions: 2)
        let first = try store(cluster.bootstrapServers)
        first.save(session("dev1"))
        first.save(session("dev2", seq: 9))
        XCTAssertEqual(try load(first, "dev1").record, session("dev1"), "read-your-writes")
        first.close()

        // A store started later (another node) reads the topic from its beginning before it answers.
        let second = try store(cluster.bootstrapServers)
        XCTAssertEqual(try load(second, "dev2"), MQTTSessionLoaded(record: session("dev2", seq: 9), hasRoom: true))
        XCTAssertEqual(try load(second, "dev1").record, session("dev1"))

        // It keeps reading: a later save and a delete on the first store reach it.
        let third = try store(cluster.bootstrapServers)
        XCTAssertNotNil(try load(third, "dev1").record)
        third.save(session("dev1", seq: 40))
        third.delete("dev2")
        third.close()
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, try load(second, "dev1").record?.positions["/a/b"]?.seq != 40
            || load(second, "dev2").record != nil {
            Thread.sleep(forTimeInterval: 0.05)
        }
        XCTAssertEqual(try load(second, "dev1").record, session("dev1", seq: 40))
        XCTAssertNil(try load(second, "dev2").record, "the tombstone deleted it")
        second.close()
    }

    func testACONNECTWaitsForTheCatchUpAndKafkaUnreachableIsUnavailableNotNoSession() throws {
        let cluster = try KafkaMockCluster(brokers: 1)
        try cluster.createTopic("sessions", partitions: 4)
        let writer = try store(cluster.bootstrapServers)
        for i in 0..<200 { writer.save(session("dev\(i)", seq: UInt64(i))) }
        writer.close()
        let reader = try store(cluster.bootstrapServers)
        // Asked at once: answered only after the whole topic was read, so the last device is found.
        XCTAssertEqual(try load(reader, "dev199").record, session("dev199", seq: 199))
        reader.close()

        // Kafka down when the store starts: unavailable; once it is back, the topic is read. (The mock cluster
        // names no controller, so it cannot create topics: created here.)
        let down = try KafkaMockCluster(brokers: 1)
        try down.createTopic("sessions", partitions: 2)
        try down.setBroker(1, up: false)
        let waiting = try store(down.bootstrapServers, wait: .milliseconds(300))
        XCTAssertEqual(try load(waiting, "dev1"), .unavailable)
        try down.setBroker(1, up: true)
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, try load(waiting, "dev1").isUnavailable { Thread.sleep(forTimeInterval: 0.2) }
        XCTAssertEqual(try load(waiting, "dev1"), MQTTSessionLoaded(record: nil, hasRoom: true))
        waiting.close()

        let started = Date()
        let unreachable = try store("127.0.0.1:1", wait: .milliseconds(300))
        XCTAssertEqual(try load(unreachable, "dev1"), .unavailable)
        XCTAssertLessThan(Date().timeIntervalSince(started), 5)
        unreachable.close()
    }
}

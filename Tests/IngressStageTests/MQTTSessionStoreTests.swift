import Foundation
import NIOCore
import NIOEmbedded
import NIOWebSocket
import SwitchyardCore
import XCTest
@testable import IngressStage

final class MQTTSessionStoreTests: XCTestCase {
    var runDir: TestRunDir!
    var store: MQTTSessionStore!

    override func setUpWithError() throws {
        runDir = try TestRunDir("sy-mqtt-sessions")
        store = MQTTSessionStore(runDir: runDir.path, maxSessions: 2,
                                 logger: LogWriter(stage: "ws-ingress", instance: 0, level: .error).makeLogger())
    }

    override func tearDown() {
        runDir.remove()
    }

    func record(_ clientID: String, expiresAt: Double = 2_000_000_000) -> MQTTSessionRecord {
        MQTTSessionRecord(clientID: clientID, version: 4, expirySeconds: 60, expiresAt: expiresAt,
                          subscriptions: [.init(filter: "a/b", qos: 1)],
                          positions: ["/a/b": MQTTSubjectPosition(epoch: "e", seq: 4, sentSeq: 6)])
    }

    func files() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: store.directory).sorted()
    }

    func testASessionIsWrittenInOneStepToAFileNamedByItsIdentifiersHashAndReadBack() throws {
        XCTAssertEqual(store.loadNow("dev1", now: 1), .init(record: nil, hasRoom: true))
        XCTAssertFalse(FileManager.default.fileExists(atPath: store.directory), "created with the first session")
        XCTAssertTrue(store.saveNow(record("dev1")))
        XCTAssertEqual(store.loadNow("dev1", now: 1), .init(record: record("dev1"), hasRoom: true))
        let name = MQTTSessionStore.fileName(of: "dev1")
        XCTAssertEqual(try files(), [name], "the temporary file was renamed over it: nothing else is left")
        XCTAssertTrue(MQTTSessionStore.isSessionFileName(name))
        XCTAssertEqual(MQTTSessionStore.fileName(of: String(repeating: "é/", count: 128)).count, name.count)
        XCTAssertNotEqual(MQTTSessionStore.fileName(of: "ab"), MQTTSessionStore.fileName(of: "ba"))
        var changed = record("dev1")
        changed.positions["/a/b"]?.seq = 6
        XCTAssertTrue(store.saveNow(changed))
        XCTAssertEqual(store.loadNow("dev1", now: 1).record, changed, "replaced")
    }

    func testATakeOverIsAnnouncedToTheNodesOtherInstancesOnce() throws {
        let other = MQTTSessionStore(runDir: runDir.path, maxSessions: 2,
                                     logger: LogWriter(stage: "ws-ingress", instance: 1, level: .error).makeLogger())
        let now = Date().timeIntervalSince1970
        XCTAssertEqual(other.takeOversNow(now: now), [:], "no folder yet")
        store.announceTakeOverNow(of: "dev1", generation: 3)
        store.announceTakeOverNow(of: "dev2", generation: 1)
        XCTAssertEqual(store.takeOversNow(now: now), [:], "its own announcements")
        XCTAssertEqual(other.takeOversNow(now: now), ["dev1": 3, "dev2": 1])
        XCTAssertEqual(other.takeOversNow(now: now), [:], "read once")
        let forged = (store.takeOverDirectory as NSString)
            .appendingPathComponent("\(MQTTSessionStore.fileName(of: "dev1").dropLast(5))-9")
        XCTAssertTrue(FileManager.default.createFile(atPath: forged, contents: Data("dev2".utf8)))
        XCTAssertEqual(other.takeOversNow(now: now), [:], "a name that is not its identifier's hash")
        XCTAssertNil(MQTTSessionStore.takeOverMarker("0123-4"))
        XCTAssertNil(MQTTSessionStore.takeOverMarker("\(MQTTSessionStore.fileName(of: "x").dropLast(5))-x"))
        XCTAssertEqual(other.takeOversNow(now: now + 31), [:])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: store.takeOverDirectory), [],
                       "removed after 30 s")
    }

    func testAnExpiredSessionIsNoSessionAndIsDeletedAlsoBySweeping() throws {
        store.saveNow(record("old", expiresAt: 100))
        XCTAssertEqual(store.loadNow("old", now: 101), .init(record: nil, hasRoom: true))
        XCTAssertEqual(try files(), [], "deleted when found expired")
        store.saveNow(record("old", expiresAt: 100))
        store.saveNow(record("live", expiresAt: 1000))
        let stale = (store.directory as NSString).appendingPathComponent(".tmp-interrupted")
        let fresh = (store.directory as NSString).appendingPathComponent(".tmp-being-written")
        for path in [stale, fresh] { XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data("{".utf8))) }
        let now = Date().timeIntervalSince1970
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSince1970: now - 120)], ofItemAtPath: stale)
        XCTAssertEqual(store.sweepNow(now: 50), 0, "nothing expired at 50")
        XCTAssertEqual(store.sweepNow(now: 500), 1, "one expired at 500")
        XCTAssertEqual(store.sweepNow(now: now), 1, "the other by now")
        store.saveNow(record("live", expiresAt: now + 60))
        XCTAssertEqual(store.sweepNow(now: now), 0)
        XCTAssertEqual(try files(), [".tmp-being-written", MQTTSessionStore.fileName(of: "live")],
                       "a temporary file older than a minute is removed")
    }

    func testTheSweepOffTheCallersThreadReadsInBatches() throws {
        store = MQTTSessionStore(runDir: runDir.path, maxSessions: 1000,
                                 logger: LogWriter(stage: "ws-ingress", instance: 0, level: .error).makeLogger())
        let now = Date().timeIntervalSince1970
        let count = MQTTSessionStore.sweepBatch + 3
        for n in 0..<count { store.saveNow(record("c\(n)", expiresAt: n % 2 == 0 ? now - 1 : now + 60)) }
        store.sweep()
        store.sync {}  // the listing, which queued the batches
        store.sync {}  // the batches and the count
        XCTAssertEqual(try files().count, count / 2)
    }

    func testMaxSessionsBoundsNewSessionsNotTheKeptOnes() throws {
        XCTAssertTrue(store.saveNow(record("a")))
        XCTAssertTrue(store.saveNow(record("b")))
        XCTAssertFalse(store.loadNow("c", now: 1).hasRoom)
        XCTAssertFalse(store.saveNow(record("c")), "a third is not kept")
        XCTAssertTrue(store.saveNow(record("a")), "a kept one is still saved")
        store.deleteNow("b")
        XCTAssertTrue(store.loadNow("c", now: 1).hasRoom)
        XCTAssertTrue(store.saveNow(record("c")))
        XCTAssertEqual(try files().count, 2)
    }

    func testACorruptFileOrAnotherIdentifiersFileIsNoSession() throws {
        try FileManager.default.createDirectory(atPath: store.directory, withIntermediateDirectories: true)
        XCTAssertTrue(FileManager.default.createFile(atPath: store.path(of: "bad"), contents: Data("{\"clientID\":".utf8)))
        XCTAssertEqual(store.loadNow("bad", now: 1), .init(record: nil, hasRoom: true))
        var wrongLevel = record("old")
        wrongLevel.version = 3
        try wrongLevel.write(to: store.path(of: "old"))
        XCTAssertNil(store.loadNow("old", now: 1).record)
        // A file whose identifier differs (a hash collision) is left alone and this client's session not kept.
        try record("other").write(to: store.path(of: "mine"))
        XCTAssertEqual(store.loadNow("mine", now: 1), .init(record: nil, hasRoom: false))
        XCTAssertEqual(store.loadNow("mine", now: 1).record, nil)
        XCTAssertTrue(store.saveNow(record("bad")), "a corrupt file is replaced by the next save")
        XCTAssertEqual(store.loadNow("bad", now: 1).record, record("bad"))
    }
}

final class MQTTSessionTermsTests: XCTestCase {
    func terms(_ version: MQTTVersion, clean: Bool, asked: UInt32? = nil, max: Int = 86_400, room: Bool = true)
        -> MQTTSessionTerms {
        MQTTSessionTerms(version: version, cleanSession: clean, requestedExpiry: asked, maxExpiry: max, hasRoom: room)
    }

    func test311CleanSessionOffKeepsTheSessionForTheMaximum() {
        let kept = terms(.v311, clean: false)
        XCTAssertEqual(kept.expirySeconds, 86_400)
        XCTAssertFalse(kept.discardsStored)
        XCTAssertNil(kept.connAckExpiry, "3.1.1 has no property to say it")
        let clean = terms(.v311, clean: true)
        XCTAssertNil(clean.expirySeconds)
        XCTAssertTrue(clean.discardsStored)
        XCTAssertTrue(terms(.v311, clean: false, room: false).refused, "CONNACK 0x03: it cannot be kept")
        XCTAssertFalse(terms(.v311, clean: true, room: false).refused, "nothing to keep")
        XCTAssertEqual(terms(.v311, clean: false, max: 0).expirySeconds, nil, "MqttSessionExpiry 0: none kept")
        XCTAssertFalse(terms(.v311, clean: false, max: 0).refused)
    }

    func testV5AskedExpiryIsCappedAndTheCapOrZeroIsToldInConnAck() {
        XCTAssertEqual(terms(.v5, clean: false, asked: 300), MQTTSessionTerms(expirySeconds: 300, connAckExpiry: nil, discardsStored: false))
        XCTAssertEqual(terms(.v5, clean: false, asked: UInt32.max, max: 3600),
                       MQTTSessionTerms(expirySeconds: 3600, connAckExpiry: 3600, discardsStored: false))
        XCTAssertEqual(terms(.v5, clean: true, asked: 300),
                       MQTTSessionTerms(expirySeconds: 300, connAckExpiry: nil, discardsStored: true),
                       "Clean Start discards the stored session and starts a persistent one")
        XCTAssertEqual(terms(.v5, clean: false), MQTTSessionTerms(expirySeconds: nil, connAckExpiry: nil, discardsStored: false),
                       "no Session Expiry Interval: ends with the connection")
        XCTAssertEqual(terms(.v5, clean: false, asked: 300, room: false),
                       MQTTSessionTerms(expirySeconds: nil, connAckExpiry: 0, discardsStored: false),
                       "not refused: told by Session Expiry Interval 0")
        XCTAssertEqual(terms(.v5, clean: false, asked: 300, max: 0).connAckExpiry, 0)
    }
}

final class MQTTSessionPositionTests: XCTestCase {
    let allocator = ByteBufferAllocator()

    func message(_ seq: UInt64, epoch: String = "e") -> Message {
        Message(subject: "/a/b", content: ByteBuffer(string: "m\(seq)"), seq: seq, previousSeq: seq - 1, epoch: epoch)
    }

    func persistentSession() -> MQTTSession {
        let session = MQTTSession(version: .v311, clientID: "c", keepAliveSeconds: 0, will: nil)
        session.expirySeconds = 60
        session.grantedQoS["/a/b"] = 1
        return session
    }

    func testThePositionIsTheLastSentOrJustBeforeTheOldestUnacknowledged() throws {
        let session = persistentSession()
        XCTAssertNil(session.position(of: "/a/b"))
        for seq: UInt64 in 4...6 {
            var publish = MQTTOutgoingPublish(message: message(seq), retain: false)
            _ = try XCTUnwrap(publish.packet(for: session, allocator: allocator))
        }
        XCTAssertTrue(session.needsSave)
        XCTAssertEqual(session.position(of: "/a/b"), MQTTSubjectPosition(epoch: "e", seq: 3, sentSeq: 6))
        session.acknowledge(1)
        session.acknowledge(3)
        XCTAssertEqual(session.position(of: "/a/b"), MQTTSubjectPosition(epoch: "e", seq: 4, sentSeq: 6),
                       "5 still awaits its PUBACK: sent again")
        session.acknowledge(2)
        XCTAssertEqual(session.position(of: "/a/b"), MQTTSubjectPosition(epoch: "e", seq: 6, sentSeq: 6))
        // A live message encoded before the older messages of an answer still being written.
        for seq: UInt64 in [10, 8, 9] {
            var publish = MQTTOutgoingPublish(message: message(seq), retain: false)
            _ = try XCTUnwrap(publish.packet(for: session, allocator: allocator))
        }
        XCTAssertEqual(session.position(of: "/a/b"), MQTTSubjectPosition(epoch: "e", seq: 7, sentSeq: 10),
                       "before the lowest unacknowledged, whatever the order they were sent in")
        XCTAssertEqual(session.positions(of: ["/a/b", "/x"]), ["/a/b": MQTTSubjectPosition(epoch: "e", seq: 7, sentSeq: 10)])
        session.forget("/a/b")
        XCTAssertNil(session.position(of: "/a/b"))
        let shortLived = MQTTSession(version: .v311, clientID: "d", keepAliveSeconds: 0, will: nil)
        shortLived.grantedQoS["/a/b"] = 1
        var publish = MQTTOutgoingPublish(message: message(7), retain: false)
        _ = publish.packet(for: shortLived, allocator: allocator)
        XCTAssertNil(shortLived.position(of: "/a/b"), "a session that ends with its connection tracks nothing")
    }

    func testARestoredSessionResendsWhatWasSentBeforeFlaggedDUP() throws {
        let session = persistentSession()
        session.restoredPositions["/a/b"] = MQTTSubjectPosition(epoch: "e", seq: 4, sentSeq: 6)
        XCTAssertEqual(session.position(of: "/a/b"), session.restoredPositions["/a/b"], "nothing sent yet")
        let dups = try (UInt64(5)...7).map { seq -> Bool in
            var publish = MQTTOutgoingPublish(message: message(seq), retain: false)
            var bytes = try XCTUnwrap(publish.packet(for: session, allocator: allocator))
            let packet = try MQTTCodec.decode(XCTUnwrap(MQTTFraming.next(from: &bytes, maxBodySize: .max)), version: .v311)
            guard case .publish(let decoded) = packet else { throw XCTSkip("not a PUBLISH") }
            return decoded.dup
        }
        XCTAssertEqual(dups, [true, true, false])
        var otherEpoch = MQTTOutgoingPublish(message: message(5, epoch: "f"), retain: false)
        XCTAssertFalse(session.isResend(otherEpoch.message), "another epoch's 5 is another message")
        _ = otherEpoch.packet(for: session, allocator: allocator)
    }

    func decoded(_ bytes: ByteBuffer?) throws -> MQTTPublish {
        var bytes = try XCTUnwrap(bytes)
        let packet = try MQTTCodec.decode(XCTUnwrap(MQTTFraming.next(from: &bytes, maxBodySize: .max)), version: .v311)
        guard case .publish(let publish) = packet else { throw XCTSkip("not a PUBLISH") }
        return publish
    }

    func testPositionsOfSubjectsDeliveredThroughAPatternAreBoundedDroppingTheLeastRecent() throws {
        let session = persistentSession()
        session.maxPatternPositions = 2
        for subject in ["/p/1", "/p/2", "/a/b", "/p/1", "/p/3"] {
            let message = Message(subject: subject, content: ByteBuffer(string: "m"), seq: 1, previousSeq: 0, epoch: "e")
            var publish = MQTTOutgoingPublish(message: message, retain: false)
            _ = publish.packet(for: session, allocator: allocator)
        }
        XCTAssertEqual(Set(session.patternSubjects), ["/p/1", "/p/3"], "/a/b is an exact subscription; /p/2 the least recent")
        XCTAssertEqual(session.droppedPatternPositions, 1)
        XCTAssertNil(session.position(of: "/p/2"))
        XCTAssertEqual(session.position(of: "/p/3")?.sentSeq, 1)
    }

    func testReSendsKeepTheirPacketIdentifiersAndNewMessagesDoNotTakeThem() throws {
        let before = persistentSession()
        for seq: UInt64 in 5...7 {
            var publish = MQTTOutgoingPublish(message: message(seq), retain: false)
            _ = try XCTUnwrap(publish.packet(for: before, allocator: allocator))
        }
        before.acknowledge(1)
        let positions = before.positions(of: ["/a/b"])
        XCTAssertEqual(positions, ["/a/b": MQTTSubjectPosition(epoch: "e", seq: 5, sentSeq: 7)])
        let saved = before.unacknowledgedMessages(within: positions)
        XCTAssertEqual(saved.map(\.packetID), [2, 3], "6 and 7 await their PUBACK")
        XCTAssertEqual(saved.map(\.seq), [6, 7])

        let after = persistentSession()
        after.restoredPositions = positions
        after.restorePacketIDs(saved)
        XCTAssertEqual(after.unacknowledgedMessages(within: positions), saved, "kept until re-sent")
        var live = MQTTOutgoingPublish(message: message(1, epoch: "f"), retain: false)
        XCTAssertEqual(try decoded(live.packet(for: after, allocator: allocator)).packetID, 1)
        var next = MQTTOutgoingPublish(message: message(2, epoch: "f"), retain: false)
        XCTAssertEqual(try decoded(next.packet(for: after, allocator: allocator)).packetID, 4, "2 and 3 are kept")
        let resent = try (UInt64(6)...7).map { seq -> MQTTPublish in
            var publish = MQTTOutgoingPublish(message: message(seq), retain: false)
            return try decoded(publish.packet(for: after, allocator: allocator))
        }
        XCTAssertEqual(resent.map(\.packetID), [2, 3], "MQTT-4.4.0-1: the identifiers they were sent with")
        XCTAssertEqual(resent.map(\.dup), [true, true])
        XCTAssertEqual(after.unacknowledgedCount, 4)
        XCTAssertTrue(after.acknowledge(2), "the re-send's PUBACK")

        let forgetting = persistentSession()
        forgetting.restoredPositions = positions
        forgetting.restorePacketIDs(saved + [.init(subject: "/a/b", epoch: "e", seq: 9, packetID: 0)])
        XCTAssertEqual(forgetting.unacknowledgedMessages(within: positions), saved, "identifier 0 is not one")
        forgetting.forget("/a/b")
        XCTAssertEqual(forgetting.unacknowledgedMessages(within: positions), [], "unsubscribed: given up")
    }
}

/// The hub continuing a persistent session: a take-over on the same instance hands it over, its subscriptions
/// come back without SUBACK and recover from the acknowledged position, re-sent messages flagged DUP.
final class MQTTSessionHubTests: XCTestCase {
    var runDir: TestRunDir!
    var loop: EmbeddedEventLoop!
    var hub: IngressHub!

    override func setUpWithError() throws {
        runDir = try TestRunDir("sy-mqtt-hub")
        loop = EmbeddedEventLoop()
        hub = try .forTests(on: loop, runDir: runDir)
        hub.mqttSessionStore = MQTTSessionStore(runDir: runDir.path, maxSessions: 10,
                                                logger: LogWriter(stage: "ws-ingress", instance: 0, level: .error).makeLogger())
    }

    override func tearDownWithError() throws {
        (hub.mqttSessionStore as? MQTTSessionStore)?.sync {}
        runDir.remove()
    }

    func channel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(loop: loop)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    func packets(_ channel: EmbeddedChannel) throws -> [MQTTPacket] {
        var packets: [MQTTPacket] = []
        while var frame = try channel.readOutbound(as: WebSocketFrame.self)?.data {
            while let raw = try MQTTFraming.next(from: &frame, maxBodySize: .max) {
                packets.append(try MQTTCodec.decode(raw, version: .v311))
            }
        }
        return packets
    }

    func connect(_ channel: EmbeddedChannel, clean: Bool = false) throws -> ClientConnection {
        let connect = MQTTConnect(version: .v311, clientID: "dev", cleanSession: clean, keepAlive: 60)
        guard case .accepted(let connection) = hub.connect(channel, connect, permissions: .everything,
                                                           stored: .init(record: nil, hasRoom: true)) else {
            throw XCTSkip("refused")
        }
        return connection
    }

    func answer(_ connection: ClientConnection, messages: [Message], lastSeq: UInt64) throws {
        guard case .pending(let requestID)? = hub.table.state(of: connection.id, in: "/a/b") else {
            return XCTFail("no pending subscribe")
        }
        hub.handle([.subscribeReply(SubscribeReply(requestID: requestID, subject: "/a/b", kind: .recovered, status: .sync,
                                                   messages: messages, epoch: "e", lastSeq: lastSeq))])
    }

    func message(_ seq: UInt64) -> Message {
        Message(subject: "/a/b", content: ByteBuffer(string: "m\(seq)"), seq: seq, previousSeq: seq - 1, epoch: "e")
    }

    func testAConnectionTakenOverOnAnotherInstanceIsClosedWithoutSavingAndItsWillIsPublishedOnce() throws {
        let first = try channel()
        let connect = MQTTConnect(version: .v5, clientID: "dev", cleanSession: false, keepAlive: 60,
                                  will: MQTTWill(topic: "a/will", payload: ByteBuffer(string: "gone"), qos: 0, retain: false),
                                  properties: MQTTProperties([(MQTTProperties.ID.sessionExpiryInterval, .fourByteInteger(60))]))
        guard case .accepted(let old) = hub.connect(first, connect, permissions: .everything,
                                                    stored: .init(record: nil, hasRoom: true)) else {
            return XCTFail("refused")
        }
        _ = try first.readOutbound(as: WebSocketFrame.self)  // CONNACK
        hub.closeTakenOverMQTTConnections(["dev": 0])
        XCTAssertFalse(old.isClosing, "not a newer generation")
        hub.closeTakenOverMQTTConnections(["dev": 1])
        XCTAssertTrue(old.isClosing)
        XCTAssertEqual(old.mqtt?.isReleased, true, "its session is not saved over the new connection's")
        var frame = try XCTUnwrap(first.readOutbound(as: WebSocketFrame.self)?.data)
        let disconnect = try MQTTCodec.decode(XCTUnwrap(MQTTFraming.next(from: &frame, maxBodySize: .max)), version: .v5)
        guard case .disconnect(let packet) = disconnect else { return XCTFail("\(disconnect)") }
        XCTAssertEqual(packet.reason, .sessionTakenOver)
        XCTAssertNil(old.mqtt?.will, "published, once")
        (hub.mqttSessionStore as? MQTTSessionStore)?.sync {}
        XCTAssertNil((hub.mqttSessionStore as? MQTTSessionStore)?.loadNow("dev", now: 0).record, "not saved")
    }

    func testASubjectMatchedOnlyByAPatternIsRecoveredFromItsPositionThenLiveThroughThePattern() throws {
        let first = try channel()
        let old = try connect(first)
        hub.handle(.subscribe(MQTTSubscribe(packetID: 1, subscriptions: [MQTTSubscription(filter: "a/+", options: 1)])),
                   from: old)
        hub.handle([.message(message(4))])
        XCTAssertEqual(try packets(first).count, 3, "CONNACK, SUBACK, the PUBLISH through the pattern")
        let saved = try XCTUnwrap(hub.sessionRecord(of: old))
        XCTAssertEqual(saved.positions, ["/a/b": MQTTSubjectPosition(epoch: "e", seq: 3, sentSeq: 4)], "4 awaits its PUBACK")

        let second = try channel()
        let new = try connect(second)
        XCTAssertEqual(new.subjects, ["/a/b"], "subscribed to the subject until its recovery is answered")
        _ = try packets(second)
        hub.handle(.unsubscribe(MQTTUnsubscribe(packetID: 9, filters: ["a/b"])), from: new)
        // The device never subscribed to a/b itself (v5 would say 0x11; a 3.1.1 UNSUBACK carries no codes).
        XCTAssertEqual(try packets(second), [.unsuback(MQTTUnsubAck(packetID: 9, codes: []))])
        XCTAssertEqual(new.subjects, ["/a/b"], "the pattern's recovery goes on: nothing of it is lost")
        hub.handle([.message(message(5))])
        try answer(new, messages: [message(4), message(5)], lastSeq: 5)
        XCTAssertEqual(new.subjects, [], "then live through the pattern")
        XCTAssertNil(hub.table.state(of: new.id, in: "/a/b"))
        hub.handle([.message(message(6))])
        let got = try packets(second).compactMap { packet -> String? in
            guard case .publish(let publish) = packet else { return nil }
            return "\(String(buffer: publish.payload)):\(publish.dup)"
        }
        XCTAssertEqual(got, ["m4:true", "m5:false", "m6:false"], "in order, each once")
        XCTAssertEqual(hub.sessionRecord(of: new)?.positions["/a/b"]?.sentSeq, 6, "its position is kept again")
        hub.handle(.unsubscribe(MQTTUnsubscribe(packetID: 2, filters: ["a/+"])), from: new)
        XCTAssertEqual(hub.sessionRecord(of: new)?.positions, [:], "no pattern matches it any more")
    }

    func testATakeOverHandsTheSessionOverAndItRecoversFromTheAcknowledgedPosition() throws {
        let first = try channel()
        let old = try connect(first)
        XCTAssertEqual(try packets(first), [.connack(MQTTConnAck(sessionPresent: false, code: 0))])
        hub.handle(.subscribe(MQTTSubscribe(packetID: 1, subscriptions: [MQTTSubscription(filter: "a/b", options: 1)])),
                   from: old)
        try answer(old, messages: [], lastSeq: 3)
        hub.handle([.message(message(4)), .message(message(5))])
        XCTAssertEqual(try packets(first).count, 3, "SUBACK and two PUBLISHes")
        hub.handle(.puback(MQTTAck(packetID: 1)), from: old)
        let saved = try XCTUnwrap(hub.sessionRecord(of: old))
        XCTAssertEqual(saved.subscriptions, [.init(filter: "a/b", qos: 1)])
        XCTAssertEqual(saved.positions, ["/a/b": MQTTSubjectPosition(epoch: "e", seq: 4, sentSeq: 5)])
        XCTAssertNil(saved.generation, "never taken up")

        let second = try channel()
        let new = try connect(second)
        XCTAssertTrue(old.isClosing, "taken over")
        XCTAssertEqual(try packets(second), [.connack(MQTTConnAck(sessionPresent: true, code: 0))], "no SUBACK")
        XCTAssertEqual(new.subjects, ["/a/b"])
        try answer(new, messages: [message(5), message(6)], lastSeq: 6)
        let resent = try packets(second).map { packet -> [UInt64: Bool] in
            guard case .publish(let publish) = packet else { return [:] }
            XCTAssertEqual(publish.packetID, publish.dup ? 2 : 1, "5 with the identifier it had; 6 not with that one")
            return [UInt64(String(buffer: publish.payload).dropFirst())!: publish.dup]
        }
        XCTAssertEqual(resent, [[5: true], [6: false]], "5 was sent before and not acknowledged: DUP")
        XCTAssertEqual(old.mqtt?.isReleased, true, "the old connection saves nothing over the new one's session")
        XCTAssertEqual(hub.sessionRecord(of: new)?.generation, 1, "taken up once: a save of the old one's is older")

        let announced = MQTTSessionStore(runDir: runDir.path, maxSessions: 10,
                                         logger: LogWriter(stage: "ws-ingress", instance: 1, level: .error).makeLogger())
        (hub.mqttSessionStore as? MQTTSessionStore)?.sync {}
        XCTAssertEqual(announced.takeOversNow(now: Date().timeIntervalSince1970), ["dev": 1],
                       "the node's other instances are told")
        hub.closeTakenOverMQTTConnections(["dev": 1, "nobody": 5])
        XCTAssertFalse(new.isClosing, "generation 1 is its own")

        // A clean session discards it.
        let third = try channel()
        _ = try connect(third, clean: true)
        XCTAssertEqual(try packets(third), [.connack(MQTTConnAck(sessionPresent: false, code: 0))])
        (hub.mqttSessionStore as? MQTTSessionStore)?.sync {}
        XCTAssertNil((hub.mqttSessionStore as? MQTTSessionStore)?.loadNow("dev", now: 0).record)
    }
}

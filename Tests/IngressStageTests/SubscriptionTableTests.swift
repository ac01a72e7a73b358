import NIOCore
import NIOEmbedded
import NIOWebSocket
import SwitchyardCore
import XCTest
@testable import IngressStage

/// The subscription state machine without sockets: pending → live, held messages, floors, repairs, bounds.
final class SubscriptionTableTests: XCTestCase {
    var table = SubscriptionTable(ingress: 0, replyTo: "ipc://in", maxSubscribesInFlight: 2,
                                  maxPendingSubscribeBytes: 1_000)
    var nextConnectionID: UInt64 = 0

    func connection() -> ClientConnection {
        nextConnectionID += 1
        return ClientConnection(id: nextConnectionID, channel: EmbeddedChannel(), liveBacklogLimit: 1 << 20,
                                limits: ConnectionLimits(SwitchyardConfig()), now: 0)
    }

    func message(_ seq: UInt64, epoch: String = "E", previous: UInt64? = nil, bytes: Int = 1, subject: String = "/s")
        -> Message {
        Message(subject: subject, content: ByteBuffer(string: String(repeating: "x", count: bytes)), seq: seq,
                previousSeq: previous ?? (seq > 0 ? seq - 1 : 0), epoch: epoch)
    }

    func subscribe(_ client: ClientConnection, _ subject: String = "/s", start: SubscribeStart = .snapshot)
        -> [Envelope] {
        client.subjects.insert(subject)
        return table.subscribe(client, to: subject, start: start, now: 0)
    }

    /// The ids of the subscribe requests among `envelopes`.
    func subscribes(_ envelopes: [Envelope]) -> [Subscribe] {
        envelopes.compactMap { if case .subscribe(let request) = $0 { return request } else { return nil } }
    }

    /// Which connections `deliver` writes to (and whether with a resync first).
    func deliver(_ message: Message) -> (written: [UInt64], resync: [UInt64], sent: [Envelope]) {
        var written: [UInt64] = []
        var resync: [UInt64] = []
        let sent = table.deliver(message, now: 0) { connection, resyncFirst in
            written.append(connection.id)
            if resyncFirst { resync.append(connection.id) }
        }
        return (written.sorted(), resync, sent)
    }

    func reply(_ request: Subscribe, _ messages: [Message], status: SubscribeReply.Status = .sync,
               kind: MessageKind = .recovered, epoch: String = "E", lastSeq: UInt64) -> SubscribeReply {
        SubscribeReply(requestID: request.requestID, subject: request.subject, kind: kind, status: status,
                       messages: messages, epoch: epoch, lastSeq: lastSeq)
    }

    /// The subject moved to another cache shard while the answer was on its way: held messages of the new epoch
    /// get DATA_RESYNC before them, as they would have live, and the subscriber goes live in the new epoch.
    func testHeldMessagesOfANewerEpochThanTheAnswerAreAnnounced() throws {
        let client = connection()
        let request = try XCTUnwrap(subscribes(subscribe(client, start: .recover(epoch: "E", seq: 2))).first)
        _ = deliver(message(3))
        _ = deliver(message(1, epoch: "F"))
        _ = deliver(message(2, epoch: "F"))
        let (deliveries, _) = table.answer(reply(request, [], lastSeq: 2), now: 0)
        XCTAssertEqual(deliveries.first?.held.map(\.epoch), ["E", "F", "F"])
        XCTAssertEqual(deliveries.first?.resyncBeforeHeld, [1])
        XCTAssertEqual(table.state(of: client.id, in: "/s"), .live(floorEpoch: "F", floorSeq: 2))
        XCTAssertEqual(deliver(message(2, epoch: "F")).written, [], "already delivered from what was held")
    }

    func testSubscribeHoldsLiveMessagesUntilTheAnswerThenGoesLiveWithoutDuplicates() throws {
        let client = connection()
        let request = try XCTUnwrap(subscribes(subscribe(client, start: .history(count: 2))).first)
        XCTAssertTrue(request.registersInterest)
        XCTAssertEqual(deliver(message(3)).written, [], "held while pending")
        XCTAssertEqual(deliver(message(4)).written, [])

        let (deliveries, _) = table.answer(reply(request, [message(2), message(3)], kind: .historical, lastSeq: 3),
                                           now: 0)
        XCTAssertEqual(deliveries.count, 1)
        XCTAssertEqual(deliveries[0].messages.map(\.seq), [2, 3])
        XCTAssertEqual(deliveries[0].kind, .historical)
        XCTAssertEqual(deliveries[0].status, "DATA_SYNC")
        XCTAssertEqual(deliveries[0].held.map(\.seq), [4], "held messages the answer did not cover")
        XCTAssertEqual(table.state(of: client.id, in: "/s"), .live(floorEpoch: "E", floorSeq: 4),
                       "the floor is the last message it was given")

        XCTAssertEqual(deliver(message(4)).written, [], "read again: went through here already")
        XCTAssertEqual(deliver(message(5)).written, [client.id])
    }

    func testSubjectSubscribersFromOneToManyAndBack() throws {
        let channel = EmbeddedChannel()
        let limits = ConnectionLimits(SwitchyardConfig())
        let connection = ClientConnection(id: 1, channel: channel, liveBacklogLimit: 1024, limits: limits, now: 0)
        func subscriber(_ seq: UInt64) -> SubscriptionTable.Subscriber {
            SubscriptionTable.Subscriber(connection: connection, state: .live(floorEpoch: "E", floorSeq: seq))
        }
        func ids(_ subscribers: SubjectSubscribers) -> [UInt64] { subscribers.map(\.key).sorted() }
        var subscribers = SubjectSubscribers()
        XCTAssertTrue(subscribers.isEmpty)
        XCTAssertNil(subscribers[1])
        subscribers[1] = subscriber(10)
        XCTAssertEqual(ids(subscribers), [1])
        XCTAssertNil(subscribers[2])
        subscribers[1]?.state = .pending(requestID: 7)
        XCTAssertEqual(subscribers[1]?.state, .pending(requestID: 7))
        subscribers[2] = subscriber(20)
        subscribers[3] = subscriber(30)
        XCTAssertEqual(ids(subscribers), [1, 2, 3])
        XCTAssertEqual(subscribers[2]?.state, .live(floorEpoch: "E", floorSeq: 20))
        XCTAssertEqual(subscribers.removeValue(forKey: 2)?.state, .live(floorEpoch: "E", floorSeq: 20))
        XCTAssertNil(subscribers.removeValue(forKey: 2))
        subscribers[1] = nil
        subscribers[3] = nil
        XCTAssertTrue(subscribers.isEmpty)
        XCTAssertEqual(ids(subscribers), [])
        subscribers[4] = subscriber(40)
        XCTAssertEqual(subscribers.removeValue(forKey: 4)?.state, .live(floorEpoch: "E", floorSeq: 40))
        XCTAssertTrue(subscribers.isEmpty)
    }

    func testSecondSubscriberDoesNotRegisterInterestAgain() {
        XCTAssertTrue(subscribes(subscribe(connection()))[0].registersInterest)
        XCTAssertFalse(subscribes(subscribe(connection()))[0].registersInterest)
    }

    func testUnsubscribingTheLastSubscriberRemovesInterest() {
        let first = connection(), second = connection()
        _ = subscribe(first)
        _ = subscribe(second)
        XCTAssertTrue(table.unsubscribe(first, from: "/s").isEmpty)
        XCTAssertEqual(table.unsubscribe(second, from: "/s"),
                       [.interest(Interest(subject: "/s", ingress: 0, isAdded: false))])
        XCTAssertEqual(table.subjectCount, 0)
    }

    /// The answer arrives for a subscriber that is gone (it unsubscribed or was disconnected meanwhile).
    func testAnswerForARemovedSubscriberIsIgnored() {
        let client = connection()
        let request = subscribes(subscribe(client))[0]
        _ = table.remove(client)
        let (deliveries, sent) = table.answer(reply(request, [message(1)], lastSeq: 1), now: 0)
        XCTAssertTrue(deliveries.isEmpty)
        XCTAssertTrue(sent.isEmpty)
    }

    func testNewEpochOnALiveSubjectSaysResync() throws {
        let client = connection()
        let request = subscribes(subscribe(client))[0]
        _ = table.answer(reply(request, [], lastSeq: 7), now: 0)
        let delivered = deliver(message(1, epoch: "F", previous: 0))
        XCTAssertEqual(delivered.written, [client.id])
        XCTAssertEqual(delivered.resync, [client.id])
        XCTAssertEqual(table.state(of: client.id, in: "/s"), .live(floorEpoch: "F", floorSeq: 0))
    }

    func testGapInTheLiveStreamIsRepairedWithoutDuplicates() throws {
        let early = connection(), ahead = connection()
        _ = table.answer(reply(subscribes(subscribe(early))[0], [], lastSeq: 5), now: 0)
        // `ahead` recovered further than this ingress's stream (it came from a node further ahead).
        _ = table.answer(reply(subscribes(subscribe(ahead))[0], [], lastSeq: 8), now: 0)
        XCTAssertEqual(deliver(message(6)).written, [early.id])
        let gap = deliver(message(10, previous: 9))  // 7...9 went missing here
        XCTAssertEqual(gap.written, [], "both now wait for the repair")
        let repair = try XCTUnwrap(subscribes(gap.sent).first)
        XCTAssertEqual(repair.start, .recover(epoch: "E", seq: 6))

        let (deliveries, _) = table.answer(reply(repair, [message(7), message(8), message(9)], lastSeq: 9), now: 0)
        let byConnection = Dictionary(uniqueKeysWithValues: deliveries.map { ($0.connection.id, $0) })
        XCTAssertEqual(byConnection[early.id]?.messages.map(\.seq), [7, 8, 9])
        XCTAssertEqual(byConnection[ahead.id]?.messages.map(\.seq), [9], "nothing it already had")
        XCTAssertEqual(byConnection[early.id]?.kind, .update)
        XCTAssertNil(byConnection[early.id]?.status, "a repair that found everything says nothing")
        XCTAssertEqual(byConnection[early.id]?.held.map(\.seq), [10])
        XCTAssertEqual(deliver(message(11)).written, [early.id, ahead.id])
    }

    func testHeldBytesPastTheLimitAreDroppedAndTheCacheIsAskedAgain() throws {
        let client = connection()
        let first = subscribes(subscribe(client, start: .history(count: 50)))[0]
        XCTAssertTrue(deliver(message(1, bytes: 600)).sent.isEmpty)
        let overflow = deliver(message(2, bytes: 600))
        let again = try XCTUnwrap(subscribes(overflow.sent).first, "asked again")
        XCTAssertNotEqual(again.requestID, first.requestID)
        XCTAssertEqual(again.start, .history(count: 50), "from the same start")
        XCTAssertEqual(client.subscribesInFlight, 1)

        XCTAssertTrue(table.answer(reply(first, [message(1)], lastSeq: 1), now: 0).deliveries.isEmpty,
                      "the first answer is stale")
        let (deliveries, _) = table.answer(reply(again, [message(1), message(2)], kind: .historical, lastSeq: 2),
                                           now: 0)
        XCTAssertEqual(deliveries.first?.messages.map(\.seq), [1, 2], "nothing lost")
        XCTAssertEqual(deliveries.first?.held.map(\.seq), [])
        XCTAssertEqual(client.subscribesInFlight, 0)
    }

    func testSubscribesBeyondTheInFlightBoundWaitInOrder() throws {
        let client = connection()
        let a = subscribes(subscribe(client, "/a"))
        let b = subscribes(subscribe(client, "/b"))
        XCTAssertEqual(a.count + b.count, 2)
        XCTAssertTrue(subscribe(client, "/c").isEmpty, "waits: two are in flight")
        XCTAssertTrue(subscribe(client, "/d").isEmpty)
        XCTAssertTrue(table.unsubscribe(client, from: "/c").contains(
            .interest(Interest(subject: "/c", ingress: 0, isAdded: false))))

        XCTAssertTrue(table.sendWaiting(for: client, now: 0).isEmpty, "no free slot")
        XCTAssertTrue(table.answer(reply(a[0], [], lastSeq: 0), now: 0).send.isEmpty)
        let next = table.sendWaiting(for: client, now: 0)
        XCTAssertEqual(subscribes(next).map(\.subject), ["/d"], "the next waiting one, /c was dropped")
        XCTAssertTrue(subscribes(next)[0].registersInterest)
        XCTAssertEqual(client.subscribesInFlight, 2)
        XCTAssertTrue(table.answer(reply(b[0], [], lastSeq: 0), now: 0).send.isEmpty)
        XCTAssertEqual(client.subscribesInFlight, 1)
        XCTAssertTrue(table.sendWaiting(for: client, now: 0).isEmpty)
    }

    /// At most `maxSubscribesInFlight` answers are buffered for a connection: while one is being written to a
    /// client that does not read, its further subscribes wait.
    func testSubscribesWaitWhileAnAnswerIsBeingWritten() throws {
        let client = connection()
        let channel = try XCTUnwrap(client.channel as? EmbeddedChannel)
        channel.isWritable = false
        client.queueAnswer(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: "answer")))
        client.writeQueued(now: 0)
        XCTAssertTrue(client.isPacingAnswer)
        XCTAssertTrue(subscribe(client, "/a").isEmpty)
        XCTAssertTrue(table.sendWaiting(for: client, now: 0).isEmpty)
        channel.isWritable = true
        client.writabilityChanged(now: 0)
        XCTAssertEqual(subscribes(table.sendWaiting(for: client, now: 0)).map(\.subject), ["/a"])
    }

    func testUnansweredSubscribesAreAskedAgainAfterTheirAge() {
        let client = connection()
        _ = table.subscribe(client, to: "/s", start: .snapshot, now: 100)
        XCTAssertTrue(table.retry(olderThan: 50, now: 120).isEmpty)
        XCTAssertEqual(subscribes(table.retry(olderThan: 50, now: 150)).count, 1)
        XCTAssertTrue(table.retry(olderThan: 50, now: 160).isEmpty, "the clock restarts when it is sent again")
        XCTAssertTrue(table.retry(olderThan: 50, now: 10).isEmpty, "a clock that went back asks nothing")
    }

    func testRepairIntoANewEpochAsksFromItsStart() throws {
        let client = connection()
        _ = table.answer(reply(subscribes(subscribe(client))[0], [], lastSeq: 5), now: 0)
        XCTAssertEqual(deliver(message(6)).written, [client.id])
        let repair = try XCTUnwrap(subscribes(deliver(message(9, previous: 8)).sent).first)
        let (none, followUp) = table.answer(reply(repair, [], status: .resync, kind: .snapshot, epoch: "F",
                                                  lastSeq: 2), now: 0)
        XCTAssertTrue(none.isEmpty)
        let ask = try XCTUnwrap(subscribes(followUp).first)
        XCTAssertEqual(ask.start, .recover(epoch: "F", seq: 0))
        let (deliveries, _) = table.answer(reply(ask, [message(1, epoch: "F"), message(2, epoch: "F")],
                                                 epoch: "F", lastSeq: 2), now: 0)
        XCTAssertEqual(deliveries.first?.resyncFirst, true)
        XCTAssertEqual(deliveries.first?.messages.map(\.seq), [1, 2])
    }

    func testReannounceSendsEachRequestOnce() throws {
        let client = connection()
        _ = table.answer(reply(subscribes(subscribe(client))[0], [], lastSeq: 5), now: 0)
        XCTAssertEqual(deliver(message(6)).written, [client.id])
        _ = subscribe(connection(), "/t")  // still pending: asked again
        let sent = subscribes(table.reannounce(now: 10))
        XCTAssertEqual(sent.count, 2, "one repair of /s, one pending subscribe of /t")
        XCTAssertEqual(Set(sent.map(\.requestID)).count, sent.count, "no request twice")
    }

    /// After a shard move the subject continues in the new epoch here: the next re-announcement repairs from the
    /// new epoch (no second DATA_RESYNC for the same move).
    func testAFollowUpIntoANewEpochMovesTheSubjectThere() throws {
        let client = connection()
        _ = table.answer(reply(subscribes(subscribe(client))[0], [], lastSeq: 5), now: 0)
        XCTAssertEqual(deliver(message(6)).written, [client.id])
        let repair = try XCTUnwrap(subscribes(table.reannounce(now: 1)).first)
        let (_, followUp) = table.answer(reply(repair, [], status: .resync, kind: .snapshot, epoch: "F", lastSeq: 2),
                                         now: 2)
        let ask = try XCTUnwrap(subscribes(followUp).first)
        let (deliveries, _) = table.answer(reply(ask, [message(1, epoch: "F"), message(2, epoch: "F")],
                                                 epoch: "F", lastSeq: 2), now: 3)
        XCTAssertEqual(deliveries.first?.resyncFirst, true)
        let settled = try XCTUnwrap(subscribes(table.reannounce(now: 4)).first)
        XCTAssertEqual(settled.start, .recover(epoch: "F", seq: 2))
        let (answered, more) = table.answer(reply(settled, [], epoch: "F", lastSeq: 2), now: 5)
        XCTAssertTrue(more.isEmpty)
        XCTAssertEqual(answered.first?.resyncFirst, false)
        XCTAssertNil(answered.first?.status, "a repair that finds nothing new says nothing")
    }
}

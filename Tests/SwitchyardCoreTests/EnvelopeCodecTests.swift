import NIOCore
import XCTest
@testable import SwitchyardCore

final class EnvelopeCodecTests: XCTestCase {
    static let sample = Message(subject: "/vehicles/car66/speed", content: ByteBuffer(string: "88 km/h"), seq: 42, previousSeq: 40,
                                epoch: "e1", flags: [.retained, .guaranteed, .wantsAck], closure: "c1",
                                timestamp: 1_700_000_000_000_000_000)

    static let everyKind: [Envelope] = [
        .publish(Publish(requestID: 7, replyTo: "ipc:///tmp/ws-ingress-0.ipc", message: sample)),
        .publishAck(PublishAck(requestID: 7, status: .failed, reason: "broker down")),
        .message(sample),
        .subscribe(Subscribe(requestID: 9, replyTo: "ipc:///x", subject: "/a", ingress: 3, registersInterest: true,
                             start: .recover(epoch: "e1", seq: 40))),
        .subscribe(Subscribe(requestID: 10, replyTo: "ipc:///x", subject: "/a", ingress: 3, registersInterest: false,
                             start: .history(count: 5))),
        .subscribe(Subscribe(requestID: 11, replyTo: "ipc:///x", subject: "/a", ingress: 0, registersInterest: false,
                             start: .snapshot)),
        .subscribeReply(SubscribeReply(requestID: 9, subject: "/a", kind: .recovered, status: .sync,
                                       messages: [sample, sample], epoch: "e1", lastSeq: 42)),
        .interest(Interest(subject: "/a/b", ingress: 2, isAdded: false)),
        .peerUp(PeerUp(stage: "fanout", instance: 1)),
        .patternInterest(PatternInterest(pattern: "/vehicles/+/speed", ingress: 4, isAdded: true)),
        .patternInterest(PatternInterest(pattern: "/vehicles/#", ingress: 0, isAdded: false)),
        .patternSubscribe(PatternSubscribe(requestID: 12, replyTo: "ipc:///x", pattern: "/+/speed")),
    ]

    static let withHeaders = Message(subject: "/a/b", content: ByteBuffer(string: "x"), seq: 3, epoch: "e1",
                                     headers: [MessageHeader("unit", "km/h"), MessageHeader("unit", ""),
                                               MessageHeader("é", "中\u{1F600}")])

    func encode(_ envelopes: [Envelope]) -> ByteBuffer {
        var writer = BatchWriter()
        for envelope in envelopes { writer.append(envelope) }
        return writer.finish()
    }

    func testEveryKindRoundTrips() throws {
        let decoded = try EnvelopeCodec.decodeBatch(encode(Self.everyKind))
        XCTAssertEqual(decoded.envelopes, Self.everyKind)
        XCTAssertEqual(decoded.skippedUnknown, 0)
    }

    func testWriterStartsAfreshAfterFinish() throws {
        var writer = BatchWriter()
        writer.append(Self.everyKind[0])
        _ = writer.finish()
        XCTAssertTrue(writer.isEmpty)
        writer.append(Self.everyKind[1])
        XCTAssertEqual(try EnvelopeCodec.decodeBatch(writer.finish()).envelopes, [Self.everyKind[1]])
    }

    func testEmptyBatch() throws {
        XCTAssertEqual(try EnvelopeCodec.decodeBatch(encode([])).envelopes, [])
    }

    func testEveryTruncationIsAnError() {
        let batch = encode(Self.everyKind)
        for length in 0..<batch.readableBytes {
            XCTAssertThrowsError(try EnvelopeCodec.decodeBatch(batch.getSlice(at: 0, length: length)!),
                                 "a batch cut at \(length) bytes decoded")
        }
    }

    func testBadMagicAndVersion() {
        var batch = encode(Self.everyKind)
        batch.setInteger(UInt8(0x58), at: 0)
        XCTAssertThrowsError(try EnvelopeCodec.decodeBatch(batch)) { XCTAssertEqual($0 as? CodecError, .badMagic) }
        batch = encode(Self.everyKind)
        batch.setInteger(UInt8(99), at: 2)
        XCTAssertThrowsError(try EnvelopeCodec.decodeBatch(batch)) {
            XCTAssertEqual($0 as? CodecError, .unsupportedVersion(99))
        }
    }

    func testHeadersRoundTripInMessagesPublishesAndReplies() throws {
        let envelopes: [Envelope] = [
            .message(Self.withHeaders),
            .publish(Publish(requestID: 1, replyTo: "ipc:///x", message: Self.withHeaders)),
            .subscribeReply(SubscribeReply(requestID: 2, subject: "/a/b", kind: .historical, status: .none,
                                           messages: [Self.sample, Self.withHeaders], epoch: "e1", lastSeq: 3)),
        ]
        let batch = encode(envelopes)
        XCTAssertEqual(try EnvelopeCodec.decodeBatch(batch).envelopes, envelopes)
        for length in 0..<batch.readableBytes {
            XCTAssertThrowsError(try EnvelopeCodec.decodeBatch(batch.getSlice(at: 0, length: length)!))
        }
    }

    /// Version 2 batches (no headers after the timestamp) still decode, as messages without headers.
    func testVersionTwoMessagesDecodeWithoutHeaders() throws {
        var v2 = ByteBuffer()
        v2.writeInteger(EnvelopeCodec.magic)
        v2.writeInteger(UInt8(2))
        v2.writeInteger(UInt8(0))
        v2.writeInteger(UInt32(1))
        var body = encode([.message(Self.sample)])
        body.moveReaderIndex(forwardBy: EnvelopeCodec.headerSize)
        let length = try XCTUnwrap(body.readInteger(as: UInt32.self))
        var envelope = try XCTUnwrap(body.readSlice(length: Int(length) - 2))  // without the header count u16
        XCTAssertEqual(body.readInteger(as: UInt16.self), 0)
        v2.writeInteger(length - 2)
        v2.writeBuffer(&envelope)
        XCTAssertEqual(try EnvelopeCodec.decodeBatch(v2).envelopes, [.message(Self.sample)])
        v2.setInteger(UInt8(1), at: 2)
        XCTAssertThrowsError(try EnvelopeCodec.decodeBatch(v2)) { XCTAssertEqual($0 as? CodecError, .unsupportedVersion(1)) }
    }

    func testAHeaderCountTheBatchCannotHoldIsAnError() throws {
        var batch = encode([.message(Self.withHeaders)])
        // The header count follows the timestamp; the first header's name length follows it.
        let countOffset = try XCTUnwrap(batch.readableBytesView.firstRange(of: Array([0, 0, 0, 4] + "unit".utf8)))
            .lowerBound - batch.readerIndex - 2
        XCTAssertEqual(batch.getInteger(at: countOffset, as: UInt16.self), 3)
        batch.setInteger(UInt16.max, at: countOffset)
        XCTAssertThrowsError(try EnvelopeCodec.decodeBatch(batch)) { XCTAssertEqual($0 as? CodecError, .truncated) }
    }

    func testHeaderBounds() {
        let small = (0..<40).map { MessageHeader("k\($0)", "v") }
        XCTAssertTrue(MessageHeader.areWithinBounds(Array(small.prefix(32))))
        XCTAssertFalse(MessageHeader.areWithinBounds(Array(small.prefix(33))))
        let kept = MessageHeader.bounded(small)
        XCTAssertEqual(kept.kept, Array(small.prefix(32)))
        XCTAssertEqual(kept.dropped, 8)
        let big = [MessageHeader("a", String(repeating: "x", count: 4000)), MessageHeader("b", String(repeating: "y", count: 94)),
                   MessageHeader("c", "z")]
        XCTAssertEqual(MessageHeader.byteCount(of: Array(big.prefix(2))), 4096)
        XCTAssertTrue(MessageHeader.areWithinBounds(Array(big.prefix(2))))
        XCTAssertFalse(MessageHeader.areWithinBounds(big))
        XCTAssertEqual(MessageHeader.bounded(big).kept, Array(big.prefix(2)))
        XCTAssertEqual(MessageHeader.bounded(big).dropped, 1)
        XCTAssertEqual(Self.withHeaders.byteCount, 1 + 4 + 4 + 4 + 2 + 3 + 4)
        XCTAssertEqual(Self.sample.byteCount, Self.sample.content.readableBytes)
    }

    func testUnknownKindsAreSkipped() throws {
        var batch = encode([Self.everyKind[7], Self.everyKind[8]])
        // The first envelope's kind byte sits right after the header and its length.
        batch.setInteger(UInt8(200), at: EnvelopeCodec.headerSize + 4)
        let decoded = try EnvelopeCodec.decodeBatch(batch)
        XCTAssertEqual(decoded.envelopes, [Self.everyKind[8]])
        XCTAssertEqual(decoded.skippedUnknown, 1)
    }

    func testHugeLengthsAreErrorsNotAllocations() {
        var batch = encode([Self.everyKind[2]])
        batch.setInteger(UInt32.max, at: 4)  // count
        XCTAssertThrowsError(try EnvelopeCodec.decodeBatch(batch))
        batch = encode([Self.everyKind[2]])
        batch.setInteger(UInt32.max, at: EnvelopeCodec.headerSize + 5)  // subject length
        XCTAssertThrowsError(try EnvelopeCodec.decodeBatch(batch))
    }

    /// Mutations of valid batches (bit flips, truncations, huge lengths, bytes inserted or removed) reach the
    /// decoder's body paths: each gives an error or envelopes, never a trap; what decodes encodes again.
    func testMutatedBatchesAreErrorsOrValuesNeverTraps() throws {
        var generator = SystemRandomNumberGenerator()
        let seeds = [encode(Self.everyKind)] + Self.everyKind.map { encode([$0]) }
        var outcomes: [String: Int] = [:]
        for _ in 0..<30_000 {
            var bytes = Array(seeds.randomElement(using: &generator)!.readableBytesView)
            for _ in 0..<Int.random(in: 1...3, using: &generator) {
                mutate(&bytes, using: &generator)
            }
            do {
                let decoded = try EnvelopeCodec.decodeBatch(ByteBuffer(bytes: bytes))
                outcomes["decoded", default: 0] += 1
                XCTAssertEqual(try EnvelopeCodec.decodeBatch(encode(decoded.envelopes)).envelopes, decoded.envelopes)
            } catch let error as CodecError {
                outcomes[Self.name(of: error), default: 0] += 1
            }
        }
        let header = (outcomes["badMagic"] ?? 0) + (outcomes["unsupportedVersion"] ?? 0)
        XCTAssertLessThan(header, 30_000 / 4, "most inputs must get past the header: \(outcomes)")
        for outcome in ["decoded", "truncated", "trailingBytes", "invalidValue"] {
            XCTAssertGreaterThan(outcomes[outcome] ?? 0, 50, "the body path '\(outcome)' was not reached: \(outcomes)")
        }
    }

    private func mutate(_ bytes: inout [UInt8], using generator: inout SystemRandomNumberGenerator) {
        // The header (magic, version) stays intact mostly, so the mutations land in the bodies.
        let bodyStart = min(EnvelopeCodec.headerSize - 4, bytes.count)
        guard bytes.count > bodyStart else { return }
        let index = Int.random(in: bodyStart..<bytes.count, using: &generator)
        switch Int.random(in: 0..<6, using: &generator) {
        case 0:
            bytes[index] ^= 1 << UInt8.random(in: 0..<8, using: &generator)
        case 1:
            bytes.removeSubrange(index...)
        case 2:
            // A length or count field set to something huge (or merely too large).
            let values: [UInt32] = [.max, 0x8000_0000, UInt32(bytes.count), UInt32(bytes.count - index + 1)]
            let value = values.randomElement(using: &generator)!
            for (offset, byte) in withUnsafeBytes(of: value.bigEndian, Array.init).enumerated()
            where index + offset < bytes.count {
                bytes[index + offset] = byte
            }
        case 3:
            bytes.insert(UInt8.random(in: 0...255, using: &generator), at: index)
        case 4:
            bytes.remove(at: index)
        default:
            bytes[index] = [0, 1, 2, 3, 0xff].randomElement(using: &generator)!
        }
    }

    private static func name(of error: CodecError) -> String {
        switch error {
        case .badMagic: return "badMagic"
        case .unsupportedVersion: return "unsupportedVersion"
        case .truncated: return "truncated"
        case .trailingBytes: return "trailingBytes"
        case .invalidValue: return "invalidValue"
        case .tooLarge: return "tooLarge"
        }
    }

    func testLengthsOfFourGiBOrMoreAreRefusedNotTrapped() throws {
        XCTAssertEqual(try EnvelopeCodec.checkedLength(Int(UInt32.max), of: "content"), UInt32.max)
        XCTAssertThrowsError(try EnvelopeCodec.checkedLength(Int(UInt32.max) + 1, of: "content")) {
            XCTAssertEqual($0 as? CodecError, .tooLarge("content"))
        }
        XCTAssertThrowsError(try EnvelopeCodec.checkedLength(-1, of: "content"))
    }

    func testAReplyCountTheBatchCannotHoldIsAnError() {
        var batch = encode([Self.everyKind[6]])
        // requestID, subject "/a", kind, status, epoch "e1", lastSeq: then the message count.
        let countOffset = EnvelopeCodec.headerSize + 4 + 1 + 8 + (4 + 2) + 1 + 1 + (4 + 2) + 8
        XCTAssertEqual(batch.getInteger(at: countOffset, as: UInt32.self), 2)
        batch.setInteger(UInt32(1_000_000), at: countOffset)
        XCTAssertThrowsError(try EnvelopeCodec.decodeBatch(batch)) { XCTAssertEqual($0 as? CodecError, .truncated) }
    }
}

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
    ]

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

    /// Random bytes and random corruptions of valid batches must give an error or a value, never a crash.
    func testRandomInputNeverCrashes() {
        var generator = SystemRandomNumberGenerator()
        let valid = encode(Self.everyKind)
        for round in 0..<20_000 {
            var input: ByteBuffer
            if round % 2 == 0 {
                input = valid
                for _ in 0..<Int.random(in: 1...8, using: &generator) {
                    let index = Int.random(in: 0..<input.readableBytes, using: &generator)
                    input.setInteger(UInt8.random(in: 0...255, using: &generator), at: index)
                }
            } else {
                let bytes = (0..<Int.random(in: 0...64, using: &generator)).map { _ in
                    UInt8.random(in: 0...255, using: &generator)
                }
                input = ByteBuffer(bytes: [0x53, 0x59, 1, 0] + bytes)
            }
            _ = try? EnvelopeCodec.decodeBatch(input)
        }
    }
}

import Foundation
import NIOCore
import SwitchyardCore

/// Set `SWITCHYARD_FUZZ_VERBOSE=1` to see what each input decodes to (for checking the seed corpus).
private let verbose = ProcessInfo.processInfo.environment["SWITCHYARD_FUZZ_VERBOSE"] != nil

/// libFuzzer entry point: one nanomsg message as a stage receives it. A malformed batch must be a `CodecError`;
/// a batch that decodes must survive a round trip: re-encoded and decoded again, it gives the same envelopes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEnvelopeBatch(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let batch = ByteBuffer(bytes: UnsafeRawBufferPointer(start: start, count: count))
    let decoded: [Envelope]
    do {
        decoded = try EnvelopeCodec.decodeBatch(batch).envelopes
    } catch let error as CodecError {
        if verbose { print("rejected: \(error)") }
        return 0
    } catch {
        preconditionFailure("decodeBatch threw something other than a CodecError: \(error)")
    }
    var writer = BatchWriter()
    for envelope in decoded { writer.append(envelope) }
    let reencoded = writer.finish()
    let again: [Envelope]
    do {
        again = try EnvelopeCodec.decodeBatch(reencoded).envelopes
    } catch {
        preconditionFailure("a re-encoded batch does not decode: \(error)")
    }
    precondition(again == decoded, "a batch changed in a round trip: \(decoded) became \(again)")
    if verbose { print("decoded: \(decoded.map(\.kindName))") }
    return 0
}

import IngressStage
import NIOCore

/// libFuzzer entry point: one client → server text frame's payload. Every input must give a request or a
/// `ClientFrameError` with a code; anything else (a trap, an ASan report) is a crash.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzClientFrame(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let frame = ByteBuffer(bytes: UnsafeRawBufferPointer(start: start, count: count))
    if case .failure(let error) = ClientFrameParser.parse(frame) {
        precondition(!error.code.isEmpty, "a parse error without a code")
    }
    return 0
}

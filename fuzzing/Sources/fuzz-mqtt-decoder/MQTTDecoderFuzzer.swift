import Foundation
import IngressStage
import NIOCore

/// Set `SWITCHYARD_FUZZ_VERBOSE=1` to see what each input decodes to (for checking the seed corpus).
private let verbose = ProcessInfo.processInfo.environment["SWITCHYARD_FUZZ_VERBOSE"] != nil

/// libFuzzer entry point: a client's MQTT byte stream. Byte 0 chooses the version the packets are decoded for
/// (0: before CONNECT, where only CONNECT is valid; 1: 3.1.1; otherwise 5.0); the rest is framed into packets
/// (`MQTTFraming`, bound 1 MiB) and each is decoded. Malformed input must be an `MQTTProtocolError` (or, for a
/// CONNECT of another version, a `ConnectError`); a packet that decodes must survive a round trip: encoded and
/// decoded again, it is the same packet.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMQTTDecoder(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: start, count: count)
    guard let mode = input.first else { return 0 }
    let version: MQTTVersion? = mode % 3 == 0 ? nil : mode % 3 == 1 ? .v311 : .v5
    var stream = ByteBuffer(bytes: input.dropFirst())
    while true {
        let raw: MQTTRawPacket
        do {
            guard let next = try MQTTFraming.next(from: &stream, maxBodySize: 1 << 20) else { return 0 }
            raw = next
        } catch is MQTTProtocolError {
            return 0
        } catch {
            preconditionFailure("framing threw something other than an MQTTProtocolError: \(error)")
        }
        let packet: MQTTPacket
        do {
            packet = try MQTTCodec.decode(raw, version: version)
        } catch let error as MQTTProtocolError {
            precondition(error.reason.isFailure, "a decoding error without a failure reason code")
            if verbose { print("rejected: \(error)") }
            continue
        } catch is MQTTCodec.ConnectError {
            continue
        } catch {
            preconditionFailure("decode threw something other than an MQTTProtocolError: \(error)")
        }
        if verbose { print("decoded: \(packet)") }
        let encodeVersion: MQTTVersion
        if case .connect(let connect) = packet { encodeVersion = connect.version } else { encodeVersion = version ?? .v5 }
        var encoded = MQTTCodec.encode(packet, version: encodeVersion)
        do {
            guard let again = try MQTTFraming.next(from: &encoded, maxBodySize: .max), encoded.readableBytes == 0 else {
                preconditionFailure("a re-encoded packet does not frame as one packet")
            }
            let decodedAgain = try MQTTCodec.decode(again, version: version)
            precondition(decodedAgain == packet, "round trip changed \(packet) into \(decodedAgain)")
        } catch {
            preconditionFailure("a re-encoded packet does not decode: \(error)")
        }
    }
}

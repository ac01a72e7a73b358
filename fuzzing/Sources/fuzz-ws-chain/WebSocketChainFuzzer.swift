import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOWebSocket
import SwitchyardCore
@testable import IngressStage

// Input layout: byte 0 chooses how the rest reaches the channel, the rest is what a client sends.
//   bits 0-1: 0 = the bytes alone (fuzzes the HTTP side); 1-3 = a valid upgrade request first, so most runs
//             reach the WebSocket frame decoder and the ingress handlers; 3 = and the client does not read
//             (the channel is not writable: the hub's slow-consumer path)
//   bits 2-7: n = 0 writes the bytes in one read; otherwise in reads of n * 4 bytes (frames split across reads)

/// One ingress for the whole process, on one embedded event loop: its hub and backplane link are real. The link's
/// router address is an `inproc://` socket drained by a thread; nothing sends to its inbound address, so its
/// receiver never touches the (single-threaded) loop.
final class IngressUnderTest {
    let loop = EmbeddedEventLoop()
    let hub: IngressHub
    let config: SwitchyardConfig
    private let link: BackplaneLink
    private let routerSink: NanomsgSocket
    private var runs = 0

    init() {
        var config = SwitchyardConfig()
        config.publishTimeout = 1  // pending publishes expire quickly: the hub's state stays small over millions of runs
        config.handshakeTimeout = 1  // each run advances the clock 2 s: connections left half-open time out
        config.runDir = NSTemporaryDirectory()
        self.config = config
        let name = "switchyard-fuzz-\(getpid())"
        let logger = LogWriter(stage: "ws-ingress", instance: 0, level: .error).makeLogger()
        let metrics = StageMetrics()
        do {
            routerSink = try NanomsgSocket(.pull)
            try routerSink.bind("inproc://\(name)-router")
            link = try BackplaneLink(eventLoop: loop, inboundAddress: "inproc://\(name)-ingress",
                                     routerAddress: "inproc://\(name)-router", logger: logger, metrics: metrics)
            try link.start { _ in }
        } catch {
            fatalError("cannot set up the ingress under test: \(error)")
        }
        Thread.detachNewThread { [routerSink] in
            while (try? routerSink.receive()) != nil {}
        }
        hub = IngressHub(instance: 0, inboundAddress: "inproc://\(name)-ingress", config: config, logger: logger,
                         metrics: metrics, link: link)
    }

    /// Sends `input` from a fresh client connection, then closes it and runs what that left scheduled.
    func run(_ input: UnsafeRawBufferPointer) {
        guard let mode = input.first else { return }
        let channel = EmbeddedChannel(loop: loop)
        do {
            try configureChildChannel(channel, hub: hub, config: config)
            // Connected from a remote address, as the server's child channels are.
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 40000)).wait()
        } catch {
            fatalError("cannot set up the client channel: \(error)")
        }
        if mode & 0b11 == 3 {
            channel.isWritable = false
            channel.pipeline.fireChannelWritabilityChanged()
        }
        var bytes = ByteBuffer()
        if mode & 0b11 != 0 { bytes.writeString(Self.upgradeRequest) }
        bytes.writeBytes(input.dropFirst())
        let readSize = mode >> 2 == 0 ? bytes.readableBytes : Int(mode >> 2) * 4
        while channel.isActive, bytes.readableBytes > 0,
              let slice = bytes.readSlice(length: min(readSize, bytes.readableBytes)) {
            do {
                try channel.writeInbound(slice)
            } catch {
                break  // the pipeline reported an error (it closes the channel itself)
            }
            loop.run()
        }
        loop.advanceTime(by: .seconds(2))  // closing handshakes give the client a second
        if Self.verbose { printWritten(channel) }
        _ = try? channel.finish(acceptAlreadyClosed: true)
        loop.run()
        runs += 1
        if runs % 1024 == 0 { hub.tick() }
    }

    /// Set `SWITCHYARD_FUZZ_VERBOSE=1` to see what the server wrote for each input (for checking the seed corpus).
    static let verbose = ProcessInfo.processInfo.environment["SWITCHYARD_FUZZ_VERBOSE"] != nil

    private func printWritten(_ channel: EmbeddedChannel) {
        var written = ByteBuffer()
        while let part = try? channel.readOutbound(as: IOData.self) {
            if case .byteBuffer(var buffer) = part { written.writeBuffer(&buffer) }
        }
        let text = String(decoding: written.readableBytesView.prefix(600), as: UTF8.self)
        print("wrote \(written.readableBytes) bytes: \(text.debugDescription)")
    }

    static let upgradeRequest = "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
}

/// The ingress's child-channel pipeline, exactly as `IngressServer` builds it.
func configureChildChannel(_ channel: Channel, hub: IngressHub, config: SwitchyardConfig) throws {
    try IngressServer.configureClientChannel(channel, settings: EdgeSettings(config: config),
                                             connections: connections, hub: hub)
}

/// Open connections of the ingress under test (each run closes its own).
private let connections = ConnectionCounter()

// nonisolated(unsafe): only libFuzzer's one thread, calling `LLVMFuzzerTestOneInput`, touches it.
nonisolated(unsafe) private let ingress = IngressUnderTest()

/// libFuzzer entry point: one client connection's bytes (see the layout above).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWebSocketChain(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    ingress.run(UnsafeRawBufferPointer(start: start, count: count))
    return 0
}

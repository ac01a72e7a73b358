// swift-tools-version:6.0
import Foundation
import PackageDescription

/// A path dependency's package identity is its folder's name: the checkout's, whatever it is called.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent
    .lowercased()

// libFuzzer targets for Switchyard's parsers. Kept out of the root package: built with
// `--sanitize fuzzer --sanitize address`, each links libFuzzer's `main`, which a normal build cannot link.
// Build and run them with scripts/fuzz.sh (scratch path fuzzing/.build).
let package = Package(
    name: "switchyard-fuzz",
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        // ClientFrameParser.parse on the input bytes.
        .executableTarget(name: "fuzz-client-frame", dependencies: [
            .product(name: "IngressStage", package: root),
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        // EnvelopeCodec.decodeBatch on the input; whatever decodes must re-encode and decode to the same.
        .executableTarget(name: "fuzz-envelope", dependencies: [
            .product(name: "SwitchyardCore", package: root),
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        // MQTTFraming and MQTTCodec.decode on a client's MQTT byte stream; what decodes must round-trip.
        .executableTarget(name: "fuzz-mqtt-decoder", dependencies: [
            .product(name: "IngressStage", package: root),
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        // The ingress's child-channel pipeline (HTTP, WebSocket upgrade, ClientHandler, hub) in an EmbeddedChannel.
        .executableTarget(name: "fuzz-ws-chain", dependencies: [
            .product(name: "IngressStage", package: root),
            .product(name: "SwitchyardCore", package: root),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
        ]),
    ]
)

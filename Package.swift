// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "switchyard",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "ws-ingress", targets: ["ws-ingress"]),
        .executable(name: "router", targets: ["router"]),
        .executable(name: "cache", targets: ["cache"]),
        .executable(name: "fanout", targets: ["fanout"]),
        .executable(name: "kafka-in", targets: ["kafka-in"]),
        .executable(name: "kafka-out", targets: ["kafka-out"]),
        .executable(name: "switchyard-bench", targets: ["switchyard-bench"]),
        .executable(name: "switchyard-cli", targets: ["switchyard-cli"]),
        // Libraries for the fuzz package in fuzzing/ (built apart: its targets link libFuzzer).
        .library(name: "SwitchyardCore", targets: ["SwitchyardCore"]),
        .library(name: "IngressStage", targets: ["IngressStage"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.1.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.7.1"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // C libraries, imported through shim headers.
        .systemLibrary(name: "CNanomsg", pkgConfig: "nanomsg"),
        .systemLibrary(name: "CRdKafka", pkgConfig: "rdkafka"),

        // Shared core: envelope codec, nanomsg wrapper, configuration, logging (swift-log's handler), metrics.
        .target(name: "SwitchyardCore", dependencies: [
            "CNanomsg",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ]),

        // One library per stage holds its logic; the executables are thin `@main` wrappers.
        .target(name: "IngressStage", dependencies: [
            "SwitchyardCore",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "NIOFoundationCompat", package: "swift-nio"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
        ], resources: [
            // The JavaScript client and the demo page (links to clients/), served by StaticFiles.swift.
            .embedInCode("Static/index.html"),
            .embedInCode("Static/demo.js"),
            .embedInCode("Static/switchyard.js"),
        ]),
        .target(name: "RouterStage", dependencies: ["SwitchyardCore", .product(name: "Logging", package: "swift-log")]),
        .target(name: "CacheStage", dependencies: [
            "SwitchyardCore",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "DequeModule", package: "swift-collections"),
            .product(name: "HeapModule", package: "swift-collections"),
        ]),
        .target(name: "FanoutStage", dependencies: ["SwitchyardCore", .product(name: "Logging", package: "swift-log")]),
        .target(name: "KafkaInStage", dependencies: [
            "SwitchyardCore", "SwitchyardKafka",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "DequeModule", package: "swift-collections"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
        ]),
        .target(name: "KafkaOutStage", dependencies: [
            "SwitchyardCore", "SwitchyardKafka",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
        ]),

        // librdkafka wrapper (producer, assign-based consumer, properties files) for the kafka stages.
        .target(name: "SwitchyardKafka", dependencies: [
            "CRdKafka",
            "SwitchyardCore",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ]),

        // For tests only: librdkafka's in-process mock cluster and conveniences for producing test records.
        .target(name: "SwitchyardKafkaTesting", dependencies: ["CRdKafka", "SwitchyardKafka"]),

        // TLS (swift-nio-ssl), the JWT verifier (jwt-kit) and the Kafka session store (librdkafka) of ws-ingress,
        // apart from IngressStage: the edge and its parsers (and the sanitizer-built fuzzers in fuzzing/) then build
        // without BoringSSL or librdkafka.
        .target(name: "IngressService", dependencies: [
            "IngressStage", "SwitchyardCore", "SwitchyardKafka",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOTLS", package: "swift-nio"),
            .product(name: "JWTKit", package: "jwt-kit"),
        ]),
        .executableTarget(name: "ws-ingress", dependencies: ["IngressStage", "IngressService"]),
        .executableTarget(name: "router", dependencies: ["RouterStage"]),
        .executableTarget(name: "cache", dependencies: ["CacheStage"]),
        .executableTarget(name: "fanout", dependencies: ["FanoutStage"]),
        .executableTarget(name: "kafka-in", dependencies: ["KafkaInStage"]),
        .executableTarget(name: "kafka-out", dependencies: ["KafkaOutStage"]),
        // The client side of protocol v1 for Swift tools: WebSocket connector, frames, recovery bookkeeping.
        .target(name: "SwitchyardClient", dependencies: [
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
        ]),
        .executableTarget(name: "switchyard-cli", dependencies: [
            "SwitchyardClient",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        .executableTarget(name: "switchyard-bench", dependencies: [
            "SwitchyardClient", "SwitchyardCore", "IngressStage",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
        ]),

        .testTarget(name: "SwitchyardCoreTests", dependencies: [
            "SwitchyardCore",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        .testTarget(name: "CacheStageTests", dependencies: ["CacheStage"]),
        .testTarget(name: "RouterStageTests", dependencies: ["RouterStage"]),
        .testTarget(name: "FanoutStageTests", dependencies: ["FanoutStage"]),
        .testTarget(name: "SwitchyardKafkaTests", dependencies: ["SwitchyardKafka", "SwitchyardKafkaTesting"]),
        .testTarget(name: "KafkaInStageTests", dependencies: ["KafkaInStage", "SwitchyardKafka"]),
        .testTarget(name: "SwitchyardClientTests", dependencies: ["SwitchyardClient"]),
        .testTarget(name: "IngressStageTests", dependencies: [
            "IngressStage", "IngressService", "SwitchyardKafka", "SwitchyardKafkaTesting",
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "JWTKit", package: "jwt-kit"),
        ]),
    ]
)

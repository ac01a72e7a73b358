import Foundation
import NIOEmbedded
import SwitchyardCore
@testable import IngressStage

/// A throw-away run folder for one test: the hub's nanomsg addresses live in it.
struct TestRunDir {
    let url: URL

    init(_ prefix: String) throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    var path: String { url.path }

    func remove() { try? FileManager.default.removeItem(at: url) }
}

extension IngressHub {
    /// A hub of ingress 0 on `eventLoop` whose backplane addresses are in `runDir` (nothing listens there: what the
    /// hub sends to the pipeline stays queued).
    static func forTests(on eventLoop: EmbeddedEventLoop, runDir: TestRunDir, config: SwitchyardConfig = .init())
        throws -> IngressHub {
        let logger = LogWriter(stage: "ws-ingress", instance: 0, level: .error).makeLogger()
        let inbound = "ipc://\(runDir.path)/ws-ingress-0.ipc"
        let link = try BackplaneLink(eventLoop: eventLoop, inboundAddress: inbound,
                                     routerAddress: "ipc://\(runDir.path)/router-0.ipc", logger: logger,
                                     metrics: StageMetrics())
        return IngressHub(instance: 0, inboundAddress: inbound, config: config, logger: logger,
                          metrics: StageMetrics(), link: link)
    }
}

import Foundation
import XCTest
@testable import SwitchyardCore

final class RunDirFilesTests: XCTestCase {
    private var folder = ""

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("sy-rundir-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: folder)
    }

    private func path(_ name: String) -> String { (folder as NSString).appendingPathComponent(name) }

    private func put(_ text: String, _ name: String) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path(name)))
    }

    func testTopologyFileRoundTripsAsTheSupervisorWritesIt() throws {
        let file = TopologyFile(instances: ["cache": 2, "ws-ingress": 3])
        try file.write(to: path(TopologyFile.name))
        XCTAssertEqual(try TopologyFile.read(from: path(TopologyFile.name)), file)
        // The supervisor's own spelling (json.dumps): a flat object of counts.
        try put(#"{"ws-ingress": 1, "router": 1, "cache": 4, "fanout": 1}"# + "\n", TopologyFile.name)
        XCTAssertEqual(try TopologyFile.read(from: path(TopologyFile.name))?.instances["cache"], 4)
    }

    func testOffsetCheckpointFileRoundTrips() throws {
        let file = OffsetCheckpointFile(nextOffsets: ["prices-0": 1042, "prices-1": Int64.max])
        let name = OffsetCheckpointFile.name(instance: 0)
        XCTAssertEqual(name, "kafka-in-0.offsets.json")
        try file.write(to: path(name))
        XCTAssertEqual(try OffsetCheckpointFile.read(from: path(name)), file)
    }

    func testAMissingFileIsNil() throws {
        XCTAssertNil(try TopologyFile.read(from: path("nothing.json")))
        XCTAssertNil(try OffsetCheckpointFile.read(from: path("nothing.json")))
    }

    func testCorruptOrOldFormatFilesGiveAnErrorNamingTheFile() throws {
        let cases = [
            "", "{", "not json", "[1, 2]", #"{"cache": "two"}"#, #"{"cache": 2.5}"#, #"{"cache": null}"#,
            #"{"version": 1, "instances": {"cache": 2}}"#, #"{"cache": 99999999999999999999999}"#,
        ]
        for (index, text) in cases.enumerated() {
            let name = "bad-\(index).json"
            try put(text, name)
            XCTAssertThrowsError(try TopologyFile.read(from: path(name)), text) { error in
                guard let error = error as? RunDirFileError else { return XCTFail("\(error)") }
                XCTAssertEqual(error.file, path(name))
                XCTAssertTrue(error.description.hasPrefix(path(name) + ": not a valid TopologyFile"), error.description)
            }
            XCTAssertThrowsError(try OffsetCheckpointFile.read(from: path(name)), text)
        }
        try put(#"{"prices-0": 18446744073709551615}"#, "offsets.json")
        XCTAssertThrowsError(try OffsetCheckpointFile.read(from: path("offsets.json")), "beyond Int64")
    }

    func testACorruptTopologyFileKeepsTheConfiguredCountsAndSaysWhy() throws {
        var config = try SwitchyardConfig.parse("CacheInstances = 2", file: folder + "/s.conf")
        config.runDir = folder
        try put("{\"cache\": ", TopologyFile.name)
        var problems: [RunDirFileError] = []
        let topology = Topology.load(config: config) { problems.append($0) }
        XCTAssertEqual(topology.count(.cache), 2)
        XCTAssertEqual(problems.map(\.file), [path(TopologyFile.name)])

        try put(#"{"cache": 0, "fanout": 3, "unknown": 7}"#, TopologyFile.name)
        problems = []
        let partly = Topology.load(config: config) { problems.append($0) }
        XCTAssertEqual([partly.count(.cache), partly.count(.fanout)], [2, 3])
        XCTAssertEqual(problems.count, 1)
        XCTAssertTrue(problems.first?.problem.hasPrefix("cache runs 1-64 instances, not 0") ?? false, "\(problems)")
    }
}

import NIOCore
import SwitchyardCore
import XCTest
@testable import CacheStage

final class PatternSnapshotsTests: XCTestCase {
    func store(_ subjects: [String: MessageFlags]) -> SubjectStore {
        let store = SubjectStore(epoch: "e", maxMessagesPerSubject: 10, maxAge: 60_000_000_000)
        for (subject, flags) in subjects.sorted(by: { $0.key < $1.key }) {
            _ = store.append(Message(subject: subject, content: ByteBuffer(string: subject), flags: flags), now: 1)
        }
        return store
    }

    func subjects(_ messages: [Message]) -> [String] { messages.map(\.subject).sorted() }

    func testThePatternsMatchingSnapshotsAndNoOthers() throws {
        let store = store(["/vehicles": [.retained], "/vehicles/car7/speed": [.retained, .guaranteed],
                           "/vehicles/car8/speed": [.retained], "/vehicles/car8/fuel": [.retained],
                           "/vehicles/car9/speed": [.guaranteed], "/trucks/t1/speed": [.retained]])
        let speeds = store.snapshots(matching: try SubjectPattern("/vehicles/+/speed"), limit: 100, maxBytes: 1 << 20)
        XCTAssertEqual(subjects(speeds), ["/vehicles/car7/speed", "/vehicles/car8/speed"], "car9 has no snapshot")
        let all = store.snapshots(matching: try SubjectPattern("/vehicles/#"), limit: 100, maxBytes: 1 << 20)
        XCTAssertEqual(subjects(all), ["/vehicles", "/vehicles/car7/speed", "/vehicles/car8/fuel", "/vehicles/car8/speed"])
        let anywhere = store.snapshots(matching: try SubjectPattern("/+/+/speed"), limit: 100, maxBytes: 1 << 20)
        XCTAssertEqual(subjects(anywhere), ["/trucks/t1/speed", "/vehicles/car7/speed", "/vehicles/car8/speed"])
    }

    func testTheAnswerIsBoundedByCountAndBytes() throws {
        var subjects: [String: MessageFlags] = [:]
        for car in 0..<50 { subjects["/vehicles/car\(car)"] = [.retained] }
        let store = store(subjects)
        let pattern = try SubjectPattern("/vehicles/+")
        XCTAssertEqual(store.snapshots(matching: pattern, limit: 10, maxBytes: 1 << 20).count, 10)
        XCTAssertEqual(store.snapshots(matching: pattern, limit: 100, maxBytes: 1 << 20).count, 50)
        // Each content is its subject, "/vehicles/carN": 14 or 15 bytes; two fit in 31, three do not.
        XCTAssertEqual(store.snapshots(matching: pattern, limit: 100, maxBytes: 31).count, 2)
        XCTAssertEqual(store.snapshots(matching: pattern, limit: 100, maxBytes: 1).count, 1, "the first always fits")
    }
}

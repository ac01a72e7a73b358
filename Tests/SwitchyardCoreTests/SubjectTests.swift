import XCTest
import SwitchyardCore

final class SubjectTests: XCTestCase {
    func testValidSubjects() {
        for subject in ["/a", "/a/b", "/vehicles/car66/speed", "/my.topic_1-x/any thing/ü"] {
            XCTAssertNil(Subject.validate(subject), subject)
        }
    }

    func testInvalidSubjects() {
        let cases: [(String, Subject.ValidationError)] = [
            ("", .empty), ("a/b", .missingLeadingSlash), ("/", .emptySegment), ("/a//b", .emptySegment),
            ("//a", .emptySegment), ("/a/", .trailingSlash), ("/a b/c", .invalidTopicName),
            ("/top!c", .invalidTopicName), ("/..", .invalidTopicName), ("/./k", .invalidTopicName),
            ("/" + String(repeating: "t", count: 250), .invalidTopicName),
            ("/a/" + String(repeating: "k", count: Subject.maxLength), .tooLong),
        ]
        for (subject, expected) in cases {
            XCTAssertEqual(Subject.validate(subject), expected, subject)
        }
        XCTAssertNil(Subject.validate("/" + String(repeating: "t", count: 249)))
    }

    func testKafkaMapping() {
        XCTAssertTrue(Subject.kafkaMapping("/vehicles/car66/speed") == ("vehicles", "car66/speed"))
        XCTAssertTrue(Subject.kafkaMapping("/vehicles") == ("vehicles", nil))
        XCTAssertEqual(Subject.fromKafka(topic: "notifications", key: "car66"), "/notifications/car66")
        XCTAssertEqual(Subject.fromKafka(topic: "notifications", key: nil), "/notifications")
    }

    func testShardsAreStableAndSpread() {
        XCTAssertEqual(Subject.shard(of: "/a/b", count: 4), Subject.shard(of: "/a/b", count: 4))
        let used = Set((0..<100).map { Subject.shard(of: "/s/\($0)", count: 4) })
        XCTAssertEqual(used, [0, 1, 2, 3])
    }
}

import XCTest
@testable import SwitchyardCore

final class SubjectPatternTests: XCTestCase {
    func pattern(_ text: String) throws -> SubjectPattern { try SubjectPattern(text) }

    func testPatternsParseIntoLevels() throws {
        XCTAssertEqual(try pattern("/vehicles/+/speed").levels, [.literal("vehicles"), .anyOne, .literal("speed")])
        XCTAssertEqual(try pattern("/vehicles/#").levels, [.literal("vehicles"), .anyRest])
        XCTAssertEqual(try pattern("/#").levels, [.anyRest])
        XCTAssertEqual(try pattern("/+/+").levels, [.anyOne, .anyOne])
        XCTAssertEqual(try pattern("/+/speed").literalPrefix, nil)
        XCTAssertEqual(try pattern("/a/b/+/c/#").literalPrefix, "/a/b")
    }

    func testInvalidPatternsAreRefusedWithTheirReason() {
        let cases: [(String, SubjectPattern.ValidationError)] = [
            ("/vehicles/car7", .notAPattern), ("vehicles/#", .missingLeadingSlash), ("", .missingLeadingSlash),
            ("/a/#/b", .misplacedWildcard), ("/a/b#", .misplacedWildcard), ("/a/+b", .misplacedWildcard),
            ("/a/##", .misplacedWildcard), ("/a//+", .emptyLevel), ("/a/+/", .emptyLevel), ("/", .emptyLevel),
            ("/$SYS/#", .invalidTopicName), ("/bad topic/+", .invalidTopicName),
            ("/" + String(repeating: "k", count: 250) + "/#", .invalidTopicName),
            ("/a/" + String(repeating: "+/", count: SubjectPattern.maxLevels) + "#", .tooManyLevels),
            ("/a/+/" + String(repeating: "x", count: Subject.maxLength), .tooLong),
        ]
        for (text, expected) in cases {
            XCTAssertThrowsError(try SubjectPattern(text), text) { error in
                XCTAssertEqual(error as? SubjectPattern.ValidationError, expected, text)
            }
        }
    }

    func testMatchingFollowsMQTT() throws {
        let speed = try pattern("/vehicles/+/speed")
        XCTAssertTrue(speed.matches("/vehicles/car7/speed"))
        XCTAssertFalse(speed.matches("/vehicles/car7/speed/max"))
        XCTAssertFalse(speed.matches("/vehicles/speed"))
        XCTAssertFalse(speed.matches("/trucks/car7/speed"))
        let everything = try pattern("/vehicles/#")
        XCTAssertTrue(everything.matches("/vehicles"), "# matches the parent too")
        XCTAssertTrue(everything.matches("/vehicles/car7"))
        XCTAssertTrue(everything.matches("/vehicles/car7/speed"))
        XCTAssertFalse(everything.matches("/vehiclesx/car7"))
        XCTAssertTrue(try pattern("/#").matches("/a"))
        XCTAssertTrue(try pattern("/+").matches("/a"))
        XCTAssertFalse(try pattern("/+").matches("/a/b"))
        XCTAssertTrue(try pattern("/+/+/#").matches("/a/b"))
        XCTAssertFalse(try pattern("/+/+/#").matches("/a"))
        XCTAssertFalse(try pattern("/#").matches("/$SYS/x"), "a wildcard first level never matches a $ topic")
        XCTAssertFalse(try pattern("/+/x").matches("/$SYS/x"))
    }

    func testTheMatcherFindsEveryOwnerOfEveryMatchingPattern() throws {
        let matcher = PatternMatcher<Int>()
        XCTAssertTrue(matcher.isEmpty)
        XCTAssertTrue(matcher.insert(try pattern("/vehicles/+/speed"), owner: 1), "the pattern's first owner")
        XCTAssertFalse(matcher.insert(try pattern("/vehicles/+/speed"), owner: 2), "not the first")
        XCTAssertFalse(matcher.insert(try pattern("/vehicles/+/speed"), owner: 2), "already an owner")
        matcher.insert(try pattern("/vehicles/#"), owner: 3)
        matcher.insert(try pattern("/#"), owner: 4)
        matcher.insert(try pattern("/+/car7/+"), owner: 5)
        matcher.insert(try pattern("/vehicles/car7/#"), owner: 1)
        XCTAssertEqual(matcher.count, 5)
        XCTAssertEqual(matcher.owners(matching: "/vehicles/car7/speed"), [1, 2, 3, 4, 5])
        XCTAssertEqual(matcher.owners(matching: "/vehicles/car8/speed"), [1, 2, 3, 4])
        XCTAssertEqual(matcher.owners(matching: "/vehicles"), [3, 4])
        XCTAssertEqual(matcher.owners(matching: "/vehicles/car7"), [1, 3, 4], "car7/# matches car7")
        XCTAssertEqual(matcher.owners(matching: "/trucks/car7/speed"), [4, 5])
        XCTAssertEqual(matcher.owners(matching: "/$SYS/car7/x"), [], "$ topics are not matched by wildcards")
        var calls = 0
        matcher.forEachOwner(matching: "/vehicles/car7/speed") { if $0 == 1 { calls += 1 } }
        XCTAssertEqual(calls, 2, "an owner of two matching patterns is called for each")
    }

    func testRemovingTheLastOwnerRemovesThePatternAndPrunesTheTrie() throws {
        let matcher = PatternMatcher<Int>()
        let speed = try pattern("/vehicles/+/speed")
        matcher.insert(speed, owner: 1)
        matcher.insert(speed, owner: 2)
        matcher.insert(try pattern("/vehicles/#"), owner: 2)
        XCTAssertFalse(matcher.remove(speed, owner: 1), "owner 2 is left")
        XCTAssertFalse(matcher.remove(speed, owner: 1), "not an owner any more")
        XCTAssertEqual(matcher.owners(matching: "/vehicles/a/speed"), [2])
        XCTAssertTrue(matcher.remove(speed, owner: 2), "the last owner")
        XCTAssertEqual(matcher.owners(matching: "/vehicles/a/speed"), [2], "through /vehicles/# only")
        matcher.removeOwners { $0 == 2 }
        XCTAssertTrue(matcher.isEmpty)
        XCTAssertEqual(matcher.owners(matching: "/vehicles/a/speed"), [])
        matcher.insert(speed, owner: 7)
        XCTAssertEqual(matcher.owners(matching: "/vehicles/a/speed"), [7], "usable again after pruning")
    }

    func testAWideTrieMatchesByLevelsNotByCount() throws {
        let matcher = PatternMatcher<Int>()
        for car in 0..<10_000 { matcher.insert(try pattern("/vehicles/car\(car)/+"), owner: car) }
        XCTAssertEqual(matcher.owners(matching: "/vehicles/car4711/speed"), [4711])
        XCTAssertEqual(matcher.owners(matching: "/vehicles/car4711"), [])
    }
}

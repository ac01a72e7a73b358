import SwitchyardCore
import XCTest
@testable import FanoutStage

final class FanoutInterestTests: XCTestCase {
    func ingresses(_ interest: FanoutInterest, _ subject: String) -> [UInt32] {
        var found: [UInt32] = []
        interest.forEachIngress(interestedIn: subject) { found.append($0) }
        return found.sorted()
    }

    func testExactSubjectsAloneAsBefore() {
        let interest = FanoutInterest()
        interest.apply(Interest(subject: "/a/b", ingress: 0, isAdded: true))
        interest.apply(Interest(subject: "/a/b", ingress: 2, isAdded: true))
        XCTAssertEqual(ingresses(interest, "/a/b"), [0, 2])
        XCTAssertEqual(ingresses(interest, "/a/c"), [])
        interest.apply(Interest(subject: "/a/b", ingress: 0, isAdded: false))
        XCTAssertEqual(ingresses(interest, "/a/b"), [2])
        interest.apply(Interest(subject: "/a/b", ingress: 2, isAdded: false))
        XCTAssertEqual(interest.subjectCount, 0)
    }

    func testAMessageGoesToTheUnionOfSubjectAndPatternInterestEachIngressOnce() {
        let interest = FanoutInterest()
        interest.apply(Interest(subject: "/vehicles/car7/speed", ingress: 0, isAdded: true))
        XCTAssertTrue(interest.apply(PatternInterest(pattern: "/vehicles/+/speed", ingress: 0, isAdded: true)))
        XCTAssertTrue(interest.apply(PatternInterest(pattern: "/vehicles/#", ingress: 0, isAdded: true)))
        XCTAssertTrue(interest.apply(PatternInterest(pattern: "/vehicles/+/speed", ingress: 1, isAdded: true)))
        XCTAssertTrue(interest.apply(PatternInterest(pattern: "/#", ingress: 3, isAdded: true)))
        XCTAssertEqual(ingresses(interest, "/vehicles/car7/speed"), [0, 1, 3], "ingress 0 once for three reasons")
        XCTAssertEqual(ingresses(interest, "/vehicles"), [0, 3])
        XCTAssertEqual(ingresses(interest, "/trucks/t1"), [3])
        XCTAssertEqual(interest.patternCount, 3)
        XCTAssertTrue(interest.apply(PatternInterest(pattern: "/#", ingress: 3, isAdded: false)))
        XCTAssertEqual(ingresses(interest, "/trucks/t1"), [], "a withdrawn pattern matches no more")
    }

    func testAnInvalidPatternChangesNothing() {
        let interest = FanoutInterest()
        XCTAssertFalse(interest.apply(PatternInterest(pattern: "/a/b", ingress: 0, isAdded: true)), "no wildcard")
        XCTAssertFalse(interest.apply(PatternInterest(pattern: "/a/#/b", ingress: 0, isAdded: true)))
        XCTAssertEqual(interest.patternCount, 0)
    }

    func testARestartedIngressesPatternsAreForgottenAndItsSubjectsKept() {
        let interest = FanoutInterest()
        interest.apply(Interest(subject: "/a", ingress: 1, isAdded: true))
        _ = interest.apply(PatternInterest(pattern: "/#", ingress: 1, isAdded: true))
        _ = interest.apply(PatternInterest(pattern: "/+", ingress: 0, isAdded: true))
        interest.forgetPatterns(of: 1)
        XCTAssertEqual(ingresses(interest, "/b"), [0])
        XCTAssertEqual(ingresses(interest, "/a"), [0, 1], "its subject through the cache, left alone")
    }

    func testScaledAwayIngressesAreForgottenForSubjectsAndPatterns() {
        let interest = FanoutInterest()
        interest.apply(Interest(subject: "/a", ingress: 1, isAdded: true))
        interest.apply(Interest(subject: "/a", ingress: 2, isAdded: true))
        _ = interest.apply(PatternInterest(pattern: "/+", ingress: 2, isAdded: true))
        _ = interest.apply(PatternInterest(pattern: "/#", ingress: 0, isAdded: true))
        interest.keepIngresses(below: 2)
        XCTAssertEqual(ingresses(interest, "/a"), [0, 1])
        XCTAssertEqual(interest.patternCount, 1, "/+ had only ingress 2")
    }
}

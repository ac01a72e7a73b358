import SwitchyardCore
import XCTest

final class IngressSetTests: XCTestCase {
    func testMembersBelowAndAbove64() {
        var set: IngressSet = []
        XCTAssertTrue(set.isEmpty)
        for ingress: UInt32 in [5, 0, 63, 64, 1000, 5] { set.insert(ingress) }
        XCTAssertFalse(set.isEmpty)
        XCTAssertEqual(Array(set.prefix(3)), [0, 5, 63], "the bits first, in increasing order")
        XCTAssertEqual(Set(set), [0, 5, 63, 64, 1000])
        XCTAssertTrue(set.contains(63))
        XCTAssertTrue(set.contains(1000))
        XCTAssertFalse(set.contains(1))
        XCTAssertFalse(set.contains(UInt32.max))
        set.remove(5)
        set.remove(1000)
        set.remove(7)
        set.remove(UInt32.max)
        XCTAssertEqual(Set(set), [0, 63, 64])
        XCTAssertEqual(Set(set.filtered { $0 < 64 }), [0, 63])
        set.remove(0)
        set.remove(63)
        set.remove(64)
        XCTAssertTrue(set.isEmpty)
        XCTAssertEqual(set, IngressSet())
        XCTAssertEqual(IngressSet(arrayLiteral: 3, 70), [70, 3])
    }
}

import XCTest
@testable import SwitchyardCore

/// The `key=value` log format: a value never breaks its line, whatever a client put in it.
final class LogTests: XCTestCase {
    func testPlainValuesStayAsTheyAre() {
        XCTAssertEqual(Logger.quote("ready"), "ready")
        XCTAssertEqual(Logger.quote("/vehicles/car66/speed"), "/vehicles/car66/speed")
        XCTAssertEqual(Logger.quote("a\\b"), "a\\b", "a backslash alone needs no quotes")
    }

    func testSpacesQuotesAndEqualsAreQuoted() {
        XCTAssertEqual(Logger.quote(""), "\"\"")
        XCTAssertEqual(Logger.quote("two words"), "\"two words\"")
        XCTAssertEqual(Logger.quote("k=v"), "\"k=v\"")
        XCTAssertEqual(Logger.quote("say \"hi\" \\o/"), "\"say \\\"hi\\\" \\\\o/\"")
    }

    func testControlCharactersAreEscapedSoNoValueStartsALine() {
        XCTAssertEqual(Logger.quote("a\r\nlevel=ERROR"), "\"a\\r\\nlevel=ERROR\"")
        XCTAssertEqual(Logger.quote("tab\there"), "\"tab\\there\"")
        XCTAssertEqual(Logger.quote("\u{1B}[31mred"), "\"\\u{1b}[31mred\"")
        XCTAssertEqual(Logger.quote("x\u{2028}y\u{85}z"), "\"x\\u{2028}y\\u{85}z\"")
        for value in ["a\rb", "a\nb", "\u{0}", "\u{7F}", "\u{2029}"] {
            let quoted = Logger.quote(value)
            XCTAssertFalse(quoted.unicodeScalars.contains { $0.properties.generalCategory == .control },
                           "\(quoted.debugDescription) keeps a control character")
        }
    }
}

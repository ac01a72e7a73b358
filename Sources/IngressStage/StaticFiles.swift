import NIOCore
import NIOHTTP1

/// The files ws-ingress serves over plain HTTP: the JavaScript client and the live demo page.
///
/// They are compiled into the executable (SwiftPM resources embedded in code; the sources live in clients/ and
/// are linked into Sources/IngressStage/Static), so serving one is a write of a buffer built once: no file I/O,
/// nothing that could slow the WebSocket path, and no network at run time.
struct StaticFile {
    let contentType: String
    let body: ByteBuffer

    init(_ bytes: [UInt8], contentType: String) {
        self.contentType = contentType
        body = ByteBuffer(bytes: bytes)
    }

    /// The file served at `path`, if any.
    static func at(_ path: String) -> StaticFile? {
        switch path {
        case "/", "/index.html": return demoPage
        case "/demo.js": return demoScript
        case "/switchyard.js": return client
        default: return nil
        }
    }

    static let demoPage = StaticFile(PackageResources.index_html, contentType: "text/html; charset=utf-8")
    static let demoScript = StaticFile(PackageResources.demo_js, contentType: "text/javascript; charset=utf-8")
    static let client = StaticFile(PackageResources.switchyard_js, contentType: "text/javascript; charset=utf-8")
}

extension PlainHTTPHandler {
    /// Answers GET (the file) and HEAD (its headers only); any other method gets 405.
    ///
    /// `Cache-Control: no-cache`: a browser may keep a copy but asks again, so a new build is picked up at once.
    func serve(_ file: StaticFile, context: ChannelHandlerContext, request: HTTPRequestHead) {
        guard request.method == .GET || request.method == .HEAD else {
            var headers = HTTPHeaders()
            headers.add(name: "Allow", value: "GET, HEAD")
            writeResponse(context, request, .methodNotAllowed, headers, ByteBuffer(string: "method not allowed\n"),
                          contentType: "text/plain; charset=utf-8", includeBody: true)
            return
        }
        var headers = HTTPHeaders()
        headers.add(name: "Cache-Control", value: "no-cache")
        headers.add(name: "X-Content-Type-Options", value: "nosniff")
        writeResponse(context, request, .ok, headers, file.body, contentType: file.contentType,
                      includeBody: request.method == .GET)
    }

    private func writeResponse(_ context: ChannelHandlerContext, _ request: HTTPRequestHead,
                               _ status: HTTPResponseStatus, _ extraHeaders: HTTPHeaders, _ body: ByteBuffer,
                               contentType: String, includeBody: Bool) {
        var headers = extraHeaders
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        headers.add(name: "Connection", value: "close")
        let head = HTTPResponseHead(version: request.version, status: status, headers: headers)
        context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
        if includeBody {
            context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(body))), promise: nil)
        }
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}

import NIOCore

/// Who may in over MQTT, decided without a socket. The CONNECT's password is the token (the user name is free):
/// under `Entitlement = jwt` a JWT, under `basic` the allow token; `none` ignores it. It follows `Entitlement`
/// as a WebSocket connection does: no token is `Entitlement.withoutToken` (`basic`: subscribe only; `jwt`:
/// refused), a token is verified and its grant decides.
enum MQTTAccess {
    enum Decision: Equatable {
        /// In at once, with this grant: nothing to verify.
        case admit(TokenGrant)
        /// Verify this token first; nothing the client sent after CONNECT is processed before the verdict.
        case verify(String)
        case refuse(TokenRefusal)
    }

    /// `upgradeGrant`: MQTT over WebSocket whose upgrade request carried a token already verified (URL `?token=`
    /// or `Authorization: Bearer`); it stands in for a missing password.
    static func decide(password: ByteBuffer?, withoutToken: Permissions?, checksTokens: Bool,
                       upgradeGrant: TokenGrant? = nil) -> Decision {
        guard checksTokens else { return .admit(TokenGrant(permissions: withoutToken ?? .everything, expiresAt: nil)) }
        guard let password, password.readableBytes > 0 else {
            if let upgradeGrant { return .admit(upgradeGrant) }
            guard let withoutToken else { return .refuse(.missing) }
            return .admit(TokenGrant(permissions: withoutToken, expiresAt: nil))
        }
        guard password.readableBytes <= TokenGrant.maxTokenBytes else { return .refuse(.tooLong) }
        guard UTF8Validator.isValid(password) else { return .refuse(.malformed) }
        return .verify(String(buffer: password))
    }

    /// The CONNACK of a refused token: none given is "not authorized" (3.1.1 return code 5, v5 0x87); one given
    /// and not accepted (malformed, bad signature, expired, another allow token, ...) is "bad user name or
    /// password" (3.1.1 4, v5 0x86).
    static func connAck(refusing refusal: TokenRefusal, version: MQTTVersion) -> MQTTConnAck {
        let missing = refusal == .missing
        let code: UInt8 = switch (version, missing) {
        case (.v5, true): MQTTReasonCode.notAuthorized.rawValue
        case (.v5, false): MQTTReasonCode.badUserNameOrPassword.rawValue
        case (.v311, true): 0x05
        case (.v311, false): 0x04
        }
        var properties = MQTTProperties()
        if version == .v5 {
            let reason = missing ? "a token is required as the MQTT password" : refusal.reason
            properties.append(MQTTProperties.ID.reasonString, .string(reason))
        }
        return MQTTConnAck(sessionPresent: false, code: code, properties: properties)
    }
}

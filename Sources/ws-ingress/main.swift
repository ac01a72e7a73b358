import IngressService
import IngressStage

IngressServer.main(makeTLS: IngressSecurity.tls, makeVerifier: IngressSecurity.verifier,
                   makeSessions: KafkaMQTTSessionStore.make)

"""Helpers for the TLS end-to-end tests: a CA made with the openssl command line and the server certificates it
issues for 127.0.0.1, installing them where a broker's config names them, and reading a server's certificate."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

HANDSHAKE_TIMEOUT = 2


class PKI:
    """A CA in `folder` and the server certificates it issues."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.ca = folder / "ca.pem"
        self.openssl("req", "-x509", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                     "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Switchyard test CA")

    def openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], cwd=self.folder, check=True, capture_output=True, timeout=30)

    def issue(self, name: str, serial: int) -> tuple[Path, Path]:
        """NAME.pem (the server certificate for 127.0.0.1, then the CA: a chain) and NAME.key."""
        (self.folder / f"{name}.ext").write_text(
            "subjectAltName = IP:127.0.0.1, DNS:localhost\nkeyUsage = critical, digitalSignature\n"
            "extendedKeyUsage = serverAuth\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n")
        self.openssl("req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                     "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        self.openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                     "-set_serial", str(serial), "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.leaf")
        chain = self.folder / f"{name}.pem"
        chain.write_text((self.folder / f"{name}.leaf").read_text() + self.ca.read_text())
        return chain, self.folder / f"{name}.key"

    def der(self, name: str) -> bytes:
        return ssl.PEM_cert_to_DER_cert((self.folder / f"{name}.leaf").read_text())

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    """A CA of the test module's own."""
    return PKI(tmp_path_factory.mktemp("pki"))


def install(broker_dir: Path, chain: Path, key: Path) -> None:
    """Puts the files where the config names them, as a renewal would (write, then rename over)."""
    folder = broker_dir / "tls"
    folder.mkdir(exist_ok=True)
    for source, target in ((chain, folder / "server.pem"), (key, folder / "server.key")):
        temporary = target.with_suffix(".new")
        temporary.write_bytes(source.read_bytes())
        os.replace(temporary, target)


def tls_params(tls_port: int, **extra) -> dict:
    return dict(ListenEncrypted=f"127.0.0.1:{tls_port}", TLSCertificateFile="tls/server.pem",
                TLSKeyFile="tls/server.key", HandshakeTimeout=HANDSHAKE_TIMEOUT, **extra)


def peer_certificate(port: int, context: ssl.SSLContext) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert(binary_form=True)

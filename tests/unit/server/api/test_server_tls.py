"""spiffe_server.api.tls: rotating the listener's certificate needs no restart (real TLS sockets)."""

from __future__ import annotations

import asyncio
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from spiffe_server.api.tls import ServerTls


def _ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    now = datetime.now(UTC)  # at use, not import: a long test session must not outlive the certificates
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "test ca")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
          ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(minutes=30))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://example.org/spire/server")]),
                           critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


async def _served_serial(port: int, roots: list[x509.Certificate]) -> int:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.load_verify_locations(cadata="".join(r.public_bytes(serialization.Encoding.PEM).decode() for r in roots))
    client.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    del reader
    return x509.load_der_x509_certificate(der).serial_number


async def test_update_rotates_certificate_for_new_connections(tmp_path: Path) -> None:
    ca1, ca1_key = _ca()
    ca2, ca2_key = _ca()
    tls = ServerTls(tmp_path / "svid")
    first, first_key = _leaf(ca1, ca1_key)
    tls.update([first], first_key, [ca1])
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=tls.context)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await _served_serial(port, [ca1]) == first.serial_number
        second, second_key = _leaf(ca2, ca2_key)   # a new CA too: the listener context itself is unchanged
        tls.update([second], second_key, [ca1, ca2])
        assert await _served_serial(port, [ca2]) == second.serial_number
    finally:
        server.close()
        await server.wait_closed()
    assert (tmp_path / "svid" / "svid.key").stat().st_mode & 0o777 == 0o600

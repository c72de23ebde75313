"""``spiffe-server x509 mint`` and ``jwt mint``: SVIDs without an entry."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spiffe_py._proto.spiffepy.server.v1 import admin_pb2
from spiffe_server.cli._common import CliError, admin_parser, emit, group, seconds_arg

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

    from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub


def _csr(spiffe_id: str, dns_names: Sequence[str]) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
    sans += [x509.DNSName(n) for n in dns_names]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])] if dns_names else [])
    csr = (x509.CertificateSigningRequestBuilder().subject_name(name)
           .add_extension(x509.SubjectAlternativeName(sans), critical=False).sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.DER)


def _pem_chain(ders: Sequence[bytes]) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    return b"".join(x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM) for d in ders)


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Report a failed ``--write`` as what it is (e.g. permission denied), not as a socket error."""
    try:
        yield
    except OSError as err:
        raise CliError(f"--write: cannot write {str(path)!r}: {err.strerror or err}") from err


async def cmd_x509_mint(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """x509 mint"""
    from cryptography.hazmat.primitives import serialization

    from spiffe_py.fsutil import write_private, write_public
    from spiffe_server.dnsnames import DnsNameError, check_dns_name

    for name in args.dns_name or ():
        try:
            check_dns_name(name)
        except DnsNameError as err:
            raise CliError(f"--dns-name: {err}") from None
    key, csr = _csr(args.spiffe_id, args.dns_name or [])
    resp = await api.MintX509SVID(admin_pb2.MintX509SVIDRequest(csr=csr, ttl=args.ttl))
    svid = _pem_chain(resp.svid_chain)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    bundle = _pem_chain(resp.bundle.x509_authorities)
    if args.write:
        out = Path(args.write)
        with _writing(out):
            write_public(out / "svid.pem", svid)
            write_private(out / "key.pem", key_pem)
            write_public(out / "bundle.pem", bundle)
        emit(args, {"svid": str(out / "svid.pem"), "key": str(out / "key.pem"), "bundle": str(out / "bundle.pem")},
             f"X509-SVID written to {out / 'svid.pem'}\nPrivate key written to {out / 'key.pem'}\n"
             f"Root CAs written to {out / 'bundle.pem'}")
        return
    emit(args, {"svid": svid.decode(), "key": key_pem.decode(), "bundle": bundle.decode()},
         f"X509-SVID:\n{svid.decode()}\nPrivate key:\n{key_pem.decode()}\nRoot CAs:\n{bundle.decode()}")


async def cmd_jwt_mint(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """jwt mint"""
    from spiffe_py.fsutil import write_private

    resp = await api.MintJWTSVID(admin_pb2.MintJWTSVIDRequest(spiffe_id=args.spiffe_id, audience=args.audience,
                                                               ttl=args.ttl))
    if args.write:
        with _writing(Path(args.write)):
            write_private(Path(args.write), resp.token.encode())
    emit(args, {"token": resp.token, "expires_at": resp.expires_at},
         f"{args.write} written" if args.write else resp.token)


def add_parsers(sub: Any) -> None:
    x509_cmd = group(sub, "x509", "X.509-SVIDs without an entry")
    p = admin_parser(x509_cmd, "mint", cmd_x509_mint, "mint an X.509-SVID")
    p.add_argument("--spiffe-id", required=True, help="SPIFFE ID of the SVID")
    p.add_argument("--ttl", type=seconds_arg, default=0, metavar="DURATION",
                   help="e.g. 1h, 90s or seconds (default: the server's)")
    p.add_argument("--dns-name", action="append", help="DNS SAN (repeat); the first is also the subject CN")
    p.add_argument("--write", metavar="DIR", help="directory for svid.pem, key.pem (0600), bundle.pem")

    jwt_cmd = group(sub, "jwt", "JWT-SVIDs without an entry")
    p = admin_parser(jwt_cmd, "mint", cmd_jwt_mint, "mint a JWT-SVID")
    p.add_argument("--spiffe-id", required=True, help="SPIFFE ID of the SVID (the sub claim)")
    p.add_argument("--audience", action="append", required=True, help="aud claim (repeat)")
    p.add_argument("--ttl", type=seconds_arg, default=0, metavar="DURATION",
                   help="e.g. 5m, 90s or seconds (default: the server's)")
    p.add_argument("--write", metavar="FILE", help="file for the token (0600)")

"""``spiffe-server bundle``: the server's bundle and federated bundles (show, list, count, set, delete)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, types_pb2
from spiffe_server.cli._common import CliError, admin_parser, emit, group, read_file

if TYPE_CHECKING:
    from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub


def bundle_text(pb: types_pb2.Bundle, fmt: str) -> str:
    """A wire bundle as PEM certificates or SPIFFE bundle JSON."""
    from spiffe_server.api.convert import bundle_from_proto

    bundle = bundle_from_proto(pb)
    if fmt == "pem":
        return bundle.x509_bundle().to_pem().decode()
    return bundle.to_json().decode()


def _read_bundle(args: argparse.Namespace) -> types_pb2.Bundle:
    from spiffe_py.bundle import SpiffeBundle, X509Bundle
    from spiffe_py.errors import SpiffeError
    from spiffe_py.spiffeid import TrustDomain
    from spiffe_server.api.convert import bundle_to_proto

    try:
        td = TrustDomain.parse(args.id)
    except SpiffeError as err:
        raise CliError(f"--id: {err}") from err
    data = sys.stdin.buffer.read() if args.path == "-" else read_file(args.path, "--path")
    try:
        if args.format == "pem":
            return bundle_to_proto(SpiffeBundle(td, X509Bundle.parse_pem(td, data).authorities))
        return bundle_to_proto(SpiffeBundle.parse(td, data))
    except SpiffeError as err:
        raise CliError(f"--path: {err}") from err


async def cmd_bundle_show(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """bundle show"""
    text = bundle_text(await api.GetBundle(admin_pb2.GetBundleRequest()), args.format)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


async def cmd_bundle_list(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """bundle list"""
    bundles = (await api.ListFederatedBundles(admin_pb2.ListFederatedBundlesRequest())).bundles
    if args.output == "json":
        emit(args, {"bundles": [{"trust_domain": b.trust_domain, args.format: bundle_text(b, args.format)}
                                for b in bundles]})
        return
    for b in bundles:
        print(f"****************************************\n* {b.trust_domain}\n"
              f"****************************************\n{bundle_text(b, args.format)}")


async def cmd_bundle_count(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """bundle count"""
    count = (await api.CountBundles(admin_pb2.CountRequest())).count
    emit(args, {"count": count}, f"{count} bundle{'' if count == 1 else 's'} (this trust domain's and "
                                 f"{count - 1} federated)")


async def cmd_bundle_set(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """bundle set"""
    bundle = _read_bundle(args)
    await api.SetFederatedBundle(admin_pb2.SetFederatedBundleRequest(bundle=bundle))
    emit(args, {"trust_domain": bundle.trust_domain}, "bundle set")


async def cmd_bundle_delete(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """bundle delete"""
    await api.DeleteFederatedBundle(admin_pb2.DeleteFederatedBundleRequest(trust_domain=args.id))
    emit(args, {"deleted": args.id}, "bundle deleted")


def add_parsers(sub: Any) -> None:
    bundle = group(sub, "bundle", "trust bundles")
    for name, handler, text in (("show", cmd_bundle_show, "show this trust domain's bundle"),
                                ("list", cmd_bundle_list, "list the federated bundles")):
        admin_parser(bundle, name, handler, text).add_argument(
            "--format", choices=("pem", "spiffe"), default="pem",
            help="pem: X.509 roots; spiffe: SPIFFE bundle JSON (JWKS)")
    admin_parser(bundle, "count", cmd_bundle_count, "count bundles: this trust domain's and the federated ones")
    p = admin_parser(bundle, "set", cmd_bundle_set, "create or replace a federated bundle")
    p.add_argument("--id", required=True, help="trust domain of the bundle")
    p.add_argument("--path", default="-", help="file to read ('-' = stdin)")
    p.add_argument("--format", choices=("pem", "spiffe"), default="pem",
                   help="pem: X.509 roots; spiffe: SPIFFE bundle JSON (JWKS)")
    admin_parser(bundle, "delete", cmd_bundle_delete, "delete a federated bundle").add_argument(
        "--id", required=True, help="trust domain of the bundle")

"""``spiffe-server localauthority x509|jwt show|prepare|activate|taint|revoke``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from spiffe_py._cli import fields, yes_no
from spiffe_py._proto.spiffepy.server.v1 import admin_pb2
from spiffe_server.cli._common import CliError, admin_parser, emit, group, listing, time_text

if TYPE_CHECKING:
    from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub

_AUTHORITY_RPCS = {"show": "ShowLocalAuthorities", "prepare": "PrepareLocalAuthority",
                   "activate": "ActivateLocalAuthority", "taint": "TaintLocalAuthority",
                   "revoke": "RevokeLocalAuthority"}


async def cmd_localauthority(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """localauthority x509|jwt show|prepare|activate|taint|revoke"""
    if args.action in ("taint", "revoke") and not args.authority_id:
        raise CliError(f"localauthority {args.action}: --authority-id is required")
    rpc = getattr(api, _AUTHORITY_RPCS[args.action])
    resp = await rpc(admin_pb2.LocalAuthorityRequest(kind=args.kind, authority_id=args.authority_id or ""))
    items = [{"authority_id": a.authority_id, "status": a.status, "not_before": a.not_before,
              "not_after": a.not_after, "tainted": a.tainted} for a in resp.authorities]
    texts = [fields([("Authority ID", a["authority_id"]), ("Status", a["status"]),
                     ("Not before", time_text(args, a["not_before"], expiry=False)),
                     ("Not after", time_text(args, a["not_after"])), ("Tainted", yes_no(a["tainted"]))])
             for a in items]
    emit(args, {"authorities": items},
         listing(f"{len(items)} {args.kind} authorit{'y' if len(items) == 1 else 'ies'}", texts))


def add_parsers(sub: Any) -> None:
    authority = group(sub, "localauthority", "the CA's X.509 and JWT authorities")
    for kind in ("x509", "jwt"):
        actions = group(authority, kind, f"{kind} authorities")
        for action in _AUTHORITY_RPCS:
            p = admin_parser(actions, action, cmd_localauthority, f"{action} {kind} authorities")
            p.add_argument("--authority-id", help="hex SKI (x509) or kid (jwt)")
            p.set_defaults(kind=kind, action=action)

"""``spiffe-server revoke svid|entry|agent`` and ``revocation list``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from spiffe_py._cli import fields
from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, types_pb2
from spiffe_server.cli._common import CliError, admin_parser, all_pages, emit, group, listing, time_text

if TYPE_CHECKING:
    from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub


def revocation_json(r: types_pb2.Revocation) -> dict[str, Any]:
    """A revocation as the JSON object the CLI prints."""
    return {"kind": r.kind, "value": r.value, "spiffe_id": r.spiffe_id, "entry_id": r.entry_id,
            "agent_id": r.agent_id, "reason": r.reason, "revoked_at": r.revoked_at, "expires_at": r.expires_at}


def revocation_text(args: argparse.Namespace, r: dict[str, Any]) -> str:
    """A revocation as aligned fields."""
    rows: list[tuple[str, str | list[str]]] = [
        ("Kind", r["kind"]), ("Serial" if r["kind"] == "x509" else "JWT ID", r["value"]), ("SPIFFE ID", r["spiffe_id"]),
        ("Entry ID", r["entry_id"] or "-"), ("Agent ID", r["agent_id"] or "-"), ("Reason", r["reason"] or "-"),
        ("Revoked at", time_text(args, r["revoked_at"], expiry=False)),
        ("SVID expires at", time_text(args, r["expires_at"]))]
    return fields(rows)


def _emit_revoked(args: argparse.Namespace, resp: admin_pb2.RevokeResponse) -> None:
    revs = [revocation_json(r) for r in resp.revocations]
    emit(args, {"revocations": revs},
         listing(f"Revoked {len(revs)} SVID{'' if len(revs) == 1 else 's'}", [revocation_text(args, r) for r in revs]))


async def cmd_revoke_svid(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """revoke svid"""
    if (args.serial is None) == (args.jti is None):
        raise CliError("revoke svid: give exactly one of --serial and --jti")
    req = admin_pb2.RevokeSvidRequest(reason=args.reason)
    if args.serial is not None:
        req.x509_serial = args.serial
    else:
        req.jwt_id = args.jti
    _emit_revoked(args, await api.RevokeSvid(req))


async def cmd_revoke_entry(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """revoke entry"""
    _emit_revoked(args, await api.RevokeEntry(admin_pb2.RevokeEntryRequest(id=args.entry_id, reason=args.reason,
                                                                           delete=args.delete)))


async def cmd_revoke_agent(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """revoke agent"""
    _emit_revoked(args, await api.RevokeAgent(admin_pb2.RevokeAgentRequest(spiffe_id=args.spiffe_id,
                                                                           reason=args.reason)))


async def cmd_revocation_list(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """revocation list"""
    revs: list[types_pb2.Revocation] = await all_pages(
        api.ListRevocations, admin_pb2.ListRevocationsRequest(page_size=1000), lambda page: page.revocations)
    items = [revocation_json(r) for r in revs]
    emit(args, {"revocations": items}, listing(f"Found {len(items)} revocation{'' if len(items) == 1 else 's'}",
                                               [revocation_text(args, r) for r in items]))


def add_parsers(sub: Any) -> None:
    revoke = group(sub, "revoke", "revoke SVIDs (pushed to every agent, listed in CRLs)")
    p = admin_parser(revoke, "svid", cmd_revoke_svid, "revoke one SVID")
    p.add_argument("--serial", help="X.509-SVID serial number (hex)")
    p.add_argument("--jti", help="JWT-SVID ID")
    p = admin_parser(revoke, "entry", cmd_revoke_entry, "revoke every SVID issued under an entry")
    p.add_argument("--entry-id", required=True, help="the entry whose SVIDs to revoke")
    p.add_argument("--delete", action="store_true", help="also delete the entry")
    p = admin_parser(revoke, "agent", cmd_revoke_agent, "evict an agent and revoke every SVID issued to it")
    p.add_argument("--spiffe-id", required=True, help="the agent's ID")
    for action in revoke.choices.values():
        action.add_argument("--reason", default="", help="recorded with the revocation")
    revocation = group(sub, "revocation", "revocations in force")
    admin_parser(revocation, "list", cmd_revocation_list, "list unexpired revocations")

"""``spiffe-server federation create|update|delete|list|show|refresh``: federation relationships.

::

    spiffe-server federation create --trust-domain b.test --bundle-endpoint-url https://127.0.0.1:8443 \\
        --bundle-endpoint-profile https_spiffe --endpoint-spiffe-id spiffe://b.test/spire/server \\
        --trust-domain-bundle-path b.json
    spiffe-server federation list --output json
    # {"relationships": [{"trust_domain": "b.test", "bundle_endpoint_url": ..., "bundle_endpoint_profile": ...,
    #                     "last_refresh": "2026-01-01T00:00:00Z" | null, ...}]}
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from spiffe_py._proto.spiffepy.server.v1 import admin_pb2
from spiffe_server.cli._common import admin_parser, emit, group, pretty, read_file

if TYPE_CHECKING:
    from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub

PROFILES = ("https_web", "https_spiffe")


def _time(seconds: int) -> str | None:
    if seconds <= 0:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def relationship_json(pb: admin_pb2.FederationRelationship) -> dict[str, Any]:
    """One relationship as printed by ``--output json``."""
    return {
        "trust_domain": pb.trust_domain,
        "bundle_endpoint_url": pb.bundle_endpoint_url,
        "bundle_endpoint_profile": pb.bundle_endpoint_profile,
        "endpoint_spiffe_id": pb.endpoint_spiffe_id or None,
        "last_refresh": _time(pb.last_refresh),
        "last_error": pb.last_error or None,
        "next_refresh": _time(pb.next_refresh),
        "bundle_sequence": None if pb.bundle_sequence < 0 else pb.bundle_sequence,
        "source": pb.source,
    }


def _request(args: argparse.Namespace) -> admin_pb2.FederationRelationshipRequest:
    bundle = b""
    if args.trust_domain_bundle_path:
        bundle = sys.stdin.buffer.read() if args.trust_domain_bundle_path == "-" else \
            read_file(args.trust_domain_bundle_path, "--trust-domain-bundle-path")
    rel = admin_pb2.FederationRelationship(
        trust_domain=args.trust_domain, bundle_endpoint_url=args.bundle_endpoint_url,
        bundle_endpoint_profile=args.bundle_endpoint_profile, endpoint_spiffe_id=args.endpoint_spiffe_id or "")
    return admin_pb2.FederationRelationshipRequest(relationship=rel, trust_domain_bundle=bundle)


def _emit_one(args: argparse.Namespace, pb: admin_pb2.FederationRelationship) -> None:
    item = relationship_json(pb)
    emit(args, item, pretty(item))


async def cmd_create(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """federation create"""
    _emit_one(args, await api.CreateFederationRelationship(_request(args)))


async def cmd_update(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """federation update"""
    _emit_one(args, await api.UpdateFederationRelationship(_request(args)))


async def cmd_delete(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """federation delete"""
    await api.DeleteFederationRelationship(admin_pb2.FederationRelationshipId(trust_domain=args.trust_domain))
    emit(args, {"deleted": args.trust_domain}, "federation relationship deleted")


async def cmd_list(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """federation list"""
    resp = await api.ListFederationRelationships(admin_pb2.ListFederationRelationshipsRequest())
    items = [relationship_json(r) for r in resp.relationships]
    emit(args, {"relationships": items},
         "\n\n".join(pretty(i) for i in items) if items else "no federation relationships")


async def cmd_show(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """federation show"""
    _emit_one(args, await api.GetFederationRelationship(admin_pb2.FederationRelationshipId(
        trust_domain=args.trust_domain)))


async def cmd_refresh(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """federation refresh"""
    _emit_one(args, await api.RefreshFederationRelationship(admin_pb2.FederationRelationshipId(
        trust_domain=args.trust_domain)))


def add_parsers(sub: Any) -> None:
    federation = group(sub, "federation", "federation relationships with foreign trust domains")
    for name, handler, text in (("create", cmd_create, "create a federation relationship"),
                                ("update", cmd_update, "replace a federation relationship's settings")):
        p = admin_parser(federation, name, handler, text)
        p.add_argument("--trust-domain", required=True, help="the foreign trust domain, e.g. b.test")
        p.add_argument("--bundle-endpoint-url", required=True, help="https URL of its bundle endpoint")
        p.add_argument("--bundle-endpoint-profile", required=True, choices=PROFILES,
                       help="how the endpoint authenticates: a web PKI certificate, or its SPIFFE ID")
        p.add_argument("--endpoint-spiffe-id", help="the endpoint's SPIFFE ID (https_spiffe only)")
        p.add_argument("--trust-domain-bundle-path",
                       help="bootstrap bundle of the trust domain (SPIFFE bundle JSON or PEM; - = stdin)")
    for name, handler, text in (("delete", cmd_delete, "delete a relationship and its bundle"),
                                ("show", cmd_show, "show one relationship"),
                                ("refresh", cmd_refresh, "fetch a relationship's bundle now")):
        admin_parser(federation, name, handler, text).add_argument("--trust-domain", required=True,
                                                                    help="the foreign trust domain")
    admin_parser(federation, "list", cmd_list, "list federation relationships")

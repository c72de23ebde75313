"""``spiffe-server agent``: list, show, count, ban, evict and purge attested agents."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from spiffe_py._cli import duration, expired, fields, yes_no
from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, types_pb2
from spiffe_server.cli._common import (
    admin_parser,
    all_pages,
    emit,
    group,
    listing,
    now_of,
    seconds_arg,
    selector_strings,
    time_text,
)

if TYPE_CHECKING:
    from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub


def agent_json(a: types_pb2.Agent) -> dict[str, Any]:
    """An agent as the JSON object the CLI prints (``new_serial``/``new_expires_at`` only while one is pending)."""
    out = {
        "spiffe_id": a.spiffe_id, "attestation_type": a.attestation_type, "serial": a.serial,
        "expires_at": a.expires_at, "banned": a.banned, "selectors": selector_strings(a.selectors),
        "can_reattest": a.can_reattest, "created_at": a.created_at,
        # this server's in-memory view: 0 = no sync with this server since it started
        "last_sync": a.last_sync, "syncing": a.syncing,
    }
    if a.new_serial:  # the SVID the last RenewAgent issued, not presented yet (docs/security.md)
        out.update(new_serial=a.new_serial, new_expires_at=a.new_expires_at)
    return out


def agent_status(args: argparse.Namespace, a: dict[str, Any]) -> str:
    """``banned``, ``expired`` (its SVID and any pending one) or ``active``."""
    if a["banned"]:
        return "banned"
    latest = max(a["expires_at"], a.get("new_expires_at", 0))
    return "expired" if expired(latest, now=now_of(args)) else "active"


def agent_text(args: argparse.Namespace, a: dict[str, Any]) -> str:
    """An agent as aligned fields, its status first."""
    rows: list[tuple[str, str | list[str]]] = [
        ("SPIFFE ID", a["spiffe_id"]), ("Status", agent_status(args, a)),
        ("Attestation type", a["attestation_type"]), ("Serial", a["serial"]),
        ("Expires at", time_text(args, a["expires_at"]))]
    if "new_serial" in a:
        rows += [("New serial", a["new_serial"]), ("New expires at", time_text(args, a["new_expires_at"]))]
    rows += [("Can re-attest", yes_no(a["can_reattest"])), ("Selectors", a["selectors"]),
             ("Created at", time_text(args, a["created_at"], expiry=False)), ("Last sync", sync_text(args, a))]
    return fields(rows)


def sync_text(args: argparse.Namespace, a: dict[str, Any]) -> str:
    """The agent's last sync as this server knows it (servers sharing a database each know their own agents)."""
    if not a["last_sync"]:
        return "none with this server since it started (another server's agent, or offline)"
    when = time_text(args, a["last_sync"], expiry=False)
    return f"{when}, connected" if a["syncing"] else when


async def cmd_agent_list(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """agent list"""
    agents: list[types_pb2.Agent] = await all_pages(api.ListAgents, admin_pb2.ListAgentsRequest(),
                                                    lambda page: page.agents)
    items = [agent_json(a) for a in agents]
    emit(args, {"agents": items}, listing(f"Found {len(items)} attested agent{'' if len(items) == 1 else 's'}",
                                          [agent_text(args, a) for a in items]))


async def cmd_agent_show(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """agent show"""
    agent = agent_json(await api.GetAgent(admin_pb2.AgentRequest(spiffe_id=args.spiffe_id)))
    emit(args, agent, agent_text(args, agent))


async def cmd_agent_ban(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """agent ban"""
    await api.BanAgent(admin_pb2.AgentRequest(spiffe_id=args.spiffe_id))
    emit(args, {"banned": args.spiffe_id}, f"Agent banned: {args.spiffe_id}")


async def cmd_agent_evict(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """agent evict"""
    await api.EvictAgent(admin_pb2.AgentRequest(spiffe_id=args.spiffe_id))
    emit(args, {"evicted": args.spiffe_id}, f"Agent evicted: {args.spiffe_id}")


async def cmd_agent_count(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """agent count"""
    count = (await api.CountAgents(admin_pb2.CountRequest())).count
    emit(args, {"count": count}, f"{count} attested agent{'' if count == 1 else 's'}")


async def cmd_agent_purge(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """agent purge"""
    resp = await api.PurgeAgents(admin_pb2.PurgeAgentsRequest(expired_for=args.expired_for, dry_run=args.dry_run))
    items = [agent_json(a) for a in resp.agents]
    verb = "Would purge" if args.dry_run else "Purged"
    title = (f"{verb} {len(items)} agent{'' if len(items) == 1 else 's'} whose SVID expired more than "
             f"{duration(args.expired_for)} ago")
    rows = fields([(a["spiffe_id"], time_text(args, a["expires_at"])) for a in items])
    emit(args, {"agents": items, "dry_run": args.dry_run}, f"{title}\n{rows}" if items else title)


def add_parsers(sub: Any) -> None:
    agent = group(sub, "agent", "attested agents")
    admin_parser(agent, "list", cmd_agent_list, "list agents, with their status (active, expired, banned)")
    admin_parser(agent, "count", cmd_agent_count, "count agents")
    for name, handler, text in (("show", cmd_agent_show, "show an agent"),
                                ("ban", cmd_agent_ban, "ban an agent: it may not attest or call again"),
                                ("evict", cmd_agent_evict, "evict an agent: delete it; it may attest again")):
        admin_parser(agent, name, handler, text).add_argument("--spiffe-id", required=True, help="the agent's ID")
    p = admin_parser(agent, "purge", cmd_agent_purge,
                     "delete agents whose SVID expired long ago (banned agents are kept: purging lifts a ban)")
    p.add_argument("--expired-for", type=seconds_arg, default=30 * 86400, metavar="DURATION",
                   help="purge agents whose SVID expired at least this long ago, e.g. 720h (default: 720h)")
    p.add_argument("--dry-run", action="store_true", help="only list the agents that would be purged")

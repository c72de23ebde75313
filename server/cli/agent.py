"""``spiffe-server agent``: list, show, count, ban, evict attested agents."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, types_pb2
from spiffe_server.cli._common import admin_parser, all_pages, emit, group, pretty, selector_strings

if TYPE_CHECKING:
    from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub


def agent_json(a: types_pb2.Agent) -> dict[str, Any]:
    """An agent as the JSON object the CLI prints (``new_serial``/``new_expires_at`` only while one is pending)."""
    out = {
        "spiffe_id": a.spiffe_id, "attestation_type": a.attestation_type, "serial": a.serial,
        "expires_at": a.expires_at, "banned": a.banned, "selectors": selector_strings(a.selectors),
        "can_reattest": a.can_reattest, "created_at": a.created_at,
    }
    if a.new_serial:  # the SVID the last RenewAgent issued, not presented yet (docs/security.md)
        out.update(new_serial=a.new_serial, new_expires_at=a.new_expires_at)
    return out


async def cmd_agent_list(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """agent list"""
    agents: list[types_pb2.Agent] = await all_pages(api.ListAgents, admin_pb2.ListAgentsRequest(),
                                                    lambda page: page.agents)
    emit(args, {"agents": [agent_json(a) for a in agents]},
         f"Found {len(agents)} attested agents\n" + "\n\n".join(pretty(agent_json(a)) for a in agents))


async def cmd_agent_show(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """agent show"""
    emit(args, agent_json(await api.GetAgent(admin_pb2.AgentRequest(spiffe_id=args.spiffe_id))))


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
    emit(args, {"count": count}, f"{count} attested agents")


def add_parsers(sub: Any) -> None:
    agent = group(sub, "agent", "attested agents")
    admin_parser(agent, "list", cmd_agent_list, "list agents")
    admin_parser(agent, "count", cmd_agent_count, "count agents")
    for name, handler in (("show", cmd_agent_show), ("ban", cmd_agent_ban), ("evict", cmd_agent_evict)):
        admin_parser(agent, name, handler, f"{name} an agent").add_argument("--spiffe-id", required=True)

"""``spiffe-server token generate``: join tokens."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from spiffe_py._proto.spiffepy.server.v1 import admin_pb2
from spiffe_server.cli._common import admin_parser, emit, group, seconds_arg

if TYPE_CHECKING:
    from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub


async def cmd_token_generate(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """token generate"""
    tok = await api.CreateJoinToken(admin_pb2.CreateJoinTokenRequest(ttl=args.ttl, spiffe_id=args.spiffe_id or ""))
    emit(args, {"value": tok.value, "expires_at": tok.expires_at, "agent_id": tok.agent_id},
         f"Token: {tok.value}\nAgent ID: {tok.agent_id}")


def add_parsers(sub: Any) -> None:
    token = group(sub, "token", "join tokens")
    p = admin_parser(token, "generate", cmd_token_generate, "create a join token")
    p.add_argument("--ttl", type=seconds_arg, default=600, help="e.g. 10m, 1h or seconds (default 600)")
    p.add_argument("--spiffe-id", help="also create an alias entry parented to the agent")

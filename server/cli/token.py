"""``spiffe-server token generate``: join tokens."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from spiffe_py._cli import fields
from spiffe_py._proto.spiffepy.server.v1 import admin_pb2
from spiffe_server.cli._common import admin_parser, emit, group, seconds_arg, time_text

if TYPE_CHECKING:
    from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub


async def cmd_token_generate(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """token generate"""
    tok = await api.CreateJoinToken(admin_pb2.CreateJoinTokenRequest(ttl=args.ttl, spiffe_id=args.spiffe_id or ""))
    emit(args, {"value": tok.value, "expires_at": tok.expires_at, "agent_id": tok.agent_id},
         fields([("Token", tok.value), ("Agent ID", tok.agent_id), ("Expires at", time_text(args, tok.expires_at))]))


def add_parsers(sub: Any) -> None:
    token = group(sub, "token", "join tokens")
    p = admin_parser(token, "generate", cmd_token_generate, "create a join token")
    p.add_argument("--ttl", type=seconds_arg, default=600, metavar="DURATION",
                   help="how long the token may be used, e.g. 10m, 1h or seconds (default: 10m)")
    p.add_argument("--spiffe-id", help="also create an alias entry parented to the agent")

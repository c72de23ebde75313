"""``spiffe-server logger get|set|reset``: the running server's log level (SPIRE's logger verbs)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from spiffe_py._cli import fields
from spiffe_py._proto.spiffepy.server.v1 import admin_pb2
from spiffe_server.cli._common import admin_parser, emit, group

if TYPE_CHECKING:
    from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub

LEVELS = ("debug", "info", "warn", "warning", "error")


def _emit(args: argparse.Namespace, logger: admin_pb2.Logger) -> None:
    emit(args, {"current_level": logger.current_level, "launch_level": logger.launch_level},
         fields([("Current level", logger.current_level), ("Launch level", logger.launch_level)]))


async def cmd_logger_get(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """logger get"""
    _emit(args, await api.GetLogger(admin_pb2.GetLoggerRequest()))


async def cmd_logger_set(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """logger set"""
    _emit(args, await api.SetLogLevel(admin_pb2.SetLogLevelRequest(level=args.level)))


async def cmd_logger_reset(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """logger reset"""
    _emit(args, await api.ResetLogLevel(admin_pb2.ResetLogLevelRequest()))


def add_parsers(sub: Any) -> None:
    logger = group(sub, "logger", "the running server's log level")
    admin_parser(logger, "get", cmd_logger_get, "show the current log level and the one configured at start")
    p = admin_parser(logger, "set", cmd_logger_set, "change the log level until the next set, reset or restart")
    p.add_argument("--level", required=True, choices=LEVELS, help="the new level")
    admin_parser(logger, "reset", cmd_logger_reset, "go back to the log level configured at start")

"""``spiffe-server run``, ``validate`` and ``healthcheck``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spiffe_py._proto.spiffepy.server.v1 import admin_pb2
from spiffe_server.cli._common import CliError, admin_parser, emit, fail

if TYPE_CHECKING:
    from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub
    from spiffe_server.config import ServerConfig

_RUN_FLAGS = ("trust_domain", "data_dir", "bind_address", "bind_port", "socket_path", "database",
              "log_level", "log_format", "policy_file")


def _load(args: argparse.Namespace) -> ServerConfig:
    from spiffe_server.config import load_config

    overrides = {name: getattr(args, name) for name in _RUN_FLAGS}
    return load_config(Path(args.config) if args.config else None, overrides)


def cmd_run(args: argparse.Namespace) -> int:
    """run: start the server in the foreground until SIGTERM/SIGINT."""
    from spiffe_server.config import ConfigError

    try:
        cfg = _load(args)
    except ConfigError as err:
        return fail(str(err))
    from spiffe_server.app import run

    return run(cfg)


def cmd_validate(args: argparse.Namespace) -> int:
    """validate: check the configuration without starting anything."""
    from spiffe_server.config import ConfigError

    try:
        cfg = _load(args)
    except ConfigError as err:
        return fail(str(err))
    for warning in cfg.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    print("configuration is valid")
    return 0


async def cmd_healthcheck(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """healthcheck"""
    resp = await api.Health(admin_pb2.HealthRequest())
    if not (resp.live and resp.ready):
        failing = ", ".join(f"{k}: {v}" for k, v in sorted(resp.checks.items()) if v != "ok")
        raise CliError(f"server is unhealthy: {failing or 'not ready'}")
    emit(args, {"live": resp.live, "ready": resp.ready, "checks": dict(resp.checks)}, "Server is healthy.")


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--trust-domain")
    p.add_argument("--data-dir")
    p.add_argument("--bind-address")
    p.add_argument("--bind-port", type=int)
    p.add_argument("--socket-path")
    p.add_argument("--database", help="SQLite path or postgresql:// URL")
    p.add_argument("--log-level")
    p.add_argument("--log-format")
    p.add_argument("--policy", dest="policy_file", help="request-time policy file (TOML [[rule]] tables)")


def add_parsers(sub: Any) -> None:
    for name, func in (("run", cmd_run), ("validate", cmd_validate)):
        p = sub.add_parser(name, help=func.__doc__)
        _add_run_flags(p)
        p.set_defaults(local=func)
    admin_parser(sub, "healthcheck", cmd_healthcheck, "check the server over its admin socket")

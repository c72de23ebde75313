"""``spiffe-server run``, ``validate`` and ``healthcheck``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spiffe_py._proto.spiffepy.server.v1 import admin_pb2
from spiffe_server.cli._common import CliError, admin_parser, emit, fail
from spiffe_server.defaults import DEFAULT_DATA_DIR_NAME

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
    # no argparse defaults here: an unset flag leaves the config file's value (docs/configuration.md)
    p.add_argument("--config", metavar="FILE", help="TOML configuration file; flags override its keys")
    p.add_argument("--trust-domain", help="trust domain of the server (config trust_domain; required)")
    p.add_argument("--data-dir",
                   help=f"datastore, keys and admin socket (config data_dir; default {DEFAULT_DATA_DIR_NAME})")
    p.add_argument("--bind-address", help="agent API address (config bind_address; default 127.0.0.1)")
    p.add_argument("--bind-port", type=int, help="agent API port (config bind_port; default 8081)")
    p.add_argument("--socket-path", help="admin API socket (config socket_path; default <data_dir>/api.sock)")
    p.add_argument("--database", help="SQLite path or postgresql:// URL (default <data_dir>/datastore.sqlite3)")
    p.add_argument("--log-level", help="debug, info, warning or error (config log_level; default info)")
    p.add_argument("--log-format", help="text or json (config log_format; default text)")
    p.add_argument("--policy", dest="policy_file", metavar="FILE",
                   help="request-time policy file (TOML [[rule]] tables); none by default")


def add_parsers(sub: Any) -> None:
    for name, func, text in (("run", cmd_run, "start the server in the foreground until SIGTERM/SIGINT"),
                             ("validate", cmd_validate, "check the configuration without starting anything")):
        p = sub.add_parser(name, help=text, description=text)
        _add_run_flags(p)
        p.set_defaults(local=func)
    admin_parser(sub, "healthcheck", cmd_healthcheck, "check the server over its admin socket")

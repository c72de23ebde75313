"""The ``spiffe-server`` command line: run the server or talk to it over its admin socket.

::

    spiffe-server run --trust-domain example.org --data-dir /var/lib/spiffe-server
    spiffe-server entry create --parent-id spiffe://example.org/node --spiffe-id spiffe://example.org/web \\
        --selector unix:uid:1000 --output json
    spiffe-server entry create --data entries.json --output json

One module per noun (``entry``, ``agent``, ``bundle``, ...), each adding its parsers; ``_common``
holds the socket, the call, flag types and output. Every admin command takes ``--socket-path``
(default ``$SPIFFE_SERVER_SOCKET``, else the server's ``<data_dir>/api.sock``) and
``--output json|pretty``. On error a single line naming the field goes to stderr and the exit
status is 1. Modules import what only some commands need inside those commands, so that a
simple call loads no server runtime, datastore, CEL, metrics or cryptography.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from spiffe_py._cli import CliParser, add_version
from spiffe_server.cli._common import run_admin

# module -> the top-level commands it adds and their help. A call builds (and imports) only the
# module of its command; the others appear as these one-liners in ``spiffe-server --help``.
# tests/unit/test_cli_help.py checks the table against the modules.
COMMANDS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("run", (("run", "start the server in the foreground until SIGTERM/SIGINT"),
             ("validate", "check the configuration without starting anything"),
             ("healthcheck", "check the server over its admin socket"))),
    ("token", (("token", "join tokens"),)),
    ("entry", (("entry", "registration entries"),)),
    ("agent", (("agent", "attested agents"),)),
    ("bundle", (("bundle", "trust bundles"),)),
    ("mint", (("x509", "X.509-SVIDs without an entry"), ("jwt", "JWT-SVIDs without an entry"))),
    ("revocation", (("revoke", "revoke SVIDs (pushed to every agent, listed in CRLs)"),
                    ("revocation", "revocations in force"))),
    ("localauthority", (("localauthority", "the CA's X.509 and JWT authorities"),)),
    ("audit", (("audit", "the tamper-evident audit trail"),)),
    ("federation", (("federation", "federation relationships with foreign trust domains"),)),
    ("logger", (("logger", "the running server's log level"),)),
    ("backup", (("backup", "write the datastore (SQLite) and the CA, JWT and audit keys to an archive; "
                           "the server may keep running"),
                ("restore", "restore a backup archive into the data dir (the server must be stopped)"))),
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: complete, or with only ``command``'s sub-commands and flags filled in."""
    parser = CliParser(prog="spiffe-server", description="spiffe-py server: run it, or manage it over its admin socket")
    add_version(parser)
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for module, commands in COMMANDS:
        if command is None or any(command == name for name, _ in commands):
            importlib.import_module(f"spiffe_server.cli.{module}").add_parsers(sub)
        else:
            for name, text in commands:
                sub.add_parser(name, help=text, description=text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``spiffe-server``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and not argv[0].startswith("-") else None
    args = build_parser(command).parse_args(argv)
    if hasattr(args, "local"):
        result: int = args.local(args)
        return result
    return run_admin(args.admin_handler, args)


__all__ = ["build_parser", "main"]

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
from collections.abc import Sequence

from spiffe_server.cli import agent, audit, bundle, entry, federation, localauthority, mint, revocation, run, token
from spiffe_server.cli._common import run_admin


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(prog="spiffe-server", description="spiffe-py server")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run.add_parsers(sub)
    for noun in (token, entry, agent, bundle, mint, revocation, localauthority, audit, federation):
        noun.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``spiffe-server``."""
    args = build_parser().parse_args(argv)
    if hasattr(args, "local"):
        result: int = args.local(args)
        return result
    return run_admin(args.admin_handler, args)


__all__ = ["build_parser", "main"]

"""``spiffe-server backup`` and ``restore``: the datastore (SQLite) and the keys in one archive.

The work is in ``_archive``, imported only when one of the two runs (tarfile and friends cost
start-up time every other command would pay). docs/operations.md describes the procedure.
"""

from __future__ import annotations

import argparse
from typing import Any

from spiffe_server.defaults import DEFAULT_DATA_DIR_NAME


def cmd_backup(args: argparse.Namespace) -> int:
    """backup: write the datastore (SQLite) and the keys to one archive."""
    from spiffe_server.cli._archive import backup

    return backup(args)


def cmd_restore(args: argparse.Namespace) -> int:
    """restore: put a backup's datastore (SQLite) and keys back, with the server stopped."""
    from spiffe_server.cli._archive import restore

    return restore(args)


def add_parsers(sub: Any) -> None:
    for name, func, text in (
            ("backup", cmd_backup, "write the datastore (SQLite) and the CA, JWT and audit keys to an archive; "
                                   "the server may keep running"),
            ("restore", cmd_restore, "restore a backup archive into the data dir (the server must be stopped)")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--config", metavar="FILE", help="the server's TOML configuration (for data_dir and database)")
        p.add_argument("--data-dir", help=f"the server's data dir (default {DEFAULT_DATA_DIR_NAME})")
        p.add_argument("--database", help="SQLite path or postgresql:// URL (default <data_dir>/datastore.sqlite3)")
        if name == "backup":
            p.add_argument("--out", required=True, metavar="FILE",
                           help="archive to write (.tar.gz, 0600; must not exist)")
        else:
            p.add_argument("--from", dest="source", required=True, metavar="FILE", help="archive written by backup")
            p.add_argument("--force", action="store_true", help="replace an existing datastore and keys")
        p.set_defaults(local=func)

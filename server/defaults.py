"""Defaults the server and its CLI must agree on, importable without loading the server."""

from __future__ import annotations

DEFAULT_DATA_DIR_NAME = "/var/lib/spiffe-server"
ADMIN_SOCKET_NAME = "api.sock"  # the admin socket is <data_dir>/api.sock unless socket_path is set
SOCKET_ENV = "SPIFFE_SERVER_SOCKET"  # sets the CLI's admin socket

JOURNAL_ID_FILE = "ca-journal-id"
"""In the data dir: the ID of this server's CA journal (each server on a shared datastore has its own)."""

"""Defaults the server and its CLI must agree on, importable without loading the server."""

from __future__ import annotations

DEFAULT_DATA_DIR_NAME = "/var/lib/spiffe-server"
ADMIN_SOCKET_NAME = "api.sock"  # the admin socket is <data_dir>/api.sock unless socket_path is set
SOCKET_ENV = "SPIFFE_SERVER_SOCKET"  # sets the CLI's admin socket

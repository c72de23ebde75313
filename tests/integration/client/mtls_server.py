"""mTLS echo server for the two-process tests: its identity comes from a Workload API X509Source.

Usage: ``python tests/integration/client/mtls_server.py <workload api address> <allowed client id>``.
Prints the TCP port on stdout, then answers each authorized client with ``hello <client id>``.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from OpenSSL import SSL

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from spiffe_py.errors import SpiffeError
from spiffe_py.spiffeid import SpiffeId
from spiffe_py.tls import authorize_id, peer_spiffe_id, server_context
from spiffe_py.workloadapi import Backoff, WorkloadApiClient, X509Source


def serve(listener: socket.socket, ctx: SSL.Context) -> None:
    while True:
        sock, _ = listener.accept()
        conn = SSL.Connection(ctx, sock)
        conn.set_accept_state()
        try:
            conn.do_handshake()
            conn.sendall(f"hello {peer_spiffe_id(conn)}\n".encode())
            conn.shutdown()
        except (SSL.Error, SpiffeError, OSError) as err:
            print(f"rejected: {_reason(conn, err)}", file=sys.stderr, flush=True)
        finally:
            sock.close()


def _reason(conn: SSL.Connection, err: Exception) -> str:
    """Why the handshake failed: our verifier's verdict when it made one, else the TLS error."""
    try:
        peer_spiffe_id(conn)
    except SpiffeError as verdict:
        return f"{type(verdict).__name__}: {verdict}"
    return repr(err)


def main() -> None:
    address, allowed = sys.argv[1], sys.argv[2]
    source = X509Source.start(WorkloadApiClient(address), timeout=30, backoff=Backoff(initial=0.05, maximum=1.0))
    ctx = server_context(source, source, authorize_id(SpiffeId.parse(allowed)))
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    serve(listener, ctx)


if __name__ == "__main__":
    main()

"""The "tool": an mTLS server that only answers the AI agent's SPIFFE ID.

Started by ``python -m examples.ai_agent_tool_mtls`` (the agent side). On every handshake it
presents its current SVID (spiffe_py.tls.server_context follows rotation) and requires a client
SVID that verifies against the trust bundle AND carries the allowed SPIFFE ID. It prints each
new client serial it sees, and on SIGTERM exits 1 unless it saw ``--min-rotations`` of them.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import threading
from types import FrameType

from OpenSSL import SSL

from examples._common import SvidById, announce_port, blocking, check
from spiffe_py.spiffeid import SpiffeId
from spiffe_py.tls import authorize_id, peer_spiffe_id, server_context
from spiffe_py.workloadapi import WorkloadApiClient, X509Source

MAX_REQUEST = 4096


class Tool:
    """Answers one JSON request per connection; records the client serials it saw."""

    def __init__(self, ctx: SSL.Context) -> None:
        self.ctx = ctx
        self.client_serials: list[str] = []
        self.rejected = 0
        self._lock = threading.Lock()

    def handle(self, sock: socket.socket) -> None:
        """One connection: handshake (authorizes the caller), read a request, answer it."""
        tls = SSL.Connection(self.ctx, blocking(sock))
        tls.set_accept_state()
        try:
            tls.do_handshake()
            request = json.loads(tls.recv(MAX_REQUEST))
        except (SSL.Error, OSError, ValueError) as err:
            with self._lock:
                self.rejected += 1
            print(f"refused a caller: {type(err).__name__}: {str(err)[:160]}", flush=True)
            sock.close()
            return
        self._note(f"{tls.get_peer_certificate().get_serial_number():x}", peer_spiffe_id(tls))
        own = tls.get_certificate()
        answer = {"result": f"weather in {request['city']}: sunny", "tool_serial": f"{own.get_serial_number():x}"}
        tls.sendall(json.dumps(answer).encode())
        tls.shutdown()
        sock.close()

    def _note(self, serial: str, caller: SpiffeId) -> None:
        with self._lock:
            if serial not in self.client_serials:
                self.client_serials.append(serial)
                print(f"caller {caller} now presents serial {serial}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spiffe-id", type=SpiffeId.parse, required=True, help="the tool's own identity")
    parser.add_argument("--allow", type=SpiffeId.parse, required=True, help="the only caller allowed")
    parser.add_argument("--min-rotations", type=int, default=0)
    args = parser.parse_args()
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    with X509Source.start(WorkloadApiClient(), timeout=30) as source:
        tool = Tool(server_context(SvidById(source, args.spiffe_id), source, authorize_id(args.allow)))
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.settimeout(0.2)
            announce_port(listener.getsockname()[1])
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                threading.Thread(target=tool.handle, args=(conn,), daemon=True).start()
    rotations = len(tool.client_serials) - 1
    return 0 if check(rotations >= args.min_rotations, f"tool saw the caller's SVID rotate {rotations} time(s)") else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""The service: a FastAPI app under uvicorn, serving HTTPS with its SVID to one allowed client ID.

Started by ``python -m examples.fastapi_httpx_mtls`` (the client side). uvicorn gets its TLS
context from ``ssl_context_factory``: a :class:`spiffe_py.tls.SpiffeSSLContext` that presents the
current SVID on every new connection (so rotation needs no restart) and, right after each
handshake, refuses any client whose SPIFFE ID is not ``--allow``.
"""

from __future__ import annotations

import argparse
import socket
import ssl
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from examples._common import SvidById, announce_port
from spiffe_py.spiffeid import SpiffeId
from spiffe_py.tls import SpiffeSSLContext, authorize_id
from spiffe_py.workloadapi import WorkloadApiClient, X509Source


def build_app(me: SvidById) -> FastAPI:
    """One endpoint; it reports the serial of the SVID the service presents now."""
    app = FastAPI()

    @app.get("/invoices/{number}")
    def invoice(number: int) -> dict[str, object]:
        return {"number": number, "total": 42 * number, "service_serial": f"{me.get_x509_svid().leaf.serial_number:x}"}

    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spiffe-id", type=SpiffeId.parse, required=True)
    parser.add_argument("--allow", type=SpiffeId.parse, required=True, help="the only client ID served")
    args = parser.parse_args()
    with X509Source.start(WorkloadApiClient(), timeout=30) as source:
        me = SvidById(source, args.spiffe_id)
        ctx = SpiffeSSLContext.server(me, source, args.spiffe_id.trust_domain, authorize_id(args.allow))

        def factory(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
            return ctx  # uvicorn's own context (default) would load fixed files: not used

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(build_app(me), ssl_context_factory=factory, log_level="warning")
        announce_port(sock.getsockname()[1])
        uvicorn.Server(config).run(sockets=[sock])  # until SIGTERM
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

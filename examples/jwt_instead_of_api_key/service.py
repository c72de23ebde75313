"""The receiving service: accepts ``Authorization: Bearer <JWT-SVID>`` instead of an API key.

Started by ``python -m examples.jwt_instead_of_api_key``. It keeps the trust domain's JWT
bundle fresh with a JwtSource and validates every token locally (signature, expiry, audience =
this service), then authorizes the caller's SPIFFE ID: 401 for a missing or invalid token,
403 for a valid token from someone else, 200 for the allowed caller.
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from examples._common import announce_port
from spiffe_py.clock import SystemClock
from spiffe_py.errors import SpiffeError
from spiffe_py.jwtsvid import JwtSvid
from spiffe_py.spiffeid import SpiffeId
from spiffe_py.workloadapi import JwtSource, WorkloadApiClient


def make_handler(source: JwtSource, audience: str, allowed: SpiffeId) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to our bundle source and policy."""
    clock = SystemClock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            scheme, _, token = self.headers.get("Authorization", "").partition(" ")
            if scheme != "Bearer" or not token:
                return self.reply(401, {"error": "missing bearer token"})
            try:
                svid = JwtSvid.parse_and_validate(token, source, audience, now=clock.now())
            except SpiffeError as err:  # the message never contains the token
                return self.reply(401, {"error": f"invalid token: {err}"})
            if svid.spiffe_id != allowed:
                return self.reply(403, {"error": f"{svid.spiffe_id} may not call {audience}"})
            return self.reply(200, {"invoices": 3, "caller": str(svid.spiffe_id)})

        def reply(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            if status == 401:
                self.send_header("WWW-Authenticate", "Bearer")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            print(f"{self.command} {self.path} -> {code}", flush=True)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audience", required=True, help="this service's name, the JWT audience it accepts")
    parser.add_argument("--allow", type=SpiffeId.parse, required=True, help="the only caller allowed")
    args = parser.parse_args()
    with JwtSource.start(WorkloadApiClient(), timeout=30) as source, \
            ThreadingHTTPServer(("127.0.0.1", 0), make_handler(source, args.audience, args.allow)) as server:
        announce_port(server.server_address[1])
        server.serve_forever()


if __name__ == "__main__":
    main()

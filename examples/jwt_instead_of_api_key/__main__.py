"""A workload that calls an HTTP service with a JWT-SVID where it would otherwise send an API key.

Next to a running agent with entries ``.../examples/billing-client`` (the caller) and
``.../examples/ai-agent`` (someone else) for this user (``bash examples/run_all.sh
jwt_instead_of_api_key`` sets that up)::

    python -m examples.jwt_instead_of_api_key

There is no secret to provision or rotate: the caller asks the Workload API for a short-lived
JWT-SVID whose audience is the service, and the service validates it against the trust bundle.
Exits 0 only if the right token gets 200 and a missing, garbage, wrong-audience or
wrong-caller token is refused (401, 401, 401, 403).
"""

from __future__ import annotations

import argparse
import urllib.error
import urllib.request

from examples._common import check, start_server
from spiffe_py.spiffeid import SpiffeId
from spiffe_py.workloadapi import JwtSource, WorkloadApiClient

TD = "spiffe://example.org/examples"
AUDIENCE = "billing"


def get(port: int, token: str | None) -> int:
    """GET /invoices with the token as a bearer credential; returns the HTTP status."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invoices")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as err:
        return err.code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client-id", type=SpiffeId.parse, default=SpiffeId.parse(f"{TD}/billing-client"))
    parser.add_argument("--other-id", type=SpiffeId.parse, default=SpiffeId.parse(f"{TD}/ai-agent"))
    args = parser.parse_args()

    service, port = start_server("examples.jwt_instead_of_api_key.service",
                                 "--audience", AUDIENCE, "--allow", str(args.client_id))
    try:
        with JwtSource.start(WorkloadApiClient(), timeout=30) as source:
            mine = source.fetch_jwt_svid(AUDIENCE, args.client_id)
            print(f"fetched a JWT-SVID for {mine.spiffe_id}, audience {AUDIENCE}, expires {mine.expiry:%H:%M:%S}")
            cases = [
                ("our JWT-SVID", mine.token, 200),
                ("no token", None, 401),
                ("a garbage token", "not-a-jwt", 401),
                ("our JWT-SVID for another audience", source.fetch_jwt_svid("payroll", args.client_id).token, 401),
                (f"a valid JWT-SVID of {args.other_id}", source.fetch_jwt_svid(AUDIENCE, args.other_id).token, 403),
            ]
            results = [check(get(port, token) == want, f"{what} -> {want}") for what, token, want in cases]
    finally:
        service.terminate()
        service.wait(15)
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""An httpx client calling a FastAPI/uvicorn service over mTLS, both with SPIFFE SVIDs from the agent.

Next to a running agent with entries for this user: ``.../examples/web-client`` and
``.../examples/web-api`` (X509-SVID TTL 10 s, so they rotate about every 5 s), and
``.../examples/watcher`` as an impostor (``bash examples/run_all.sh fastapi_httpx_mtls`` sets
that up)::

    python -m examples.fastapi_httpx_mtls --seconds 20

Both sides use :class:`spiffe_py.tls.SpiffeSSLContext`, the standard library ``ssl`` context that
httpx, requests/urllib3, aiohttp and uvicorn accept: the trust bundle as CA data, the SPIFFE ID
checked right after each handshake, and the current SVID for every new connection. The client
calls in a loop for ``--seconds`` (keep-alive off, so every call is a new handshake with the SVIDs
current at that moment), then once as the impostor, which the service must refuse. Exits 0 only if
no call failed, the impostor was refused, and both sides' SVIDs rotated mid-run.
"""

from __future__ import annotations

import argparse
import time

import httpx

from examples._common import SvidById, check, start_server
from spiffe_py.spiffeid import SpiffeId
from spiffe_py.tls import SpiffeSSLContext, authorize_id
from spiffe_py.workloadapi import WorkloadApiClient, X509Source

TD = "spiffe://example.org/examples"


def client(me: SvidById, source: X509Source, service_id: SpiffeId) -> httpx.Client:
    """An httpx client presenting ``me`` and accepting only ``service_id``; a new connection per call."""
    ctx = SpiffeSSLContext.client(me, source, service_id.trust_domain, authorize_id(service_id))
    return httpx.Client(verify=ctx, timeout=10, limits=httpx.Limits(max_keepalive_connections=0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client-id", type=SpiffeId.parse, default=SpiffeId.parse(f"{TD}/web-client"))
    parser.add_argument("--service-id", type=SpiffeId.parse, default=SpiffeId.parse(f"{TD}/web-api"))
    parser.add_argument("--impostor-id", type=SpiffeId.parse, default=SpiffeId.parse(f"{TD}/watcher"))
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--min-rotations", type=int, default=2, help="per side")
    args = parser.parse_args()

    service, port = start_server("examples.fastapi_httpx_mtls.service", "--spiffe-id", str(args.service_id),
                                 "--allow", str(args.client_id))
    url = f"https://127.0.0.1:{port}/invoices"
    calls = failures = 0
    service_serials: list[str] = []
    my_serials: list[str] = []
    try:
        with X509Source.start(WorkloadApiClient(), timeout=30) as source:
            me = SvidById(source, args.client_id)
            with client(me, source, args.service_id) as http:
                deadline = time.monotonic() + args.seconds
                while time.monotonic() < deadline:
                    calls += 1
                    mine = f"{me.get_x509_svid().leaf.serial_number:x}"
                    try:
                        reply = http.get(f"{url}/{calls}")
                        reply.raise_for_status()
                        body = reply.json()
                    except (httpx.HTTPError, ValueError) as err:
                        failures += 1
                        print(f"call {calls} FAILED: {type(err).__name__}: {err}", flush=True)
                        continue
                    for serial, seen, who in ((body["service_serial"], service_serials, "web-api"),
                                              (mine, my_serials, "web-client")):
                        if serial not in seen:
                            seen.append(serial)
                            print(f"call {calls}: {who} SVID serial {serial}", flush=True)
                    time.sleep(0.05)
            with client(SvidById(source, args.impostor_id), source, args.service_id) as impostor:
                try:
                    impostor.get(f"{url}/0")
                    impostor_refused = False
                except httpx.HTTPError as err:
                    impostor_refused = True
                    print(f"impostor refused: {type(err).__name__}", flush=True)
    finally:
        service.terminate()
        service.wait(15)
    ok = all([
        check(failures == 0, f"{calls} calls, {failures} failed"),
        check(len(my_serials) > args.min_rotations, f"web-client SVID rotated {len(my_serials) - 1} time(s) mid-run"),
        check(len(service_serials) > args.min_rotations,
              f"web-api SVID rotated {len(service_serials) - 1} time(s) mid-run"),
        check(impostor_refused, f"the service refused a client presenting {args.impostor_id}"),
    ])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

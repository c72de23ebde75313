"""Print this workload's identity from the SPIFFE Workload API, then follow rotations.

Run next to an agent::

    SPIFFE_ENDPOINT_SOCKET=unix:///run/spiffe-py-agent/public/api.sock python examples/workload_identity.py --watch
"""

from __future__ import annotations

import argparse
import time

from spiffe_py.workloadapi import WorkloadApiClient, X509Source


def describe(source: X509Source) -> str:
    svid = source.get_x509_svid()
    bundles = ", ".join(sorted(b.trust_domain.name for b in source.x509_context().bundles.x509_bundles()))
    expires = svid.expires_at.isoformat()
    return f"{svid.spiffe_id} serial={svid.leaf.serial_number:x} expires={expires} bundles=[{bundles}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="Workload API address (default: $SPIFFE_ENDPOINT_SOCKET)")
    parser.add_argument("--watch", action="store_true", help="keep printing when the SVID rotates")
    args = parser.parse_args()
    with X509Source.start(WorkloadApiClient(args.address), timeout=30) as source:
        last = describe(source)
        print(last, flush=True)
        while args.watch:
            time.sleep(1)
            current = describe(source)
            if current != last:
                print(current, flush=True)
                last = current


if __name__ == "__main__":
    main()

"""A workload that watches its X509-SVID: prints the first one and every rotation for a while.

Next to a running agent (``bash examples/run_all.sh watch_svid`` starts one and registers
``spiffe://example.org/examples/watcher`` with a 10 s TTL, so it rotates about every 5 s)::

    SPIFFE_ENDPOINT_SOCKET=unix:///path/to/api.sock python -m examples.watch_svid \\
        --spiffe-id spiffe://example.org/examples/watcher --seconds 17 --min-rotations 2

Exits 0 only if it saw at least ``--min-rotations`` rotations.
"""

from __future__ import annotations

import argparse
import threading

from examples._common import check
from spiffe_py.errors import WorkloadApiError
from spiffe_py.spiffeid import SpiffeId
from spiffe_py.workloadapi import WorkloadApiClient, X509Context


def pick(context: X509Context, spiffe_id: SpiffeId | None) -> str:
    """One line about our SVID in this update: id, serial, validity."""
    svid = next((s for s in context.svids if spiffe_id in (None, s.spiffe_id)), None)
    if svid is None:
        return f"(no SVID for {spiffe_id} in this update)"
    leaf = svid.leaf
    return (f"{svid.spiffe_id} serial={leaf.serial_number:x} "
            f"valid {leaf.not_valid_before_utc:%H:%M:%S}..{leaf.not_valid_after_utc:%H:%M:%S}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spiffe-id", type=SpiffeId.parse, help="which identity to follow (default: the default SVID)")
    parser.add_argument("--seconds", type=float, default=17.0, help="how long to watch")
    parser.add_argument("--min-rotations", type=int, default=0, help="exit 1 unless this many rotations were seen")
    args = parser.parse_args()

    seen: list[str] = []
    with WorkloadApiClient() as client, client.watch_x509_context() as watch:
        # The stream blocks until the next update, so a timer ends it after --seconds.
        timer = threading.Timer(args.seconds, watch.cancel)
        timer.daemon = True  # an early stream error must not wait for it
        timer.start()
        try:
            for context in watch:
                line = pick(context, args.spiffe_id)
                if not seen or line != seen[-1]:  # the agent also sends updates for other entries and bundles
                    print(("first SVID: " if not seen else "rotated to: ") + line, flush=True)
                    seen.append(line)
        except WorkloadApiError as err:
            if err.status != "CANCELLED":
                raise
    rotations = len(seen) - 1
    return 0 if check(rotations >= args.min_rotations, f"saw {rotations} rotation(s) in {args.seconds:g} s") else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""How fast a foreign CA rotation, and a removed federated bundle, reach the other domain's workloads.

Run: ``.venv/bin/python benchmarks/bench_federation.py [--trials 8] [--check]``.

Two real ``spiffe-server`` processes (``a.test``, ``b.test``) with one real ``spiffe-agent`` each
federate through their bundle endpoints (a fetches b over https_spiffe, b fetches a over
https_web; ``spiffe_refresh_hint`` 5 s), as in tests/integration/federation. One FetchX509SVID
stream of an ``a.test`` workload stays open. Rounds interleave three timings:

- floor: one bare admin ``CountEntries`` round trip on a.test's admin socket;
- rotation: b.test ``PrepareLocalAuthority`` (x509) until a.test's stream carries the new root
  (b's bundle endpoint, a's refresher at the hint, a's sync push, the agent's stream update),
  then ``ActivateLocalAuthority`` (untimed); the change lands at a random point of the refresh
  interval; target: the next fetch (at most one hint, 5 s) plus the push (1 s);
- removal: a.test ``DeleteFederationRelationship`` until the stream no longer carries b.test's
  bundle; target: under 1 s. The relationship is created again (untimed) for the next round.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _stats import Result, format_table, time_async_calls
from bench_workload_api import HEADER
from grpclib.client import Channel

from spiffe_py._proto import workload_pb2
from spiffe_py._proto.spiffepy.server.v1 import admin_pb2
from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub
from spiffe_py._proto.workload_grpc import SpiffeWorkloadAPIStub
from tests.integration.federation.test_federation_e2e import REFRESH_S, Pair, federated_pair

# The next fetch comes at most one refresh hint after the change; then the push to workloads
# (the same path as a removal, target 1 s).
ROTATION_TARGET = float(REFRESH_S) + 1.0
REMOVAL_TARGET = 1.0
STREAM_TIMEOUT = 30.0
B_ID = "spiffe://b.test"


async def _until(stream: Any, done: Any) -> None:
    """Read stream messages until ``done(message)``."""
    while True:
        msg = await asyncio.wait_for(stream.recv_message(), STREAM_TIMEOUT)
        if done(msg):
            return


async def _next_b_roots(stream: Any) -> bytes:
    """Read stream messages until one carries b.test's bundle; returns it."""
    while True:
        msg = await asyncio.wait_for(stream.recv_message(), STREAM_TIMEOUT)
        roots = _b_roots(msg)
        if roots:
            return roots


def _b_roots(msg: workload_pb2.X509SVIDResponse) -> bytes | None:
    return msg.federated_bundles.get(B_ID)


async def run_trials(pair: Pair, trials: int) -> tuple[Result, Result, Result]:
    a_admin_ch, b_admin_ch = Channel(path=str(pair.a.server.socket_path)), Channel(path=str(pair.b.server.socket_path))
    workload_ch = Channel(path=str(pair.a.agent.socket_path))
    a_admin, b_admin = AdminAPIStub(a_admin_ch), AdminAPIStub(b_admin_ch)
    shown = await a_admin.GetFederationRelationship(admin_pb2.FederationRelationshipId(trust_domain="b.test"))
    relationship = admin_pb2.FederationRelationship(
        trust_domain=shown.trust_domain, bundle_endpoint_url=shown.bundle_endpoint_url,
        bundle_endpoint_profile=shown.bundle_endpoint_profile, endpoint_spiffe_id=shown.endpoint_spiffe_id)
    rng = random.Random(1)  # the same pauses in every run
    floor_samples: list[float] = []
    rotation: list[float] = []
    removal: list[float] = []
    try:
        async with SpiffeWorkloadAPIStub(workload_ch).FetchX509SVID.open(metadata=HEADER) as stream:
            await stream.send_message(workload_pb2.X509SVIDRequest(), end=True)
            first = await asyncio.wait_for(stream.recv_message(), STREAM_TIMEOUT)
            current = _b_roots(first)
            assert current, "a.test's workload has no b.test bundle to begin with"
            for _ in range(trials):
                floor_samples.extend((await time_async_calls(
                    "floor", lambda: a_admin.CountEntries(admin_pb2.CountRequest()), n=20, warmup=2)).samples)
                # rotation: b prepares a new CA; a's workload sees it after a's next fetch. The relationship
                # was (re)created at the end of the previous round, which fetched at once: a random pause puts
                # the change at a random point of the refresh interval, as in real life.
                await asyncio.sleep(rng.uniform(0, REFRESH_S))
                start = time.perf_counter()
                await b_admin.PrepareLocalAuthority(admin_pb2.LocalAuthorityRequest(kind="x509"))
                await _until(stream, lambda m, before=current: _b_roots(m) not in (None, before))
                rotation.append(time.perf_counter() - start)
                await b_admin.ActivateLocalAuthority(admin_pb2.LocalAuthorityRequest(kind="x509"))
                # removal: a deletes the relationship (and so b's bundle)
                start = time.perf_counter()
                await a_admin.DeleteFederationRelationship(admin_pb2.FederationRelationshipId(trust_domain="b.test"))
                await _until(stream, lambda m: _b_roots(m) is None)
                removal.append(time.perf_counter() - start)
                # back for the next round (untimed): bootstrap from b's current bundle
                await a_admin.CreateFederationRelationship(admin_pb2.FederationRelationshipRequest(
                    relationship=relationship, trust_domain_bundle=await b_admin_bundle(b_admin)))
                current = await _next_b_roots(stream)
            await stream.cancel()
    finally:
        for ch in (a_admin_ch, b_admin_ch, workload_ch):
            ch.close()
    return (Result(f"b.test CA prepared -> a.test workload (hint {REFRESH_S}s)", tuple(rotation)),
            Result("relationship deleted -> bundle gone from a.test workload", tuple(removal)),
            Result("admin CountEntries round trip (floor)", tuple(floor_samples)))


async def b_admin_bundle(b_admin: AdminAPIStub) -> bytes:
    """b.test's current bundle as SPIFFE JSON (the bootstrap bundle of a re-created relationship)."""
    from spiffe_server.api.convert import bundle_from_proto

    return bundle_from_proto(await b_admin.GetBundle(admin_pb2.GetBundleRequest())).to_json()


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print median/p99 against the floor and the targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--check", action="store_true", help="exit 1 when a p99 misses its target")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-fed-") as tmp, \
            federated_pair(Path(tmp), a_to_b="https_spiffe", b_to_a="https_web") as pair:
        rotation, removal, floor = asyncio.run(run_trials(pair, args.trials))
    print(format_table([rotation, removal], floor=floor))
    ok = True
    for result, target in ((rotation, ROTATION_TARGET), (removal, REMOVAL_TARGET)):
        hit = result.p99 <= target
        ok &= hit
        print(f"{result.name}: median {result.median * 1e3:.0f} ms, p99 {result.p99 * 1e3:.0f} ms over "
              f"{len(result.samples)} trials (target <= {target * 1e3:.0f} ms) {'PASS' if hit else 'MISS'}")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())

"""X.509-SVID signing throughput through the agent API vs the in-process crypto floor (issue 3).

Run: ``.venv/bin/python benchmarks/bench_server_signing.py [--batch 100 --batches 30] [--check]``.

One real ``spiffe-server`` process (SQLite, loopback TCP) signs batches of pre-generated EC
P-256 CSRs sent by a join-token-attested agent with ``BatchNewX509SVID`` over mTLS. In the same
run the floor does the same cryptography in-process: load each CSR, verify its signature,
build the same leaf template and sign it with an EC P-256 CA key. Target: server
throughput / floor throughput >= 0.7. ``--check`` exits 1 below the target; ``--profile FILE``
runs the server under cProfile and prints where its time goes.

The acceptance floor builds each leaf with cryptography's ``CertificateBuilder``. The server
assembles leaf DER itself (``server/ca/leafder.py``) and only signs it, so a second, stricter
floor is printed for reference: load and verify each CSR, then one raw ECDSA signature over a
leaf-sized TBS (no certificate encoding at all). Its ratio is informational.

Two diagnostic rows split the gap: ``in-process signer.py path`` (the project's CSR checks,
signing and leaf re-validation, no RPC) and ``same RPC all refused`` (identical requests for
an entry the agent does not own: transport, protobuf, caller and entry lookups, no crypto).
Samples are per batch, so p99 of 30 batches is close to their maximum.

Sequential batches leave the server idle while the client builds, sends and parses each
batch, as no real deployment does (many agents sign at once). The ``pipelined`` row keeps
``--inflight`` batches outstanding on the same mTLS channel (HTTP/2 streams) and measures
throughput over wall time; its ratio to the floor is the acceptance figure. The sequential
ratio is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import pstats
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from _agent_client import TRUST_DOMAIN, BenchServer, BenchTarget, agent_channel, csr_for, enroll
from _stats import Result, print_table, time_async_calls, time_calls
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status

from spiffe_py._proto.spiffepy.server.v1 import agent_pb2
from spiffe_py._proto.spiffepy.server.v1.agent_grpc import AgentAPIStub
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_server.ca.signer import X509Authority, public_key_from_csr, sign_ca, sign_x509_svid
from spiffe_server.ca.templates import DEFAULT_CA_TTL, LeafFields, SvidPolicy, X509SvidParams, leaf_fields

TARGET_RATIO = 0.7
WARMUP_BATCHES = 3
PROFILE_LINES = 25

Batch = tuple[bytes, ...]
T = TypeVar("T")


def make_batches(spiffe_id: str, *, size: int, count: int) -> list[Batch]:
    """``count`` batches of ``size`` DER CSRs, each for a fresh EC P-256 key (untimed)."""
    return [tuple(csr_for(ec.generate_private_key(ec.SECP256R1()), spiffe_id) for _ in range(size))
            for _ in range(count)]


def cycling(items: Sequence[T]) -> Callable[[], T]:
    """A function returning the next item on each call, round robin."""
    position = 0

    def take() -> T:
        nonlocal position
        item = items[position % len(items)]
        position += 1
        return item

    return take


def floor_sign(csr_der: bytes, authority: X509Authority, sid: SpiffeId, now: datetime) -> None:
    """The floor for one CSR: load, verify its signature, build the leaf template, sign it."""
    csr = x509.load_der_x509_csr(csr_der)
    if not csr.is_signature_valid:
        raise ValueError("benchmark csr has an invalid signature")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise TypeError("benchmark csr key is not EC")
    fields = leaf_fields(X509SvidParams(spiffe_id=sid, public_key=public_key), policy=SvidPolicy(),
                         issuer=authority.cert, now=now)
    _floor_builder(fields, public_key).sign(authority.key, hashes.SHA256())


def _floor_builder(fields: LeafFields, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    """The leaf as a CertificateBuilder, as cryptography users build one (no profile check)."""
    builder = (x509.CertificateBuilder().serial_number(fields.serial).subject_name(fields.subject)
               .issuer_name(fields.issuer).public_key(public_key)
               .not_valid_before(fields.not_before).not_valid_after(fields.not_after))
    for ext in fields.extensions(public_key):
        builder = builder.add_extension(ext.value, critical=ext.critical)
    return builder


def strict_floor_sign(csr_der: bytes, authority: X509Authority, sid: SpiffeId, now: datetime) -> None:
    """The strict floor for one CSR: load, verify its signature, read its key, one ECDSA signature."""
    csr = x509.load_der_x509_csr(csr_der)
    if not csr.is_signature_valid:
        raise ValueError("benchmark csr has an invalid signature")
    csr.public_key()
    if not isinstance(authority.key, ec.EllipticCurvePrivateKey):
        raise TypeError("the benchmark CA key is EC P-256")
    authority.key.sign(_leaf_tbs(authority, sid, now), ec.ECDSA(hashes.SHA256()))


@functools.lru_cache(maxsize=4)
def _leaf_tbs(authority: X509Authority, sid: SpiffeId, now: datetime) -> bytes:
    """A real leaf's TBSCertificate (built once per CA): what the strict floor signs."""
    leaf_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return sign_x509_svid(authority, X509SvidParams(spiffe_id=sid, public_key=leaf_key),
                          policy=SvidPolicy(), now=now)[0].tbs_certificate_bytes


def project_sign(csr_der: bytes, authority: X509Authority, sid: SpiffeId, now: datetime) -> None:
    """The server's own signing path for one CSR (CSR checks, sign, re-validation of the leaf)."""
    public_key = public_key_from_csr(csr_der, spiffe_id=sid)
    sign_x509_svid(authority, X509SvidParams(spiffe_id=sid, public_key=public_key), policy=SvidPolicy(), now=now)


def time_in_process(name: str, sign: Callable[[bytes, X509Authority, SpiffeId, datetime], None],
                    batches: Sequence[Batch], spiffe_id: str, *, n: int) -> Result:
    """Time ``sign`` over whole batches with a fresh EC P-256 CA (per-batch samples)."""
    now = datetime.now(UTC)  # benchmark shell: one fixed instant for the whole measurement
    authority = sign_ca(trust_domain=TrustDomain.parse(TRUST_DOMAIN), key=ec.generate_private_key(ec.SECP256R1()),
                        ttl=DEFAULT_CA_TTL, now=now)
    sid = SpiffeId.parse(spiffe_id)
    next_batch = cycling(batches)

    def one_batch() -> None:
        for der in next_batch():
            sign(der, authority, sid, now)

    return time_calls(name, one_batch, n=n, warmup=WARMUP_BATCHES)


async def time_server(name: str, srv: BenchServer, target: BenchTarget, batches: Sequence[Batch], *,
                      n: int, entry_id: str, expect: Status) -> Result:
    """Time BatchNewX509SVID round trips over one mTLS channel (per-batch samples).

    Every item must come back with ``expect``: OK for the real measurement, PERMISSION_DENIED
    for an unknown entry (the same request bytes, refused before any CSR parsing or signing).
    """
    requests = [agent_pb2.BatchNewX509SVIDRequest(
        params=[agent_pb2.NewX509SVIDParams(entry_id=entry_id, csr=der) for der in batch]) for batch in batches]
    next_request = cycling(requests)

    async with agent_channel(srv, target.agent, target.roots_pem) as stub:
        async def one_batch() -> None:
            await _checked_batch(stub, next_request(), expect)

        return await time_async_calls(name, one_batch, n=n, warmup=WARMUP_BATCHES)


async def time_pipelined(srv: BenchServer, target: BenchTarget, batches: Sequence[Batch], *,
                         n: int, inflight: int) -> float:
    """SVIDs per second with ``inflight`` batches outstanding at once (wall-clock throughput)."""
    requests = [agent_pb2.BatchNewX509SVIDRequest(
        params=[agent_pb2.NewX509SVIDParams(entry_id=target.entry_id, csr=der) for der in batch]) for batch in batches]
    next_request = cycling(requests)
    async with agent_channel(srv, target.agent, target.roots_pem) as stub:
        for _ in range(WARMUP_BATCHES):
            await _checked_batch(stub, next_request(), Status.OK)
        remaining = n

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await _checked_batch(stub, next_request(), Status.OK)

        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        elapsed = loop.time() - start
    return n * len(batches[0]) / elapsed


async def _checked_batch(stub: AgentAPIStub, request: agent_pb2.BatchNewX509SVIDRequest, expect: Status) -> None:
    response = await stub.BatchNewX509SVID(request)
    wrong = [r for r in response.results
             if r.status_code != expect.value or bool(r.cert_chain) != (expect is Status.OK)]
    if wrong or len(response.results) != len(request.params):
        raise RuntimeError(f"{len(wrong)} of {len(request.params)} results are not {expect.name}: {wrong[:1]}")


def throughput(result: Result, batch: int) -> float:
    """SVIDs per second over all timed batches."""
    return batch * len(result.samples) / sum(result.samples)


async def measure(args: argparse.Namespace) -> float:
    """Run the server and floor measurements, print the table, return the ratio."""
    srv = BenchServer.create(profile_path=args.profile)
    try:
        target = await enroll(srv)
        batches = make_batches(target.spiffe_id, size=args.batch, count=args.batches + WARMUP_BATCHES)
        label = f"B={args.batch}"
        server = await time_server(f"server BatchNewX509SVID, {label}", srv, target, batches, n=args.batches,
                                   entry_id=target.entry_id, expect=Status.OK)
        refused = await time_server(f"same RPC all refused (no crypto), {label}", srv, target, batches,
                                    n=args.batches, entry_id="not-an-entry", expect=Status.PERMISSION_DENIED)
        pipelined = await time_pipelined(srv, target, batches, n=args.batches, inflight=args.inflight)
    finally:
        srv.close()
    floor = time_in_process(f"floor: CSR verify + sign, {label}", floor_sign, batches, target.spiffe_id,
                            n=args.batches)
    project = time_in_process(f"in-process signer.py path, {label}", project_sign, batches, target.spiffe_id,
                              n=args.batches)
    strict = time_in_process(f"strict: CSR verify + raw ECDSA, {label}", strict_floor_sign, batches,
                             target.spiffe_id, n=args.batches)
    print_table([project, strict, server, refused], floor=floor)
    floor_tp = throughput(floor, args.batch)
    for result in (floor, project, server):
        print(f"throughput {result.name:<40} {throughput(result, args.batch):>9.0f} SVIDs/s")
    piped = f"server pipelined, inflight={args.inflight}, {label}"
    print(f"throughput {piped:<40} {pipelined:>9.0f} SVIDs/s")
    sequential = throughput(server, args.batch) / floor_tp
    ratio = pipelined / floor_tp
    print(f"ratio sequential server / floor throughput = {sequential:.2f}")
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print(f"ratio pipelined server / strict floor throughput = {pipelined / throughput(strict, args.batch):.2f}"
          " (informational: no certificate encoding in that floor)")
    print(f"ratio pipelined server / floor throughput = {ratio:.2f} (target >= {TARGET_RATIO}): {verdict}")
    return ratio


def print_profile(path: Path) -> None:
    """The server's hottest functions by cumulative and by own time."""
    stats = pstats.Stats(str(path))
    stats.sort_stats("cumulative").print_stats(PROFILE_LINES)
    stats.sort_stats("tottime").print_stats(PROFILE_LINES)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--batch", type=int, default=100, help="CSRs per BatchNewX509SVID call (max 500)")
    parser.add_argument("--batches", type=int, default=30, help="timed batches per measurement")
    parser.add_argument("--inflight", type=int, default=2, help="batches outstanding at once in the pipelined row")
    parser.add_argument("--check", action="store_true", help=f"exit 1 when the ratio is below {TARGET_RATIO}")
    parser.add_argument("--profile", type=Path, help="run the server under cProfile, write stats here and print them")
    args = parser.parse_args(argv)
    if not 1 <= args.batch <= 500 or args.batches < 1:
        parser.error("--batch must be 1..500 and --batches >= 1")
    return args


def main(argv: Sequence[str] = sys.argv[1:]) -> int:
    """Run the benchmark; 1 only with ``--check`` and a ratio below the target."""
    args = parse_args(argv)
    ratio = asyncio.run(measure(args))
    if args.profile is not None:
        print_profile(args.profile)
    return 1 if args.check and ratio < TARGET_RATIO else 0


if __name__ == "__main__":
    sys.exit(main())

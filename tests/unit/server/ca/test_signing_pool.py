"""The signing pool: worker processes sign what the in-process reference signs, follow CA rotation,
survive a killed or hung worker, and never outlive the server that holds their keys."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from spiffe_py.spiffeid import TrustDomain
from spiffe_server.ca.keys import KeyType, generate_key
from spiffe_server.ca.pool import (
    CsrRefused,
    InlineSigner,
    ProcessSigningPool,
    Signed,
    SignItem,
    Verified,
    authority_token,
    name_from_parts,
    name_parts,
)
from spiffe_server.ca.signer import X509Authority, sign_ca
from spiffe_server.ca.templates import SVID_SUBJECT
from spiffe_server.errors import CaUnavailableError

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
TD = TrustDomain.parse("example.org")
WEB = "spiffe://example.org/web"
TTL = timedelta(minutes=30)


def _csr(spiffe_id: str = WEB) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=False)
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))


def _ca() -> X509Authority:
    return sign_ca(trust_domain=TD, key=generate_key(KeyType.EC_P256), ttl=timedelta(hours=24), now=NOW)


def _items(count: int, *, sign: bool = True) -> list[SignItem]:
    return [SignItem(csr=_csr(), spiffe_id=WEB, sign=sign, ttl=TTL) for _ in range(count)]


def _check_leaf(outcome: object, ca: X509Authority) -> x509.Certificate:
    assert isinstance(outcome, Signed)
    leaf = x509.load_der_x509_certificate(outcome.der)
    leaf.verify_directly_issued_by(ca.cert)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == TTL + timedelta(seconds=10)  # backdated
    return leaf


@pytest.fixture
def pool() -> Iterator[ProcessSigningPool]:
    signer = ProcessSigningPool(2, timeout=20)
    yield signer
    signer.close()


def test_name_survives_the_trip_to_a_worker() -> None:
    assert name_from_parts(name_parts(SVID_SUBJECT)) == SVID_SUBJECT


@pytest.mark.parametrize("signer_kind", ["inline", "process"])
async def test_signers_agree_on_signed_refused_and_verify_only_items(signer_kind: str) -> None:
    signer = InlineSigner() if signer_kind == "inline" else ProcessSigningPool(2, timeout=20)
    ca = _ca()
    try:
        items = [*_items(40), SignItem(csr=b"\x30\x03junk", spiffe_id=WEB, sign=True, ttl=TTL),
                 SignItem(csr=_csr("spiffe://example.org/other"), spiffe_id=WEB, sign=True, ttl=TTL),
                 *_items(2, sign=False)]
        outcomes = await signer.sign(ca, items, subject=SVID_SUBJECT, now=NOW, keep=(ca,))
    finally:
        signer.close()
    assert len(outcomes) == len(items)
    serials = {_check_leaf(o, ca).serial_number for o in outcomes[:40]}
    assert len(serials) == 40
    assert outcomes[40] == CsrRefused("ca: malformed csr")
    assert isinstance(outcomes[41], CsrRefused) and "does not match" in outcomes[41].message
    assert outcomes[42:] == [Verified(), Verified()]


async def test_verify_only_without_a_ca(pool: ProcessSigningPool) -> None:
    outcomes = await pool.sign(None, [*_items(1, sign=False), SignItem(csr=b"", spiffe_id=WEB, sign=False, ttl=TTL)],
                               subject=SVID_SUBJECT, now=NOW)
    assert outcomes[0] == Verified() and isinstance(outcomes[1], CsrRefused)


async def test_a_rotated_ca_reaches_every_worker_before_its_first_batch(pool: ProcessSigningPool) -> None:
    old, new = _ca(), _ca()
    for outcome in await pool.sign(old, _items(128), subject=SVID_SUBJECT, now=NOW, keep=(old,)):
        _check_leaf(outcome, old)
    # Rotation: the next batch names the new CA; no worker may sign it with the old key.
    for outcome in await pool.sign(new, _items(128), subject=SVID_SUBJECT, now=NOW, keep=(old, new)):
        _check_leaf(outcome, new)
    # The old CA left the bundle: workers drop its key at their next batch.
    await pool.sign(new, _items(128), subject=SVID_SUBJECT, now=NOW, keep=(new,))
    assert all(w.known == {authority_token(new)} for w in pool._workers)


async def test_a_killed_worker_is_replaced_and_its_batch_signed(pool: ProcessSigningPool) -> None:
    ca = _ca()
    await pool.sign(ca, _items(4), subject=SVID_SUBJECT, now=NOW, keep=(ca,))
    before = pool.pids()
    for pid in before:
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
    outcomes = await pool.sign(ca, _items(64), subject=SVID_SUBJECT, now=NOW, keep=(ca,))
    for outcome in outcomes:
        _check_leaf(outcome, ca)
    assert pool.replaced == 2 and not set(before) & set(pool.pids())


async def test_a_hung_worker_is_replaced_and_no_caller_waits_forever() -> None:
    pool = ProcessSigningPool(1, timeout=2)
    ca = _ca()
    try:
        await pool.sign(ca, _items(1), subject=SVID_SUBJECT, now=NOW, keep=(ca,))
        [stopped] = pool.pids()
        assert stopped is not None
        os.kill(stopped, signal.SIGSTOP)
        outcomes = await pool.sign(ca, _items(3), subject=SVID_SUBJECT, now=NOW, keep=(ca,))
        for outcome in outcomes:
            _check_leaf(outcome, ca)
        assert pool.replaced == 1 and pool.pids() != [stopped]
    finally:
        pool.close()


async def test_a_batch_that_fails_on_two_workers_fails_with_unavailable() -> None:
    pool = ProcessSigningPool(1, timeout=0)  # no worker can answer in no time: every try is lost
    ca = _ca()
    try:
        with pytest.raises(CaUnavailableError, match="failed twice"):
            await pool.sign(ca, _items(3), subject=SVID_SUBJECT, now=NOW, keep=(ca,))
        assert pool.replaced == 2
    finally:
        pool.close()


_ORPHAN_SCRIPT = """
import asyncio, resource
from datetime import UTC, datetime, timedelta
from spiffe_server.ca.pool import MIN_CHUNK, ProcessSigningPool, SignItem
from spiffe_server.ca.templates import SVID_SUBJECT

async def main():
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))  # workers must lower what they inherit
    pool = ProcessSigningPool(2)
    items = [SignItem(csr=b"", spiffe_id="spiffe://example.org/w", sign=False, ttl=timedelta(hours=1))] * 2 * MIN_CHUNK
    await pool.sign(None, items, subject=SVID_SUBJECT, now=datetime(2026, 1, 1, tzinfo=UTC))  # both answered
    print(" ".join(str(p) for p in pool.pids()), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def test_workers_die_with_a_killed_parent_and_never_dump_core(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(_ORPHAN_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[4])
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        deadline = time.monotonic() + 30
        while any("Max core file size        0" not in Path(f"/proc/{p}/limits").read_text() for p in pids):
            assert time.monotonic() < deadline, "workers never set RLIMIT_CORE to 0"
            time.sleep(0.1)
        parent.kill()  # SIGKILL: no atexit, no cleanup in the parent
        parent.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids):
            assert time.monotonic() < deadline, "signing workers (holding CA keys) outlived their parent"
            time.sleep(0.1)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)

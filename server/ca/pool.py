"""Where X.509-SVID batches are signed: in the serving process, or in a pool of worker processes.

CSR verification and leaf signing are pure CPU; run inline they stall the event loop (every
admin and agent RPC waits behind a 500-CSR batch) and use one core. :class:`ProcessSigningPool`
signs in ``os.cpu_count()`` worker processes; :class:`InlineSigner` is the plain reference
implementation of the same interface::

    signer = ProcessSigningPool(workers=2)       # or InlineSigner()
    outcomes = await signer.sign(ca.active_x509_ca(), items, subject=policy.svid_subject, now=now)
    signer.close()

Each item is verified (:func:`spiffe_server.ca.signer.public_key_from_csr`) and, when ``item.sign``,
signed; outcomes keep the items' order.

Key handling (the CA key must reach a worker to sign there; measured faster than signing in the
parent, see docs/performance.md): a worker receives a CA key as unencrypted PKCS#8 DER over its
own socket pair from the parent, only when a batch first needs that CA, and holds it in memory
only; keys are never written to a file nor logged. The parent sends a worker the key of whatever
CA signs the batch before the batch itself, on the same ordered socket, so a rotated CA reaches
the worker before its first batch; CAs that have left the bundle are dropped from every worker at
its next batch. Workers are fresh interpreters (not forked: they inherit no sockets, datastore
handles or other keys, and never re-run the parent's ``__main__``), have no core files and are
not dumpable (no same-uid ptrace or /proc/<pid>/mem reads), ask the kernel for SIGKILL when the
parent dies, and exit when their socket closes.

A worker that dies or stops answering is killed and replaced; its chunk is retried once on another
worker, then the batch fails with UNAVAILABLE. No caller waits longer than ``timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spiffe_py._pem import private_key_from_any, private_key_to_der
from spiffe_py.spiffeid import SpiffeId
from spiffe_server.ca.signer import X509Authority, public_key_from_csr, sign_x509_svid_der
from spiffe_server.ca.templates import SvidPolicy, X509SvidParams
from spiffe_server.errors import CaUnavailableError, InvalidCsrError

log = logging.getLogger(__name__)

MIN_CHUNK = 32  # items below which splitting a batch across workers costs more than it saves
DEFAULT_TIMEOUT = 60.0  # seconds one chunk may take before its worker is taken for hung
WORKER_NICENESS = 5  # below the serving process: a busy pool must not starve its event loop
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4

NameParts = tuple[tuple[tuple[str, str], ...], ...]  # RDNs of (dotted OID, value): a picklable x509.Name


@dataclass(frozen=True, slots=True)
class SignItem:
    """One CSR of a batch: what to check it against and, when ``sign``, what to sign for it."""

    csr: bytes
    spiffe_id: str
    sign: bool  # False: verify the CSR only (its entry is refused, or there is no CA)
    ttl: timedelta
    dns_names: tuple[str, ...] = ()
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Signed:
    """The signed leaf's DER."""

    der: bytes


@dataclass(frozen=True, slots=True)
class Verified:
    """The CSR is valid; nothing was signed (``SignItem.sign`` was False)."""


@dataclass(frozen=True, slots=True)
class CsrRefused:
    """The CSR failed verification; ``message`` is the InvalidCsrError text."""

    message: str


@dataclass(frozen=True, slots=True)
class Failed:
    """Signing this item failed for another reason (logged by the caller, INTERNAL to the agent)."""

    error: str


Outcome = Signed | Verified | CsrRefused | Failed


class Signer(Protocol):
    """Verifies and signs CSR batches with a given CA, off or on the event loop."""

    async def sign(self, authority: X509Authority | None, items: Sequence[SignItem], *, subject: x509.Name,
                   now: datetime, keep: Sequence[X509Authority] = ()) -> list[Outcome]:
        """One outcome per item, in order; ``keep``: the CAs still in the bundle (others may be forgotten)."""
        ...

    def close(self) -> None:
        """Stop any workers."""
        ...


def sign_items(authority: X509Authority | None, items: Sequence[SignItem], *, subject: x509.Name,
               now: datetime) -> list[Outcome]:
    """Pure: the work of one batch (or chunk); what either signer runs."""
    policy = SvidPolicy(svid_subject=subject)
    outcomes: list[Outcome] = []
    for item in items:
        try:
            spiffe_id = SpiffeId.parse(item.spiffe_id)
            public_key = public_key_from_csr(item.csr, spiffe_id=spiffe_id)
            if not item.sign or authority is None:
                outcomes.append(Verified())
                continue
            svid = sign_x509_svid_der(authority, X509SvidParams(
                spiffe_id=spiffe_id, public_key=public_key, dns_names=item.dns_names, expires_at=item.expires_at,
                ttl=item.ttl), policy=policy, now=now)
            outcomes.append(Signed(svid.der))
        except InvalidCsrError as err:
            outcomes.append(CsrRefused(str(err)))
        except Exception as err:  # one item's failure never fails the others
            outcomes.append(Failed(f"{err.__class__.__name__}: {err}"))
    return outcomes


class InlineSigner:
    """The reference signer: the work runs in the calling thread, on the event loop."""

    async def sign(self, authority: X509Authority | None, items: Sequence[SignItem], *, subject: x509.Name,
                   now: datetime, keep: Sequence[X509Authority] = ()) -> list[Outcome]:
        """Verify and sign in this process."""
        return sign_items(authority, items, subject=subject, now=now)

    def close(self) -> None:
        """Nothing to stop."""


# -- the worker process ----------------------------------------------------------------------------

def name_parts(name: x509.Name) -> NameParts:
    """``name`` as plain tuples (cryptography's Name does not pickle)."""
    return tuple(tuple((attr.oid.dotted_string, str(attr.value)) for attr in rdn) for rdn in name.rdns)


def name_from_parts(parts: NameParts) -> x509.Name:
    """The inverse of :func:`name_parts` (each attribute gets its OID's default string type)."""
    return x509.Name([x509.RelativeDistinguishedName(
        [x509.NameAttribute(x509.ObjectIdentifier(oid), value) for oid, value in rdn]) for rdn in parts])


def authority_token(authority: X509Authority) -> str:
    """What names one CA (certificate and key) between the parent and a worker."""
    return hashlib.sha256(authority.cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _harden_worker() -> None:
    """Linux: die with the parent, no core dump, not dumpable (no same-uid ptrace of the keys), and
    yield the CPU to the serving process, whose RPCs wait on it while workers sign."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal ^C is the parent's to handle
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


_WORKER_COMMAND = f"import sys; from {__name__} import worker_entry; worker_entry(sys.argv[1:])"


def worker_entry(argv: Sequence[str]) -> None:
    """``python -c`` entry of a worker: its socket's descriptor and the parent's pid."""
    _worker_main(Connection(int(argv[0])), int(argv[1]))


def _worker_main(conn: Connection, parent_pid: int) -> None:
    """A worker: hold CAs sent by the parent, sign chunks, exit when the pipe closes."""
    _harden_worker()
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        return
    authorities: dict[str, X509Authority] = {}
    subjects: dict[NameParts, x509.Name] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        kind = message[0]
        if kind == "ca":
            _, token, key_der, chain_der = message
            cert, *intermediates = (x509.load_der_x509_certificate(der) for der in chain_der)
            authorities[token] = X509Authority(cert=cert, key=private_key_from_any(key_der),
                                               intermediates=tuple(intermediates))
        elif kind == "keep":
            for token in set(authorities) - set(message[1]):
                del authorities[token]
        elif kind == "sign":
            _, token, parts, now, items = message
            subject = subjects.get(parts)
            if subject is None:
                subject = subjects[parts] = name_from_parts(parts)
            conn.send(sign_items(None if token is None else authorities[token], items, subject=subject, now=now))


# -- the parent side -------------------------------------------------------------------------------

class WorkerLost(Exception):
    """A worker died, closed its pipe or did not answer in time."""


@dataclass(frozen=True, slots=True)
class _Job:
    """One chunk for one worker."""

    authority: X509Authority | None  # None: verify only
    keep: Sequence[str]  # tokens of the CAs still in the bundle
    parts: NameParts
    now: datetime
    items: Sequence[SignItem]


class _Worker:
    """One worker process and the parent's end of its pipe; used by one chunk at a time."""

    def __init__(self) -> None:
        # A fresh interpreter that imports only this module: unlike multiprocessing's spawn, it never
        # re-runs the parent's __main__, and it inherits no descriptor but its end of the socket pair.
        ours, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_COMMAND, str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env)
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())
        self.known: set[str] = set()  # CA tokens this worker holds

    @property
    def pid(self) -> int | None:
        """The worker's process id."""
        return self.process.pid

    def call(self, job: _Job, timeout: float) -> list[Outcome]:
        """Blocking: make sure the worker holds the job's CA (and only ``job.keep``), then sign its items."""
        authority, keep, items = job.authority, job.keep, job.items
        try:
            token = None if authority is None else authority_token(authority)
            wanted = {*keep} if token is None else {token, *keep}
            stale = self.known - wanted
            if stale:
                self.conn.send(("keep", tuple(wanted)))
                self.known -= stale
            if authority is not None and token is not None and token not in self.known:
                chain_der = tuple(c.public_bytes(serialization.Encoding.DER) for c in authority.chain)
                self.conn.send(("ca", token, private_key_to_der(authority.key), chain_der))
                self.known.add(token)
            self.conn.send(("sign", token, job.parts, job.now, tuple(items)))
            if not self.conn.poll(timeout):
                raise WorkerLost(f"signing worker {self.pid} did not answer in {timeout:.0f}s")
            outcomes: list[Outcome] = self.conn.recv()
        except (EOFError, OSError) as err:
            raise WorkerLost(f"signing worker {self.pid} is gone: {err.__class__.__name__}") from None
        if len(outcomes) != len(items):
            raise WorkerLost(f"signing worker {self.pid} answered {len(outcomes)} of {len(items)} items")
        return outcomes

    def stop(self) -> None:
        """Kill the worker and reap it."""
        self.conn.close()
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)


def _release(done: asyncio.Future[Any], *, idle: asyncio.Queue[_Worker], worker: _Worker) -> None:
    if not done.cancelled():
        done.exception()  # retrieved: a lost worker is replaced by its next user
    idle.put_nowait(worker)


class ProcessSigningPool:
    """Signs in ``workers`` spawned processes (default: one per core); a batch is split across idle ones."""

    def __init__(self, workers: int | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.size = workers if workers is not None else max(1, os.cpu_count() or 1)
        if self.size < 1:
            raise ValueError("pool: at least one signing worker")
        self._timeout = timeout
        self._lock = threading.Lock()
        self._workers = [_Worker() for _ in range(self.size)]
        self._idle: asyncio.Queue[_Worker] | None = None
        # Blocking pipe I/O runs here, so datastore calls on the default executor never queue behind it.
        self._threads = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="signer")
        self.replaced = 0  # workers replaced after a crash or hang

    def pids(self) -> list[int | None]:
        """The current workers' process ids."""
        with self._lock:
            return [w.pid for w in self._workers]

    def _queue(self) -> asyncio.Queue[_Worker]:
        # Made on first use, inside the running loop.
        if self._idle is None:
            self._idle = asyncio.Queue()
            for worker in self._workers:
                self._idle.put_nowait(worker)
        return self._idle

    async def sign(self, authority: X509Authority | None, items: Sequence[SignItem], *, subject: x509.Name,
                   now: datetime, keep: Sequence[X509Authority] = ()) -> list[Outcome]:
        """Split ``items`` across the workers and sign; CaUnavailableError when a chunk fails twice."""
        if not items:
            return []
        parts = name_parts(subject)
        tokens = tuple(authority_token(a) for a in keep)
        count = max(1, min(self.size, len(items) // MIN_CHUNK))
        step = -(-len(items) // count)
        chunks = [items[i:i + step] for i in range(0, len(items), step)]
        results = await asyncio.gather(*(self._chunk(_Job(authority, tokens, parts, now, c)) for c in chunks))
        return [outcome for chunk in results for outcome in chunk]

    async def _chunk(self, job: _Job) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        idle = self._queue()
        for attempt in (1, 2):
            worker = await idle.get()
            call = loop.run_in_executor(self._threads, worker.call, job, self._timeout)
            try:
                outcomes = await asyncio.shield(call)
            except WorkerLost as err:
                log.warning("signing worker lost, replacing it", extra={"error": str(err), "attempt": attempt})
                try:
                    worker = await loop.run_in_executor(self._threads, self._replace, worker)
                finally:
                    idle.put_nowait(worker)
                continue
            except asyncio.CancelledError:
                # The pipe is in use until the call returns: only then may another chunk have the worker.
                call.add_done_callback(functools.partial(_release, idle=idle, worker=worker))
                raise
            except BaseException:
                idle.put_nowait(worker)
                raise
            idle.put_nowait(worker)
            return outcomes
        raise CaUnavailableError("ca: signing workers failed twice on this batch; retry")

    def _replace(self, worker: _Worker) -> _Worker:
        """Blocking: kill ``worker`` and start another in its place."""
        worker.stop()
        fresh = _Worker()
        with self._lock:
            self._workers = [fresh if w is worker else w for w in self._workers]
            self.replaced += 1
        return fresh

    def close(self) -> None:
        """Kill every worker (they hold CA keys) and stop the pipe threads."""
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.stop()
        self._threads.shutdown(wait=False, cancel_futures=True)

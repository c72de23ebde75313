"""Long-lived sources that follow the Workload API watch streams.

A source holds one immutable snapshot and swaps it on every update; readers take no locks.
It reconnects with jittered exponential backoff (WA-04) and stops on INVALID_ARGUMENT or
UNIMPLEMENTED. PERMISSION_DENIED redacts the snapshot until the next update (WA-16).
The caller keeps ownership of the client (closing the source does not close it)::

    async with await X509Source.create(AsyncWorkloadApiClient(), timeout=10) as src:
        svid = src.get_x509_svid()

    src = X509Source.start(WorkloadApiClient(), timeout=10)   # background thread
    try:
        bundle = src.get_x509_bundle_for_trust_domain(td)
    finally:
        src.close()
"""

from __future__ import annotations

import abc
import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterable
from typing import Any, Generic, Self, TypeVar

from cryptography import x509

from spiffe_py._backoff import Backoff, RetryState
from spiffe_py.bundle import BundleSet, JwtBundle, X509Bundle
from spiffe_py.errors import NoIdentityError, SpiffeError, WorkloadApiError
from spiffe_py.jwtsvid import JwtSvid
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_py.workloadapi._client import AsyncWorkloadApiClient, Watch, WorkloadApiClient
from spiffe_py.workloadapi._convert import X509Context
from spiffe_py.x509svid import X509Svid

log = logging.getLogger(__name__)

S = TypeVar("S")


class _Source(abc.ABC, Generic[S]):
    """Snapshot holder plus the retry loop, run either in a thread or in an asyncio task."""

    _watch_name = ""

    def __init__(self, client: WorkloadApiClient | AsyncWorkloadApiClient, backoff: Backoff | None = None) -> None:
        self._client = client
        self._retry = RetryState(backoff=backoff or Backoff())
        self._snapshot: S | None = None
        self._error: SpiffeError | None = None  # why there is no snapshot (redaction or final error)
        self._final = False
        self._closed = False
        self._ready = threading.Event()
        self._async_ready: asyncio.Event | None = None
        self._lock = threading.Lock()
        self._watch: Watch[Any] | None = None
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self._sleep_event = threading.Event()  # set on close to cut a backoff sleep short

    @classmethod
    async def create(
        cls,
        client: AsyncWorkloadApiClient,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (same signature as start())
        backoff: Backoff | None = None,
    ) -> Self:
        """Start following the watch stream in a task and wait for the first update."""
        source = cls(client, backoff)
        await source._start_task(timeout)
        return source

    @classmethod
    def start(
        cls, client: WorkloadApiClient, *, timeout: float | None = None, backoff: Backoff | None = None
    ) -> Self:
        """Start following the watch stream in a daemon thread and wait for the first update."""
        source = cls(client, backoff)
        source._start_thread(timeout)
        return source

    # -- snapshot --------------------------------------------------------------------------

    def _snapshot_or_raise(self) -> S:
        snapshot = self._snapshot
        if self._closed:
            raise ValueError("workloadapi: source is closed")
        if snapshot is None:
            raise self._error or WorkloadApiError("workloadapi: source has no update yet", status="UNAVAILABLE")
        return snapshot

    def _signal(self) -> None:
        self._ready.set()
        if self._async_ready is not None:
            self._async_ready.set()

    def _apply(self, update: S) -> None:
        self._snapshot = update
        self._error = None
        self._retry.on_update()
        self._signal()

    def _failed(self, err: WorkloadApiError) -> float | None:
        """Record a stream failure; returns the delay before retrying, None to stop."""
        if isinstance(err, NoIdentityError):
            self._snapshot = None  # WA-16: stop using redacted SVIDs
        if self._snapshot is None:
            self._error = err
        delay = self._retry.on_error(err.status)
        if delay is None:
            self._final = True
            self._error = err
            self._signal()
            log.error("workload api %s failed with %s; not retrying", self._watch_name, err.status)
        else:
            log.warning("workload api %s failed with %s; retrying in %.2f s", self._watch_name, err.status, delay)
        return delay

    # -- thread mode ---------------------------------------------------------------------

    @abc.abstractmethod
    def _open_sync(self, client: WorkloadApiClient) -> Watch[S]:
        """Open this source's watch stream on a sync client."""

    def _run_thread(self, client: WorkloadApiClient) -> None:
        while not self._closed:
            with self._lock:
                if self._closed:
                    return
                watch = self._watch = self._open_sync(client)
            try:
                for update in watch:
                    self._apply(update)
                delay: float | None = self._retry.on_end()
            except WorkloadApiError as err:
                if self._closed:
                    return
                delay = self._failed(err)
            if delay is None:
                return
            self._sleep_event.wait(delay)

    def _start_thread(self, timeout: float | None) -> None:
        if not isinstance(self._client, WorkloadApiClient):
            raise TypeError("workloadapi: start() needs a WorkloadApiClient; use create() for async clients")
        self._thread = threading.Thread(
            target=self._run_thread, args=(self._client,), name=f"spiffe-{self._watch_name}", daemon=True
        )
        self._thread.start()
        if self._ready.wait(timeout) and not self._final:
            return
        failure = self._startup_failure()
        self._close_sync()
        raise failure

    def _startup_failure(self) -> Exception:
        """The final error that stopped the stream, else a TimeoutError caused by the last error."""
        if self._final and self._error is not None:
            return self._error
        timeout = TimeoutError("workloadapi: no update before the timeout")
        timeout.__cause__ = self._error
        return timeout

    def _close_sync(self) -> None:
        with self._lock:
            self._closed = True
            watch = self._watch
        if watch is not None:
            watch.cancel()
        self._sleep_event.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    # -- asyncio mode ----------------------------------------------------------------------

    @abc.abstractmethod
    def _open_async(self, client: AsyncWorkloadApiClient) -> AsyncIterator[S]:
        """Open this source's watch stream on an asyncio client."""

    async def _run_task(self, client: AsyncWorkloadApiClient) -> None:
        while True:
            try:
                async for update in self._open_async(client):
                    self._apply(update)
                delay: float | None = self._retry.on_end()
            except WorkloadApiError as err:
                delay = self._failed(err)
            if delay is None:
                return
            await asyncio.sleep(delay)

    async def _start_task(self, timeout: float | None) -> None:  # noqa: ASYNC109 (mirrors start())
        if not isinstance(self._client, AsyncWorkloadApiClient):
            raise TypeError("workloadapi: create() needs an AsyncWorkloadApiClient; use start() for sync clients")
        self._async_ready = asyncio.Event()
        self._task = asyncio.create_task(self._run_task(self._client), name=f"spiffe-{self._watch_name}")
        try:
            await asyncio.wait_for(self._async_ready.wait(), timeout)
            if not self._final:
                return
        except TimeoutError:
            pass
        failure = self._startup_failure()
        await self.aclose()
        raise failure

    async def aclose(self) -> None:
        """Stop the background task (idempotent)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def close(self) -> None:
        """Stop the background thread (idempotent); for asyncio sources use ``aclose()``."""
        if self._task is not None:
            raise TypeError("workloadapi: use 'await source.aclose()' for a source made by create()")
        self._close_sync()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether close()/aclose() was called."""
        return self._closed


class X509Source(_Source[X509Context]):
    """Current X.509 SVIDs, bundles and CRLs from the Workload API."""

    _watch_name = "FetchX509SVID"

    def _open_sync(self, client: WorkloadApiClient) -> Watch[X509Context]:
        return client.watch_x509_context()

    def _open_async(self, client: AsyncWorkloadApiClient) -> AsyncIterator[X509Context]:
        return client.watch_x509_context()

    def x509_context(self) -> X509Context:
        """The current immutable snapshot."""
        return self._snapshot_or_raise()

    def get_x509_svid(self) -> X509Svid:
        """The current default X509-SVID (WA-29)."""
        return self._snapshot_or_raise().default_svid

    def get_x509_bundle_for_trust_domain(self, trust_domain: TrustDomain) -> X509Bundle:
        """The current X.509 bundle of ``trust_domain``; raises BundleNotFoundError."""
        bundle: X509Bundle = self._snapshot_or_raise().bundles.get_x509_bundle_for_trust_domain(trust_domain)
        return bundle

    def get_crls(self) -> tuple[x509.CertificateRevocationList, ...]:
        """The current CRLs (empty when the agent sends none)."""
        return self._snapshot_or_raise().crls


class JwtSource(_Source[BundleSet]):
    """Current JWT bundles from the Workload API, plus JWT-SVID fetching through the same client."""

    _watch_name = "FetchJWTBundles"

    def _open_sync(self, client: WorkloadApiClient) -> Watch[BundleSet]:
        return client.watch_jwt_bundles()

    def _open_async(self, client: AsyncWorkloadApiClient) -> AsyncIterator[BundleSet]:
        return client.watch_jwt_bundles()

    def get_jwt_bundle_for_trust_domain(self, trust_domain: TrustDomain) -> JwtBundle:
        """The current JWT bundle of ``trust_domain``; raises BundleNotFoundError."""
        bundle: JwtBundle = self._snapshot_or_raise().get_jwt_bundle_for_trust_domain(trust_domain)
        return bundle

    def bundles(self) -> BundleSet:
        """The current immutable JWT bundle set (a new object after every update)."""
        return self._snapshot_or_raise()

    def fetch_jwt_svid(self, audience: str | Iterable[str], spiffe_id: SpiffeId | None = None) -> JwtSvid:
        """Fetch a fresh JWT-SVID (sync sources only; one RPC)."""
        if not isinstance(self._client, WorkloadApiClient):
            raise TypeError("workloadapi: use 'await fetch_jwt_svid_async()' on a source made by create()")
        self._snapshot_or_raise()
        return self._client.fetch_jwt_svid(audience, spiffe_id)

    async def fetch_jwt_svid_async(self, audience: str | Iterable[str], spiffe_id: SpiffeId | None = None) -> JwtSvid:
        """Fetch a fresh JWT-SVID (asyncio sources only; one RPC)."""
        if not isinstance(self._client, AsyncWorkloadApiClient):
            raise TypeError("workloadapi: use fetch_jwt_svid() on a source made by start()")
        self._snapshot_or_raise()
        return await self._client.fetch_jwt_svid(audience, spiffe_id)

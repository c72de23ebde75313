"""Keeps every federated trust domain's bundle fresh from its bundle endpoint (the I/O shell).

::

    fed = Federation(store=store, own=own_bundle, clock=clock, static=cfg.federation.relationships,
                     call=ctx.call, notify=ctx.changes.notify)
    await fed.start()                    # one task per relationship; reconciled with the datastore
    status = await fed.refresh(TrustDomain("b.test"))   # fetch now (FetchRefused if refused)
    await fed.close()

Each relationship is fetched at its bundle's ``spiffe_refresh_hint`` (bounded, see
:func:`refresh_interval`), and retried at that same interval after a failure. A fetched
bundle replaces the stored one only if it passes :func:`check_fetched_bundle`; the stored
bundle is the last good one, so a failed or refused fetch changes nothing agents see. Every
fetch is logged and counted by result, and the age of each last good fetch is a gauge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from spiffe_py.bundle import MAX_BUNDLE_BYTES, SpiffeBundle
from spiffe_py.clock import Clock
from spiffe_py.errors import SpiffeError
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_server.config import ServerConfig
from spiffe_server.datastore import BundleRecord, DataStore, FederationRecord, NotFoundError
from spiffe_server.federation.client import fetch_bundle
from spiffe_server.federation.relationship import (
    FetchRefused,
    Profile,
    Relationship,
    RelationshipError,
    check_fetched_bundle,
    parse_bootstrap_bundle,
    parse_relationship,
    refresh_interval,
)
from spiffe_server.metrics import FEDERATION_BUNDLE_AGE, FEDERATION_LAST_REFRESH, FEDERATION_REFRESHES

log = logging.getLogger("spiffe_server.federation")

Call = Callable[..., Awaitable[Any]]
RETRY_AFTER_FAULT_SECONDS = 30.0  # after a fault of our own (not a refused fetch)
RECONCILE_SECONDS = 5.0  # relationships another server created in a shared datastore start within this


@dataclass(frozen=True, slots=True)
class RelationshipStatus:
    """A relationship with what its refresher last saw."""

    relationship: Relationship
    last_refresh: datetime | None = None
    last_error: str = ""
    next_refresh: datetime | None = None
    bundle_sequence: int | None = None


def relationship_from_record(record: FederationRecord, own: TrustDomain) -> Relationship:
    """A stored relationship, validated again (it was validated when written)."""
    return parse_relationship(record.trust_domain, record.bundle_endpoint_url, record.bundle_endpoint_profile,
                              record.endpoint_spiffe_id, own=own, source="api")


class _Worker:
    """One relationship's refresh loop."""

    def __init__(self, fed: Federation, rel: Relationship) -> None:
        self.rel = rel
        self.wake = asyncio.Event()
        self.status = RelationshipStatus(rel)
        self.fetching = asyncio.Lock()
        self.next_due = 0.0  # time.monotonic() of the next fetch: the first one is due now
        self.task = asyncio.create_task(self._loop(fed))

    async def _loop(self, fed: Federation) -> None:
        while True:
            if time.monotonic() >= self.next_due:
                try:
                    await fed.refresh_once(self)  # sets next_due
                except Exception:  # e.g. the datastore is down: log, keep the last good bundle, retry
                    log.exception("federation: refresh of %r failed", self.rel.trust_domain.name)
                    self.next_due = time.monotonic() + RETRY_AFTER_FAULT_SECONDS
            self.wake.clear()
            # woken early by a refresh on request, which moved next_due; asyncio.timeout, not
            # wait_for: on 3.11 wait_for can swallow a cancel that races the wake-up
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, self.next_due - time.monotonic())):
                    await self.wake.wait()


class Federation:
    """The bundle endpoint client: one refresher per relationship (static from config, dynamic from the store)."""

    def __init__(self, *, store: DataStore, own: Callable[[], SpiffeBundle], clock: Clock,
                 static: Sequence[Relationship], call: Call, notify: Callable[[], None],
                 fetch: Callable[..., Awaitable[bytes]] = fetch_bundle) -> None:
        self._store = store
        self._own = own
        self._clock = clock
        self._static = {rel.trust_domain: replace(rel, source="config") for rel in static}
        self._call = call
        self._notify = notify
        self._fetch = fetch
        self._workers: dict[TrustDomain, _Worker] = {}
        self._records: dict[TrustDomain, FederationRecord] = {}
        self._loop: asyncio.Task[None] | None = None

    @property
    def own_trust_domain(self) -> TrustDomain:
        """This server's trust domain."""
        return self._own().trust_domain

    def is_static(self, trust_domain: TrustDomain) -> bool:
        """True if the relationship comes from the config (the admin API may not change it)."""
        return trust_domain in self._static

    async def start(self) -> None:
        """Start a refresher per relationship, and the loop that keeps the set current."""
        await self.reconcile()
        self._loop = asyncio.create_task(self._reconcile_forever())

    async def close(self) -> None:
        """Stop every refresher."""
        tasks = [w.task for w in self._workers.values()] + ([self._loop] if self._loop is not None else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(RECONCILE_SECONDS)
            try:
                await self.reconcile()
            except Exception:  # a background loop logs and keeps going
                log.exception("federation: reconcile failed")

    async def wanted(self) -> dict[TrustDomain, Relationship]:
        """Static relationships, then stored ones (a static one wins on the same trust domain)."""
        own = self.own_trust_domain
        out: dict[TrustDomain, Relationship] = {}
        records: dict[TrustDomain, FederationRecord] = {}
        for record in await self._call(self._store.list_federations):
            try:
                rel = relationship_from_record(record, own)
            except RelationshipError as err:
                log.warning("federation: skipping invalid stored relationship %r: %s", record.trust_domain, err)
                continue
            out[rel.trust_domain] = rel
            records[rel.trust_domain] = record
        self._records = records
        out.update(self._static)
        return out

    async def reconcile(self) -> None:
        """Start refreshers for new or changed relationships, stop those of removed ones."""
        wanted = await self.wanted()
        for td in list(self._workers):
            worker = self._workers[td]
            if wanted.get(td) != worker.rel:
                await self._stop(td)
        for td, rel in wanted.items():
            if td not in self._workers:
                self._workers[td] = _Worker(self, rel)
        self._update_age_gauges()

    async def stop_refreshing(self, trust_domain: TrustDomain) -> None:
        """Stop the relationship's refresher now (before its bundle is deleted: no fetch may re-add it)."""
        await self._stop(trust_domain)

    async def _stop(self, td: TrustDomain) -> None:
        worker = self._workers.pop(td, None)
        if worker is None:
            return
        # A fetch in flight finishes first: its datastore write runs in a thread a cancel cannot
        # stop, and must not land after the caller deletes the bundle.
        async with worker.fetching:
            worker.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker.task
        for gauge in (FEDERATION_BUNDLE_AGE, FEDERATION_LAST_REFRESH):
            with contextlib.suppress(KeyError):
                gauge.remove(td.name)

    async def statuses(self) -> list[RelationshipStatus]:
        """Every relationship with its refresh state, ordered by trust domain."""
        wanted = await self.wanted()
        out = []
        for td in sorted(wanted, key=lambda t: t.name):
            worker = self._workers.get(td)
            fetched = worker is not None and (worker.status.last_refresh or worker.status.last_error)
            if worker is not None and fetched and worker.rel == wanted[td]:
                out.append(worker.status)
                continue
            record = self._records.get(td) if wanted[td].source == "api" else None  # fetched by an earlier run
            out.append(RelationshipStatus(wanted[td], last_refresh=record.last_refresh if record else None,
                                          last_error=record.last_error if record else ""))
        self._update_age_gauges()
        return out

    async def status(self, trust_domain: TrustDomain) -> RelationshipStatus:
        """One relationship's state; NotFoundError if there is none."""
        for status in await self.statuses():
            if status.relationship.trust_domain == trust_domain:
                return status
        raise NotFoundError(f"federation: no relationship for trust domain {trust_domain.name!r}")

    async def first_fetch(self, trust_domain: TrustDomain) -> None:
        """Wait for a new relationship's first fetch (done now if its refresher has not started it)."""
        worker = self._workers.get(trust_domain)
        if worker is not None:
            await self.refresh_once(worker)  # a no-op when the refresher's own first fetch came first

    async def refresh(self, trust_domain: TrustDomain) -> RelationshipStatus:
        """Fetch now; FetchRefused if the fetch failed or was refused (the last good bundle stays)."""
        await self.reconcile()
        worker = self._workers.get(trust_domain)
        if worker is None:
            raise NotFoundError(f"federation: no relationship for trust domain {trust_domain.name!r}")
        await self.refresh_once(worker, force=True)
        worker.wake.set()  # the loop waits again, until the next_due this fetch set
        if worker.status.last_error:
            raise FetchRefused("refresh", worker.status.last_error)
        return worker.status

    # -- one fetch ---------------------------------------------------------------------------

    async def _stored_bundle(self, td: TrustDomain) -> SpiffeBundle | None:
        try:
            record = await self._call(self._store.get_bundle, td.name)
        except NotFoundError:
            return None
        try:
            return SpiffeBundle.parse(td, record.data)
        except SpiffeError:
            log.warning("federation: stored bundle of %r does not parse; it will be replaced", td.name)
            return None

    async def _roots(self, rel: Relationship) -> tuple[x509.Certificate, ...]:
        """The bundle the https_spiffe endpoint's SVID must chain to: the latest of its own trust domain."""
        if rel.profile is not Profile.HTTPS_SPIFFE:
            return ()
        assert isinstance(rel.endpoint_spiffe_id, SpiffeId)
        td = rel.endpoint_spiffe_id.trust_domain
        own = self._own()
        if td == own.trust_domain:
            return own.x509_authorities
        known = await self._stored_bundle(td)
        return () if known is None else known.x509_authorities

    async def refresh_once(self, worker: _Worker, *, force: bool = False) -> None:
        """Fetch, check and store the relationship's bundle if due (or ``force``); sets when the next is due."""
        async with worker.fetching:
            if not force and time.monotonic() < worker.next_due:
                return  # someone else fetched while we waited for the lock
            delay = await self._refresh(worker)
            worker.next_due = time.monotonic() + delay.total_seconds()

    async def _refresh(self, worker: _Worker) -> timedelta:
            rel = worker.rel
            td = rel.trust_domain
            previous = await self._stored_bundle(td)
            try:
                body = await self._fetch(rel, roots=await self._roots(rel))
                bundle = check_fetched_bundle(td, body, previous=previous)
            except FetchRefused as err:
                return await self._failed(worker, previous, err)
            now = self._clock.now()
            if previous is None or previous.to_json() != bundle.to_json():
                await self._call(self._store.set_bundle, BundleRecord(trust_domain=td.name, data=bundle.to_json()))
                self._notify()  # agents whose entries federate with td get it on their sync stream
                log.info("federation: bundle of %r updated", td.name,
                         extra={"trust_domain": td.name, "sequence": bundle.sequence_number,
                                "url": rel.bundle_endpoint_url})
            else:
                log.debug("federation: bundle of %r unchanged", td.name)
            if rel.source == "api":
                with contextlib.suppress(NotFoundError):
                    await self._call(self._store.record_federation_refresh, td.name, refreshed_at=now, error="")
            delay = refresh_interval(bundle.refresh_hint)
            worker.status = RelationshipStatus(rel, last_refresh=now, next_refresh=now + delay,
                                               bundle_sequence=bundle.sequence_number)
            FEDERATION_REFRESHES.labels(trust_domain=td.name, result="ok").inc()
            FEDERATION_LAST_REFRESH.labels(trust_domain=td.name).set(now.timestamp())
            FEDERATION_BUNDLE_AGE.labels(trust_domain=td.name).set(0)
            return delay

    async def _failed(self, worker: _Worker, previous: SpiffeBundle | None, err: FetchRefused) -> timedelta:
        rel, td = worker.rel, worker.rel.trust_domain
        FEDERATION_REFRESHES.labels(trust_domain=td.name, result=err.reason).inc()
        log.warning("federation: bundle of %r not refreshed, keeping the last good one: %s", td.name, err,
                    extra={"trust_domain": td.name, "reason": err.reason, "url": rel.bundle_endpoint_url})
        message = str(err)[:1000]
        if rel.source == "api":
            with contextlib.suppress(NotFoundError):
                await self._call(self._store.record_federation_refresh, td.name, refreshed_at=None, error=message)
        # FED-24: retry at the next interval, not aggressively
        delay = refresh_interval(previous.refresh_hint if previous is not None else None)
        now = self._clock.now()
        worker.status = replace(worker.status, last_error=message, next_refresh=now + delay)
        self._update_age_gauges()
        return delay

    def _update_age_gauges(self) -> None:
        now = self._clock.now()
        for td, worker in self._workers.items():
            last = worker.status.last_refresh
            FEDERATION_BUNDLE_AGE.labels(trust_domain=td.name).set(
                -1 if last is None else max(0.0, (now - last).total_seconds()))


def static_relationships(cfg: ServerConfig) -> tuple[Relationship, ...]:
    """The relationships of ``[federation.federates_with]`` (validated when the config was loaded)."""
    return tuple(parse_relationship(rel.trust_domain, rel.bundle_endpoint_url, rel.bundle_endpoint_profile,
                                    rel.endpoint_spiffe_id, own=cfg.trust_domain, source="config")
                 for rel in cfg.federation.federates_with)


def bootstrap_static_bundles(cfg: ServerConfig, store: DataStore) -> None:
    """Blocking: store each static relationship's bootstrap bundle, unless a bundle is already stored.

    A stored bundle is newer than the file (the refresher keeps it current), so it wins.
    """
    for rel in cfg.federation.federates_with:
        if rel.trust_domain_bundle_path is None:
            continue
        td = TrustDomain.parse(rel.trust_domain)
        try:
            store.get_bundle(td.name)
            continue
        except NotFoundError:
            pass
        data = read_bootstrap_bundle(td, rel.trust_domain_bundle_path)
        store.set_bundle(BundleRecord(trust_domain=td.name, data=data.to_json()))
        log.info("federation: bootstrap bundle of %r stored from %s", td.name, rel.trust_domain_bundle_path)


def read_bootstrap_bundle(td: TrustDomain, path: Path) -> SpiffeBundle:
    """A bootstrap bundle file: SPIFFE bundle JSON, or PEM certificates (FED-19)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BUNDLE_BYTES + 1)
    except OSError as err:
        raise OSError(f"federation: cannot read bootstrap bundle {str(path)!r}: {err.strerror}") from err
    try:
        return parse_bootstrap_bundle(td, data)
    except SpiffeError as err:  # run() reports OSError as "cannot start"
        raise OSError(f"federation: bootstrap bundle {str(path)!r} is invalid: {err}") from err

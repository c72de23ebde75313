"""Federation relationships in the datastore, on both backends."""

from __future__ import annotations

from dataclasses import replace

import pytest

from spiffe_server.datastore import (
    AlreadyExistsError,
    FederationRecord,
    InvalidArgumentError,
    NotFoundError,
    SqlDataStore,
)
from tests.datastore.helpers import LATER, NOW

REL = FederationRecord(trust_domain="b.test", bundle_endpoint_url="https://127.0.0.1:8443",
                       bundle_endpoint_profile="https_spiffe", endpoint_spiffe_id="spiffe://b.test/spire/server",
                       created_at=NOW)


def test_relationship_lifecycle(store: SqlDataStore) -> None:
    store.create_federation(REL)
    assert store.get_federation("b.test") == REL
    with pytest.raises(AlreadyExistsError):
        store.create_federation(REL)
    web = replace(REL, bundle_endpoint_url="https://b.example/", bundle_endpoint_profile="https_web",
                  endpoint_spiffe_id="", created_at=LATER)
    store.update_federation(web)
    assert store.get_federation("b.test") == replace(web, created_at=NOW)  # created_at is kept
    store.create_federation(replace(REL, trust_domain="a2.test"))
    assert [r.trust_domain for r in store.list_federations()] == ["a2.test", "b.test"]
    store.delete_federation("b.test")
    with pytest.raises(NotFoundError):
        store.get_federation("b.test")
    with pytest.raises(NotFoundError):
        store.delete_federation("b.test")
    with pytest.raises(NotFoundError):
        store.update_federation(REL)


def test_refresh_bookkeeping(store: SqlDataStore) -> None:
    store.create_federation(REL)
    store.record_federation_refresh("b.test", refreshed_at=None, error="unreachable")
    assert (store.get_federation("b.test").last_refresh, store.get_federation("b.test").last_error) == \
        (None, "unreachable")
    store.record_federation_refresh("b.test", refreshed_at=LATER, error="")
    assert (store.get_federation("b.test").last_refresh, store.get_federation("b.test").last_error) == (LATER, "")
    store.record_federation_refresh("b.test", refreshed_at=None, error="too_large")
    record = store.get_federation("b.test")
    assert (record.last_refresh, record.last_error) == (LATER, "too_large")  # the last good fetch stays known


def test_records_are_bounded() -> None:
    with pytest.raises(InvalidArgumentError):
        replace(REL, bundle_endpoint_url="x" * 5000)
    with pytest.raises(InvalidArgumentError):
        replace(REL, trust_domain="")

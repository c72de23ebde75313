"""Bounds on record values: violations raise InvalidArgumentError naming the field (pure, no database)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from grpclib.const import Status

from spiffe_server.api.errors import status_for
from spiffe_server.datastore import (
    AuditRecord,
    BundleRecord,
    EntryFilter,
    InvalidArgumentError,
    JoinToken,
    Page,
    SelectorMatch,
)
from tests.datastore.helpers import LATER, NOW, make_agent, make_entry, sel

MANY_SELECTORS = tuple(f"unix:uid:{i}" for i in range(65))


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"selectors": sel(*MANY_SELECTORS)}, "selectors"),
        ({"selectors": ()}, "selectors"),
        ({"selectors": ("unix:uid:1",)}, "selectors"),  # str, not Selector
        ({"dns_names": tuple(f"h{i}.example" for i in range(33))}, "dns_names"),
        ({"dns_names": ("",)}, "dns_names"),
        ({"labels": {f"k{i}": "v" for i in range(65)}}, "labels"),
        ({"jwt_claims": {f"k{i}": "v" for i in range(65)}}, "jwt_claims"),
        ({"federates_with": tuple(f"spiffe://td{i}" for i in range(65))}, "federates_with"),
        ({"spiffe_id": "spiffe://example.org/" + "a" * 2049}, "spiffe_id"),
        ({"spiffe_id": "spiffe://example.org/é" * 200}, "spiffe_id"),  # bytes, not characters, are counted
        ({"parent_id": ""}, "parent_id"),
        ({"hint": "bad\x00hint"}, "hint"),
        ({"x509_svid_ttl": -1}, "x509_svid_ttl"),
        ({"jwt_svid_ttl": 2**31}, "jwt_svid_ttl"),
        ({"max_lifetime": True}, "max_lifetime"),
        ({"created_at": datetime(2026, 1, 1)}, "created_at"),  # naive
        ({"expires_at": datetime(2026, 1, 1)}, "expires_at"),
    ],
)
def test_entry_bounds_name_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        make_entry(**fields)
    assert info.value.field == field
    assert str(info.value).startswith(f"datastore: {field}: ")
    assert status_for(info.value) is Status.INVALID_ARGUMENT and isinstance(info.value, ValueError)


def test_entry_limits_are_inclusive() -> None:
    entry = make_entry(selectors=sel(*MANY_SELECTORS[:64]), dns_names=tuple(f"h{i}" for i in range(32)),
                       labels={f"k{i}": "v" for i in range(64)}, spiffe_id="s" * 2048)
    assert len(entry.selectors) == 64


def test_entry_normalises_selectors_and_labels() -> None:
    entry = make_entry(selectors=sel("b:1", "a:2", "b:1"), labels={"z": "1", "a": "2"})
    assert entry.selectors == sel("a:2", "b:1")
    assert list(entry.labels) == ["a", "z"]
    with pytest.raises(TypeError):
        entry.labels["x"] = "y"  # type: ignore[index]


def test_as_stored_sets_the_bookkeeping_fields_and_checks_only_them() -> None:
    entry = make_entry(selectors=sel("b:1", "a:2"), labels={"z": "1"})
    stored = entry.as_stored(entry_id="e-1", revision=3, created_at=LATER)
    assert (stored.id, stored.revision, stored.created_at) == ("e-1", 3, LATER)
    assert stored.selectors == entry.selectors and stored.labels == entry.labels and stored.spiffe_id == entry.spiffe_id
    assert (entry.id, entry.revision, entry.created_at) == ("", 0, NOW)  # the original is untouched
    for fields, field in (({"entry_id": ""}, "id"), ({"revision": -1}, "revision"),
                          ({"created_at": datetime(2026, 1, 1)}, "created_at")):
        args: dict[str, Any] = {"entry_id": "e-1", "revision": 0, "created_at": LATER, **fields}
        with pytest.raises(InvalidArgumentError) as info:
            entry.as_stored(**args)
        assert info.value.field == field


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Page(size=1001), "page_size"),
        (lambda: Page(size=0), "page_size"),
        (lambda: Page(token="t" * 2049), "page_token"),
        (lambda: EntryFilter(by_spiffe_id="x" * 2049), "by_spiffe_id"),
        (lambda: EntryFilter(by_selectors=SelectorMatch(selectors=())), "by_selectors"),
        (lambda: SelectorMatch(selectors=sel(*MANY_SELECTORS)), "by_selectors"),
        (lambda: JoinToken(token="", expires_at=LATER), "token"),
        (lambda: JoinToken(token="t", expires_at=datetime(2026, 1, 1)), "expires_at"),
        (lambda: make_agent(selectors=sel(*MANY_SELECTORS)), "selectors"),
        (lambda: make_agent(attestation_type=""), "attestation_type"),
        (lambda: BundleRecord(trust_domain="td", data=b"x" * ((1 << 20) + 1)), "data"),
        (lambda: AuditRecord(time=NOW, record="x" * (64 * 1024 + 1), prev_hash="", hash="h"), "record"),
        (lambda: AuditRecord(time=NOW, record="{}", prev_hash="", hash=""), "hash"),
    ],
)
def test_other_bounds_name_the_field(build: Any, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        build()
    assert info.value.field == field


def test_page_defaults() -> None:
    assert Page() == Page("", 100)

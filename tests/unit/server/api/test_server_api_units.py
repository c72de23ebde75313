"""Pure parts of server/api: the error table, proto conversions, sync planning, log redaction."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_py._proto.spiffepy.server.v1 import types_pb2
from spiffe_py.errors import AuthorizationError, InvalidSpiffeIdError, SpiffeError, VerificationError
from spiffe_py.spiffeid import TrustDomain
from spiffe_server.api.convert import bundle_from_proto, entry_from_proto, entry_to_proto
from spiffe_server.api.errors import INTERNAL_MESSAGE, RequestError, grpc_errors, to_grpc_error
from spiffe_server.api.sync import SyncState
from spiffe_server.datastore.errors import AlreadyExistsError, NotFoundError
from spiffe_server.errors import AttestationError, CaUnavailableError, InvalidCsrError
from spiffe_server.logging import REDACTED, JsonFormatter, RedactionFilter, redact

TD = TrustDomain.parse("example.org")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("err", "status"), [
    (RequestError("entry.spiffe_id", "required"), Status.INVALID_ARGUMENT),
    (InvalidSpiffeIdError("bad"), Status.INVALID_ARGUMENT),
    (NotFoundError("gone"), Status.NOT_FOUND),
    (AlreadyExistsError("dup"), Status.ALREADY_EXISTS),
    (AttestationError("join_token", "used"), Status.PERMISSION_DENIED),
    (AuthorizationError("no"), Status.PERMISSION_DENIED),
    (VerificationError("chain"), Status.UNAUTHENTICATED),
    (InvalidCsrError("ca: malformed csr"), Status.INVALID_ARGUMENT),
    (CaUnavailableError("ca: none"), Status.UNAVAILABLE),
])
def test_error_table_maps_domain_errors(err: SpiffeError, status: Status) -> None:
    mapped = to_grpc_error(err, "M")
    assert mapped.status is status and mapped.message == str(err)


def test_client_stall_is_deadline_exceeded() -> None:
    assert to_grpc_error(TimeoutError(), "AttestAgent").status is Status.DEADLINE_EXCEEDED


def test_unknown_exception_is_internal_with_generic_message(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(GRPCError) as exc, grpc_errors("GetEntry"):
        raise KeyError("secret detail")
    assert exc.value.status is Status.INTERNAL and exc.value.message == INTERNAL_MESSAGE
    assert "internal error in GetEntry" in caplog.text and "Traceback" in caplog.text


def _entry(**kw: object) -> types_pb2.Entry:
    base: dict[str, object] = {"spiffe_id": "spiffe://example.org/web",
                               "parent_id": "spiffe://example.org/spire/agent/join_token/t",
                               "selectors": [types_pb2.Selector(type="unix", value="uid:1")]}
    base.update(kw)
    return types_pb2.Entry(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kw", "message"), [
    ({"spiffe_id": ""}, "entry.spiffe_id: required"),
    ({"spiffe_id": "spiffe://other.org/x"}, "entry.spiffe_id: must belong to trust domain 'example.org'"),
    ({"parent_id": "http://x"}, "entry.parent_id: spiffeid:"),
    ({"selectors": [types_pb2.Selector(type="unix", value="")]}, "entry.selectors: selector:"),
    ({"selectors": []}, "entry.selectors: at least one selector is required"),
    ({"x509_svid_ttl": -1}, "entry.x509_svid_ttl: must not be negative, got -1"),
    ({"max_lifetime": -1}, "entry.max_lifetime: must not be negative"),
    ({"federates_with": ["Not A TD"]}, "entry.federates_with: spiffeid:"),
    ({"parent_id": "spiffe://example.org/web"}, "entry.spiffe_id: must differ from entry.parent_id"),
])
def test_entry_from_proto_names_the_field(kw: dict[str, object], message: str) -> None:
    with pytest.raises(RequestError) as exc:
        entry_from_proto(_entry(**kw), trust_domain=TD, now=NOW)
    assert str(exc.value).startswith(message)


def test_entry_round_trip() -> None:
    pb = _entry(dns_names=["a.example.org"], labels={"k": "v"}, jwt_claims={"c": "d"}, expires_at=1_900_000_000,
                x509_svid_ttl=60, bind_to_process=True, max_lifetime=30)
    back = entry_to_proto(entry_from_proto(pb, trust_domain=TD, now=NOW))
    assert back.spiffe_id == pb.spiffe_id and back.expires_at == 1_900_000_000
    assert dict(back.labels) == {"k": "v"} and back.bind_to_process and back.max_lifetime == 30
    assert back.created_at == int(NOW.timestamp())


def test_bundle_from_proto_rejects_garbage() -> None:
    with pytest.raises(RequestError, match=r"bundle\.x509_authorities: not a DER certificate"):
        bundle_from_proto(types_pb2.Bundle(trust_domain="x.org", x509_authorities=[b"junk"]))
    with pytest.raises(RequestError, match=r"bundle\.trust_domain: spiffeid:"):
        bundle_from_proto(types_pb2.Bundle(trust_domain="BAD TD"))


def _pb(eid: str, rev: int = 0) -> types_pb2.Entry:
    return types_pb2.Entry(id=eid, revision=rev)


def test_sync_first_message_is_full_then_diffs_only() -> None:
    state = SyncState()
    bundle = types_pb2.Bundle(trust_domain="example.org", sequence_number=1)
    (first,) = state.plan({"a": _pb("a"), "b": _pb("b")}, bundle, [])
    assert first.full and [e.id for e in first.entries] == ["a", "b"] and first.bundle.sequence_number == 1
    assert state.plan({"a": _pb("a"), "b": _pb("b")}, bundle, []) == []
    (diff,) = state.plan({"a": _pb("a", 1), "c": _pb("c")}, bundle, [])
    assert not diff.full and [e.id for e in diff.entries] == ["a", "c"] and list(diff.removed_entry_ids) == ["b"]
    assert not diff.HasField("bundle")
    (rotated,) = state.plan({"a": _pb("a", 1), "c": _pb("c")}, types_pb2.Bundle(sequence_number=2), [])
    assert rotated.bundle.sequence_number == 2 and not rotated.entries


def test_sync_resends_an_entry_whose_ttl_in_force_moved_without_a_new_revision() -> None:
    """A policy reload changes no revision; the entries whose capped TTL moved must still reach the agents."""
    state = SyncState()
    bundle = types_pb2.Bundle(trust_domain="example.org")

    def entries(ttl_a: int) -> dict[str, types_pb2.Entry]:
        return {"a": types_pb2.Entry(id="a", x509_svid_ttl_in_force=ttl_a),
                "b": types_pb2.Entry(id="b", x509_svid_ttl_in_force=3600)}

    state.plan(entries(3600), bundle, [])
    assert state.plan(entries(3600), bundle, []) == []
    (diff,) = state.plan(entries(120), bundle, [])
    assert [(e.id, e.x509_svid_ttl_in_force) for e in diff.entries] == [("a", 120)]
    assert state.plan(entries(120), bundle, []) == []


def test_sync_pages_large_entry_sets() -> None:
    entries = {f"e{i:04}": _pb(f"e{i:04}") for i in range(1201)}
    messages = SyncState().plan(entries, types_pb2.Bundle(), [], page_size=500)
    assert [len(m.entries) for m in messages] == [500, 500, 201]
    assert [m.full for m in messages] == [True, False, False]
    assert [m.full_messages for m in messages] == [3, 0, 0]  # the agent applies the snapshot on the third
    more = {**entries, **{f"f{i:04}": _pb(f"f{i:04}") for i in range(600)}}
    state = SyncState()
    state.plan(entries, types_pb2.Bundle(), [], page_size=500)
    assert [m.full_messages for m in state.plan(more, types_pb2.Bundle(), [], page_size=500)] == [0, 0]


JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
PEM = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----"


@pytest.mark.parametrize("secret", [JWT, PEM, "spiffe://td/spire/agent/join_token/0f1e2d3c-aaaa-bbbb"])
def test_redact_removes_secrets(secret: str) -> None:
    out = redact(f"before {secret} after")
    assert REDACTED in out and "before" in out and "after" in out
    assert "MIGH" not in out and "c2lnbmF0dXJl" not in out and "0f1e2d3c" not in out


def test_redaction_filter_covers_args_extras_and_tracebacks() -> None:
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "token %s", (JWT,), None)
    record.detail = PEM
    try:
        raise ValueError(JWT)
    except ValueError:
        import sys
        record.exc_info = sys.exc_info()
    assert RedactionFilter().filter(record)
    line = JsonFormatter().format(record)
    assert "eyJ" not in line and "BEGIN" not in line and line.count(REDACTED) >= 3


def test_rpc_counter_counts_by_status() -> None:
    from spiffe_server.metrics import RPCS
    before = RPCS.labels(method="Unit", code="NOT_FOUND")._value.get()
    with pytest.raises(GRPCError), grpc_errors("Unit"):
        raise NotFoundError("x")
    assert RPCS.labels(method="Unit", code="NOT_FOUND")._value.get() == before + 1


@pytest.mark.parametrize("spiffe_id", ["spiffe://example.org", "spiffe://example.org/spire/server",
                                       "spiffe://example.org/spire/agent/join_token/x"])
def test_reserved_ids_cannot_be_entries(spiffe_id: str) -> None:
    with pytest.raises(RequestError, match=r"entry\.spiffe_id: is reserved for the server and agents"):
        entry_from_proto(_entry(spiffe_id=spiffe_id), trust_domain=TD, now=NOW)


def test_entry_end_caps_and_refuses_expired_entries() -> None:
    from datetime import timedelta

    from spiffe_server.api.agent_service import entry_end
    from spiffe_server.errors import FailedPreconditionError
    entry = entry_from_proto(_entry(max_lifetime=60, expires_at=int(NOW.timestamp()) + 3600), trust_domain=TD,
                             now=NOW)
    assert entry_end(entry, now=NOW) == NOW + timedelta(seconds=60)
    with pytest.raises(FailedPreconditionError, match="entry has expired"):
        entry_end(entry, now=NOW + timedelta(seconds=60))

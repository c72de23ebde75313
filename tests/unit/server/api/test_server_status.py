"""The server's status table (agent API and admin API share it): every server and library error
has a decided status, and INTERNAL replies never carry the error's text."""

from __future__ import annotations

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_py.errors import SpiffeError
from spiffe_server.api.errors import INTERNAL_MESSAGE, SERVER_STATUS, grpc_errors, status_for, to_grpc_error
from spiffe_server.datastore.errors import DataStoreError
from spiffe_server.errors import ServerError
from tests.support.error_tree import error_classes, resolving_row, with_text

# Catch-all roots: a class that only reaches one of these has no decided status.
ROOTS = (SpiffeError, ServerError, DataStoreError)
SECRET = "postgresql://spiffe:hunter2@db/spiffe: connection refused"
CLASSES = error_classes("spiffe_py", "spiffe_server")


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_error_class_has_an_explicit_status(cls: type[SpiffeError]) -> None:
    row = resolving_row(SERVER_STATUS, cls)
    assert row is not None
    assert row is cls or row not in ROOTS, f"{cls.__qualname__} only maps through the catch-all {row.__qualname__}"


def test_the_walk_sees_errors_defined_deep_in_the_server() -> None:
    names = {c.__qualname__ for c in CLASSES}
    assert {"UniqueViolation", "StaleAgentSvidError", "ForwardError", "RequestError"} <= names


@pytest.mark.parametrize("cls", [c for c in CLASSES if status_for(with_text(c, "x")) is Status.INTERNAL],
                         ids=lambda c: c.__qualname__)
def test_internal_replies_carry_no_exception_text(cls: type[SpiffeError]) -> None:
    with pytest.raises(GRPCError) as exc, grpc_errors("CreateEntry"):
        raise with_text(cls, SECRET)
    assert (exc.value.status, exc.value.message) == (Status.INTERNAL, INTERNAL_MESSAGE)


@pytest.mark.parametrize("err", [RuntimeError(SECRET), KeyError(SECRET), ValueError(SECRET), OSError(SECRET)])
def test_unknown_exception_is_internal_without_its_text(err: Exception) -> None:
    mapped = to_grpc_error(err, "AttestAgent")
    assert (mapped.status, mapped.message) == (Status.INTERNAL, INTERNAL_MESSAGE)


def test_domain_errors_keep_their_text() -> None:
    mapped = to_grpc_error(ServerError.__new__(ServerError), "M")
    assert mapped.status is Status.INTERNAL
    from spiffe_server.errors import NotFoundError
    mapped = to_grpc_error(NotFoundError("entry 'e1' not found"), "GetEntry")
    assert (mapped.status, mapped.message) == (Status.NOT_FOUND, "entry 'e1' not found")

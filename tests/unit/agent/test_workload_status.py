"""The Workload API's status table: every agent and library error has a decided status, and
INTERNAL replies never carry the error's text (the handler side is in test_agent_handler.py)."""

from __future__ import annotations

import pytest
from grpclib.const import Status

from spiffe_agent.errors import AgentError
from spiffe_agent.workloadapi.status import INTERNAL_MESSAGE, WORKLOAD_STATUS, status_for, to_grpc_error
from spiffe_py.errors import SpiffeError
from tests.support.error_tree import error_classes, resolving_row, with_text

# Catch-all roots: a class that only reaches one of these has no decided status.
ROOTS = (SpiffeError, AgentError)
SECRET = "state file /var/lib/spiffe-py-agent/agent.key: bad padding 0x5ec2e7"


@pytest.mark.parametrize("cls", error_classes("spiffe_py", "spiffe_agent"),
                         ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_error_class_has_an_explicit_status(cls: type[SpiffeError]) -> None:
    row = resolving_row(WORKLOAD_STATUS, cls)
    assert row is not None
    assert row is cls or row not in ROOTS, f"{cls.__qualname__} only maps through the catch-all {row.__qualname__}"


@pytest.mark.parametrize("cls", [c for c in error_classes("spiffe_py", "spiffe_agent") if status_for(with_text(c, "x"))
                                 is Status.INTERNAL], ids=lambda c: c.__qualname__)
def test_internal_replies_carry_no_exception_text(cls: type[SpiffeError]) -> None:
    mapped = to_grpc_error(with_text(cls, SECRET))
    assert (mapped.status, mapped.message) == (Status.INTERNAL, INTERNAL_MESSAGE)


@pytest.mark.parametrize("err", [RuntimeError(SECRET), KeyError(SECRET), ValueError(SECRET)])
def test_unknown_exception_is_internal_and_logged(err: Exception, caplog: pytest.LogCaptureFixture) -> None:
    mapped = to_grpc_error(err)
    assert (mapped.status, mapped.message) == (Status.INTERNAL, INTERNAL_MESSAGE)
    assert "workload api: internal error" in caplog.text and type(err).__name__ in caplog.text


def test_the_walk_sees_errors_defined_deep_in_the_agent() -> None:
    names = {c.__qualname__ for c in error_classes("spiffe_py", "spiffe_agent")}
    assert {"StorageError", "PolicyDeniedError", "TooManyConnectionsError", "PeerCredError"} <= names


def test_validate_jwt_svid_failures_are_invalid_argument_and_denials_keep_theirs() -> None:
    from spiffe_agent.guard.decision import InvalidSubjectError, PolicyDeniedError
    from spiffe_py.errors import BundleNotFoundError, InvalidJwtSvidError, JwtSvidExpiredError
    for err in (InvalidJwtSvidError("bad"), JwtSvidExpiredError("old"), BundleNotFoundError("td"),
                InvalidSubjectError("quarantined")):
        assert status_for(err) is Status.INVALID_ARGUMENT, err
    assert status_for(PolicyDeniedError("no")) is Status.PERMISSION_DENIED

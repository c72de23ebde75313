"""The pure agent-SVID serial decision (SPIRE's agent authorizer: CertSerialNumber / NewCertSerialNumber)."""

from __future__ import annotations

import pytest
from grpclib.const import Status

from spiffe_server.api.agent_service import SerialCheck, StaleAgentSvidError, decide_agent_serial
from spiffe_server.api.errors import to_grpc_error

AGENT = "spiffe://example.org/spire/agent/join_token/abc"


@pytest.mark.parametrize(("presented", "current", "new", "expected"), [
    ("a1", "a1", "", SerialCheck.ACCEPT),  # no renewal pending
    ("a1", "a1", "b2", SerialCheck.ACCEPT),  # renewed, old SVID still in flight: not refused
    ("b2", "a1", "b2", SerialCheck.PROMOTE),  # first use of the renewed SVID
    ("b2", "b2", "", SerialCheck.ACCEPT),  # after promotion
    ("a1", "b2", "", SerialCheck.REFUSE),  # the previous SVID once the new one was used
    ("a1", "b2", "c3", SerialCheck.REFUSE),  # two renewals back
    ("c3", "a1", "b2", SerialCheck.REFUSE),  # a serial never issued to this agent (or replaced by a second renewal)
    ("", "", "", SerialCheck.REFUSE),  # empty never matches, not even an empty stored serial
    ("", "a1", "", SerialCheck.REFUSE),
    ("A1", "a1", "", SerialCheck.REFUSE),  # serials are compared in canonical (lowercase hex) form only
])
def test_decide_agent_serial(presented: str, current: str, new: str, expected: SerialCheck) -> None:
    assert decide_agent_serial(presented, current=current, new=new) is expected


def test_second_renewal_before_first_use_keeps_current_and_drops_the_unused_one() -> None:
    """RenewAgent twice with the current SVID: the first pending serial is replaced, the current one stays."""
    current, first, second = "a1", "b2", "c3"
    assert decide_agent_serial(current, current=current, new=second) is SerialCheck.ACCEPT
    assert decide_agent_serial(second, current=current, new=second) is SerialCheck.PROMOTE
    assert decide_agent_serial(first, current=current, new=second) is SerialCheck.REFUSE


def test_stale_svid_is_permission_denied_and_names_agent_not_certificate() -> None:
    err = StaleAgentSvidError(AGENT, "a1")
    mapped = to_grpc_error(err, "RenewAgent")
    assert mapped.status is Status.PERMISSION_DENIED
    assert mapped.message == f"agent: agent svid does not match the expected serial number: {AGENT!r}"
    assert (err.agent_id, err.serial) == (AGENT, "a1")

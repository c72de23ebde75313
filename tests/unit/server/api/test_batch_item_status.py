"""A BatchNewX509SVID item that fails on a server fault reports INTERNAL without the fault's text,
while the batch's other items still get their results."""

from __future__ import annotations

from typing import Any

import pytest
from grpclib.const import Status

from spiffe_py._proto.spiffepy.server.v1 import agent_pb2
from spiffe_server.api.agent_service import AgentService
from spiffe_server.datastore.errors import DataStoreError, NotFoundError

SECRET = "postgresql://spiffe:hunter2@db/spiffe: server closed the connection"


def _item_result(err: Exception) -> Any:
    service = AgentService.__new__(AgentService)  # the failing item is refused before any context is used
    params = agent_pb2.NewX509SVIDParams(entry_id="e1")
    return service._sign_result(params, err, None, authority=err, gate=None, ledger=None,  # type: ignore[arg-type]
                                issued=[])


def test_server_fault_in_a_batch_item_is_internal_without_its_text() -> None:
    result = _item_result(DataStoreError(SECRET))
    assert (result.entry_id, result.status_code, result.status_message) == ("e1", Status.INTERNAL.value,
                                                                             "internal error")


@pytest.mark.parametrize(("err", "status"), [(NotFoundError("entry 'e1' not found"), Status.NOT_FOUND)])
def test_domain_refusal_of_a_batch_item_keeps_status_and_text(err: Exception, status: Status) -> None:
    result = _item_result(err)
    assert (result.status_code, result.status_message) == (status.value, str(err))

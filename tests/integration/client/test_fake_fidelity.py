"""The fake Workload API speaks the real protocol: py-spiffe, an independent client, reads it."""

from __future__ import annotations

import grpc
import pytest
from spiffe import WorkloadApiClient as PySpiffeClient

from spiffe_py._proto import workload_pb2 as pb
from tests.support.ca import CA
from tests.support.fake_workload_api import FakeWorkloadApi, x509_response

from .conftest import WEB_ID


def test_py_spiffe_fetches_from_the_fake(api: FakeWorkloadApi, ca: CA) -> None:
    issued = ca.issue_svid(WEB_ID)
    api.set_x509(x509_response([issued], ca))
    client = PySpiffeClient(api.address)
    try:
        ctx = client.fetch_x509_context()
    finally:
        client.close()
    assert str(ctx.default_svid.spiffe_id) == WEB_ID
    assert ctx.default_svid.leaf.serial_number == issued.leaf.serial_number
    assert api.metadata == [("FetchX509SVID", {"workload.spiffe.io": "true"})]


def test_we_05_fake_rejects_a_request_without_the_security_header(api: FakeWorkloadApi) -> None:
    with grpc.insecure_channel(f"unix:{api.socket_path}") as channel:
        fetch = channel.unary_stream(
            "/SpiffeWorkloadAPI/FetchX509SVID",
            request_serializer=pb.X509SVIDRequest.SerializeToString,
            response_deserializer=pb.X509SVIDResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as info:
            next(fetch(pb.X509SVIDRequest(), timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "security header missing from request"

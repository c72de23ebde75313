"""A FetchX509SVID response over the 4 MiB gRPC clients accept is refused with a message that says why."""

from __future__ import annotations

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_agent.workloadapi.handler import MAX_RESPONSE_BYTES, _check_response_size
from spiffe_py._proto import workload_pb2


def _response(identities: int, cert_bytes: int) -> workload_pb2.X509SVIDResponse:
    return workload_pb2.X509SVIDResponse(svids=[
        workload_pb2.X509SVID(spiffe_id=f"spiffe://example.org/w{n}", x509_svid=b"c" * cert_bytes,
                              x509_svid_key=b"k" * 138, bundle=b"b" * 500) for n in range(identities)])


def test_a_response_within_the_limit_passes() -> None:
    _check_response_size(_response(100, 1200), 100)


def test_a_response_over_the_limit_is_resource_exhausted_with_its_size_and_identity_count() -> None:
    msg = _response(3000, 1500)
    assert msg.ByteSize() > MAX_RESPONSE_BYTES
    with pytest.raises(GRPCError) as exc:
        _check_response_size(msg, 3000)
    assert exc.value.status is Status.RESOURCE_EXHAUSTED
    assert f"response of {msg.ByteSize()} bytes for 3000 identities is over the {MAX_RESPONSE_BYTES} bytes" in str(
        exc.value.message)
    assert "register fewer entries" in str(exc.value.message)

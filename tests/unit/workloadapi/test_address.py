"""Endpoint address parsing: SPIFFE_Workload_Endpoint §4 (WE-08..WE-11)."""

from __future__ import annotations

import pytest

from spiffe_py.errors import InvalidEndpointError
from spiffe_py.workloadapi import Endpoint, endpoint_from_env, parse_endpoint


@pytest.mark.parametrize(
    ("text", "expected", "target"),
    [
        ("unix:///tmp/agent.sock", Endpoint("unix", path="/tmp/agent.sock"), "unix:/tmp/agent.sock"),
        ("unix:/tmp/agent.sock", Endpoint("unix", path="/tmp/agent.sock"), "unix:/tmp/agent.sock"),
        ("unix:///tmp/a%20b.sock", Endpoint("unix", path="/tmp/a b.sock"), "unix:/tmp/a b.sock"),
        # RFC 3986 §3.1: schemes are case-insensitive (Go's url.Parse agrees)
        ("UNIX:///tmp/agent.sock", Endpoint("unix", path="/tmp/agent.sock"), "unix:/tmp/agent.sock"),
        ("tcp://127.0.0.1:8000", Endpoint("tcp", host="127.0.0.1", port=8000), "ipv4:127.0.0.1:8000"),
        ("tcp://[::1]:8000", Endpoint("tcp", host="::1", port=8000), "ipv6:[::1]:8000"),
    ],
)
def test_we_09_valid_addresses(text: str, expected: Endpoint, target: str) -> None:
    endpoint = parse_endpoint(text)
    assert endpoint == expected
    assert endpoint.target == target


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "workloadapi: endpoint address cannot be empty"),
        ("/tmp/agent.sock", 'endpoint address scheme must be "unix" or "tcp"'),
        ("http://127.0.0.1:80", 'endpoint address scheme must be "unix" or "tcp"'),
        # WE-10: unix has no authority and no other component
        ("unix://host/tmp/agent.sock", "unix endpoint cannot have an authority (host or port)"),
        ("unix://host:80/tmp/agent.sock", "unix endpoint cannot have an authority (host or port)"),
        ("unix://user@/tmp/agent.sock", "unix endpoint cannot contain userinfo"),
        ("unix:///tmp/agent.sock?x=1", "endpoint address cannot contain a query"),
        ("unix:///tmp/agent.sock#frag", "endpoint address cannot contain a fragment"),
        ("unix:tmp/agent.sock", "unix endpoint path must be absolute"),
        ("unix://", "unix endpoint must include a socket path"),
        ("unix:", "unix endpoint must include a socket path"),
        ("unix:///tmp/a%00b", "unix endpoint path cannot contain nul"),
        # WE-11: tcp is an IP literal and a port, nothing else
        ("tcp://localhost:8000", "tcp endpoint host must be an ip address"),
        ("tcp://127.0.0.1", "tcp endpoint must include a port"),
        ("tcp://127.0.0.1:8000/foo", "tcp endpoint cannot contain a path"),
        ("tcp://127.0.0.1:8000/", "tcp endpoint cannot contain a path"),
        ("tcp://u:p@127.0.0.1:8000", "tcp endpoint cannot contain userinfo"),
        ("tcp://127.0.0.1:8000?x", "endpoint address cannot contain a query"),
        ("tcp://127.0.0.1:8000#x", "endpoint address cannot contain a fragment"),
        ("tcp://127.0.0.1:99999", "tcp endpoint port is invalid"),
        ("tcp://127.0.0.1:0", "tcp endpoint port is invalid"),
        ("tcp://127.0.0.1:port", "tcp endpoint port is invalid"),
        ("tcp:127.0.0.1:8000", "tcp endpoint must include a host"),
        ("tcp://", "tcp endpoint must include a host"),
    ],
)
def test_we_10_we_11_invalid_addresses(text: str, message: str) -> None:
    with pytest.raises(InvalidEndpointError) as info:
        parse_endpoint(text)
    assert message in str(info.value)
    assert str(info.value).startswith("workloadapi: ")
    if text:
        assert repr(text) in str(info.value)


def test_we_08_env_fallback() -> None:
    assert endpoint_from_env({"SPIFFE_ENDPOINT_SOCKET": "unix:///run/a.sock"}) == Endpoint("unix", path="/run/a.sock")


def test_we_08_env_missing() -> None:
    with pytest.raises(InvalidEndpointError, match="SPIFFE_ENDPOINT_SOCKET is not set"):
        endpoint_from_env({})


def test_we_08_env_invalid_value_is_rejected() -> None:
    with pytest.raises(InvalidEndpointError, match="tcp endpoint host must be an ip address"):
        endpoint_from_env({"SPIFFE_ENDPOINT_SOCKET": "tcp://agent:8000"})


def test_long_hostile_address_is_truncated_in_message() -> None:
    with pytest.raises(InvalidEndpointError) as info:
        parse_endpoint("ftp://" + "a" * 10_000)
    assert len(str(info.value)) < 400

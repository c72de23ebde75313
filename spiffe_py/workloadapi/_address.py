"""Workload API endpoint addresses (SPIFFE_Workload_Endpoint §4, WE-08..WE-11).

Pure parsing; no sockets::

    ep = parse_endpoint("unix:///tmp/agent.sock")
    assert ep.target == "unix:/tmp/agent.sock"
    ep = endpoint_from_env({"SPIFFE_ENDPOINT_SOCKET": "tcp://127.0.0.1:8000"})
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import SplitResult, unquote, urlsplit

from spiffe_py.errors import InvalidEndpointError

ENDPOINT_ENV = "SPIFFE_ENDPOINT_SOCKET"
_MAX_SHOWN = 200  # bound error messages for hostile input


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A validated Workload API address: a Unix socket path or a TCP IP literal and port."""

    scheme: Literal["unix", "tcp"]
    path: str = ""
    host: str = ""
    port: int = 0

    @property
    def target(self) -> str:
        """The grpc target string (no DNS resolution for TCP)."""
        if self.scheme == "unix":
            return f"unix:{self.path}"
        if ":" in self.host:
            return f"ipv6:[{self.host}]:{self.port}"
        return f"ipv4:{self.host}:{self.port}"


def _fail(reason: str, text: str) -> InvalidEndpointError:
    shown = text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."
    return InvalidEndpointError(f"workloadapi: {reason}: {shown!r}")


def endpoint_address(value: str) -> str:
    """A configured agent address as an endpoint URI: a bare absolute path is a Unix socket (as in
    spiffe-helper's ``agent_address``); anything else is left for :func:`parse_endpoint` to judge."""
    return "unix://" + value if value.startswith("/") else value


def parse_endpoint(text: str) -> Endpoint:
    """Parse ``unix:///abs/path`` (or ``unix:/abs/path``) or ``tcp://<ip>:<port>`` (WE-09..WE-11)."""
    if not text:
        raise InvalidEndpointError("workloadapi: endpoint address cannot be empty")
    if "?" in text:
        raise _fail("endpoint address cannot contain a query", text)
    if "#" in text:
        raise _fail("endpoint address cannot contain a fragment", text)
    try:
        url = urlsplit(text)
    except ValueError as err:
        raise _fail("endpoint address is not a valid uri", text) from err
    if url.scheme == "unix":
        return _parse_unix(url, text)
    if url.scheme == "tcp":
        return _parse_tcp(url, text)
    raise _fail('endpoint address scheme must be "unix" or "tcp"', text)


def _parse_unix(url: SplitResult, text: str) -> Endpoint:
    if "@" in url.netloc:
        raise _fail("unix endpoint cannot contain userinfo", text)
    if url.netloc:
        raise _fail("unix endpoint cannot have an authority (host or port)", text)
    if not url.path:
        raise _fail("unix endpoint must include a socket path", text)
    if not url.path.startswith("/"):
        raise _fail("unix endpoint path must be absolute", text)
    path = unquote(url.path)
    if "\x00" in path:
        raise _fail("unix endpoint path cannot contain nul", text)
    return Endpoint(scheme="unix", path=path)


def _parse_tcp(url: SplitResult, text: str) -> Endpoint:
    if not url.netloc:
        raise _fail("tcp endpoint must include a host", text)
    if "@" in url.netloc:
        raise _fail("tcp endpoint cannot contain userinfo", text)
    if url.path:
        raise _fail("tcp endpoint cannot contain a path", text)
    host = url.hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError as err:
        raise _fail("tcp endpoint host must be an ip address", text) from err
    try:
        port = url.port
    except ValueError as err:
        raise _fail("tcp endpoint port is invalid", text) from err
    if port is None:
        raise _fail("tcp endpoint must include a port", text)
    if port == 0:
        raise _fail("tcp endpoint port is invalid", text)
    return Endpoint(scheme="tcp", host=host, port=port)


def endpoint_from_env(environ: Mapping[str, str]) -> Endpoint:
    """Parse the address in ``SPIFFE_ENDPOINT_SOCKET`` (WE-08)."""
    value = environ.get(ENDPOINT_ENV, "")
    if not value:
        raise InvalidEndpointError(f"workloadapi: no endpoint address given and {ENDPOINT_ENV} is not set")
    return parse_endpoint(value)

"""The broker's TOML configuration (pure: parsing and validation, no I/O beyond reading the text given).

::

    cfg = parse_config(Path("broker.toml").read_text(), source="broker.toml")
    cfg.upstreams["openai"].inject        # "bearer" | "x-api-key" | a header name
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from spiffe_py._duration import parse_seconds
from spiffe_py._hostport import split_host_port
from spiffe_py.errors import InvalidEndpointError, SpiffeError
from spiffe_py.spiffeid import SpiffeId
from spiffe_py.workloadapi import endpoint_address, parse_endpoint

DEFAULT_PORT = 8445
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_HEADER = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")  # an RFC 9110 token
# headers a custom injection must never replace: they steer the connection or the caller's identity
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "te", "upgrade",
                               "cookie", "proxy-authorization", "keep-alive", "trailer"})
_TOP_KEYS = frozenset({"bind_address", "bind_port", "policy_file", "audience", "workload_api_socket", "data_dir",
                       "metrics_address", "metrics_port", "max_request_bytes", "max_response_bytes",
                       "upstream_connect_timeout", "upstream_read_timeout", "upstream_total_timeout", "log_level",
                       "upstream", "token_exchange", "secret_check_interval", "spiffe_id", "server_address"})
_UPSTREAM_KEYS = frozenset({"name", "base_url", "secret_file", "inject", "allow", "requests_per_minute",
                            "tokens_per_day"})
_EXCHANGE_KEYS = frozenset({"max_ttl", "max_act_depth", "audiences", "issuer"})


class ConfigError(SpiffeError, ValueError):
    """The configuration is invalid; names the file and the key."""


@dataclass(frozen=True, slots=True)
class Upstream:
    """One ``[[upstream]]``: where requests under ``/<name>/`` go and how the secret is injected."""

    name: str
    base_url: str  # no trailing slash
    secret_file: Path
    inject: str  # "bearer", "x-api-key" or a header name (lowercase)
    allow: tuple[str, ...]  # exact SPIFFE IDs or prefixes ending in "/*"
    requests_per_minute: int = 0  # per caller; 0 = no limit
    tokens_per_day: int = 0  # per caller, from the provider's usage; 0 = no limit

    @property
    def header(self) -> str:
        """The header the secret goes in."""
        return "authorization" if self.inject == "bearer" else self.inject

    def header_value(self, secret: str) -> str:
        """The header value carrying ``secret``."""
        return f"Bearer {secret}" if self.inject == "bearer" else secret

    def allows(self, spiffe_id: str) -> bool:
        """True when ``spiffe_id`` is listed, or under a listed ``.../*`` path."""
        return any(spiffe_id == a or (a.endswith("/*") and spiffe_id.startswith(a[:-1])) for a in self.allow)


@dataclass(frozen=True, slots=True)
class TokenExchange:
    """``[token_exchange]``: the RFC 8693 endpoint's limits."""

    max_ttl: timedelta = timedelta(minutes=5)
    max_act_depth: int = 3  # nested ``act`` claims at most
    audiences: tuple[str, ...] = ()  # downstream tools a token may be scoped to, besides the upstream names
    issuer: str = ""  # "" = the broker's own SPIFFE ID


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """The whole configuration."""

    upstreams: Mapping[str, Upstream]
    bind_address: str = "127.0.0.1"
    bind_port: int = DEFAULT_PORT
    policy_file: Path | None = None
    audience: str = ""  # "" = the broker's own SPIFFE ID
    workload_api_socket: str = ""  # "" = SPIFFE_ENDPOINT_SOCKET
    spiffe_id: str = ""  # which of the agent's SVIDs the broker serves with; "" = the default (first) one
    data_dir: Path = Path("/var/lib/spiffe-broker")
    metrics_address: str = "127.0.0.1"
    metrics_port: int = 0  # 0 = no metrics listener
    max_request_bytes: int = 10 * 1024 * 1024
    max_response_bytes: int = 64 * 1024 * 1024  # a non-streamed body; streams are counted as they pass
    upstream_connect_timeout: float = 10.0
    upstream_read_timeout: float = 300.0  # between two reads
    upstream_total_timeout: float = 900.0
    secret_check_interval: float = 1.0
    log_level: str = "info"
    token_exchange: TokenExchange = field(default_factory=TokenExchange)
    server_address: tuple[str, int] | None = None  # the server's Agent API; None = the audit trail stays local


def _err(source: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"config: {source}: {key}: {message}")


def _int(raw: Mapping[str, Any], key: str, default: int, source: str, *, lo: int, hi: int) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise _err(source, key, f"must be an integer in [{lo}, {hi}]")
    return value


def _seconds(raw: Mapping[str, Any], key: str, default: float, source: str) -> float:
    value = raw.get(key, default)
    if isinstance(value, str):
        try:
            value = parse_seconds(value)
        except ValueError as err:
            raise _err(source, key, str(err)) from err
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 86400:
        raise _err(source, key, "must be a duration in (0, 24h]")
    return float(value)


def _socket(raw: Mapping[str, Any], source: str) -> str:
    """``workload_api_socket``: "" (use SPIFFE_ENDPOINT_SOCKET), a Workload API URI or a bare socket path."""
    value = endpoint_address(_str(raw, "workload_api_socket", "", source))
    if value:
        try:
            parse_endpoint(value)
        except InvalidEndpointError as err:
            raise _err(source, "workload_api_socket", str(err)) from None
    return value


def _str(raw: Mapping[str, Any], key: str, default: str, source: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise _err(source, key, "must be a string")
    return value


def _check_base_url(url: str, where: str, source: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise _err(source, where, "must be an https:// URL without query or fragment")
    if parts.username or parts.password:
        raise _err(source, where, "must not carry credentials; use secret_file")
    if parts.scheme == "http":
        host = parts.hostname
        loopback = host == "localhost"
        with contextlib.suppress(ValueError):
            loopback = loopback or ipaddress.ip_address(host).is_loopback
        if not loopback:  # a key must never cross a network in clear text
            raise _err(source, where, "http:// is allowed only to a loopback address; use https://")
    return url.rstrip("/")


def _upstream(raw: object, index: int, source: str) -> Upstream:
    where = f"upstream[{index}]"
    if not isinstance(raw, dict):
        raise _err(source, where, "must be a table")
    unknown = set(raw) - _UPSTREAM_KEYS
    if unknown:
        raise _err(source, where, f"unknown keys {sorted(unknown)}")
    name = _str(raw, "name", "", source)
    if not _NAME.fullmatch(name):
        raise _err(source, f"{where}.name", "must be 1-63 of [a-z0-9_-], starting with a letter or digit")
    if name in ("token", ".well-known", "healthz", "metrics"):
        raise _err(source, f"{where}.name", f"{name!r} is a path the broker serves itself")
    base_url = _check_base_url(_str(raw, "base_url", "", source), f"{where}.base_url", source)
    secret_file = _str(raw, "secret_file", "", source)
    if not secret_file.startswith("/"):
        raise _err(source, f"{where}.secret_file", "must be an absolute path")
    inject = _str(raw, "inject", "bearer", source).lower()
    if inject not in ("bearer", "x-api-key") and (not _HEADER.fullmatch(inject) or inject in _RESERVED_HEADERS):
        raise _err(source, f"{where}.inject", "must be 'bearer', 'x-api-key' or a header name (not a reserved one)")
    allow = raw.get("allow", [])
    if not isinstance(allow, list) or not allow or not all(isinstance(a, str) for a in allow):
        raise _err(source, f"{where}.allow", "must be a non-empty list of SPIFFE IDs or path prefixes ending in /*")
    for a in allow:
        try:
            SpiffeId.parse(a[:-2] if a.endswith("/*") else a)
        except SpiffeError as err:
            raise _err(source, f"{where}.allow", f"{a[:100]!r}: {err}") from err
    return Upstream(name=name, base_url=base_url, secret_file=Path(secret_file), inject=inject, allow=tuple(allow),
                    requests_per_minute=_int(raw, "requests_per_minute", 0, source, lo=0, hi=10**9),
                    tokens_per_day=_int(raw, "tokens_per_day", 0, source, lo=0, hi=10**15))


def _exchange(raw: object, source: str) -> TokenExchange:
    if not isinstance(raw, dict):
        raise _err(source, "token_exchange", "must be a table")
    unknown = set(raw) - _EXCHANGE_KEYS
    if unknown:
        raise _err(source, "token_exchange", f"unknown keys {sorted(unknown)}")
    audiences = raw.get("audiences", [])
    if not isinstance(audiences, list) or not all(isinstance(a, str) and 0 < len(a) <= 256 for a in audiences):
        raise _err(source, "token_exchange.audiences", "must be a list of strings (1-256 characters)")
    return TokenExchange(max_ttl=timedelta(seconds=_seconds(raw, "max_ttl", 300.0, source)),
                         max_act_depth=_int(raw, "max_act_depth", 3, source, lo=0, hi=16),
                         audiences=tuple(audiences), issuer=_str(raw, "issuer", "", source))


def _spiffe_id(raw: Mapping[str, Any], source: str) -> str:
    value = _str(raw, "spiffe_id", "", source)
    if value:
        try:
            SpiffeId.parse(value)
        except SpiffeError as err:
            raise _err(source, "spiffe_id", str(err)) from err
    return value


def _server_address(raw: Mapping[str, Any], source: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port``) of the server the audit trail is forwarded to; None when unset."""
    text = _str(raw, "server_address", "", source)
    if not text:
        return None
    try:
        return split_host_port(text, default_port=None)
    except ValueError:
        raise _err(source, "server_address", f"must be host:port, got {text[:100]!r}") from None


def parse_config(text: str, *, source: str = "<string>") -> BrokerConfig:
    """Parse and validate; ConfigError names the key at fault."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config: {source}: {err}") from err
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise _err(source, "(top level)", f"unknown keys {sorted(unknown)}")
    ups = raw.get("upstream", [])
    if not isinstance(ups, list) or not ups:
        raise _err(source, "upstream", "at least one [[upstream]] is needed")
    upstreams: dict[str, Upstream] = {}
    for i, u in enumerate(ups):
        up = _upstream(u, i, source)
        if up.name in upstreams:
            raise _err(source, f"upstream[{i}].name", f"{up.name!r} appears twice")
        upstreams[up.name] = up
    policy = raw.get("policy_file")
    if policy is not None and not isinstance(policy, str):
        raise _err(source, "policy_file", "must be a string")
    audience = _str(raw, "audience", "", source)
    if len(audience) > 256:
        raise _err(source, "audience", "must be at most 256 characters")
    return BrokerConfig(
        upstreams=upstreams,
        bind_address=_str(raw, "bind_address", "127.0.0.1", source),
        bind_port=_int(raw, "bind_port", DEFAULT_PORT, source, lo=0, hi=65535),
        policy_file=Path(policy) if policy else None,
        audience=audience,
        workload_api_socket=_socket(raw, source),
        spiffe_id=_spiffe_id(raw, source),
        data_dir=Path(_str(raw, "data_dir", "/var/lib/spiffe-broker", source)),
        metrics_address=_str(raw, "metrics_address", "127.0.0.1", source),
        metrics_port=_int(raw, "metrics_port", 0, source, lo=0, hi=65535),
        max_request_bytes=_int(raw, "max_request_bytes", 10 * 1024 * 1024, source, lo=1024, hi=1 << 31),
        max_response_bytes=_int(raw, "max_response_bytes", 64 * 1024 * 1024, source, lo=1024, hi=1 << 34),
        upstream_connect_timeout=_seconds(raw, "upstream_connect_timeout", 10.0, source),
        upstream_read_timeout=_seconds(raw, "upstream_read_timeout", 300.0, source),
        upstream_total_timeout=_seconds(raw, "upstream_total_timeout", 900.0, source),
        secret_check_interval=_seconds(raw, "secret_check_interval", 1.0, source),
        log_level=_str(raw, "log_level", "info", source),
        token_exchange=_exchange(raw.get("token_exchange", {}), source),
        server_address=_server_address(raw, source),
    )

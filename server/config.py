"""spiffe-server configuration: a TOML file plus command-line overrides.

Unknown keys are an error naming the key; flags override the file::

    cfg = load_config(Path("server.toml"), {"data_dir": "/tmp/srv"})
    for warning in cfg.warnings():
        print(warning)

Durations are integers (seconds) or strings such as ``"90s"``, ``"5m"``, ``"24h"``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from spiffe_py._duration import parse_whole_seconds
from spiffe_py._serving.connections import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS_PER_PEER,
    ConnectionLimits,
)
from spiffe_py._serving.limits import SERVER_API_MESSAGE_LIMIT, check_message_limit
from spiffe_py.errors import SpiffeError
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_server.defaults import ADMIN_SOCKET_NAME, DEFAULT_DATA_DIR_NAME
from spiffe_server.federation.relationship import RelationshipError, parse_relationship
from spiffe_server.nodeattest.base import PluginConfigError
from spiffe_server.nodeattest.registry import node_attestor_plugins

DEFAULT_DATA_DIR = Path(DEFAULT_DATA_DIR_NAME)
CA_KEY_TYPES = frozenset({"ec-p256", "ec-p384", "rsa-2048", "rsa-4096"})
LOG_LEVELS = frozenset({"debug", "info", "warning", "warn", "error"})  # "warn" as SPIRE spells it
LOG_FORMATS = frozenset({"text", "json"})
_MAX_UNIX_PATH = 107  # sun_path is 108 bytes including the terminating NUL


class ConfigError(SpiffeError, ValueError):
    """The configuration is invalid; the message names the key."""


@dataclass(frozen=True, slots=True)
class UpstreamAuthorityConfig:
    """A disk-based upstream CA: our CA becomes an intermediate signed by it."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """HTTP liveness/readiness listener (off unless the table is present)."""

    bind_address: str = "127.0.0.1"
    bind_port: int = 8080
    live_path: str = "/live"
    ready_path: str = "/ready"


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Prometheus HTTP listener (off unless the table is present)."""

    bind_address: str = "127.0.0.1"
    bind_port: int = 9988


@dataclass(frozen=True, slots=True)
class FederationEndpointConfig:
    """``[federation.bundle_endpoint]``: serve this trust domain's SPIFFE bundle to federated peers.

    ``profile`` https_spiffe presents the server's own X509-SVID; https_web presents
    ``cert_file``/``key_file`` (re-read when they change). Plain HTTP only with
    ``insecure_http = true`` (and no profile). ``refresh_hint`` is the bundle's
    ``spiffe_refresh_hint`` (None: derived from ca_ttl).
    """

    bind_address: str = "127.0.0.1"
    bind_port: int = 8443
    refresh_hint: timedelta | None = None
    profile: str = "https_spiffe"
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_http: bool = False


@dataclass(frozen=True, slots=True)
class FederatesWithConfig:
    """``[federation.federates_with."<td>"]``: a static federation relationship."""

    trust_domain: str
    bundle_endpoint_url: str
    bundle_endpoint_profile: str
    endpoint_spiffe_id: str = ""
    trust_domain_bundle_path: Path | None = None  # bootstrap bundle, used when none is stored yet


@dataclass(frozen=True, slots=True)
class FederationConfig:
    """``[federation]``: the bundle endpoint this server serves and the relationships it fetches."""

    bundle_endpoint: FederationEndpointConfig | None = None
    federates_with: tuple[FederatesWithConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class OidcConfig:
    """The OIDC discovery provider's listener (off unless the table is present); ``issuer`` is also JWT-SVID "iss".

    HTTPS from ``cert_file``/``key_file``, or plain HTTP only with ``insecure_http = true``
    (behind a TLS-terminating proxy).
    """

    issuer: str
    bind_address: str = "127.0.0.1"
    bind_port: int = 8444
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_http: bool = False


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """The web console (off unless the table is present): HTTPS from ``cert_file``/``key_file``
    (admin SVIDs may log in with mTLS), or plain HTTP, then only on a loopback address."""

    bind_address: str = "127.0.0.1"
    bind_port: int = 8446
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class ServingConfig:
    """Limits of the gRPC listeners (docs/security.md, "Message size and connection limits")."""

    agent_api_max_message_bytes: int = SERVER_API_MESSAGE_LIMIT
    admin_api_max_message_bytes: int = SERVER_API_MESSAGE_LIMIT
    max_connections_per_ip: int = DEFAULT_MAX_CONNECTIONS_PER_PEER
    tls_handshake_timeout: timedelta = timedelta(seconds=DEFAULT_HANDSHAKE_TIMEOUT)
    idle_timeout: timedelta = timedelta(seconds=DEFAULT_IDLE_TIMEOUT)

    def connection_limits(self) -> ConnectionLimits:
        """The TCP listener's per-IP cap and timeouts."""
        return ConnectionLimits(max_per_peer=self.max_connections_per_ip,
                                handshake_timeout=self.tls_handshake_timeout.total_seconds(),
                                idle_timeout=self.idle_timeout.total_seconds())


@dataclass(frozen=True, slots=True)
class AuditRetentionConfig:
    """How long the central audit chain keeps records (docs/operations.md, "Audit retention").

    Records older than ``max_age`` and all but the newest ``max_records`` are deleted every
    ``prune_interval``, each deletion with a signed prune anchor so ``audit verify`` still proves
    the rest. Unset limits keep everything.
    """

    max_age: timedelta | None = None
    max_records: int | None = None
    prune_interval: timedelta = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """``[audit]``: who besides attested agents may forward its audit trail (``AgentAPI.ForwardAudit``).

    ``forwarders``: SPIFFE IDs of workloads (e.g. the AI credential broker) of this trust domain;
    their records join the central chain under their own ID. Empty (the default): agents only.
    """

    forwarders: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class AgentLimitsConfig:
    """Per-agent throttles, so one compromised agent cannot flood signing or the revocation list.

    Defaults: a 10,000-entry agent's full sync (10,000 X.509-SVIDs at once) fits the burst twice;
    rotation at half of a 1 h TTL needs about 6 SVIDs/s. An agent minting flat out gets
    ``sign_burst`` SVIDs, then ``sign_rate`` per second. Agent revocations (RevokeOwn) stop at
    ``revocation_share`` unexpired rows; admin revocations and quarantines are never refused for size.
    """

    sign_rate: float = 100.0  # SVIDs (X.509 and JWT) per second, sustained
    sign_burst: int = 20_000
    revoke_rate: float = 10.0  # serials/jtis per second through RevokeOwn, sustained
    revoke_burst: int = 2_000
    revoke_quota: int = 10_000  # unexpired revocations of one agent's SVIDs that RevokeOwn may reach
    revocation_share: int = 50_000  # unexpired revocations in all that RevokeOwn may reach


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The validated configuration of one spiffe-server."""

    trust_domain: TrustDomain
    data_dir: Path = DEFAULT_DATA_DIR
    bind_address: str = "127.0.0.1"
    bind_port: int = 8081
    socket_path: Path | None = None
    database: str | None = None
    log_level: str = "info"
    log_format: str = "text"
    ca_key_type: str = "ec-p256"
    jwt_key_type: str = ""  # "" signs JWT-SVIDs with ca_key_type; "rsa-2048" gives RS256 (Azure) with an EC X.509 CA
    ca_ttl: timedelta = timedelta(hours=24)
    default_x509_svid_ttl: timedelta = timedelta(hours=1)
    default_jwt_svid_ttl: timedelta = timedelta(minutes=5)
    jwt_issuer: str = ""
    upstream_authority: UpstreamAuthorityConfig | None = None
    # attestation type -> the plugin's parsed table (server.nodeattest.registry); join_token unless disabled
    node_attestors: Mapping[str, object] = field(default_factory=lambda: _node_attestors({}))
    admin_uids: tuple[int, ...] = ()
    # selector types entries may use although no attestor the server knows produces them
    extra_selector_types: tuple[str, ...] = ()
    health: HealthConfig | None = None
    metrics: MetricsConfig | None = None
    federation: FederationConfig = field(default_factory=FederationConfig)
    oidc: OidcConfig | None = None
    console: ConsoleConfig | None = None
    policy_file: Path | None = None
    serving: ServingConfig = field(default_factory=ServingConfig)
    agent_limits: AgentLimitsConfig = field(default_factory=AgentLimitsConfig)
    # X.509-SVID signing processes: None one per core, 0 sign in the serving process (server.ca.pool)
    signing_workers: int | None = None
    audit_retention: AuditRetentionConfig = field(default_factory=AuditRetentionConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)

    @property
    def admin_socket(self) -> Path:
        """The admin API socket (default ``<data_dir>/api.sock``)."""
        return self.socket_path if self.socket_path is not None else self.data_dir / ADMIN_SOCKET_NAME

    @property
    def database_url(self) -> str:
        """The datastore: a ``postgresql://`` URL or a SQLite file path (default in the data dir)."""
        return self.database if self.database else str(self.data_dir / "datastore.sqlite3")

    def warnings(self) -> list[str]:
        """Non-fatal problems worth telling the operator about."""
        out = []
        limit = self.ca_ttl / 6
        for name in ("default_x509_svid_ttl", "default_jwt_svid_ttl"):
            ttl: timedelta = getattr(self, name)
            if ttl > limit:
                out.append(f"config: {name} ({_fmt(ttl)}) exceeds ca_ttl/6 ({_fmt(limit)}); "
                           "SVIDs will be cut short at CA expiry")
        endpoint = self.federation.bundle_endpoint
        if endpoint is not None and endpoint.insecure_http:
            out.append("config: federation.bundle_endpoint.insecure_http: the bundle endpoint serves plain HTTP; "
                       "federated peers need the https_web or https_spiffe profile (SPIFFE Federation)")
        if self.oidc is not None and self.oidc.insecure_http:
            out.append("config: oidc.insecure_http: the discovery provider serves plain HTTP; "
                       "only run it behind a TLS-terminating proxy")
        if self.oidc is not None and urlsplit(self.oidc.issuer).port is not None:
            out.append("config: oidc.issuer: has a port; AWS and kube-apiserver expect an issuer without one")
        return out


def _fmt(delta: timedelta) -> str:
    return f"{int(delta.total_seconds())}s"


def parse_duration(value: object, key: str) -> timedelta:
    """Seconds (a number or ``"90"``) or a Go-style duration (``"90s"``, ``"1h30m"``, ``"1d"``); positive."""
    try:
        seconds = parse_whole_seconds(value)
    except ValueError as err:
        raise ConfigError(f"config: {key}: {err}") from None
    if seconds <= 0:
        raise ConfigError(f"config: {key}: must be positive, got {value!r}")
    return timedelta(seconds=seconds)


def _expect(value: object, kind: type | tuple[type, ...], key: str) -> Any:
    if isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"config: {key}: expected {_kind_name(kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"config: {key}: expected {_kind_name(kind)}, got {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {bool: "a boolean", int: "an integer", str: "a string", dict: "a table", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _table(raw: object, key: str, known: frozenset[str]) -> dict[str, Any]:
    table: dict[str, Any] = _expect(raw, dict, key)
    for name in table:
        if name not in known:
            raise ConfigError(f"config: unknown key {_join(key, name)!r}")
    return table


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _port(value: object, key: str) -> int:
    port: int = _expect(value, int, key)
    if not 0 <= port <= 65535:
        raise ConfigError(f"config: {key}: must be within 0..65535, got {port!r}")
    return port


def _address(value: object, key: str) -> str:
    text: str = _expect(value, str, key)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if text != "localhost":
            raise ConfigError(f"config: {key}: must be an IP address, got {text!r}") from None
    return text


def _choice(value: object, key: str, allowed: frozenset[str]) -> str:
    text: str = _expect(value, str, key)
    if text.lower() not in allowed:
        raise ConfigError(f"config: {key}: must be one of {', '.join(sorted(allowed))}, got {text!r}")
    return text.lower()


def _names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


def _listener(raw: object, key: str, cls: type[HealthConfig] | type[MetricsConfig]) -> Any:
    table = _table(raw, key, _names(cls))
    kwargs: dict[str, Any] = {}
    for name, value in table.items():
        sub = _join(key, name)
        if name == "bind_port":
            kwargs[name] = _port(value, sub)
        elif name == "bind_address":
            kwargs[name] = _address(value, sub)
        else:
            path: str = _expect(value, str, sub)
            if not path.startswith("/"):
                raise ConfigError(f"config: {sub}: must start with '/', got {path!r}")
            kwargs[name] = path
    return cls(**kwargs)


_MAX_ISSUER = 2048


def _issuer(value: object, key: str) -> str:
    """An https URL with a host and maybe a path; no query, fragment, userinfo or whitespace.

    Relying parties compare it byte for byte with the token's "iss" (Azure refuses any surrounding
    whitespace), so it is kept exactly as written.
    """
    text: str = _expect(value, str, key)
    if not text or len(text) > _MAX_ISSUER or not text.isascii() or not text.isprintable() or " " in text:
        raise ConfigError(f"config: {key}: must be a printable ASCII URL without spaces of at most "
                          f"{_MAX_ISSUER} characters, got {text[:100]!r}")
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises on a malformed port
    except ValueError as err:
        raise ConfigError(f"config: {key}: not a valid URL: {err}") from err
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"config: {key}: must be an https:// URL with a host, got {text!r}")
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise ConfigError(f"config: {key}: must not have a query or fragment, got {text!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"config: {key}: must not carry credentials")
    return text


def _oidc(raw: object) -> OidcConfig:
    table = _table(raw, "oidc", _names(OidcConfig))
    if "issuer" not in table:
        raise ConfigError("config: oidc.issuer: required (the https URL relying parties register)")
    kwargs: dict[str, Any] = {"issuer": _issuer(table["issuer"], "oidc.issuer")}
    if "bind_address" in table:
        kwargs["bind_address"] = _address(table["bind_address"], "oidc.bind_address")
    if "bind_port" in table:
        kwargs["bind_port"] = _port(table["bind_port"], "oidc.bind_port")
    for name in ("cert_file", "key_file"):
        if name in table:
            kwargs[name] = Path(_expect(table[name], str, f"oidc.{name}"))
    kwargs["insecure_http"] = _expect(table.get("insecure_http", False), bool, "oidc.insecure_http")
    has_files = "cert_file" in kwargs or "key_file" in kwargs
    if kwargs["insecure_http"] and has_files:
        raise ConfigError("config: oidc.insecure_http: set either cert_file and key_file or insecure_http, not both")
    if not kwargs["insecure_http"]:
        for name in ("cert_file", "key_file"):
            if name not in kwargs:
                raise ConfigError(f"config: oidc.{name}: required unless insecure_http = true")
    return OidcConfig(**kwargs)


def _console(raw: object) -> ConsoleConfig:
    table = _table(raw, "console", _names(ConsoleConfig))
    kwargs: dict[str, Any] = {}
    if "bind_address" in table:
        kwargs["bind_address"] = _address(table["bind_address"], "console.bind_address")
    if "bind_port" in table:
        kwargs["bind_port"] = _port(table["bind_port"], "console.bind_port")
    for name in ("cert_file", "key_file"):
        if name in table:
            kwargs[name] = Path(_expect(table[name], str, f"console.{name}"))
    if ("cert_file" in kwargs) != ("key_file" in kwargs):
        raise ConfigError("config: console.cert_file: set both cert_file and key_file, or neither")
    address = kwargs.get("bind_address", "127.0.0.1")
    loopback = address == "localhost" or ipaddress.ip_address(address).is_loopback
    if "cert_file" not in kwargs and not loopback:
        raise ConfigError(f"config: console.bind_address: plain HTTP only on a loopback address, got {address!r}; "
                          "set cert_file and key_file to serve HTTPS")
    return ConsoleConfig(**kwargs)
def _old_bundle_endpoint(raw: object) -> None:
    raise ConfigError("config: bundle_endpoint: replaced by [federation.bundle_endpoint] (profile https_spiffe or "
                      "https_web; plain HTTP only with insecure_http = true)")


_ENDPOINT_PROFILES = frozenset({"https_spiffe", "https_web"})


def _federation_endpoint(raw: object) -> FederationEndpointConfig:
    key = "federation.bundle_endpoint"
    table = _table(raw, key, _names(FederationEndpointConfig))
    kwargs: dict[str, Any] = {}
    if "bind_address" in table:
        kwargs["bind_address"] = _address(table["bind_address"], f"{key}.bind_address")
    if "bind_port" in table:
        kwargs["bind_port"] = _port(table["bind_port"], f"{key}.bind_port")
    if "refresh_hint" in table:
        kwargs["refresh_hint"] = parse_duration(table["refresh_hint"], f"{key}.refresh_hint")
    for name in ("cert_file", "key_file"):
        if name in table:
            kwargs[name] = Path(_expect(table[name], str, f"{key}.{name}"))
    insecure = _expect(table.get("insecure_http", False), bool, f"{key}.insecure_http")
    kwargs["insecure_http"] = insecure
    has_files = "cert_file" in kwargs or "key_file" in kwargs
    if insecure:
        if "profile" in table or has_files:
            raise ConfigError(f"config: {key}.insecure_http: plain HTTP takes no profile, cert_file or key_file")
        return FederationEndpointConfig(**kwargs)
    profile = _choice(table.get("profile", "https_spiffe"), f"{key}.profile", _ENDPOINT_PROFILES)
    kwargs["profile"] = profile
    if profile == "https_web":
        for name in ("cert_file", "key_file"):
            if name not in kwargs:
                raise ConfigError(f"config: {key}.{name}: required by profile https_web")
    elif has_files:
        raise ConfigError(f"config: {key}.cert_file: profile https_spiffe serves the server's own X509-SVID; "
                          "cert_file and key_file belong to https_web")
    return FederationEndpointConfig(**kwargs)


def _federates_with(raw: object) -> tuple[FederatesWithConfig, ...]:
    tables: dict[str, Any] = _expect(raw, dict, "federation.federates_with")
    out = []
    for name, value in tables.items():
        key = f"federation.federates_with.{name}"
        table = _table(value, key, _names(FederatesWithConfig) - {"trust_domain"})
        for required in ("bundle_endpoint_url", "bundle_endpoint_profile"):
            if required not in table:
                raise ConfigError(f"config: {key}.{required}: required")
        path = table.get("trust_domain_bundle_path")
        out.append(FederatesWithConfig(
            trust_domain=name,
            bundle_endpoint_url=_expect(table["bundle_endpoint_url"], str, f"{key}.bundle_endpoint_url"),
            bundle_endpoint_profile=_expect(table["bundle_endpoint_profile"], str, f"{key}.bundle_endpoint_profile"),
            endpoint_spiffe_id=_expect(table.get("endpoint_spiffe_id", ""), str, f"{key}.endpoint_spiffe_id"),
            trust_domain_bundle_path=None if path is None else Path(_expect(path, str,
                                                                            f"{key}.trust_domain_bundle_path"))))
    return tuple(out)


def _federation(raw: object) -> FederationConfig:
    table = _table(raw, "federation", _names(FederationConfig))
    return FederationConfig(
        bundle_endpoint=None if "bundle_endpoint" not in table else _federation_endpoint(table["bundle_endpoint"]),
        federates_with=_federates_with(table.get("federates_with", {})))


def _upstream(raw: object) -> UpstreamAuthorityConfig:
    table = _table(raw, "upstream_authority", _names(UpstreamAuthorityConfig))
    for name in ("cert_file", "key_file"):
        if name not in table:
            raise ConfigError(f"config: upstream_authority.{name}: required")
    return UpstreamAuthorityConfig(
        cert_file=Path(_expect(table["cert_file"], str, "upstream_authority.cert_file")),
        key_file=Path(_expect(table["key_file"], str, "upstream_authority.key_file")))


def _node_attestors(raw: object) -> Mapping[str, object]:
    tables: dict[str, Any] = _expect(raw, dict, "node_attestors")
    plugins = node_attestor_plugins()
    for name in tables:
        if name not in plugins:
            raise ConfigError(f"config: unknown key {_join('node_attestors', name)!r} "
                              f"(node attestors: {', '.join(sorted(plugins))})")
    configs: dict[str, object] = {}
    for name, plugin in plugins.items():
        if name not in tables and not plugin.enabled_by_default:
            continue
        key = _join("node_attestors", name)
        try:
            configs[name] = plugin.parse(_expect(tables.get(name, {}), dict, key))
        except PluginConfigError as err:
            raise ConfigError(f"config: {key}.{err}") from err
    return MappingProxyType(configs)


def _serving(raw: object) -> ServingConfig:
    table = _table(raw, "serving", _names(ServingConfig))
    kwargs: dict[str, Any] = {}
    for name, value in table.items():
        key = f"serving.{name}"
        if name.endswith("_timeout"):
            kwargs[name] = parse_duration(value, key)
        elif name == "max_connections_per_ip":
            kwargs[name] = _expect(value, int, key)
            if kwargs[name] < 1:
                raise ConfigError(f"config: {key}: must be at least 1, got {value!r}")
        else:
            try:
                kwargs[name] = check_message_limit(_expect(value, int, key), f"config: {key}")
            except ValueError as err:
                raise ConfigError(str(err)) from err
    return ServingConfig(**kwargs)


_MAX_SIGNING_WORKERS = 256


def _audit_retention(raw: object) -> AuditRetentionConfig:
    table = _table(raw, "audit_retention", _names(AuditRetentionConfig))
    kwargs: dict[str, Any] = {}
    for name, value in table.items():
        key = _join("audit_retention", name)
        if name == "max_records":
            count: int = _expect(value, int, key)
            if not 1 <= count <= 10**12:
                raise ConfigError(f"config: {key}: must be within 1..{10**12}, got {count!r}")
            kwargs[name] = count
        else:
            kwargs[name] = parse_duration(value, key)
    return AuditRetentionConfig(**kwargs)


_MAX_FORWARDERS = 100


def _audit(raw: object) -> AuditConfig:
    table = _table(raw, "audit", _names(AuditConfig))
    items: list[Any] = _expect(table.get("forwarders", []), list, "audit.forwarders")
    if len(items) > _MAX_FORWARDERS:
        raise ConfigError(f"config: audit.forwarders: at most {_MAX_FORWARDERS} SPIFFE IDs, got {len(items)}")
    forwarders = set()
    for item in items:
        try:
            spiffe_id = SpiffeId.parse(_expect(item, str, "audit.forwarders"))
        except SpiffeError as err:
            raise ConfigError(f"config: audit.forwarders: {err}") from None
        if spiffe_id.path == "/spire" or spiffe_id.path.startswith("/spire/"):
            raise ConfigError(f"config: audit.forwarders: {item!r} is reserved for the server and agents "
                              "(agents forward as agents)")
        forwarders.add(str(spiffe_id))
    return AuditConfig(forwarders=frozenset(forwarders))


def _signing_workers(raw: object) -> int:
    count: int = _expect(raw, int, "signing_workers")
    if not 0 <= count <= _MAX_SIGNING_WORKERS:
        raise ConfigError(f"config: signing_workers: must be within 0..{_MAX_SIGNING_WORKERS}, got {count!r}")
    return count


_MIN_SIGN_BURST = 500  # one full BatchNewX509SVID must fit


def _agent_limits(raw: object) -> AgentLimitsConfig:
    table = _table(raw, "agent_limits", _names(AgentLimitsConfig))
    kwargs: dict[str, Any] = {}
    for name, value in table.items():
        key = _join("agent_limits", name)
        if name.endswith("_rate"):
            rate = _expect(value, (int, float), key)
            if not 0 < rate <= 1e9:
                raise ConfigError(f"config: {key}: must be a positive number of items per second, got {value!r}")
            kwargs[name] = float(rate)
        else:
            count: int = _expect(value, int, key)
            low = _MIN_SIGN_BURST if name == "sign_burst" else 1
            if not low <= count <= 10**9:
                raise ConfigError(f"config: {key}: must be within {low}..{10**9}, got {count!r}")
            kwargs[name] = count
    return AgentLimitsConfig(**kwargs)


def _admin_uids(raw: object) -> tuple[int, ...]:
    items: list[Any] = _expect(raw, list, "admin_uids")
    return tuple(_uid(v) for v in items)


def _uid(value: object) -> int:
    uid: int = _expect(value, int, "admin_uids")
    if uid < 0:
        raise ConfigError(f"config: admin_uids: must be non-negative, got {uid!r}")
    return uid


def _selector_types(raw: object) -> tuple[str, ...]:
    items: list[Any] = _expect(raw, list, "extra_selector_types")
    out = []
    for item in items:
        name: str = _expect(item, str, "extra_selector_types")
        if not name or ":" in name or len(name) > 128 or not name.isprintable():
            raise ConfigError(f"config: extra_selector_types: {name!r} is not a selector type (no ':', 1..128 chars)")
        out.append(name)
    return tuple(out)


def _database(raw: object) -> str:
    text: str = _expect(raw, str, "database")
    if not text:
        raise ConfigError("config: database: must not be empty")
    return text


def _socket(raw: object) -> Path:
    path = Path(_expect(raw, str, "socket_path"))
    if len(str(path)) > _MAX_UNIX_PATH:
        raise ConfigError(f"config: socket_path: longer than {_MAX_UNIX_PATH} bytes: {str(path)!r}")
    return path


def _trust_domain(raw: object) -> TrustDomain:
    try:
        return TrustDomain.parse(_expect(raw, str, "trust_domain"))
    except SpiffeError as err:
        raise ConfigError(f"config: trust_domain: {err}") from err


# key -> converter of the raw TOML value; the order does not matter.
_SCALARS: dict[str, Any] = {
    "trust_domain": _trust_domain,
    "data_dir": lambda v: Path(_expect(v, str, "data_dir")),
    "bind_address": lambda v: _address(v, "bind_address"),
    "bind_port": lambda v: _port(v, "bind_port"),
    "socket_path": _socket,
    "database": _database,
    "log_level": lambda v: _choice(v, "log_level", LOG_LEVELS),
    "log_format": lambda v: _choice(v, "log_format", LOG_FORMATS),
    "ca_key_type": lambda v: _choice(v, "ca_key_type", CA_KEY_TYPES),
    "jwt_key_type": lambda v: _choice(v, "jwt_key_type", CA_KEY_TYPES),
    "ca_ttl": lambda v: parse_duration(v, "ca_ttl"),
    "default_x509_svid_ttl": lambda v: parse_duration(v, "default_x509_svid_ttl"),
    "default_jwt_svid_ttl": lambda v: parse_duration(v, "default_jwt_svid_ttl"),
    "jwt_issuer": lambda v: _expect(v, str, "jwt_issuer"),
    "upstream_authority": _upstream,
    "node_attestors": _node_attestors,
    "admin_uids": _admin_uids,
    "extra_selector_types": _selector_types,
    "health": lambda v: _listener(v, "health", HealthConfig),
    "metrics": lambda v: _listener(v, "metrics", MetricsConfig),
    "bundle_endpoint": _old_bundle_endpoint,
    "federation": _federation,
    "oidc": _oidc,
    "console": _console,
    "policy_file": lambda v: Path(_expect(v, str, "policy_file")),
    "serving": _serving,
    "agent_limits": _agent_limits,
    "signing_workers": _signing_workers,
    "audit_retention": _audit_retention,
    "audit": _audit,
}


def build_config(raw: Mapping[str, Any]) -> ServerConfig:
    """Validate a raw mapping (parsed TOML with overrides applied) into a :class:`ServerConfig`."""
    table = _table(dict(raw), "", frozenset(_SCALARS))
    if "trust_domain" not in table:
        raise ConfigError("config: trust_domain: required (set it in the file or pass --trust-domain)")
    cfg = ServerConfig(**{name: _SCALARS[name](value) for name, value in table.items()})
    if cfg.oidc is not None:
        # One issuer: the discovery document and every JWT-SVID's "iss" must agree byte for byte.
        if cfg.jwt_issuer and cfg.jwt_issuer != cfg.oidc.issuer:
            raise ConfigError(f"config: jwt_issuer: {cfg.jwt_issuer!r} differs from oidc.issuer "
                              f"{cfg.oidc.issuer!r}; set one of them, or both to the same URL")
        cfg = dataclasses.replace(cfg, jwt_issuer=cfg.oidc.issuer)
    for rel in cfg.federation.federates_with:
        _check_relationship(rel, cfg.trust_domain)
    for forwarder in sorted(cfg.audit.forwarders):  # only SVIDs of our own bundle can authenticate
        if not SpiffeId.parse(forwarder).member_of(cfg.trust_domain):
            raise ConfigError(f"config: audit.forwarders: {forwarder!r} is not in trust domain "
                              f"{cfg.trust_domain.name!r}")
    if cfg.socket_path is None and len(str(cfg.admin_socket)) > _MAX_UNIX_PATH:
        raise ConfigError(f"config: socket_path: default {str(cfg.admin_socket)!r} is too long; set socket_path")
    return cfg


def _check_relationship(rel: FederatesWithConfig, own: TrustDomain) -> None:
    try:
        parse_relationship(rel.trust_domain, rel.bundle_endpoint_url, rel.bundle_endpoint_profile,
                           rel.endpoint_spiffe_id, own=own, source="config")
    except RelationshipError as err:
        raise ConfigError(f"config: federation.federates_with.{rel.trust_domain}.{err}") from err


def parse_config(text: str, overrides: Mapping[str, Any] | None = None) -> ServerConfig:
    """Parse TOML text, then apply flag overrides (``None`` values are ignored)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config: not valid TOML: {err}") from err
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return build_config(raw)


def load_config(path: Path | None, overrides: Mapping[str, Any] | None = None) -> ServerConfig:
    """Read the TOML file at ``path`` (if any) and apply flag overrides."""
    text = ""
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"config: cannot read {str(path)!r}: {err.strerror}") from err
    return parse_config(text, overrides)

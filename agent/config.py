"""Agent configuration: TOML file (unknown keys are errors) overridden by CLI flags.

::

    cfg = load_config(Path("agent.toml"), overrides={"join_token": token})
    cfg.validate()

Example file::

    trust_domain = "example.org"
    server_address = "127.0.0.1"     # or a list: ["10.0.0.1", "10.0.0.2:9081"] (failover, in this order)
    server_port = 8081                # for addresses without a port
    trust_bundle = "/etc/spiffe-py/bootstrap.pem"
    node_attestor = "x509pop"         # default "join_token" (then join_token = "...")
    workload_attestors = ["unix", "docker"]
    max_connections_per_uid = 64      # Workload API connections one uid may hold open
    connection_idle_timeout = 300.0   # seconds a connection without an open call is kept

    [attestor.unix]                   # each attestor's own table (agent.attest.registry)
    discover_workload_path = true
    audit_fsync = "interval"          # or "always": fsync before each Workload API reply
    audit_flush_interval = 0.05       # seconds; with "interval", records reach disk at most this late
    audit_max_file_bytes = 16777216   # the trail rotates to a new file at this size (the chain continues)
    audit_max_files = 8               # rotated files kept; older ones are deleted

    [uid_rate_limit]                  # Workload API calls per caller uid; on by default
    rate = 50.0                       # per second, sustained
    burst = 200                       # at once; enabled = false turns it off

    log_level = "info"                # debug, info, warn (or warning), error
    log_format = "json"               # or "text" (default): the server's formats and keys

    [health]                          # HTTP /live and /ready (also: spiffe-agent run --health-port)
    bind_address = "127.0.0.1"
    bind_port = 8080

    [x509pop]
    cert_file = "/etc/spiffe-py/node.pem"   # leaf first, then intermediates
    key_file = "/etc/spiffe-py/node.key"
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spiffe_agent.attest.registry import default_registry
from spiffe_agent.audit import MAX_FILE_BYTES, MAX_FILES
from spiffe_agent.errors import AgentConfigError
from spiffe_agent.guard.config import GuardSettings, anomaly_config, rate_limit_config, uid_rate_limit_config
from spiffe_agent.nodeattest.base import NodeAttestorClient
from spiffe_agent.nodeattest.registry import build_node_attestor
from spiffe_py._duration import parse_seconds
from spiffe_py._hostport import split_host_port
from spiffe_py._serving.limits import WORKLOAD_API_MESSAGE_LIMIT, check_message_limit
from spiffe_py._serving.logs import LOG_FORMATS as _LOG_FORMATS
from spiffe_py._serving.logs import LOG_LEVELS as _LOG_LEVELS
from spiffe_py.errors import InvalidTrustDomainError
from spiffe_py.spiffeid import TrustDomain

# root's agent serves under /run (only root can create there); another user's under /tmp, whose
# sticky bit keeps others from replacing the agent's own directory (agent.app.prepare_socket_dir)
ROOT_SOCKET_PATH = "/run/spiffe-py-agent/public/api.sock"
USER_SOCKET_PATH = "/tmp/spiffe-py-agent/public/api.sock"  # noqa: S108 - the documented non-root location


def default_socket_path(euid: int | None = None) -> str:
    """Where ``spiffe-agent run`` serves by default: :data:`ROOT_SOCKET_PATH` as root, else :data:`USER_SOCKET_PATH`."""
    return ROOT_SOCKET_PATH if (os.geteuid() if euid is None else euid) == 0 else USER_SOCKET_PATH


def default_client_socket_path() -> str:
    """Where the client commands look by default: root's agent when its directory exists, else the non-root one.

    Only root can create ``/run/spiffe-py-agent``, so its presence cannot be faked by another user.
    """
    return ROOT_SOCKET_PATH if os.path.isdir(os.path.dirname(ROOT_SOCKET_PATH)) else USER_SOCKET_PATH
ENDPOINT_ENV = "SPIFFE_ENDPOINT_SOCKET"


def client_socket_text(environ: Mapping[str, str] | None = None) -> str:
    """The client commands' default socket: ``$SPIFFE_ENDPOINT_SOCKET`` when set, else
    :func:`default_client_socket_path`; :func:`socket_path_arg` checks and converts it."""
    return (os.environ if environ is None else environ).get(ENDPOINT_ENV, "") or default_client_socket_path()


def socket_path_arg(text: str) -> str:
    """A socket path, or a ``unix:///path`` address as SPIFFE_ENDPOINT_SOCKET holds it, as a path."""
    for prefix in ("unix://", "unix:"):
        if text.startswith(prefix):
            path = text[len(prefix):]
            if not path.startswith("/"):
                break
            return path
    else:
        if "://" not in text and not text.startswith("tcp:"):
            return text
    raise argparse.ArgumentTypeError(f"must be a socket path or unix:///absolute/path, got {text[:200]!r}")


DEFAULT_DATA_DIR = "./.spiffe-agent-data"
DEFAULT_MAX_CONNECTIONS_PER_UID = 64
DEFAULT_CONNECTION_IDLE_TIMEOUT = 300.0
AUDIT_FSYNC_MODES = ("interval", "always")
MAX_AUDIT_FLUSH_INTERVAL = 10.0  # a longer power-loss window is never what anyone wants
MIN_AUDIT_FILE_BYTES = 1024 * 1024  # a record may be up to 256 KiB; rotating below this is churn
LOG_LEVELS = _LOG_LEVELS  # "warn" is accepted as "warning", as SPIRE spells it
LOG_FORMATS = _LOG_FORMATS
HEALTH_KEYS = ("bind_address", "bind_port", "live_path", "ready_path")
MAX_SERVER_ADDRESSES = 16
def parse_server_address(text: str, default_port: int) -> tuple[str, int]:
    """``HOST[:PORT]`` (``[V6]:PORT``, or a bare IPv6 address) as (host, port); ``default_port`` when none.

    Raises:
        AgentConfigError: an empty or over-long host, stray brackets or whitespace, or a bad port.
    """
    try:
        return split_host_port(text, default_port=default_port)
    except ValueError:
        raise AgentConfigError(f"config: invalid server address: {text!r}") from None


@dataclass(frozen=True, slots=True)
class HealthListener:
    """Where the agent serves HTTP ``/live`` and ``/ready`` (the ``[health]`` table, as the server's)."""

    bind_address: str = "127.0.0.1"
    bind_port: int = 8080
    live_path: str = "/live"
    ready_path: str = "/ready"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """All agent settings; field names are the TOML keys."""

    trust_domain: str = ""
    server_address: str | tuple[str, ...] = "127.0.0.1"  # HOST[:PORT], or several to fail over between
    server_port: int = 8081
    socket_path: str = dataclasses.field(default_factory=default_socket_path)
    data_dir: str = DEFAULT_DATA_DIR
    node_attestor: str = "join_token"  # a name in agent.nodeattest.registry
    join_token: str | None = None  # the join_token attestor's evidence
    x509pop: dict[str, Any] | None = None  # [x509pop] cert_file, key_file
    trust_bundle: str | None = None
    insecure_bootstrap: bool = False
    log_level: str = "info"
    log_format: str = "text"  # or "json": one object per line, the server's keys
    health: dict[str, Any] | None = None  # [health] bind_address, bind_port: HTTP /live and /ready
    workload_attestors: tuple[str, ...] = ("unix",)
    discover_workload_path: bool = False
    workload_size_limit: int = 0
    docker_host: str | None = None  # unix:///path; default: $DOCKER_HOST or /var/run/docker.sock
    attestor: dict[str, Any] | None = None  # [attestor.<name>]: each workload attestor's own table
    max_connections_per_uid: int = DEFAULT_MAX_CONNECTIONS_PER_UID
    connection_idle_timeout: float = DEFAULT_CONNECTION_IDLE_TIMEOUT
    resync_interval: float = 60.0
    max_x509_svids: int = 1000
    # request-time policy and guardrails (docs/policy.md, "In the agent")
    policy_file: str | None = None
    rate_limit: dict[str, Any] | None = None  # [rate_limit] default = {rate, burst}, label, by_label
    uid_rate_limit: dict[str, Any] | None = None  # [uid_rate_limit] rate, burst, enabled (default: on)
    anomaly: dict[str, Any] | None = None  # [anomaly] enabled, learning_period, window, spike_factor, ...
    quarantine_on_anomaly: bool = False
    metrics_address: str = "127.0.0.1"
    metrics_port: int = 0  # 0 = no metrics listener
    audit_fsync: str = "interval"  # docs/audit.md: group commit ("interval") or per record ("always")
    audit_flush_interval: float = 0.05
    workload_api_max_message_bytes: int = WORKLOAD_API_MESSAGE_LIMIT  # refused on the length prefix
    audit_max_file_bytes: int = MAX_FILE_BYTES  # docs/audit.md: size-based rotation of the local trail
    audit_max_files: int = MAX_FILES

    def __repr__(self) -> str:
        # never show the join token
        return f"AgentConfig(trust_domain={self.trust_domain!r}, servers={self.server_address!r}:{self.server_port})"

    def server_addresses(self) -> tuple[tuple[str, int], ...]:
        """The servers as (host, port), in the order they are tried; ``server_port`` where none is given."""
        texts = (self.server_address,) if isinstance(self.server_address, str) else self.server_address
        if not 0 < len(texts) <= MAX_SERVER_ADDRESSES:
            raise AgentConfigError(f"config: give 1 to {MAX_SERVER_ADDRESSES} server addresses, not {len(texts)}")
        return tuple(parse_server_address(t, self.server_port) for t in texts)

    def td(self) -> TrustDomain:
        """The parsed trust domain."""
        try:
            return TrustDomain.parse(self.trust_domain)
        except InvalidTrustDomainError as err:
            raise AgentConfigError(f"config: invalid trust_domain: {self.trust_domain!r}") from err

    def validate(self) -> None:
        """Check values; raises AgentConfigError with the first problem."""
        self.td()
        if not 0 < self.server_port < 65536:
            raise AgentConfigError(f"config: server_port out of range: {self.server_port!r}")
        self.server_addresses()
        if self.trust_bundle and self.insecure_bootstrap:
            raise AgentConfigError("config: trust_bundle and insecure_bootstrap are mutually exclusive")
        attestor = self.node_attestor_client()
        if attestor is not None and not (self.trust_bundle or self.insecure_bootstrap):
            raise AgentConfigError(f"config: attesting with {attestor.name} needs trust_bundle or insecure_bootstrap")
        if self.trust_bundle and not Path(self.trust_bundle).is_file():
            raise AgentConfigError(f"config: trust_bundle file not found: {self.trust_bundle!r}")
        if not Path(self.socket_path).is_absolute():
            raise AgentConfigError(f"config: socket_path must be absolute: {self.socket_path!r}")
        known = default_registry().names()
        unknown = [a for a in self.workload_attestors if a not in known]
        if unknown or not self.workload_attestors:
            raise AgentConfigError(f"config: workload_attestors must be among {known!r}: {unknown!r}")
        if self.max_connections_per_uid < 1 or self.connection_idle_timeout <= 0:
            raise AgentConfigError("config: max_connections_per_uid and connection_idle_timeout must be positive")
        self.attestor_tables()
        if self.log_level not in LOG_LEVELS:
            raise AgentConfigError(f"config: log_level must be one of {LOG_LEVELS!r}: {self.log_level!r}")
        if self.log_format not in LOG_FORMATS:
            raise AgentConfigError(f"config: log_format must be one of {LOG_FORMATS!r}: {self.log_format!r}")
        self.health_listener()
        if self.resync_interval <= 0 or self.max_x509_svids < 1:
            raise AgentConfigError("config: resync_interval and max_x509_svids must be positive")
        self.guard_settings()
        if not 0 <= self.metrics_port < 65536:
            raise AgentConfigError(f"config: metrics_port out of range: {self.metrics_port!r}")
        self._validate_audit()
        try:
            check_message_limit(self.workload_api_max_message_bytes, "config: workload_api_max_message_bytes")
        except ValueError as err:
            raise AgentConfigError(str(err)) from err

    def _validate_audit(self) -> None:
        if self.audit_fsync not in AUDIT_FSYNC_MODES:
            raise AgentConfigError(f"config: audit_fsync must be one of {AUDIT_FSYNC_MODES!r}: {self.audit_fsync!r}")
        if not 0 < self.audit_flush_interval <= MAX_AUDIT_FLUSH_INTERVAL:
            raise AgentConfigError(
                f"config: audit_flush_interval must be in (0, {MAX_AUDIT_FLUSH_INTERVAL}] seconds: "
                f"{self.audit_flush_interval!r}"
            )
        if self.audit_max_file_bytes < MIN_AUDIT_FILE_BYTES or self.audit_max_files < 1:
            raise AgentConfigError(
                f"config: audit_max_file_bytes must be at least {MIN_AUDIT_FILE_BYTES} and audit_max_files at "
                f"least 1: {self.audit_max_file_bytes!r}, {self.audit_max_files!r}")

    def health_listener(self) -> HealthListener | None:
        """The HTTP health listener of ``[health]``, or None when the table is absent."""
        if self.health is None:
            return None
        unknown = sorted(set(self.health) - set(HEALTH_KEYS))
        if unknown:
            raise AgentConfigError(f"config: [health]: unknown keys: {unknown!r}")
        listener = HealthListener(**self.health)
        if not isinstance(listener.bind_address, str) or not listener.bind_address:
            raise AgentConfigError("config: [health] bind_address must be a non-empty string")
        port = listener.bind_port
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise AgentConfigError(f"config: [health] bind_port out of range: {port!r}")
        for name in ("live_path", "ready_path"):
            path = getattr(listener, name)
            if not isinstance(path, str) or not path.startswith("/") or len(path) > 256:
                raise AgentConfigError(f"config: [health] {name} must be an absolute path: {path!r}")
        return listener

    def node_attestor_client(self) -> NodeAttestorClient | None:
        """The configured node attestor, or None when it has no evidence (a stored identity must do)."""
        if self.node_attestor != "x509pop" and self.x509pop:
            raise AgentConfigError(f"config: [x509pop] is set but node_attestor is {self.node_attestor!r}")
        if self.node_attestor == "join_token" and not self.join_token:
            return None
        table = {"token": self.join_token} if self.node_attestor == "join_token" else (self.x509pop or {})
        return build_node_attestor(self.node_attestor, table)

    def attestor_tables(self) -> dict[str, dict[str, Any]]:
        """Each attestor's config table: the top-level keys it always had, overridden by ``[attestor.<name>]``."""
        tables: dict[str, dict[str, Any]] = {
            "unix": {"discover_workload_path": self.discover_workload_path,
                     "workload_size_limit": self.workload_size_limit},
            "docker": {"docker_host": self.docker_host} if self.docker_host else {},
        }
        for name, table in (self.attestor or {}).items():
            if not isinstance(table, dict):
                raise AgentConfigError(f"config: [attestor.{name}] must be a table")
            tables[name] = {**tables.get(name, {}), **table}
        return tables

    def guard_settings(self) -> GuardSettings:
        """Policy, rate limit and anomaly settings; raises AgentConfigError on bad values."""
        if self.policy_file and not Path(self.policy_file).is_file():
            raise AgentConfigError(f"config: policy_file not found: {self.policy_file!r}")
        return GuardSettings(
            policy_file=Path(self.policy_file) if self.policy_file else None,
            rate_limit=rate_limit_config(self.rate_limit),
            uid_rate_limit=uid_rate_limit_config(self.uid_rate_limit),
            anomaly=anomaly_config(self.anomaly),
            quarantine_on_anomaly=self.quarantine_on_anomaly,
        )


_FIELDS = {f.name: f for f in dataclasses.fields(AgentConfig)}
# keys that take "90s"/"5m"/"1h30m" as well as plain seconds
DURATION_KEYS = frozenset({"connection_idle_timeout", "resync_interval", "audit_flush_interval"})
_TABLES = ("rate_limit", "uid_rate_limit", "anomaly", "attestor", "x509pop", "health")


def _coerce(name: str, value: Any) -> Any:
    if name == "workload_attestors":
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise AgentConfigError("config: workload_attestors must be a list of strings")
        return tuple(value)
    if name == "server_address":
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        if not isinstance(value, str):
            raise AgentConfigError("config: server_address must be a string or a list of strings")
        return value
    if name in _TABLES:
        if not isinstance(value, dict):
            raise AgentConfigError(f"config: [{name}] must be a table")
        return value
    if name in DURATION_KEYS and isinstance(value, str):
        try:
            return parse_seconds(value)
        except ValueError as err:
            raise AgentConfigError(f"config: {name}: {err}") from None
    # socket_path, the one field with a default factory, is a str
    default = "" if _FIELDS[name].default is dataclasses.MISSING else _FIELDS[name].default
    expected: type = type(default) if default is not None else str
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise AgentConfigError(f"config: {name} must be of type {expected.__name__}")
    return value


def build_config(values: Mapping[str, Any]) -> AgentConfig:
    """Build a config from a mapping; unknown keys are errors."""
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise AgentConfigError(f"config: unknown keys: {unknown!r}")
    return AgentConfig(**{k: _coerce(k, v) for k, v in values.items()})


def load_config(path: Path | None, overrides: Mapping[str, Any]) -> AgentConfig:
    """Read the TOML file (if any), then apply non-None overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise AgentConfigError(f"config: cannot read {str(path)!r}: {err}") from err
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}  # a flag sets one key of a table, not the whole table
        elif value is not None:
            values[key] = value
    return build_config(values)

"""``helper.toml``: SPIRE spiffe-helper's key names and rules, as TOML.

::

    agent_address = "unix:///run/spiffe/api.sock"   # default $SPIFFE_ENDPOINT_SOCKET
    cmd = "nginx"
    cmd_args = "-c /etc/nginx/nginx.conf -g \\"daemon off;\\""
    renew_signal = "SIGHUP"
    cert_dir = "/etc/nginx/svid"
    svid_file_name = "svid.pem"
    svid_key_file_name = "svid_key.pem"
    svid_bundle_file_name = "svid_bundle.pem"
    jwt_svids = [{ jwt_audience = "sts.amazonaws.com", jwt_svid_file_name = "aws.jwt" }]
"""

from __future__ import annotations

import os
import shlex
import signal
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spiffe_agent.errors import AgentConfigError
from spiffe_py.workloadapi import endpoint_address

DEFAULT_AGENT_ADDRESS = "unix:///tmp/spire-agent/public/api.sock"  # spiffe-helper's default
_X509_KEYS = ("svid_file_name", "svid_key_file_name", "svid_bundle_file_name")
_KEYS = frozenset({"agent_address", "cmd", "cmd_args", "cert_dir", "renew_signal", "pid_file_name", "daemon_mode",
                   "jwt_svids", "jwt_bundle_file_name", "add_intermediates_to_bundle", *_X509_KEYS})
_JWT_KEYS = frozenset({"jwt_audience", "jwt_extra_audiences", "jwt_svid_file_name"})


class HelperConfigError(AgentConfigError):
    """``helper.toml`` is invalid; the message names the key."""


@dataclass(frozen=True, slots=True)
class JwtSvidFile:
    """One JWT-SVID file: audiences (the first is ``jwt_audience``) and where it goes."""

    audiences: tuple[str, ...]
    file_name: str


@dataclass(frozen=True, slots=True)
class HelperConfig:
    """The validated helper configuration (paths already joined to ``cert_dir``)."""

    agent_address: str
    cert_dir: Path
    cmd: str = ""
    cmd_args: tuple[str, ...] = ()
    renew_signal: signal.Signals | None = None
    pid_file_name: Path | None = None
    svid_file_name: str = ""
    svid_key_file_name: str = ""
    svid_bundle_file_name: str = ""
    add_intermediates_to_bundle: bool = False
    jwt_svids: tuple[JwtSvidFile, ...] = ()
    jwt_bundle_file_name: str = ""
    daemon_mode: bool = True

    @property
    def writes_x509(self) -> bool:
        return bool(self.svid_file_name)


def _str(table: Mapping[str, Any], key: str, default: str = "") -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise HelperConfigError(f"helper config: {key}: expected a string, got {type(value).__name__}")
    return value


def _file_name(table: Mapping[str, Any], key: str) -> str:
    name = _str(table, key)
    if name and (Path(name).is_absolute() or "/" in name or name in (".", "..")):
        raise HelperConfigError(f"helper config: {key}: {name!r} must be a plain file name inside cert_dir")
    return name


def _signal(name: str) -> signal.Signals:
    try:
        return signal.Signals[name if name.startswith("SIG") else "SIG" + name]
    except KeyError:
        raise HelperConfigError(f"helper config: renew_signal: unknown signal {name!r} (e.g. \"SIGHUP\")") from None


def _jwt_svids(value: object) -> tuple[JwtSvidFile, ...]:
    if not isinstance(value, list):
        raise HelperConfigError("helper config: jwt_svids: expected an array of tables")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise HelperConfigError(f"helper config: jwt_svids[{i}]: expected a table")
        unknown = set(item) - _JWT_KEYS
        if unknown:
            raise HelperConfigError(f"helper config: jwt_svids[{i}]: unknown key(s) {', '.join(sorted(unknown))}")
        audience, name = _str(item, "jwt_audience"), _file_name(item, "jwt_svid_file_name")
        if not audience or not name:
            raise HelperConfigError(f"helper config: jwt_svids[{i}]: jwt_audience and jwt_svid_file_name are required")
        extra = item.get("jwt_extra_audiences", [])
        if not isinstance(extra, list) or not all(isinstance(a, str) and a for a in extra):
            raise HelperConfigError(f"helper config: jwt_svids[{i}]: jwt_extra_audiences: expected strings")
        out.append(JwtSvidFile((audience, *extra), name))
    return tuple(out)


def build_config(raw: Mapping[str, Any], *, env: Mapping[str, str]) -> HelperConfig:
    """Validate a parsed ``helper.toml``; ``env`` supplies ``SPIFFE_ENDPOINT_SOCKET``. Pure (no file access)."""
    unknown = set(raw) - _KEYS
    if unknown:
        raise HelperConfigError(f"helper config: unknown key(s) {', '.join(sorted(unknown))}")
    cert_dir = _str(raw, "cert_dir")
    if not cert_dir:
        raise HelperConfigError("helper config: cert_dir: required")
    x509 = {key: _file_name(raw, key) for key in _X509_KEYS}
    if any(x509.values()) and not all(x509.values()):
        raise HelperConfigError("helper config: svid_file_name, svid_key_file_name and svid_bundle_file_name: "
                                "set all three or none")
    jwts = _jwt_svids(raw.get("jwt_svids", []))
    jwt_bundle = _file_name(raw, "jwt_bundle_file_name")
    if not any(x509.values()) and not jwts and not jwt_bundle:
        raise HelperConfigError("helper config: nothing to write: set the svid_* file names, jwt_svids "
                                "or jwt_bundle_file_name")
    daemon_mode = raw.get("daemon_mode", True)
    intermediates = raw.get("add_intermediates_to_bundle", False)
    if not isinstance(daemon_mode, bool) or not isinstance(intermediates, bool):
        raise HelperConfigError("helper config: daemon_mode and add_intermediates_to_bundle: expected true or false")
    renew = _str(raw, "renew_signal")
    pid_file = _str(raw, "pid_file_name")
    if pid_file and not renew:
        raise HelperConfigError("helper config: pid_file_name: needs renew_signal")
    try:
        cmd_args = tuple(shlex.split(_str(raw, "cmd_args")))
    except ValueError as err:
        raise HelperConfigError(f"helper config: cmd_args: {err}") from None
    address = _str(raw, "agent_address") or env.get("SPIFFE_ENDPOINT_SOCKET", "") or DEFAULT_AGENT_ADDRESS
    return HelperConfig(
        agent_address=endpoint_address(address), cert_dir=Path(cert_dir), cmd=_str(raw, "cmd"), cmd_args=cmd_args,
        renew_signal=_signal(renew) if renew else None, pid_file_name=Path(pid_file) if pid_file else None,
        add_intermediates_to_bundle=intermediates, jwt_svids=jwts, jwt_bundle_file_name=jwt_bundle,
        daemon_mode=daemon_mode, **x509)


def load_config(path: Path, *, daemon_mode: bool | None = None) -> HelperConfig:
    """Read and validate ``path``; ``daemon_mode`` (the CLI flag) overrides the file. ``cert_dir`` must exist."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise HelperConfigError(f"helper config: cannot read {path}: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise HelperConfigError(f"helper config: {path}: not valid TOML: {err}") from None
    if daemon_mode is not None:
        raw["daemon_mode"] = daemon_mode
    cfg = build_config(raw, env=os.environ)
    if not cfg.cert_dir.is_dir():
        raise HelperConfigError(f"helper config: cert_dir: {str(cfg.cert_dir)!r} is not an existing directory")
    return cfg

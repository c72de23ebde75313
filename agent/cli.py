"""``spiffe-agent`` command line.

::

    spiffe-agent run --trust-domain example.org --join-token TOKEN --trust-bundle bootstrap.pem
    spiffe-agent api fetch x509 --write ./svids
    spiffe-agent api fetch jwt --audience my-service
    spiffe-agent healthcheck
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_agent.attest.registry import default_registry
from spiffe_agent.config import (
    ENDPOINT_ENV,
    LOG_FORMATS,
    LOG_LEVELS,
    ROOT_SOCKET_PATH,
    USER_SOCKET_PATH,
    client_socket_text,
    load_config,
    socket_path_arg,
)
from spiffe_agent.errors import AgentError
from spiffe_agent.nodeattest.registry import node_attestor_names
from spiffe_py import _pem
from spiffe_py._proto import workload_pb2
from spiffe_py._proto.workload_grpc import SpiffeWorkloadAPIStub
from spiffe_py._serving.logs import configure_logging
from spiffe_py._text import printable
from spiffe_py.errors import SpiffeError
from spiffe_py.fsutil import write_private, write_public

HEADER = {"workload.spiffe.io": "true"}
RPC_TIMEOUT = 30.0


class WriteError(Exception):
    """``--write`` could not write its files; the message says why."""


def _print(data: Any, output: str) -> None:
    if output == "json":  # json escapes control characters (DEL aside)
        print(json.dumps(data, indent=2, sort_keys=True, default=str).replace("\x7f", "\\u007f"))
        return
    items = data if isinstance(data, list) else [data]
    for item in items:
        for key, value in item.items():
            print(f"{key}: {printable(str(value))}")  # hints and IDs are not ours: no raw escapes
        print()


def _svid_summary(svid: workload_pb2.X509SVID) -> dict[str, Any]:
    certs = _pem.certificates_from_der(svid.x509_svid)
    return {
        "spiffe_id": svid.spiffe_id,
        "hint": svid.hint,
        "expires_at": certs[0].not_valid_after_utc.astimezone(UTC).isoformat(),
        "chain_length": len(certs),
    }


def _der_to_pem(der: bytes) -> bytes:
    return _pem.certificates_to_pem(_pem.certificates_from_der(der))


def _write_x509(directory: Path, resp: workload_pb2.X509SVIDResponse) -> None:
    for i, svid in enumerate(resp.svids):
        write_public(directory / f"svid.{i}.pem", _der_to_pem(svid.x509_svid))
        key = _pem.private_key_from_any(svid.x509_svid_key)
        write_private(directory / f"svid.{i}.key", _pem.private_key_to_pem(key))
        write_public(directory / f"bundle.{i}.pem", _der_to_pem(svid.bundle))
    for td, der in resp.federated_bundles.items():
        name = td.removeprefix("spiffe://")
        write_public(directory / f"federated_bundle.{name}.pem", _der_to_pem(der))


async def _first_x509(stub: SpiffeWorkloadAPIStub) -> workload_pb2.X509SVIDResponse:
    async with stub.FetchX509SVID.open(metadata=HEADER, timeout=RPC_TIMEOUT) as stream:
        await stream.send_message(workload_pb2.X509SVIDRequest(), end=True)
        msg: workload_pb2.X509SVIDResponse | None = await stream.recv_message()
        await stream.cancel()
    if msg is None:
        raise GRPCError(Status.UNAVAILABLE, "stream closed without a message")
    return msg


async def _fetch_x509(stub: SpiffeWorkloadAPIStub, args: argparse.Namespace) -> None:
    resp = await _first_x509(stub)
    if args.write:
        try:
            _write_x509(Path(args.write), resp)
        except OSError as err:  # e.g. permission denied: not a connection problem
            raise WriteError(f"--write: cannot write {args.write!r}: {err.strerror or err}") from err
    _print([_svid_summary(s) for s in resp.svids], args.output)


async def _fetch_jwt(stub: SpiffeWorkloadAPIStub, args: argparse.Namespace) -> None:
    req = workload_pb2.JWTSVIDRequest(audience=args.audience, spiffe_id=args.spiffe_id or "")
    resp = await stub.FetchJWTSVID(req, metadata=HEADER, timeout=RPC_TIMEOUT)
    _print([{"spiffe_id": s.spiffe_id, "hint": s.hint, "svid": s.svid} for s in resp.svids], args.output)


async def _validate_jwt(stub: SpiffeWorkloadAPIStub, args: argparse.Namespace) -> None:
    req = workload_pb2.ValidateJWTSVIDRequest(audience=args.audience, svid=args.svid)
    resp = await stub.ValidateJWTSVID(req, metadata=HEADER, timeout=RPC_TIMEOUT)
    _print({"spiffe_id": resp.spiffe_id, "claims": MessageToDict(resp.claims)}, args.output)


async def _watch(stub: SpiffeWorkloadAPIStub, args: argparse.Namespace) -> None:
    async with stub.FetchX509SVID.open(metadata=HEADER) as stream:
        await stream.send_message(workload_pb2.X509SVIDRequest(), end=True)
        async for msg in stream:
            update = {"svids": [_svid_summary(s) for s in msg.svids], "federated": sorted(msg.federated_bundles)}
            _print(update, args.output)
            sys.stdout.flush()


async def _healthcheck(stub: SpiffeWorkloadAPIStub, args: argparse.Namespace) -> None:
    try:
        async with stub.FetchX509Bundles.open(metadata=HEADER, timeout=RPC_TIMEOUT) as stream:
            await stream.send_message(workload_pb2.X509BundlesRequest(), end=True)
            await stream.recv_message()
            await stream.cancel()
    except GRPCError as err:
        # a caller without identity still proves the agent is synced and serving
        if err.status is not Status.PERMISSION_DENIED:
            raise
    _print({"status": "healthy"}, args.output)


def _with_stub(func: Callable[[SpiffeWorkloadAPIStub, argparse.Namespace], Coroutine[Any, Any, None]]) -> Callable[
    [argparse.Namespace], int
]:
    def run(args: argparse.Namespace) -> int:
        async def go() -> None:
            channel = Channel(path=args.socket_path)
            try:
                await func(SpiffeWorkloadAPIStub(channel), args)
            finally:
                channel.close()

        try:
            asyncio.run(go())
        except GRPCError as err:
            print(f"error: {err.status.name}: {printable(str(err.message))}", file=sys.stderr)
            return 1
        except WriteError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        except (OSError, ConnectionError) as err:
            print(f"error: cannot reach the agent at {args.socket_path}: {err}", file=sys.stderr)
            return 1
        return 0

    return run


_RUN_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--trust-domain", {}),
    ("--server-address", {"action": "append", "metavar": "HOST[:PORT]",
                          "help": "server to attest to and sync with; repeat it to fail over between servers "
                                  "(tried in order; a missing port means --server-port)"}),
    ("--server-port", {"type": int, "help": "port of server addresses without one (default 8081)"}),
    ("--data-dir", {}),
    ("--node-attestor", {"choices": node_attestor_names(),
                         "help": "node attestation method (default join_token)"}),
    ("--join-token", {"help": "single-use join token for the first attestation"}),
    ("--trust-bundle", {"help": "PEM file with the server's bootstrap trust anchors"}),
    ("--log-level", {"choices": LOG_LEVELS}),
    ("--log-format", {"choices": LOG_FORMATS, "help": "text (default) or json: one object per line"}),
    ("--policy-file", {"help": argparse.SUPPRESS}),  # same as --policy
)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = [flag.lstrip("-").replace("-", "_") for flag, _ in _RUN_FLAGS]
    values = {name: getattr(args, name) for name in names}
    values["socket_path"] = args.socket_path
    if args.insecure_bootstrap:
        values["insecure_bootstrap"] = True
    if args.workload_attestor:
        values["workload_attestors"] = list(args.workload_attestor)
    x509pop = {"cert_file": args.x509pop_cert, "key_file": args.x509pop_key}
    if any(x509pop.values()):
        values["x509pop"] = {k: v for k, v in x509pop.items() if v}
    if getattr(args, "health_port", None):
        values["health"] = {"bind_port": args.health_port}
    return values


def _cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(Path(args.config) if args.config else None, _overrides(args))
    configure_logging(level=cfg.log_level, fmt=cfg.log_format)  # the server's formats, hpack/h2 kept quiet
    if cfg.log_level != "debug":
        # grpclib logs every cancelled request at info, and every Workload API stream ends that way
        logging.getLogger("grpclib.server").setLevel(logging.WARNING)
    if cfg.insecure_bootstrap:
        logging.getLogger("spiffe_agent").warning(
            "insecure bootstrap: the server is NOT authenticated during attestation")
    from spiffe_agent.app import serve  # the client commands need none of the agent's machinery

    asyncio.run(serve(cfg))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    cfg = load_config(Path(args.config) if args.config else None, _overrides(args))
    cfg.validate()
    _print({"status": "configuration is valid"}, args.output)
    return 0


_SOCKET_HELP = (f"workload api socket (default ${ENDPOINT_ENV} as unix:///path, else {ROOT_SOCKET_PATH}, "
                f"or {USER_SOCKET_PATH} when the agent is not root)")


def _common(p: argparse.ArgumentParser, *, client: bool = True) -> None:
    # clients look for root's agent first; `run` leaves it to the config (agent.config.default_socket_path)
    p.add_argument("--socket-path", default=client_socket_text() if client else None, type=socket_path_arg,
                   help=_SOCKET_HELP)
    p.add_argument("--output", choices=("json", "pretty"), default="pretty")


def _config_flags(p: argparse.ArgumentParser) -> None:
    _common(p, client=False)
    p.add_argument("--config", help="TOML config file (unknown keys are errors)")
    for flag, kwargs in _RUN_FLAGS:
        p.add_argument(flag, **kwargs)
    p.add_argument("--policy", dest="policy_file", help="CEL policy file (TOML [[rule]]), hot-reloaded on change")
    p.add_argument("--insecure-bootstrap", action="store_true", help="do not verify the server on first attestation")
    p.add_argument("--workload-attestor", action="append", choices=default_registry().names(),
                   help="repeatable; default unix")
    p.add_argument("--x509pop-cert", help="x509pop: PEM node certificate (leaf first, then intermediates)")
    p.add_argument("--x509pop-key", help="x509pop: PEM private key of the node certificate")
    p.add_argument("--health-port", type=int, metavar="PORT",
                   help="serve HTTP /live and /ready on this port ([health] bind_address, default 127.0.0.1)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    parser = argparse.ArgumentParser(prog="spiffe-agent", description="spiffe-py node agent")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, help_text in (("run", _cmd_run, "run the agent"), ("validate", _cmd_validate, "check config")):
        p = sub.add_parser(name, help=help_text)
        _config_flags(p)
        p.set_defaults(func=func)
    hc = sub.add_parser("healthcheck", help="check the agent serves the workload api")
    _common(hc)
    hc.set_defaults(func=_with_stub(_healthcheck))

    api = sub.add_parser("api", help="call the workload api").add_subparsers(dest="api", required=True)
    fetch = api.add_parser("fetch").add_subparsers(dest="kind", required=True)
    fx = fetch.add_parser("x509", help="fetch X.509-SVIDs")
    fx.add_argument("--write", help="directory for svid.N.pem / svid.N.key (0600) / bundle.N.pem")
    fx.set_defaults(func=_with_stub(_fetch_x509))
    fj = fetch.add_parser("jwt", help="fetch JWT-SVIDs")
    fj.add_argument("--audience", action="append", required=True)
    fj.add_argument("--spiffe-id")
    fj.set_defaults(func=_with_stub(_fetch_jwt))
    vj = api.add_parser("validate").add_subparsers(dest="kind", required=True).add_parser("jwt")
    vj.add_argument("--audience", required=True)
    vj.add_argument("--svid", required=True)
    vj.set_defaults(func=_with_stub(_validate_jwt))
    w = api.add_parser("watch", help="stream X.509-SVID updates")
    w.set_defaults(func=_with_stub(_watch))
    for p in (fx, fj, vj, w):
        _common(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``spiffe-agent``."""
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except (AgentError, SpiffeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return result


__all__ = ["build_parser", "main"]

"""``spiffe-agent`` command line.

::

    spiffe-agent run --trust-domain example.org --join-token TOKEN --trust-bundle bootstrap.pem
    spiffe-agent api fetch --write ./svids          # x509 by default, as SPIRE's
    spiffe-agent api fetch jwt --audience my-service
    spiffe-agent healthcheck
    spiffe-agent --version
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
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
from spiffe_py._cli import CliParser, add_version, fields, json_scalar, when
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


NOT_WORKLOAD_API = "this is not a SPIFFE Workload API (spiffe-agent) socket"


def _now() -> datetime:
    from spiffe_py.clock import SystemClock

    return SystemClock().now()


def _print(data: Any, output: str, text: str | None = None) -> None:
    """``data`` as JSON, or ``text`` (default: aligned fields of a flat object) for people."""
    if output == "json":  # json escapes control characters (DEL aside)
        print(json.dumps(data, indent=2, sort_keys=True, default=str).replace("\x7f", "\\u007f"))
        return
    if text is None:
        text = fields([(k, json_scalar(v)) for k, v in data.items()])
    print(printable(text, keep_layout=True))  # hints and IDs are not ours: no raw escapes


def _svid_summary(svid: workload_pb2.X509SVID) -> dict[str, Any]:
    certs = _pem.certificates_from_der(svid.x509_svid)
    return {
        "spiffe_id": svid.spiffe_id,
        "hint": svid.hint,
        "expires_at": certs[0].not_valid_after_utc.astimezone(UTC).isoformat(),
        "chain_length": len(certs),
    }


def _svids_text(svids: list[dict[str, Any]], *, now: datetime) -> str:
    blocks = [fields([("SPIFFE ID", s["spiffe_id"]), ("Hint", s["hint"] or "-"),
                      ("Expires at", when(datetime.fromisoformat(s["expires_at"]).timestamp(), now=now)),
                      ("Chain length", str(s["chain_length"]))]) for s in svids]
    return "\n\n".join([f"Received {len(svids)} X509-SVID{'' if len(svids) == 1 else 's'}", *blocks])


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
    summaries = [_svid_summary(s) for s in resp.svids]
    _print(summaries, args.output, _svids_text(summaries, now=_now()))


async def _fetch_jwt(stub: SpiffeWorkloadAPIStub, args: argparse.Namespace) -> None:
    req = workload_pb2.JWTSVIDRequest(audience=args.audience, spiffe_id=args.spiffe_id or "")
    resp = await stub.FetchJWTSVID(req, metadata=HEADER, timeout=RPC_TIMEOUT)
    svids = [{"spiffe_id": s.spiffe_id, "hint": s.hint, "svid": s.svid} for s in resp.svids]
    blocks = [fields([("SPIFFE ID", s["spiffe_id"]), ("Hint", s["hint"] or "-"), ("Token", s["svid"])])
              for s in svids]
    _print(svids, args.output, "\n\n".join([f"Received {len(svids)} JWT-SVID{'' if len(svids) == 1 else 's'}",
                                             *blocks]))


async def _validate_jwt(stub: SpiffeWorkloadAPIStub, args: argparse.Namespace) -> None:
    req = workload_pb2.ValidateJWTSVIDRequest(audience=args.audience, svid=args.svid)
    resp = await stub.ValidateJWTSVID(req, metadata=HEADER, timeout=RPC_TIMEOUT)
    claims = MessageToDict(resp.claims)
    now = _now()
    rows: list[tuple[str, str | list[str]]] = [("SPIFFE ID", resp.spiffe_id)]
    for name, value in sorted(claims.items()):
        if name in ("exp", "iat", "nbf") and isinstance(value, int | float):
            rows.append((name, when(value, now=now, expiry=name == "exp")))
        elif isinstance(value, list):
            rows.append((name, [json_scalar(v) for v in value]))
        else:
            rows.append((name, json_scalar(value)))
    _print({"spiffe_id": resp.spiffe_id, "claims": claims}, args.output,
           "SVID is valid.\n" + fields(rows))


async def _watch(stub: SpiffeWorkloadAPIStub, args: argparse.Namespace) -> None:
    async with stub.FetchX509SVID.open(metadata=HEADER) as stream:
        await stream.send_message(workload_pb2.X509SVIDRequest(), end=True)
        async for msg in stream:
            update = {"svids": [_svid_summary(s) for s in msg.svids], "federated": sorted(msg.federated_bundles)}
            text = _svids_text(update["svids"], now=_now())
            if update["federated"]:
                text += "\n\n" + fields([("Federated with", update["federated"])])
            _print(update, args.output, text + "\n")
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
    _print({"status": "healthy"}, args.output, "Agent is healthy.")


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

        from grpclib.exceptions import ProtocolError, StreamTerminatedError

        try:
            asyncio.run(go())
        except GRPCError as err:
            if err.status is Status.UNIMPLEMENTED or (
                    err.status is Status.UNKNOWN and "content-type" in str(err.message or "").lower()):
                # e.g. a spiffe-server admin socket: gRPC, but not the Workload API
                print(f"error: {args.socket_path!r}: {NOT_WORKLOAD_API} ({err.status.name}: "
                      f"{printable(str(err.message))})", file=sys.stderr)
                return 1
            print(f"error: {err.status.name}: {printable(str(err.message))}", file=sys.stderr)
            return 1
        except (StreamTerminatedError, ProtocolError) as err:
            print(f"error: {args.socket_path!r}: {NOT_WORKLOAD_API} (it does not speak gRPC: {err})",
                  file=sys.stderr)
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
    ("--trust-domain", {"help": "trust domain of the agent and its server (config trust_domain; required)"}),
    ("--server-address", {"action": "append", "metavar": "HOST[:PORT]",
                          "help": "server to attest to and sync with; repeat it to fail over between servers "
                                  "(tried in order; a missing port means --server-port)"}),
    ("--server-port", {"type": int, "help": "port of server addresses without one (default 8081)"}),
    ("--data-dir", {"help": "where the agent keeps its own SVID and key (config data_dir)"}),
    ("--node-attestor", {"choices": node_attestor_names(),
                         "help": "node attestation method (default join_token)"}),
    ("--join-token", {"help": "single-use join token for the first attestation"}),
    ("--trust-bundle", {"help": "PEM file with the server's bootstrap trust anchors"}),
    ("--log-level", {"choices": LOG_LEVELS, "help": "(config log_level; default info)"}),
    ("--log-format", {"choices": LOG_FORMATS, "help": "text or json, one object per line (config log_format; "
                                                      "default text)"}),
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
    _print({"status": "configuration is valid"}, args.output, "configuration is valid")
    return 0


_SOCKET_HELP = (f"workload api socket (default ${ENDPOINT_ENV} as unix:///path, else {ROOT_SOCKET_PATH}, "
                f"or {USER_SOCKET_PATH} when the agent is not root)")


def _common(p: argparse.ArgumentParser, *, client: bool = True, inherit: bool = False) -> None:
    # clients look for root's agent first; `run` leaves it to the config (agent.config.default_socket_path).
    # `inherit`: a kind under `api fetch` keeps what `api fetch --socket-path X x509` set before it
    socket_default = argparse.SUPPRESS if inherit else client_socket_text() if client else None
    p.add_argument("--socket-path", default=socket_default, type=socket_path_arg, help=_SOCKET_HELP)
    p.add_argument("--output", choices=("json", "pretty"), default=argparse.SUPPRESS if inherit else "pretty",
                   help="pretty: aligned fields for people; json: a stable document for scripts (default: pretty)")


def _config_flags(p: argparse.ArgumentParser) -> None:
    _common(p, client=False)
    p.add_argument("--config", metavar="FILE", help="TOML config file (unknown keys are errors); flags override it")
    for flag, kwargs in _RUN_FLAGS:
        p.add_argument(flag, **kwargs)
    p.add_argument("--policy", dest="policy_file", help="CEL policy file (TOML [[rule]]), hot-reloaded on change")
    p.add_argument("--insecure-bootstrap", action="store_true", help="do not verify the server on first attestation")
    p.add_argument("--workload-attestor", action="append", choices=default_registry().names(),
                   help="workload attestor to run (repeat; default unix)")
    p.add_argument("--x509pop-cert", help="x509pop: PEM node certificate (leaf first, then intermediates)")
    p.add_argument("--x509pop-key", help="x509pop: PEM private key of the node certificate")
    p.add_argument("--health-port", type=int, metavar="PORT",
                   help="serve HTTP /live and /ready on this port ([health] bind_address, default 127.0.0.1)")


def _cmd_helper(args: argparse.Namespace) -> int:
    from spiffe_agent.helper.runner import main as helper_main

    return helper_main(Path(args.config), daemon_mode=None if args.daemon_mode is None else args.daemon_mode == "true")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    parser = CliParser(prog="spiffe-agent", description="spiffe-py node agent: run it, or call its Workload API")
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, func, help_text in (("run", _cmd_run, "run the agent"),
                                  ("validate", _cmd_validate, "check the configuration without starting anything")):
        p = sub.add_parser(name, help=help_text, description=help_text)
        _config_flags(p)
        p.set_defaults(func=func)
    hc = sub.add_parser("healthcheck", help="check the agent serves the Workload API",
                        description="check the agent serves the Workload API (exit 1 if not)")
    _common(hc)
    hc.set_defaults(func=_with_stub(_healthcheck))

    api_text = "call the Workload API: fetch X509-SVIDs (default) or JWT-SVIDs, validate a JWT-SVID, watch updates"
    api = sub.add_parser("api", help=api_text, description=api_text).add_subparsers(
        dest="api", required=True, metavar="COMMAND")
    fetch_text = "fetch SVIDs: x509 (the default when no kind is given) or jwt"
    fetch_parser = api.add_parser("fetch", help=fetch_text, description=fetch_text)
    fetch = fetch_parser.add_subparsers(dest="kind", required=False, metavar="KIND")
    fx = fetch.add_parser("x509", help="fetch X509-SVIDs, their keys and bundles",
                          description="fetch X509-SVIDs, their keys and bundles")
    fj = fetch.add_parser("jwt", help="fetch JWT-SVIDs for an audience", description="fetch JWT-SVIDs for an audience")
    fj.add_argument("--audience", action="append", required=True, help="aud claim of the JWT-SVID (repeat)")
    fj.add_argument("--spiffe-id", help="only the SVID of this SPIFFE ID (default: every one the workload has)")
    fj.set_defaults(func=_with_stub(_fetch_jwt))
    # `api fetch [x509] --write DIR`: the flags of x509 also work without the kind, as in SPIRE
    for p in (fetch_parser, fx):
        p.add_argument("--write", metavar="DIR", default=None if p is fetch_parser else argparse.SUPPRESS,
                       help="directory for svid.N.pem / svid.N.key (0600) / bundle.N.pem")
        p.set_defaults(func=_with_stub(_fetch_x509))
    validate_text = "validate a JWT-SVID"
    validate = api.add_parser("validate", help=validate_text, description=validate_text).add_subparsers(
        dest="kind", required=True, metavar="KIND")
    vj = validate.add_parser("jwt", help="validate a JWT-SVID for an audience",
                             description="validate a JWT-SVID for an audience")
    vj.add_argument("--audience", required=True, help="the audience the token must be for")
    vj.add_argument("--svid", required=True, help="the token")
    vj.set_defaults(func=_with_stub(_validate_jwt))
    helper = sub.add_parser("helper", help="write SVIDs to files and run or signal a program on rotation "
                            "(SPIRE's spiffe-helper)")
    helper.add_argument("--config", required=True, help="helper.toml (spiffe-helper key names)")
    helper.add_argument("--daemon-mode", choices=("true", "false"), help="override daemon_mode (default: the file's, "
                        "else true)")
    helper.set_defaults(func=_cmd_helper)

    w = api.add_parser("watch", help="stream X509-SVID updates until interrupted",
                       description="stream X509-SVID updates until interrupted")
    w.set_defaults(func=_with_stub(_watch))
    for p in (fetch_parser, vj, w):
        _common(p)
    for p in (fx, fj):
        _common(p, inherit=True)
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

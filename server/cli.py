"""The ``spiffe-server`` command line: run the server or talk to it over its admin socket.

::

    spiffe-server run --trust-domain example.org --data-dir /var/lib/spiffe-server
    spiffe-server entry create --parent-id spiffe://example.org/node --spiffe-id spiffe://example.org/web \\
        --selector unix:uid:1000 --output json

Every admin command takes ``--socket-path`` and ``--output json|pretty``. On error a
single line naming the field goes to stderr, the exit status is 1 and nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpclib.client import Channel
from grpclib.exceptions import GRPCError

from server.api.convert import bundle_from_proto, bundle_to_proto
from server.audit import anchor_problem, export_head, parse_anchor
from server.config import DEFAULT_DATA_DIR, ConfigError, ServerConfig, load_config
from server.dnsnames import DnsNameError, check_dns_name
from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, types_pb2
from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub
from spiffe_py._text import printable
from spiffe_py.audit import verify_trail
from spiffe_py.bundle import SpiffeBundle, X509Bundle
from spiffe_py.errors import SpiffeError
from spiffe_py.fsutil import write_private, write_public
from spiffe_py.spiffeid import SpiffeId, TrustDomain

DEFAULT_SOCKET = DEFAULT_DATA_DIR / "api.sock"
RPC_TIMEOUT = 30.0
MAX_SECONDS = 2**31 - 1  # durations are int32 on the wire
MAX_INT64 = 2**63 - 1


class CliError(Exception):
    """A one-line user-facing error."""


# -- rendering -----------------------------------------------------------------------------------


def _selectors(items: Sequence[types_pb2.Selector]) -> list[str]:
    return [f"{s.type}:{s.value}" for s in items]


def entry_json(e: types_pb2.Entry) -> dict[str, Any]:
    """An entry as the JSON object the CLI prints."""
    return {
        "id": e.id, "spiffe_id": e.spiffe_id, "parent_id": e.parent_id, "selectors": _selectors(e.selectors),
        "x509_svid_ttl": e.x509_svid_ttl, "jwt_svid_ttl": e.jwt_svid_ttl, "dns_names": list(e.dns_names),
        "hint": e.hint, "admin": e.admin, "downstream": e.downstream, "federates_with": list(e.federates_with),
        "expires_at": e.expires_at, "revision": e.revision, "created_at": e.created_at, "labels": dict(e.labels),
        "bind_to_process": e.bind_to_process, "max_lifetime": e.max_lifetime, "jwt_claims": dict(e.jwt_claims),
        "quarantined": e.quarantined,
    }


def agent_json(a: types_pb2.Agent) -> dict[str, Any]:
    """An agent as the JSON object the CLI prints (``new_serial``/``new_expires_at`` only while one is pending)."""
    out = {
        "spiffe_id": a.spiffe_id, "attestation_type": a.attestation_type, "serial": a.serial,
        "expires_at": a.expires_at, "banned": a.banned, "selectors": _selectors(a.selectors),
        "can_reattest": a.can_reattest, "created_at": a.created_at,
    }
    if a.new_serial:  # the SVID the last RenewAgent issued, not presented yet (docs/security.md)
        out.update(new_serial=a.new_serial, new_expires_at=a.new_expires_at)
    return out


def _one_line(value: Any) -> str:
    """A value as one printable line: its control characters (newlines too) escaped."""
    return printable(str(value))


def _pretty(value: Any, indent: str = "") -> str:
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, list) and item and isinstance(item[0], dict):
                lines.append(f"{indent}{key}:")
                lines.extend(_pretty(sub, indent + "  ") + "\n" for sub in item)
            elif isinstance(item, list):
                lines.append(f"{indent}{key}: {', '.join(map(_one_line, item))}")
            elif isinstance(item, dict) and item and key not in ("labels", "jwt_claims"):
                lines.append(f"{indent}{key}:\n{_pretty(item, indent + '  ')}")
            elif isinstance(item, dict):
                lines.append(f"{indent}{key}: {', '.join(f'{_one_line(k)}={_one_line(v)}' for k, v in item.items())}")
            else:
                lines.append(f"{indent}{key}: {_one_line(item)}")
        return "\n".join(lines)
    return f"{indent}{_one_line(value)}"


def emit(args: argparse.Namespace, value: Any, text: str | None = None) -> None:
    """Print ``value`` as JSON, or as ``text`` (default: key/value lines) for ``--output pretty``.

    Strings come from operators and peers, so no control character reaches the terminal raw:
    JSON escapes them (DEL included), pretty output shows them as ``\\xNN``.
    """
    if args.output == "json":
        print(json.dumps(value, indent=2, sort_keys=False).replace("\x7f", "\\u007f"))
    else:
        print(printable(text if text is not None else _pretty(value), keep_layout=True))


# -- bundles (wire form -> pem / spiffe JSON) -----------------------------------------------------


def bundle_text(pb: types_pb2.Bundle, fmt: str) -> str:
    """A wire bundle as PEM certificates or SPIFFE bundle JSON."""
    bundle = bundle_from_proto(pb)
    if fmt == "pem":
        return bundle.x509_bundle().to_pem().decode()
    return bundle.to_json().decode()


def _read_bundle(args: argparse.Namespace) -> types_pb2.Bundle:
    try:
        td = TrustDomain.parse(args.id)
    except SpiffeError as err:
        raise CliError(f"--id: {err}") from err
    data = sys.stdin.buffer.read() if args.path == "-" else _read_file(args.path, "--path")
    try:
        if args.format == "pem":
            return bundle_to_proto(SpiffeBundle(td, X509Bundle.parse_pem(td, data).authorities))
        return bundle_to_proto(SpiffeBundle.parse(td, data))
    except SpiffeError as err:
        raise CliError(f"--path: {err}") from err


def _read_file(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise CliError(f"{flag}: cannot read {path!r}: {err.strerror}") from err


# -- request builders ----------------------------------------------------------------------------


def _pairs(items: Sequence[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{flag}: must be key=value, got {item!r}")
        out[key] = value
    return out


def _selector_pbs(items: Sequence[str] | None) -> list[types_pb2.Selector]:
    out = []
    for item in items or ():
        kind, sep, value = item.partition(":")
        if not sep or not kind or not value:
            raise CliError(f"--selector: must be of the form type:value, got {item!r}")
        out.append(types_pb2.Selector(type=kind, value=value))
    return out


def entry_from_args(args: argparse.Namespace) -> types_pb2.Entry:
    """The entry described by ``entry create|update`` flags."""
    parent = args.parent_id
    if args.node:
        if parent:
            raise CliError("--node: cannot be combined with --parent-id")
        parent = _server_id(args.spiffe_id)
    return types_pb2.Entry(
        id=args.entry_id or "", spiffe_id=args.spiffe_id or "", parent_id=parent or "",
        selectors=_selector_pbs(args.selector), x509_svid_ttl=args.x509_svid_ttl, jwt_svid_ttl=args.jwt_svid_ttl,
        dns_names=args.dns_name or [], hint=args.hint, admin=args.admin, downstream=args.downstream,
        federates_with=args.federates_with or [], expires_at=args.expires_at, labels=_pairs(args.label, "--label"),
        bind_to_process=args.bind_to_process, max_lifetime=args.max_lifetime,
        jwt_claims=_pairs(args.jwt_claim, "--jwt-claim"),
    )


def _server_id(spiffe_id: str | None) -> str:
    try:
        sid = SpiffeId.parse(spiffe_id or "")
    except SpiffeError as err:
        raise CliError(f"--spiffe-id: {err}") from err
    return f"{sid.trust_domain.id_string()}/spire/server"


def _csr(spiffe_id: str, dns_names: Sequence[str]) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
    sans += [x509.DNSName(n) for n in dns_names]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])] if dns_names else [])
    csr = (x509.CertificateSigningRequestBuilder().subject_name(name)
           .add_extension(x509.SubjectAlternativeName(sans), critical=False).sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.DER)


def _pem_chain(ders: Sequence[bytes]) -> bytes:
    return b"".join(x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM) for d in ders)


# -- admin commands ------------------------------------------------------------------------------

Handler = Callable[[AdminAPIStub, argparse.Namespace], Awaitable[None]]


async def cmd_token_generate(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """token generate"""
    tok = await api.CreateJoinToken(admin_pb2.CreateJoinTokenRequest(ttl=args.ttl, spiffe_id=args.spiffe_id or ""))
    emit(args, {"value": tok.value, "expires_at": tok.expires_at, "agent_id": tok.agent_id},
         f"Token: {tok.value}\nAgent ID: {tok.agent_id}")


async def cmd_entry_create(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """entry create"""
    entry = await api.CreateEntry(admin_pb2.CreateEntryRequest(entry=entry_from_args(args)))
    emit(args, entry_json(entry))


async def cmd_entry_update(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """entry update"""
    if args.spiffe_id is None:  # issue 6: no --spiffe-id means a patch of labels / quarantine only
        emit(args, entry_json(await api.PatchEntry(patch_from_args(args))))
        return
    if args.remove_label or args.clear_quarantine:
        raise CliError("--remove-label/--clear-quarantine: use without --spiffe-id (a patch, not a replace)")
    entry = await api.UpdateEntry(admin_pb2.UpdateEntryRequest(entry=entry_from_args(args)))
    emit(args, entry_json(entry))


async def cmd_entry_delete(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """entry delete"""
    await api.DeleteEntry(admin_pb2.DeleteEntryRequest(id=args.entry_id))
    emit(args, {"deleted": args.entry_id}, f"Deleted entry {args.entry_id}")


async def cmd_entry_show(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """entry show"""
    if args.entry_id:
        entries = [await api.GetEntry(admin_pb2.GetEntryRequest(id=args.entry_id))]
    else:
        entries = await _all_pages(api.ListEntries, admin_pb2.ListEntriesRequest(
            spiffe_id=args.spiffe_id or "", parent_id=args.parent_id or "", selectors=_selector_pbs(args.selector)),
            lambda page: page.entries)
    emit(args, {"entries": [entry_json(e) for e in entries]},
         f"Found {len(entries)} entries\n" + "\n\n".join(_pretty(entry_json(e)) for e in entries))


_T = TypeVar("_T")


async def _all_pages(call: Callable[[Any], Awaitable[Any]], req: Any, items: Callable[[Any], Iterable[_T]]) -> list[_T]:
    """Every item of a paged List RPC: follow ``next_page_token`` (set on ``req``) to the last page."""
    out: list[_T] = []
    while True:
        page = await call(req)
        out.extend(items(page))
        if not page.next_page_token:
            return out
        req.page_token = page.next_page_token


async def cmd_entry_count(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """entry count"""
    count = (await api.CountEntries(admin_pb2.CountRequest())).count
    emit(args, {"count": count}, f"{count} registration entries")


async def cmd_agent_list(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """agent list"""
    agents: list[types_pb2.Agent] = await _all_pages(api.ListAgents, admin_pb2.ListAgentsRequest(),
                                                     lambda page: page.agents)
    emit(args, {"agents": [agent_json(a) for a in agents]},
         f"Found {len(agents)} attested agents\n" + "\n\n".join(_pretty(agent_json(a)) for a in agents))


async def cmd_agent_show(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """agent show"""
    emit(args, agent_json(await api.GetAgent(admin_pb2.AgentRequest(spiffe_id=args.spiffe_id))))


async def cmd_agent_ban(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """agent ban"""
    await api.BanAgent(admin_pb2.AgentRequest(spiffe_id=args.spiffe_id))
    emit(args, {"banned": args.spiffe_id}, f"Agent banned: {args.spiffe_id}")


async def cmd_agent_evict(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """agent evict"""
    await api.EvictAgent(admin_pb2.AgentRequest(spiffe_id=args.spiffe_id))
    emit(args, {"evicted": args.spiffe_id}, f"Agent evicted: {args.spiffe_id}")


async def cmd_agent_count(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """agent count"""
    count = (await api.CountAgents(admin_pb2.CountRequest())).count
    emit(args, {"count": count}, f"{count} attested agents")


async def cmd_bundle_show(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """bundle show"""
    text = bundle_text(await api.GetBundle(admin_pb2.GetBundleRequest()), args.format)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


async def cmd_bundle_list(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """bundle list"""
    bundles = (await api.ListFederatedBundles(admin_pb2.ListFederatedBundlesRequest())).bundles
    if args.output == "json":
        emit(args, {"bundles": [{"trust_domain": b.trust_domain, args.format: bundle_text(b, args.format)}
                                for b in bundles]})
        return
    for b in bundles:
        print(f"****************************************\n* {b.trust_domain}\n"
              f"****************************************\n{bundle_text(b, args.format)}")


async def cmd_bundle_set(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """bundle set"""
    bundle = _read_bundle(args)
    await api.SetFederatedBundle(admin_pb2.SetFederatedBundleRequest(bundle=bundle))
    emit(args, {"trust_domain": bundle.trust_domain}, "bundle set")


async def cmd_bundle_delete(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """bundle delete"""
    await api.DeleteFederatedBundle(admin_pb2.DeleteFederatedBundleRequest(trust_domain=args.id))
    emit(args, {"deleted": args.id}, "bundle deleted")


async def cmd_x509_mint(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """x509 mint"""
    for name in args.dns_name or ():
        try:
            check_dns_name(name)
        except DnsNameError as err:
            raise CliError(f"--dns-name: {err}") from None
    key, csr = _csr(args.spiffe_id, args.dns_name or [])
    resp = await api.MintX509SVID(admin_pb2.MintX509SVIDRequest(csr=csr, ttl=args.ttl))
    svid = _pem_chain(resp.svid_chain)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    bundle = _pem_chain(resp.bundle.x509_authorities)
    if args.write:
        out = Path(args.write)
        with _writing(out):
            write_public(out / "svid.pem", svid)
            write_private(out / "key.pem", key_pem)
            write_public(out / "bundle.pem", bundle)
        emit(args, {"svid": str(out / "svid.pem"), "key": str(out / "key.pem"), "bundle": str(out / "bundle.pem")},
             f"X509-SVID written to {out / 'svid.pem'}\nPrivate key written to {out / 'key.pem'}\n"
             f"Root CAs written to {out / 'bundle.pem'}")
        return
    emit(args, {"svid": svid.decode(), "key": key_pem.decode(), "bundle": bundle.decode()},
         f"X509-SVID:\n{svid.decode()}\nPrivate key:\n{key_pem.decode()}\nRoot CAs:\n{bundle.decode()}")


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Report a failed ``--write`` as what it is (e.g. permission denied), not as a socket error."""
    try:
        yield
    except OSError as err:
        raise CliError(f"--write: cannot write {str(path)!r}: {err.strerror or err}") from err


async def cmd_jwt_mint(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """jwt mint"""
    resp = await api.MintJWTSVID(admin_pb2.MintJWTSVIDRequest(spiffe_id=args.spiffe_id, audience=args.audience,
                                                               ttl=args.ttl))
    if args.write:
        with _writing(Path(args.write)):
            write_private(Path(args.write), resp.token.encode())
    emit(args, {"token": resp.token, "expires_at": resp.expires_at}, resp.token)


async def cmd_healthcheck(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """healthcheck"""
    resp = await api.Health(admin_pb2.HealthRequest())
    if not (resp.live and resp.ready):
        failing = ", ".join(f"{k}: {v}" for k, v in sorted(resp.checks.items()) if v != "ok")
        raise CliError(f"server is unhealthy: {failing or 'not ready'}")
    emit(args, {"live": resp.live, "ready": resp.ready, "checks": dict(resp.checks)}, "Server is healthy.")


# -- revocation and local authorities (issue 5) ----------------------------------------------------


def revocation_json(r: types_pb2.Revocation) -> dict[str, Any]:
    """A revocation as the JSON object the CLI prints."""
    return {"kind": r.kind, "value": r.value, "spiffe_id": r.spiffe_id, "entry_id": r.entry_id,
            "agent_id": r.agent_id, "reason": r.reason, "revoked_at": r.revoked_at, "expires_at": r.expires_at}


def _emit_revoked(args: argparse.Namespace, resp: admin_pb2.RevokeResponse) -> None:
    revs = [revocation_json(r) for r in resp.revocations]
    emit(args, {"revocations": revs}, f"Revoked {len(revs)} SVIDs\n" + "\n\n".join(_pretty(r) for r in revs))


async def cmd_revoke_svid(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """revoke svid"""
    if (args.serial is None) == (args.jti is None):
        raise CliError("revoke svid: give exactly one of --serial and --jti")
    req = admin_pb2.RevokeSvidRequest(reason=args.reason)
    if args.serial is not None:
        req.x509_serial = args.serial
    else:
        req.jwt_id = args.jti
    _emit_revoked(args, await api.RevokeSvid(req))


async def cmd_revoke_entry(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """revoke entry"""
    _emit_revoked(args, await api.RevokeEntry(admin_pb2.RevokeEntryRequest(id=args.entry_id, reason=args.reason,
                                                                           delete=args.delete)))


async def cmd_revoke_agent(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """revoke agent"""
    _emit_revoked(args, await api.RevokeAgent(admin_pb2.RevokeAgentRequest(spiffe_id=args.spiffe_id,
                                                                           reason=args.reason)))


async def cmd_revocation_list(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """revocation list"""
    revs: list[types_pb2.Revocation] = await _all_pages(
        api.ListRevocations, admin_pb2.ListRevocationsRequest(page_size=1000), lambda page: page.revocations)
    items = [revocation_json(r) for r in revs]
    emit(args, {"revocations": items}, f"Found {len(items)} revocations\n" + "\n\n".join(_pretty(r) for r in items))


_AUTHORITY_RPCS = {"show": "ShowLocalAuthorities", "prepare": "PrepareLocalAuthority",
                   "activate": "ActivateLocalAuthority", "taint": "TaintLocalAuthority",
                   "revoke": "RevokeLocalAuthority"}


async def cmd_localauthority(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """localauthority x509|jwt show|prepare|activate|taint|revoke"""
    if args.action in ("taint", "revoke") and not args.authority_id:
        raise CliError(f"localauthority {args.action}: --authority-id is required")
    rpc = getattr(api, _AUTHORITY_RPCS[args.action])
    resp = await rpc(admin_pb2.LocalAuthorityRequest(kind=args.kind, authority_id=args.authority_id or ""))
    items = [{"authority_id": a.authority_id, "status": a.status, "not_before": a.not_before,
              "not_after": a.not_after, "tainted": a.tainted} for a in resp.authorities]
    emit(args, {"authorities": items}, "\n\n".join(_pretty(a) for a in items))


# -- audit, labels and quarantine (issue 6) --------------------------------------------------------

# entry update flags that only a full replace (with --spiffe-id) may use
_REPLACE_ONLY = ("parent_id", "node", "selector", "x509_svid_ttl", "jwt_svid_ttl", "dns_name", "hint", "admin",
                 "downstream", "federates_with", "expires_at", "bind_to_process", "max_lifetime", "jwt_claim")


def patch_from_args(args: argparse.Namespace) -> admin_pb2.PatchEntryRequest:
    """``entry update --entry-id ID [--label k=v] [--remove-label k] [--clear-quarantine]`` without --spiffe-id."""
    used = [name for name in _REPLACE_ONLY if getattr(args, name)]
    if used:
        flag = "--" + used[0].replace("_", "-")
        raise CliError(f"{flag}: needs --spiffe-id (without it, entry update only changes labels and quarantine)")
    if not (args.label or args.remove_label or args.clear_quarantine):
        raise CliError("entry update: give --spiffe-id (replace) or --label/--remove-label/--clear-quarantine")
    return admin_pb2.PatchEntryRequest(id=args.entry_id, set_labels=_pairs(args.label, "--label"),
                                       remove_labels=args.remove_label or [], clear_quarantine=args.clear_quarantine)


async def cmd_entry_quarantine(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """entry quarantine"""
    entry = await api.QuarantineEntry(admin_pb2.QuarantineEntryRequest(id=args.entry_id, reason=args.reason))
    emit(args, entry_json(entry))


def audit_line(record: dict[str, Any]) -> str:
    """One audit record as a line of ``audit show`` pretty output."""
    what = record.get("serial") or record.get("jti") or ""
    fields = (record.get("seq"), record.get("time"), record.get("decision"), record.get("method"),
              record.get("spiffe_id") or "-", f"actor={record.get('actor')}", what, record.get("reason"))
    return "\t".join(_one_line(f) for f in fields)


async def cmd_audit_show(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """audit show"""
    req = admin_pb2.ListAuditRequest(since=args.since, spiffe_id=args.spiffe_id or "", decision=args.decision or "",
                                     page_size=1000)
    records: list[dict[str, Any]] = await _all_pages(api.ListAudit, req,
                                                     lambda page: (json.loads(r) for r in page.records))
    emit(args, {"records": records}, "\n".join(audit_line(r) for r in records) or "No audit records")


async def cmd_audit_verify(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """audit verify"""
    if args.file:
        _verify_trail_file(args)
        return
    anchor = _read_anchor(args.anchor) if args.anchor else None
    resp = await api.VerifyAudit(admin_pb2.VerifyAuditRequest())
    result: dict[str, Any] = {"ok": resp.ok, "count": resp.count}
    if resp.ok and anchor is not None:
        problem = anchor_problem(anchor, await _record_at(api, anchor[0]))
        if problem is not None:
            result.update(ok=False, seq=anchor[0], kind="truncated", reason=f"anchor {args.anchor}: {problem}")
            if args.output == "json":
                emit(args, result)
            raise CliError(f"audit chain does not contain the exported head: {result['reason']}")
        result["anchor"] = {"seq": anchor[0], "hash": anchor[1]}
    if resp.ok:
        anchored = f"; it contains the exported head seq {anchor[0]}" if anchor is not None else ""
        emit(args, result, f"audit chain OK: {resp.count} records verified{anchored}")
        return
    result.update(seq=resp.seq, kind=resp.kind, reason=resp.reason)
    if args.output == "json":
        emit(args, result)
    raise CliError(f"audit chain broken at record seq {resp.seq} ({resp.kind}): {resp.reason}")


async def cmd_audit_export_head(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """audit export-head"""
    resp = await api.VerifyAudit(admin_pb2.VerifyAuditRequest())
    if not resp.ok:  # a head is worth keeping only if the chain up to it verifies
        raise CliError(f"audit chain broken at record seq {resp.seq} ({resp.kind}): {resp.reason}")
    head = await _record_at(api, resp.count) if resp.count else None
    if head is None:
        raise CliError("audit export-head: the audit chain is empty")
    text = export_head(head)
    if args.write:
        write_public(Path(args.write), text.encode())
    emit(args, json.loads(text), f"audit head seq {head['seq']} hash {head['hash']}"
                                 + (f" written to {args.write}" if args.write else ""))


async def _record_at(api: AdminAPIStub, seq: int) -> dict[str, Any] | None:
    page = await api.ListAudit(admin_pb2.ListAuditRequest(page_token=str(seq - 1), page_size=1))
    record = json.loads(page.records[0]) if page.records else None
    return record if isinstance(record, dict) and record.get("seq") == seq else None


def _read_anchor(path: str) -> tuple[int, str]:
    try:
        return parse_anchor(Path(path).read_text(encoding="utf-8")[:4096])
    except OSError as err:
        raise CliError(f"--anchor: cannot read {path!r}: {err.strerror or err}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise CliError(f"--anchor: {path!r} is not an exported audit head: {err}") from None


def _verify_trail_file(args: argparse.Namespace) -> None:
    """audit verify --file: a local JSONL trail (e.g. an agent's) and the files rotated out of it, offline."""
    if args.anchor:
        raise CliError("--anchor: only for the server's chain, not with --file")
    path = Path(args.file)
    try:
        result, files = verify_trail(path)
    except (OSError, ValueError) as err:
        raise CliError(f"--file: cannot read the audit trail {str(path)!r}: {err}") from None
    out: dict[str, Any] = {"ok": result.ok, "count": result.count, "files": [str(f) for f, _ in files]}
    if result.ok:
        emit(args, out, f"audit trail OK: {result.count} records in {len(files)} files verified")
        return
    where = next((f for f, first in reversed(files) if (result.index or 0) >= first), path)
    out.update(seq=result.seq, kind=str(result.kind), reason=result.reason, file=str(where))
    if args.output == "json":
        emit(args, out)
    raise CliError(f"audit trail broken at record seq {result.seq} ({result.kind}) in {where}: {result.reason}")


def _quarantine_parser(entry: Any) -> None:
    p = _admin_parser(entry, "quarantine", cmd_entry_quarantine,
                      "quarantine an entry: revoke its SVIDs, mint nothing until --clear-quarantine")
    p.add_argument("--entry-id", required=True)
    p.add_argument("--reason", default="", help="shown in denials and the audit trail")


def _audit_parsers(sub: Any) -> None:
    audit = _group(sub, "audit", "the tamper-evident audit trail")
    p = _admin_parser(audit, "show", cmd_audit_show, "show audit records, oldest first")
    p.add_argument("--since", type=expires_at_arg, default=0, help="Unix seconds or RFC 3339")
    p.add_argument("--spiffe-id")
    p.add_argument("--decision", choices=("allow", "deny"))
    p = _admin_parser(audit, "verify", cmd_audit_verify,
                      "verify the hash chain and its signed checkpoints; exit 1 naming the first broken record")
    p.add_argument("--anchor", help="a head written by 'audit export-head': the chain must still contain it")
    p.add_argument("--file", help="verify this local JSONL trail and its rotated files instead (no server needed)")
    p = _admin_parser(audit, "export-head", cmd_audit_export_head,
                      "verify the chain, then print (and --write) its head, to keep elsewhere for --anchor")
    p.add_argument("--write", help="file for the head (JSON)")


async def _call(handler: Handler, args: argparse.Namespace) -> None:
    channel = Channel(path=str(args.socket_path))
    try:
        await asyncio.wait_for(handler(AdminAPIStub(channel), args), RPC_TIMEOUT)
    finally:
        channel.close()


def run_admin(handler: Handler, args: argparse.Namespace) -> int:
    """Run one admin command; map failures to a one-line stderr message and exit 1."""
    try:
        asyncio.run(_call(handler, args))
    except GRPCError as err:
        return _fail(f"{err.status.name}: {err.message}")
    except (ConnectionError, FileNotFoundError, OSError) as err:
        return _fail(f"cannot reach the server admin socket {str(args.socket_path)!r}: "
                     f"{getattr(err, 'strerror', None) or err}")
    except TimeoutError:
        return _fail(f"timed out after {RPC_TIMEOUT:.0f}s talking to {str(args.socket_path)!r}")
    except CliError as err:
        return _fail(str(err))
    return 0


def _fail(message: str) -> int:
    print(f"error: {printable(message)}", file=sys.stderr)
    return 1


# -- run / validate --------------------------------------------------------------------------------

_RUN_FLAGS = ("trust_domain", "data_dir", "bind_address", "bind_port", "socket_path", "database",
              "log_level", "log_format", "policy_file")


def _load(args: argparse.Namespace) -> ServerConfig:
    overrides = {name: getattr(args, name) for name in _RUN_FLAGS}
    return load_config(Path(args.config) if args.config else None, overrides)


def cmd_run(args: argparse.Namespace) -> int:
    """run: start the server in the foreground until SIGTERM/SIGINT."""
    try:
        cfg = _load(args)
    except ConfigError as err:
        return _fail(str(err))
    from server.app import run  # lazily: admin commands need not load the whole server
    return run(cfg)


def cmd_validate(args: argparse.Namespace) -> int:
    """validate: check the configuration without starting anything."""
    try:
        cfg = _load(args)
    except ConfigError as err:
        return _fail(str(err))
    for warning in cfg.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    print("configuration is valid")
    return 0


# -- argument parsing ------------------------------------------------------------------------------


def _admin_parser(sub: Any, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
    p.add_argument("--socket-path", default=str(DEFAULT_SOCKET), help="admin API socket")
    p.add_argument("--output", choices=("json", "pretty"), default="pretty")
    p.set_defaults(admin_handler=handler)
    return p


def _entry_flags(p: argparse.ArgumentParser, *, update: bool) -> None:
    p.add_argument("--entry-id", required=update, default="")
    p.add_argument("--spiffe-id", required=not update, help="update: omit to patch labels/quarantine only")
    p.add_argument("--parent-id")
    p.add_argument("--node", action="store_true", help="parent is the server: a node-alias entry")
    p.add_argument("--selector", action="append", help="type:value (repeat)")
    p.add_argument("--x509-svid-ttl", type=seconds_arg, default=0)
    p.add_argument("--jwt-svid-ttl", type=seconds_arg, default=0)
    p.add_argument("--dns-name", action="append")
    p.add_argument("--hint", default="")
    p.add_argument("--admin", action="store_true")
    p.add_argument("--downstream", action="store_true")
    p.add_argument("--federates-with", action="append")
    p.add_argument("--label", action="append", help="k=v (repeat)")
    p.add_argument("--expires-at", type=expires_at_arg, default=0, help="task end: Unix seconds or RFC 3339")
    p.add_argument("--bind-to-process", action="store_true")
    p.add_argument("--max-lifetime", type=seconds_arg, default=0)
    p.add_argument("--jwt-claim", action="append", help="k=v (repeat)")
    if update:
        p.add_argument("--remove-label", action="append", help="key (repeat); patch mode")
        p.add_argument("--clear-quarantine", action="store_true", help="allow minting again; patch mode")


def seconds_arg(text: str) -> int:
    """A duration flag (``--ttl`` and the like): an integer the wire's int32 can carry.

    Negative values pass through so that the server names the field that refuses them.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer number of seconds, got {text!r}") from None
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SECONDS} seconds, got {text}")
    if value < -MAX_SECONDS - 1:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def expires_at_arg(text: str) -> int:
    """``--expires-at``: Unix seconds or an RFC 3339 time with a zone, as Unix seconds."""
    if text.isdigit():
        if int(text) > MAX_INT64:  # the server bounds the value; this only keeps it on the wire
            raise argparse.ArgumentTypeError(f"must be at most {MAX_INT64}, got {text}")
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be Unix seconds or RFC 3339, got {text!r}") from None
    if when.utcoffset() is None:
        raise argparse.ArgumentTypeError(f"RFC 3339 time needs a zone (Z or +hh:mm), got {text!r}")
    return int(when.timestamp())


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--trust-domain")
    p.add_argument("--data-dir")
    p.add_argument("--bind-address")
    p.add_argument("--bind-port", type=int)
    p.add_argument("--socket-path")
    p.add_argument("--database", help="SQLite path or postgresql:// URL")
    p.add_argument("--log-level")
    p.add_argument("--log-format")
    p.add_argument("--policy", dest="policy_file", help="request-time policy file (TOML [[rule]] tables)")


def _group(sub: Any, name: str, help_text: str) -> Any:
    p = sub.add_parser(name, help=help_text)
    return p.add_subparsers(dest=f"{name}_cmd", required=True)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(prog="spiffe-server", description="spiffe-py server")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, func in (("run", cmd_run), ("validate", cmd_validate)):
        p = sub.add_parser(name, help=func.__doc__)
        _add_run_flags(p)
        p.set_defaults(local=func)
    _admin_parser(sub, "healthcheck", cmd_healthcheck, "check the server over its admin socket")

    token = _group(sub, "token", "join tokens")
    p = _admin_parser(token, "generate", cmd_token_generate, "create a join token")
    p.add_argument("--ttl", type=seconds_arg, default=600)
    p.add_argument("--spiffe-id", help="also create an alias entry parented to the agent")

    entry = _group(sub, "entry", "registration entries")
    _entry_flags(_admin_parser(entry, "create", cmd_entry_create, "create an entry"), update=False)
    _entry_flags(_admin_parser(entry, "update", cmd_entry_update, "replace an entry"), update=True)
    _admin_parser(entry, "delete", cmd_entry_delete, "delete an entry").add_argument("--entry-id", required=True)
    p = _admin_parser(entry, "show", cmd_entry_show, "show entries")
    p.add_argument("--entry-id")
    p.add_argument("--spiffe-id")
    p.add_argument("--parent-id")
    p.add_argument("--selector", action="append")
    _admin_parser(entry, "count", cmd_entry_count, "count entries")
    _quarantine_parser(entry)

    agent = _group(sub, "agent", "attested agents")
    _admin_parser(agent, "list", cmd_agent_list, "list agents")
    _admin_parser(agent, "count", cmd_agent_count, "count agents")
    for name, handler in (("show", cmd_agent_show), ("ban", cmd_agent_ban), ("evict", cmd_agent_evict)):
        _admin_parser(agent, name, handler, f"{name} an agent").add_argument("--spiffe-id", required=True)

    bundle = _group(sub, "bundle", "trust bundles")
    for name, handler in (("show", cmd_bundle_show), ("list", cmd_bundle_list)):
        _admin_parser(bundle, name, handler, f"{name} bundles").add_argument(
            "--format", choices=("pem", "spiffe"), default="pem")
    p = _admin_parser(bundle, "set", cmd_bundle_set, "create or replace a federated bundle")
    p.add_argument("--id", required=True, help="trust domain")
    p.add_argument("--path", default="-", help="file to read (- = stdin)")
    p.add_argument("--format", choices=("pem", "spiffe"), default="pem")
    _admin_parser(bundle, "delete", cmd_bundle_delete, "delete a federated bundle").add_argument("--id", required=True)

    x509_cmd = _group(sub, "x509", "X.509-SVIDs")
    p = _admin_parser(x509_cmd, "mint", cmd_x509_mint, "mint an X.509-SVID")
    p.add_argument("--spiffe-id", required=True)
    p.add_argument("--ttl", type=seconds_arg, default=0)
    p.add_argument("--dns-name", action="append")
    p.add_argument("--write", help="directory for svid.pem, key.pem, bundle.pem")

    jwt_cmd = _group(sub, "jwt", "JWT-SVIDs")
    p = _admin_parser(jwt_cmd, "mint", cmd_jwt_mint, "mint a JWT-SVID")
    p.add_argument("--spiffe-id", required=True)
    p.add_argument("--audience", action="append", required=True)
    p.add_argument("--ttl", type=seconds_arg, default=0)
    p.add_argument("--write", help="file for the token (0600)")
    _revocation_parsers(sub)
    _audit_parsers(sub)
    return parser


def _revocation_parsers(sub: Any) -> None:
    revoke = _group(sub, "revoke", "revoke SVIDs (pushed to every agent, listed in CRLs)")
    p = _admin_parser(revoke, "svid", cmd_revoke_svid, "revoke one SVID")
    p.add_argument("--serial", help="X.509-SVID serial number (hex)")
    p.add_argument("--jti", help="JWT-SVID ID")
    p = _admin_parser(revoke, "entry", cmd_revoke_entry, "revoke every SVID issued under an entry")
    p.add_argument("--entry-id", required=True)
    p.add_argument("--delete", action="store_true", help="also delete the entry")
    p = _admin_parser(revoke, "agent", cmd_revoke_agent, "evict an agent and revoke every SVID issued to it")
    p.add_argument("--spiffe-id", required=True)
    for action in revoke.choices.values():
        action.add_argument("--reason", default="", help="recorded with the revocation")
    revocation = _group(sub, "revocation", "revocations")
    _admin_parser(revocation, "list", cmd_revocation_list, "list unexpired revocations")
    authority = _group(sub, "localauthority", "the CA's X.509 and JWT authorities")
    for kind in ("x509", "jwt"):
        actions = _group(authority, kind, f"{kind} authorities")
        for action in _AUTHORITY_RPCS:
            p = _admin_parser(actions, action, cmd_localauthority, f"{action} {kind} authorities")
            p.add_argument("--authority-id", help="hex SKI (x509) or kid (jwt)")
            p.set_defaults(kind=kind, action=action)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``spiffe-server``."""
    args = build_parser().parse_args(argv)
    if hasattr(args, "local"):
        result: int = args.local(args)
        return result
    return run_admin(args.admin_handler, args)


if __name__ == "__main__":
    raise SystemExit(main())

"""``spiffe-server audit show|verify|export-head``: the tamper-evident audit trail."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spiffe_py._proto.spiffepy.server.v1 import admin_pb2
from spiffe_server.cli._common import CliError, admin_parser, all_pages, emit, expires_at_arg, group, one_line

if TYPE_CHECKING:
    from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub


def audit_line(record: dict[str, Any]) -> str:
    """One audit record as a line of ``audit show`` pretty output."""
    what = record.get("serial") or record.get("jti") or ""
    fields = (record.get("seq"), record.get("time"), record.get("decision"), record.get("method"),
              record.get("spiffe_id") or "-", f"actor={record.get('actor')}", what, record.get("reason"))
    return "\t".join(one_line(f) for f in fields)


async def cmd_audit_show(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """audit show"""
    req = admin_pb2.ListAuditRequest(since=args.since, spiffe_id=args.spiffe_id or "", decision=args.decision or "",
                                     page_size=1000)
    records: list[dict[str, Any]] = await all_pages(api.ListAudit, req,
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
        from spiffe_server.audit import anchor_problem

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
    from spiffe_py.fsutil import write_public
    from spiffe_server.audit import export_head

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
    from spiffe_server.audit import parse_anchor

    try:
        return parse_anchor(Path(path).read_text(encoding="utf-8")[:4096])
    except OSError as err:
        raise CliError(f"--anchor: cannot read {path!r}: {err.strerror or err}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise CliError(f"--anchor: {path!r} is not an exported audit head: {err}") from None


def _verify_trail_file(args: argparse.Namespace) -> None:
    """audit verify --file: a local JSONL trail (e.g. an agent's) and the files rotated out of it, offline."""
    from spiffe_py.audit import verify_trail

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


def add_parsers(sub: Any) -> None:
    audit = group(sub, "audit", "the tamper-evident audit trail")
    p = admin_parser(audit, "show", cmd_audit_show, "show audit records, oldest first")
    p.add_argument("--since", type=expires_at_arg, default=0, metavar="TIME",
                   help="only records from then on: Unix seconds or RFC 3339")
    p.add_argument("--spiffe-id", help="only records about this SPIFFE ID")
    p.add_argument("--decision", choices=("allow", "deny"), help="only allowed or only denied requests")
    p = admin_parser(audit, "verify", cmd_audit_verify,
                     "verify the hash chain and its signed checkpoints; exit 1 naming the first broken record")
    p.add_argument("--anchor", help="a head written by 'audit export-head': the chain must still contain it")
    p.add_argument("--file", help="verify this local JSONL trail and its rotated files instead (no server needed)")
    p = admin_parser(audit, "export-head", cmd_audit_export_head,
                     "verify the chain, then print (and --write) its head, to keep elsewhere for --anchor")
    p.add_argument("--write", help="file for the head (JSON)")

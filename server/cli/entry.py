"""``spiffe-server entry``: create, update, delete (one or a ``--data`` batch), show, count, quarantine."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from spiffe_py._cli import duration, fields, yes_no
from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, types_pb2
from spiffe_py._text import printable
from spiffe_server.cli._common import (
    CliError,
    admin_parser,
    emit,
    expires_at_arg,
    group,
    json_text,
    listing,
    one_line,
    pages,
    pairs,
    pairs_text,
    read_file,
    seconds_arg,
    selector_pbs,
    selector_strings,
    time_text,
)

if TYPE_CHECKING:
    from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub

BATCH_SIZE = 1000  # entries per Batch*Entry call: the server's limit
MAX_DATA_BYTES = 256 * 1024 * 1024  # a --data file larger than this is refused before parsing

# entry update flags that only a full replace (with --spiffe-id) may use
_REPLACE_ONLY = ("parent_id", "node", "selector", "x509_svid_ttl", "jwt_svid_ttl", "dns_name", "hint", "admin",
                 "downstream", "federates_with", "expires_at", "bind_to_process", "max_lifetime", "jwt_claim")


def entry_json(e: types_pb2.Entry) -> dict[str, Any]:
    """An entry as the JSON object the CLI prints."""
    return {
        "id": e.id, "spiffe_id": e.spiffe_id, "parent_id": e.parent_id, "selectors": selector_strings(e.selectors),
        "x509_svid_ttl": e.x509_svid_ttl, "jwt_svid_ttl": e.jwt_svid_ttl, "dns_names": list(e.dns_names),
        "hint": e.hint, "admin": e.admin, "downstream": e.downstream, "federates_with": list(e.federates_with),
        "expires_at": e.expires_at, "revision": e.revision, "created_at": e.created_at, "labels": dict(e.labels),
        "bind_to_process": e.bind_to_process, "max_lifetime": e.max_lifetime, "jwt_claims": dict(e.jwt_claims),
        "quarantined": e.quarantined,
    }


def _ttl(seconds: int) -> str:
    return duration(seconds) if seconds else "default"


def entry_text(args: argparse.Namespace, e: dict[str, Any]) -> str:
    """An entry (as :func:`entry_json` gives it) as aligned fields; optional fields only when set."""
    rows: list[tuple[str, str | list[str]]] = [
        ("Entry ID", e["id"]), ("SPIFFE ID", e["spiffe_id"]), ("Parent ID", e["parent_id"]),
        ("Revision", str(e["revision"])), ("X509-SVID TTL", _ttl(e["x509_svid_ttl"])),
        ("JWT-SVID TTL", _ttl(e["jwt_svid_ttl"])), ("Selectors", e["selectors"])]
    optional: list[tuple[str, Any, Any]] = [
        ("DNS names", e["dns_names"], e["dns_names"]), ("Hint", e["hint"], e["hint"]),
        ("Admin", e["admin"], "yes"), ("Downstream", e["downstream"], "yes"),
        ("Federates with", e["federates_with"], e["federates_with"]),
        ("Expires at", e["expires_at"], time_text(args, e["expires_at"])),
        ("Max lifetime", e["max_lifetime"], duration(e["max_lifetime"])),
        ("Bind to process", e["bind_to_process"], "yes"),
        ("Labels", e["labels"], pairs_text(e["labels"])), ("JWT claims", e["jwt_claims"], pairs_text(e["jwt_claims"])),
        ("Quarantined", e["quarantined"], yes_no(e["quarantined"]))]
    rows += [(label, shown) for label, value, shown in optional if value]
    rows.append(("Created at", time_text(args, e["created_at"], expiry=False)))
    return fields(rows)


def entry_from_args(args: argparse.Namespace) -> types_pb2.Entry:
    """The entry described by ``entry create|update`` flags."""
    parent = args.parent_id
    if args.node:
        if parent:
            raise CliError("--node: cannot be combined with --parent-id")
        parent = _server_id(args.spiffe_id)
    return types_pb2.Entry(
        id=args.entry_id or "", spiffe_id=args.spiffe_id or "", parent_id=parent or "",
        selectors=selector_pbs(args.selector), x509_svid_ttl=args.x509_svid_ttl, jwt_svid_ttl=args.jwt_svid_ttl,
        dns_names=args.dns_name or [], hint=args.hint, admin=args.admin, downstream=args.downstream,
        federates_with=args.federates_with or [], expires_at=args.expires_at, labels=pairs(args.label, "--label"),
        bind_to_process=args.bind_to_process, max_lifetime=args.max_lifetime,
        jwt_claims=pairs(args.jwt_claim, "--jwt-claim"),
    )


def _server_id(spiffe_id: str | None) -> str:
    from spiffe_py.errors import SpiffeError
    from spiffe_py.spiffeid import SpiffeId

    try:
        sid = SpiffeId.parse(spiffe_id or "")
    except SpiffeError as err:
        raise CliError(f"--spiffe-id: {err}") from err
    return f"{sid.trust_domain.id_string()}/spire/server"


def patch_from_args(args: argparse.Namespace) -> admin_pb2.PatchEntryRequest:
    """``entry update --entry-id ID [--label k=v] [--remove-label k] [--clear-quarantine]`` without --spiffe-id."""
    used = [name for name in _REPLACE_ONLY if getattr(args, name)]
    if used:
        flag = "--" + used[0].replace("_", "-")
        raise CliError(f"{flag}: needs --spiffe-id (without it, entry update only changes labels and quarantine)")
    if not (args.label or args.remove_label or args.clear_quarantine):
        raise CliError("entry update: give --spiffe-id (replace) or --label/--remove-label/--clear-quarantine")
    return admin_pb2.PatchEntryRequest(id=args.entry_id, set_labels=pairs(args.label, "--label"),
                                       remove_labels=args.remove_label or [], clear_quarantine=args.clear_quarantine)


# -- --data batches ------------------------------------------------------------------------------

# JSON key -> (kind, proto field); SPIRE's entry shape plus our fields
_DATA_FIELDS: dict[str, str] = {
    "id": "str", "entry_id": "str", "spiffe_id": "str", "parent_id": "str", "selectors": "selectors",
    "x509_svid_ttl": "duration", "jwt_svid_ttl": "duration", "dns_names": "strs", "hint": "str", "admin": "bool",
    "downstream": "bool", "federates_with": "strs", "labels": "map", "expires_at": "int",
    "bind_to_process": "bool", "max_lifetime": "duration", "jwt_claims": "map",
}


def _read_data(path: str) -> Any:
    data = sys.stdin.buffer.read(MAX_DATA_BYTES + 1) if path == "-" else read_file(path, "--data")
    if len(data) > MAX_DATA_BYTES:
        raise CliError(f"--data: larger than {MAX_DATA_BYTES} bytes")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise CliError(f"--data: not JSON: {err}") from None


def _field(where: str, kind: str, value: Any) -> Any:
    def bad(what: str) -> CliError:
        return CliError(f"--data: {where}: must be {what}, got {json.dumps(value)[:80]}")

    if kind == "str":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if kind == "duration":
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise bad("a duration ('90s', '1h30m') or seconds")
        try:
            return seconds_arg(str(value))
        except argparse.ArgumentTypeError as err:
            raise CliError(f"--data: {where}: {err}") from None
    if kind == "strs":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return value
    if kind == "map":
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise bad("an object of strings")
        return value
    # selectors: [{"type", "value"}] as SPIRE writes them, or "type:value" strings
    if not isinstance(value, list):
        raise bad('a list of {"type", "value"}')
    out = []
    for n, sel in enumerate(value):
        if isinstance(sel, str):
            out.extend(selector_pbs([sel]))
        elif (isinstance(sel, dict) and set(sel) == {"type", "value"}
              and isinstance(sel["type"], str) and isinstance(sel["value"], str)):
            out.append(types_pb2.Selector(type=sel["type"], value=sel["value"]))
        else:
            raise CliError(f"--data: {where}[{n}]: must be {{\"type\", \"value\"}}, got {json.dumps(sel)[:80]}")
    return out


def entries_from_data(doc: Any) -> list[types_pb2.Entry]:
    """``{"entries": [{...}]}`` as wire entries; the first problem is an error naming its place."""
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        raise CliError('--data: must be a JSON object {"entries": [...]}')
    out = []
    for n, item in enumerate(doc["entries"]):
        where = f"entries[{n}]"
        if not isinstance(item, dict):
            raise CliError(f"--data: {where}: must be an object")
        unknown = sorted(set(item) - set(_DATA_FIELDS))
        if unknown:
            raise CliError(f"--data: {where}: unknown key {unknown[0]!r}")
        values = {key: _field(f"{where}.{key}", _DATA_FIELDS[key], value) for key, value in item.items()}
        if "entry_id" in values:
            values.setdefault("id", values.pop("entry_id"))
        out.append(types_pb2.Entry(**values))
    return out


def ids_from_data(doc: Any) -> list[str]:
    """``{"ids": [...]}``."""
    ids = doc.get("ids") if isinstance(doc, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise CliError('--data: must be a JSON object {"ids": ["<entry id>", ...]}')
    return ids


def _status_json(status: admin_pb2.ItemStatus) -> dict[str, Any]:
    return {"code": status.code, "message": status.message}


def _emit_results(args: argparse.Namespace, results: Sequence[dict[str, Any]]) -> None:
    failed = sum(1 for r in results if r["status"]["code"] != 0)
    if args.output == "json":
        # one compact line per result: the C encoder, where an indented dump of 100k entries takes seconds
        body = ",\n  ".join(json_text(r, indent=None) for r in results)
        print(f'{{"results": [\n  {body}\n]}}' if results else '{"results": []}')
    else:
        lines = [f"{len(results) - failed} succeeded, {failed} failed"]
        for n, r in enumerate(results):
            subject = r.get("entry", {}).get("id") or r.get("id") or ""
            what = r.get("entry", {}).get("spiffe_id", "")
            state = "OK" if r["status"]["code"] == 0 else f"error {r['status']['code']}: {r['status']['message']}"
            lines.append("\t".join(one_line(x) for x in (n, subject or "-", what or "-", state)))
        print(printable("\n".join(lines), keep_layout=True))
    if failed:  # exit 1; the results above say which ones
        raise CliError(f"{failed} of {len(results)} entries failed")


async def _batched(api: AdminAPIStub, args: argparse.Namespace, *, update: bool) -> None:
    entries = entries_from_data(_read_data(args.data))
    call = api.BatchUpdateEntry if update else api.BatchCreateEntry
    results: list[dict[str, Any]] = []
    for start in range(0, len(entries), BATCH_SIZE):
        chunk = entries[start:start + BATCH_SIZE]
        allow = args.allow_unknown_selector
        req: Any = (admin_pb2.BatchUpdateEntryRequest(entries=chunk, allow_unknown_selectors=allow) if update
                    else admin_pb2.BatchCreateEntryRequest(entries=chunk, allow_unknown_selectors=allow))
        resp = await call(req)
        results.extend({"status": _status_json(r.status), **({"entry": entry_json(r.entry)} if r.status.code == 0
                                                              else {"entry": _requested(e)})}
                       for r, e in zip(resp.results, chunk, strict=True))
    _emit_results(args, results)


def _requested(e: types_pb2.Entry) -> dict[str, Any]:
    """What was asked for, to say which entry failed."""
    out: dict[str, Any] = {"spiffe_id": e.spiffe_id, "parent_id": e.parent_id,
                           "selectors": selector_strings(e.selectors)}
    if e.id:
        out["id"] = e.id
    return out


def _reject_flags(args: argparse.Namespace, names: Sequence[str]) -> None:
    used = [n for n in names if getattr(args, n, None)]
    if used:
        raise CliError(f"--{used[0].replace('_', '-')}: cannot be combined with --data")


_ENTRY_FLAGS = ("entry_id", "spiffe_id", *_REPLACE_ONLY, "label", "remove_label", "clear_quarantine")


# -- commands ------------------------------------------------------------------------------------


async def cmd_entry_create(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """entry create"""
    if args.data is not None:
        _reject_flags(args, _ENTRY_FLAGS)
        await _batched(api, args, update=False)
        return
    if not args.spiffe_id:
        raise CliError("entry create: give --spiffe-id (one entry) or --data FILE|- (a batch)")
    entry = entry_json(await api.CreateEntry(admin_pb2.CreateEntryRequest(
        entry=entry_from_args(args), allow_unknown_selectors=args.allow_unknown_selector)))
    emit(args, entry, entry_text(args, entry))


async def cmd_entry_update(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """entry update"""
    if args.data is not None:
        _reject_flags(args, _ENTRY_FLAGS)
        await _batched(api, args, update=True)
        return
    if not args.entry_id:
        raise CliError("entry update: give --entry-id (one entry) or --data FILE|- (a batch)")
    if args.spiffe_id is None:  # no --spiffe-id: a patch of labels / quarantine only
        entry = entry_json(await api.PatchEntry(patch_from_args(args)))
        emit(args, entry, entry_text(args, entry))
        return
    if args.remove_label or args.clear_quarantine:
        raise CliError("--remove-label/--clear-quarantine: use without --spiffe-id (a patch, not a replace)")
    entry = entry_json(await api.UpdateEntry(admin_pb2.UpdateEntryRequest(
        entry=entry_from_args(args), allow_unknown_selectors=args.allow_unknown_selector)))
    emit(args, entry, entry_text(args, entry))


async def cmd_entry_delete(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """entry delete"""
    if args.data is not None:
        if args.entry_id:
            raise CliError("--entry-id: cannot be combined with --data")
        ids = ids_from_data(_read_data(args.data))
        results: list[dict[str, Any]] = []
        for start in range(0, len(ids), BATCH_SIZE):
            resp = await api.BatchDeleteEntry(admin_pb2.BatchDeleteEntryRequest(ids=ids[start:start + BATCH_SIZE]))
            results.extend({"status": _status_json(r.status), "id": r.id} for r in resp.results)
        _emit_results(args, results)
        return
    if not args.entry_id:
        raise CliError("entry delete: give --entry-id or --data FILE|- ({\"ids\": [...]})")
    await api.DeleteEntry(admin_pb2.DeleteEntryRequest(id=args.entry_id))
    emit(args, {"deleted": args.entry_id}, f"Deleted entry {args.entry_id}")


async def cmd_entry_show(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """entry show: one entry, or every matching entry printed page by page as it arrives."""
    if args.entry_id:
        entry = entry_json(await api.GetEntry(admin_pb2.GetEntryRequest(id=args.entry_id)))
        emit(args, {"entries": [entry]}, listing("Found 1 entry", [entry_text(args, entry)]))
        return
    if args.match_selectors and not args.selector:
        raise CliError("--match-selectors: needs --selector")
    req = admin_pb2.ListEntriesRequest(spiffe_id=args.spiffe_id or "", parent_id=args.parent_id or "",
                                       selectors=selector_pbs(args.selector), page_size=1000, labels=args.label,
                                       match_selectors=args.match_selectors or "")
    stream = pages(api.ListEntries, req, lambda page: page.entries)
    if args.output == "json":
        # the same document as before, written as the pages arrive
        out = sys.stdout
        out.write('{\n  "entries": [')
        first = True
        async for e in stream:
            body = json_text(entry_json(e)).replace("\n", "\n    ")
            out.write(("\n    " if first else ",\n    ") + body)
            first = False
        out.write("]\n}\n" if first else "\n  ]\n}\n")
        return
    texts = [entry_text(args, entry_json(e)) async for e in stream]
    print(printable(listing(f"Found {len(texts)} {'entry' if len(texts) == 1 else 'entries'}", texts),
                    keep_layout=True))


async def cmd_entry_count(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """entry count"""
    if args.match_selectors and not args.selector:
        raise CliError("--match-selectors: needs --selector")
    req = admin_pb2.CountEntriesRequest(spiffe_id=args.spiffe_id or "", parent_id=args.parent_id or "",
                                        selectors=selector_pbs(args.selector), hint=args.hint or "",
                                        match_selectors=args.match_selectors or "")
    filtered = req != admin_pb2.CountEntriesRequest()
    count = (await (api.CountEntriesMatching(req) if filtered else api.CountEntries(admin_pb2.CountRequest()))).count
    emit(args, {"count": count}, f"{count} registration {'entry' if count == 1 else 'entries'}")


async def cmd_entry_quarantine(api: AdminAPIStub, args: argparse.Namespace) -> None:
    """entry quarantine"""
    entry = entry_json(await api.QuarantineEntry(admin_pb2.QuarantineEntryRequest(id=args.entry_id,
                                                                                reason=args.reason)))
    emit(args, entry, entry_text(args, entry))


# -- parsers -------------------------------------------------------------------------------------


def _match_selectors(p: argparse.ArgumentParser) -> None:
    p.add_argument("--match-selectors", choices=("exact", "subset", "superset", "any"),
                   help="how --selector compares: exact (default) same set, subset entry's within them, "
                        "superset entry's include them, any one in common")


def _entry_flags(p: argparse.ArgumentParser, *, update: bool) -> None:
    p.add_argument("--data", metavar="FILE",
                   help="JSON file ('-' = stdin) of {\"entries\": [...]}: a batch instead of the flags")
    p.add_argument("--entry-id", default="",
                   help="the entry to update" if update else "ID for the new entry (generated when omitted)")
    p.add_argument("--spiffe-id", help="SPIFFE ID of the workload" + ("; omit to patch labels/quarantine only"
                                                                      if update else ""))
    p.add_argument("--parent-id", help="SPIFFE ID of the agent (or node alias) the workload runs under")
    p.add_argument("--node", action="store_true", help="parent is the server: a node-alias entry")
    p.add_argument("--selector", action="append", metavar="TYPE:VALUE",
                   help="selector the workload must have, e.g. unix:uid:1000 (repeat)")
    p.add_argument("--allow-unknown-selector", action="store_true",
                   help="accept selector types the server knows no attestor for (agent-only attestors)")
    p.add_argument("--x509-svid-ttl", type=seconds_arg, default=0, metavar="DURATION",
                   help="X509-SVID lifetime, e.g. 1h, 90s or seconds; 0 = the server's default")
    p.add_argument("--jwt-svid-ttl", type=seconds_arg, default=0, metavar="DURATION",
                   help="JWT-SVID lifetime, e.g. 5m, 90s or seconds; 0 = the server's default")
    p.add_argument("--dns-name", action="append", help="DNS SAN of the X509-SVID (repeat)")
    p.add_argument("--hint", default="", help="hint passed to workloads to tell their SVIDs apart")
    p.add_argument("--admin", action="store_true", help="the SVID may call the admin API")
    p.add_argument("--downstream", action="store_true", help="the SVID may sign downstream SVIDs")
    p.add_argument("--federates-with", action="append", metavar="TRUST_DOMAIN",
                   help="trust domain whose bundle the workload also gets (repeat)")
    p.add_argument("--label", action="append", metavar="KEY=VALUE", help="label of the entry (repeat)")
    p.add_argument("--expires-at", type=expires_at_arg, default=0, metavar="TIME",
                   help="task end: Unix seconds or RFC 3339; 0 = never")
    p.add_argument("--bind-to-process", action="store_true",
                   help="the SVID is valid only for the process that fetched it")
    p.add_argument("--max-lifetime", type=seconds_arg, default=0, metavar="DURATION",
                   help="task end relative to creation, e.g. 1h; 0 = none")
    p.add_argument("--jwt-claim", action="append", metavar="KEY=VALUE", help="extra JWT-SVID claim (repeat)")
    if update:
        p.add_argument("--remove-label", action="append", metavar="KEY", help="label to remove (repeat); patch mode")
        p.add_argument("--clear-quarantine", action="store_true", help="allow minting again; patch mode")


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spiffe-id", help="only entries with this SPIFFE ID")
    p.add_argument("--parent-id", help="only entries with this parent ID")
    p.add_argument("--selector", action="append", metavar="TYPE:VALUE",
                   help="only entries with exactly these selectors (repeat)")


def add_parsers(sub: Any) -> None:
    entry = group(sub, "entry", "registration entries")
    _entry_flags(admin_parser(entry, "create", cmd_entry_create, "create an entry, or a --data batch"),
                 update=False)
    _entry_flags(admin_parser(entry, "update", cmd_entry_update, "replace an entry, or a --data batch"),
                 update=True)
    p = admin_parser(entry, "delete", cmd_entry_delete, "delete an entry, or a --data batch of ids")
    p.add_argument("--entry-id", help="the entry to delete")
    p.add_argument("--data", metavar="FILE", help='JSON file (\'-\' = stdin) of {"ids": [...]}')
    p = admin_parser(entry, "show", cmd_entry_show, "show one entry, or every entry matching the filters")
    p.add_argument("--entry-id", help="the entry to show (the filters are ignored)")
    _filters(p)
    _match_selectors(p)
    p.add_argument("--label", action="append", default=[], metavar="KEY[=VALUE]",
                   help="only entries with this label (any value, or this one); repeatable, all must match")
    p = admin_parser(entry, "count", cmd_entry_count, "count entries, or those matching the filters")
    _filters(p)
    _match_selectors(p)
    p.add_argument("--hint", help="only entries with this hint")
    p = admin_parser(entry, "quarantine", cmd_entry_quarantine,
                     "quarantine an entry: revoke its SVIDs, mint nothing until --clear-quarantine")
    p.add_argument("--entry-id", required=True, help="the entry to quarantine")
    p.add_argument("--reason", default="", help="shown in denials and the audit trail")

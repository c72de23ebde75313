"""SyncAuthorized message planning (pure): what changed since the last push, in bounded pages.

::

    state = SyncState()
    for msg in state.plan(entries_by_id, bundle, federated, revocations=revs, crls=ders):  # first: full=True
        await stream.send_message(msg)
    for msg in state.plan_changes({"e1": entry, "e2": None}, bundle, federated):  # later: only what changed
        await stream.send_message(msg)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from spiffe_py._proto.spiffepy.server.v1 import agent_pb2, types_pb2
from spiffe_server.api.convert import bundle_to_proto
from spiffe_server.ca.manager import AuthorityKind, CaManager

MAX_ENTRIES_PER_MESSAGE = 500
MAX_REVOCATIONS_PER_MESSAGE = 5000  # ~150 bytes each: well under the 4 MiB message bound


def own_bundle(ca: CaManager) -> types_pb2.Bundle:
    """The server's bundle on the wire, tainted authorities marked (agents re-issue what they signed)."""
    pb = bundle_to_proto(ca.bundle())
    pb.tainted_x509_authorities.extend(
        sorted(a.authority_id for a in ca.authorities(AuthorityKind.X509) if a.tainted))
    tainted_kids = {a.authority_id for a in ca.authorities(AuthorityKind.JWT) if a.tainted}
    for key in pb.jwt_authorities:
        key.tainted = key.key_id in tainted_kids
    return pb


@dataclass
class SyncState:
    """What one SyncAuthorized stream has sent so far (entry revisions, bundles, revocations, CRLs)."""

    # entry id -> (revision, TTL in force): a policy change that moves the TTL re-sends the entry
    revisions: dict[str, tuple[int, int]] = field(default_factory=dict)
    bundle: bytes | None = None
    federated: bytes | None = None
    revoked: set[tuple[str, str]] = field(default_factory=set)
    crls: tuple[bytes, ...] | None = None

    def plan(self, entries: Mapping[str, types_pb2.Entry], bundle: types_pb2.Bundle,
             federated: Sequence[types_pb2.Bundle], *, revocations: Sequence[types_pb2.Revocation] = (),
             crls: Sequence[bytes] = (), page_size: int = MAX_ENTRIES_PER_MESSAGE,
             ) -> list[agent_pb2.SyncAuthorizedResponse]:
        """Messages to send now for the agent's whole entry set ``entries`` (diffed against what was sent)."""
        changed: dict[str, types_pb2.Entry | None] = dict(entries)
        changed.update({eid: None for eid in self.revisions if eid not in entries})
        return self.plan_changes(changed, bundle, federated, revocations=revocations, crls=crls,
                                 page_size=page_size)

    def plan_changes(self, changed: Mapping[str, types_pb2.Entry | None], bundle: types_pb2.Bundle,
                     federated: Sequence[types_pb2.Bundle], *, revocations: Sequence[types_pb2.Revocation] = (),
                     crls: Sequence[bytes] = (), page_size: int = MAX_ENTRIES_PER_MESSAGE,
                     ) -> list[agent_pb2.SyncAuthorizedResponse]:
        """Messages to send now (none if nothing changed); updates the state as sent.

        ``changed`` holds the entries that may have changed since the last call (None: no longer
        the agent's); on the first call it must hold all of them. Revocations go out in full on
        the first message, then only additions (agents drop expired ones themselves); the CRL
        set goes out whole whenever it changed.
        """
        full = self.bundle is None
        upserts = [e for eid, e in sorted(changed.items())
                   if e is not None and (full or self.revisions.get(eid) != _version(e))]
        removed = [] if full else sorted(eid for eid, e in changed.items() if e is None and eid in self.revisions)
        added = [r for r in revocations if full or (r.kind, r.value) not in self.revoked]
        bundle_bytes = bundle.SerializeToString(deterministic=True)
        fed_bytes = b"".join(b.SerializeToString(deterministic=True) for b in federated)
        bundle_changed = bundle_bytes != self.bundle
        fed_changed = fed_bytes != self.federated
        crls_changed = tuple(crls) != self.crls
        if not (full or upserts or removed or bundle_changed or fed_changed or added or crls_changed):
            return []
        for e in upserts:
            self.revisions[e.id] = _version(e)
        for eid in removed:
            del self.revisions[eid]
        self.bundle, self.federated = bundle_bytes, fed_bytes
        if added or len(self.revoked) != len(revocations):
            self.revoked = {(r.kind, r.value) for r in revocations}
        self.crls = tuple(crls)
        first = agent_pb2.SyncAuthorizedResponse(full=full, removed_entry_ids=removed)
        if bundle_changed or full:
            first.bundle.CopyFrom(bundle)
        if fed_changed or full:
            first.federated_bundles.extend(federated)
            first.federated_bundles_set = True  # an empty list is news too: the last one was removed
        if crls_changed or full:
            first.crls.crls.extend(crls)
            first.crls.SetInParent()  # an empty set is news too: every CRL is gone
        messages = [first]
        _paged(messages, "entries", upserts, page_size)
        _paged(messages, "revocations", added, MAX_REVOCATIONS_PER_MESSAGE)
        if full:
            first.full_messages = len(messages)
        return messages


def _version(entry: types_pb2.Entry) -> tuple[int, int]:
    return entry.revision, entry.x509_svid_ttl_in_force


def _paged(messages: list[agent_pb2.SyncAuthorizedResponse], name: str, items: Sequence[object], size: int) -> None:
    """Append ``items`` to field ``name``: the last message first, then new messages of ``size`` each."""
    for start in range(0, len(items), size):
        if start:
            messages.append(agent_pb2.SyncAuthorizedResponse())
        getattr(messages[-1], name).extend(items[start:start + size])

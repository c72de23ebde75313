"""SyncAuthorized message planning (pure): what changed since the last push, in bounded pages.

::

    state = SyncState()
    for msg in state.plan(entries_by_id, bundle, federated):   # first call: full=True
        await stream.send_message(msg)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from spiffe_py._proto.spiffepy.server.v1 import agent_pb2, types_pb2

MAX_ENTRIES_PER_MESSAGE = 500


@dataclass
class SyncState:
    """What one SyncAuthorized stream has sent so far (entry revisions and bundle versions)."""

    revisions: dict[str, int] = field(default_factory=dict)
    bundle: bytes | None = None
    federated: bytes | None = None

    def plan(self, entries: Mapping[str, types_pb2.Entry], bundle: types_pb2.Bundle,
             federated: Sequence[types_pb2.Bundle], *, page_size: int = MAX_ENTRIES_PER_MESSAGE,
             ) -> list[agent_pb2.SyncAuthorizedResponse]:
        """Messages to send now (none if nothing changed); updates the state as sent."""
        full = self.bundle is None
        upserts = [e for eid, e in sorted(entries.items()) if full or self.revisions.get(eid) != e.revision]
        removed = [] if full else sorted(set(self.revisions) - set(entries))
        bundle_bytes = bundle.SerializeToString(deterministic=True)
        fed_bytes = b"".join(b.SerializeToString(deterministic=True) for b in federated)
        bundle_changed = bundle_bytes != self.bundle
        fed_changed = fed_bytes != self.federated
        if not (full or upserts or removed or bundle_changed or fed_changed):
            return []
        self.revisions = {eid: e.revision for eid, e in entries.items()}
        self.bundle, self.federated = bundle_bytes, fed_bytes
        first = agent_pb2.SyncAuthorizedResponse(full=full, removed_entry_ids=removed)
        if bundle_changed or full:
            first.bundle.CopyFrom(bundle)
        if fed_changed or full:
            first.federated_bundles.extend(federated)
        messages = [first]
        for start in range(0, len(upserts), page_size):
            if start:
                messages.append(agent_pb2.SyncAuthorizedResponse())
            messages[-1].entries.extend(upserts[start:start + page_size])
        return messages

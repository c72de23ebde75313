"""An admin API call made in-process, by the web console, through the same handlers as gRPC callers.

The console authenticates its user (an admin SVID over mTLS, or a session from a one-time login
link) and hands the handler a :class:`LocalCall` in place of a grpclib stream; the handler then
authorizes, validates, audits and answers exactly as for the CLI::

    call = LocalCall(Principal(actor="console:alice", readonly=False), "CreateEntry", request)
    await admin.CreateEntry(call)          # raises GRPCError like any call
    entry = call.response
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography import x509

# Admin methods that change nothing; an admin_readonly caller may call only these.
READ_METHODS = frozenset({
    "GetEntry", "ListEntries", "CountEntries", "ListAgents", "GetAgent", "CountAgents", "GetBundle",
    "ListFederatedBundles", "Health", "ListAudit", "VerifyAudit", "ListRevocations", "ShowLocalAuthorities",
    "ListPendingApprovals", "CountEntriesMatching", "CountBundles", "GetLogger", "ListFederationRelationships",
    "GetFederationRelationship",
})

READONLY_LABEL = "admin_readonly"  # on an admin entry, with the value "true": that identity may only read


@dataclass(frozen=True, slots=True)
class Principal:
    """Who makes a console call: ``actor`` goes to the audit trail.

    ``leaf`` is the admin SVID the user presented over mTLS: it is re-checked on every call (not
    revoked, an admin entry, not quarantined) like a gRPC admin caller's. Without it the user holds
    a console session, and ``readonly`` is the session's role.
    """

    actor: str
    readonly: bool
    leaf: x509.Certificate | None = None


class LocalCall:
    """A unary call's stream: ``recv_message`` gives the request once, ``send_message`` keeps the reply."""

    def __init__(self, principal: Principal, method: str, request: Any) -> None:
        self.principal = principal
        self.method = method
        self._request: Any = request
        self.response: Any = None

    async def recv_message(self) -> Any:
        """The request, then None."""
        request, self._request = self._request, None
        return request

    async def send_message(self, message: Any) -> None:
        """Keep the reply for the caller."""
        self.response = message

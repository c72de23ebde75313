"""Anthropic workload identity federation with SPIFFE: no ``ANTHROPIC_API_KEY``.

The SDK's ``WorkloadIdentityCredentials`` exchanges an identity token (RFC 7523 jwt-bearer) for
an access token and refreshes it; :func:`workload_identity_credentials` gives it the workload's
JWT-SVID as that identity token::

    from anthropic import Anthropic
    from spiffe_py.integrations.anthropic import workload_identity_credentials

    client = Anthropic(credentials=workload_identity_credentials(
        federation_rule_id="fdrl_...", organization_id="...", service_account_id="svac_..."))

Without code changes, ``spiffe-agent helper`` can keep a JWT-SVID file fresh for
``ANTHROPIC_IDENTITY_TOKEN_FILE`` instead (docs/ai-providers.md). The SDK
(``pip install "spiffe-py[anthropic]"``) is imported only inside the function that needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spiffe_py.integrations._jwt import DEFAULT_TIMEOUT_S, JwtSvidProvider
from spiffe_py.workloadapi import JwtSource

if TYPE_CHECKING:
    from anthropic.lib.credentials import WorkloadIdentityCredentials

DEFAULT_AUDIENCE = "https://api.anthropic.com"

__all__ = ["DEFAULT_AUDIENCE", "identity_token_provider", "workload_identity_credentials"]


def identity_token_provider(
    audience: str = DEFAULT_AUDIENCE, *, source: JwtSource | None = None, timeout: float = DEFAULT_TIMEOUT_S
) -> JwtSvidProvider:
    """The SDK's ``IdentityTokenProvider`` (a callable returning the JWT): the current JWT-SVID for ``audience``."""
    return JwtSvidProvider(audience, source=source, timeout=timeout)


def workload_identity_credentials(
    *,
    federation_rule_id: str,
    organization_id: str,
    service_account_id: str | None = None,
    workspace_id: str | None = None,
    audience: str = DEFAULT_AUDIENCE,
    source: JwtSource | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> WorkloadIdentityCredentials:
    """``anthropic.lib.credentials.WorkloadIdentityCredentials`` fed with JWT-SVIDs; pass it as ``credentials=``.

    ``audience`` must be the one the federation rule expects. The SDK calls the provider on each
    exchange (its TokenCache refreshes the access token before expiry), so every exchange sends the
    agent's current JWT-SVID.
    """
    from anthropic.lib.credentials import WorkloadIdentityCredentials

    return WorkloadIdentityCredentials(
        identity_token_provider=identity_token_provider(audience, source=source, timeout=timeout),
        federation_rule_id=federation_rule_id,
        organization_id=organization_id,
        service_account_id=service_account_id,
        workspace_id=workspace_id,
    )

"""Hand a workload's SVIDs to third-party SDKs so they need no static API key.

- :mod:`spiffe_py.integrations.openai`: ``OpenAI(workload_identity=workload_identity(...))``
  (JWT-SVID as the RFC 8693 subject token) and an mTLS ``httpx2`` client for the X.509 variant.
- :mod:`spiffe_py.integrations.anthropic`: ``Anthropic(credentials=workload_identity_credentials(...))``
  (JWT-SVID as the RFC 7523 assertion).

The SDKs are optional (``pip install "spiffe-py[openai]"`` / ``"spiffe-py[anthropic]"``); nothing
here is imported by the core library, and each module imports its SDK only when a function needs it.
"""

from __future__ import annotations

from spiffe_py.integrations._jwt import JwtSvidProvider

__all__ = ["JwtSvidProvider"]

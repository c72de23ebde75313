"""Local JWT-SVID validation for ValidateJWTSVID (adapter over :mod:`spiffe_py.jwtsvid`).

Only bundles the caller may see are used, and the token is checked with the
bundle of its own ``sub`` trust domain (WA-09, WA-27)::

    subject, claims = JwtSvidValidator(SystemClock()).validate(token, "my-audience", bundles)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from spiffe_py.bundle import BundleSet, SpiffeBundle
from spiffe_py.clock import Clock
from spiffe_py.jwtsvid import JwtSvid
from spiffe_py.spiffeid import SpiffeId


class JwtSvidValidator:
    """Validates JWT-SVIDs at the clock's current time."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def validate(
        self, token: str, audience: str, bundles: Sequence[SpiffeBundle]
    ) -> tuple[SpiffeId, Mapping[str, Any]]:
        """Return (subject, claims); raises InvalidJwtSvidError / BundleNotFoundError."""
        svid = JwtSvid.parse_and_validate(token, BundleSet.of(*bundles), audience, now=self._clock.now())
        return svid.spiffe_id, svid.claims

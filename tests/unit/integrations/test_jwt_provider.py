"""JwtSvidProvider's own rules (pure logic around a fake source): what it hands out and what it refuses."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from spiffe_py.clock import ManualClock
from spiffe_py.errors import NoIdentityError, WorkloadApiError
from spiffe_py.integrations import JwtSvidProvider
from spiffe_py.integrations.openai import workload_identity
from spiffe_py.jwtsvid import JwtSvid
from spiffe_py.spiffeid import SpiffeId

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeSource:
    """Stands in for a started JwtSource: returns the next queued result."""

    def __init__(self, *results: JwtSvid | Exception) -> None:
        self.results = list(results)
        self.audiences: list[Any] = []

    def fetch_jwt_svid(self, audience: Any, spiffe_id: Any = None) -> JwtSvid:
        self.audiences.append(audience)
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result


def _svid(token: str, expires_in: float) -> JwtSvid:
    return JwtSvid(token, SpiffeId.parse("spiffe://example.org/w"), ("aud",), NOW + timedelta(seconds=expires_in),
                   NOW, {"jti": token})


def _provider(source: FakeSource) -> JwtSvidProvider:
    return JwtSvidProvider("aud", source=source, clock=ManualClock(NOW))  # type: ignore[arg-type]


def test_every_call_asks_the_agent_and_returns_its_current_token() -> None:
    source = FakeSource(_svid("t1", 300), _svid("t2", 300))
    provider = _provider(source)
    assert [provider.get_token(), provider()] == ["t1", "t2"]
    assert source.audiences == ["aud", "aud"]


def test_a_token_about_to_expire_is_refused() -> None:
    with pytest.raises(WorkloadApiError, match="about to expire") as caught:
        _provider(FakeSource(_svid("t", 1))).get_token()
    assert caught.value.status == "UNAVAILABLE"


def test_no_identity_names_the_audience_and_the_fix() -> None:
    with pytest.raises(NoIdentityError, match=r"audience 'aud': no registration entry matches it \(create one"):
        _provider(FakeSource(NoIdentityError("no identity issued", status="PERMISSION_DENIED"))).get_token()


def test_workload_identity_is_the_mapping_the_openai_sdk_takes_without_importing_it() -> None:
    identity = workload_identity("idp_1", "sa_1", refresh_buffer_seconds=60)
    assert identity["identity_provider_id"] == "idp_1" and identity["service_account_id"] == "sa_1"
    assert identity["provider"]["token_type"] == "jwt" and callable(identity["provider"]["get_token"])
    assert identity["refresh_buffer_seconds"] == 60
    with pytest.raises(ValueError, match="required"):
        workload_identity("", "sa_1")


def test_importing_the_library_and_the_integrations_imports_no_sdk() -> None:
    code = ("import sys, spiffe_py, spiffe_py.integrations.openai, spiffe_py.integrations.anthropic; "
            "print(sorted(m for m in ('openai', 'anthropic', 'httpx2', 'httpcore2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"

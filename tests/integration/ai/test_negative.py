"""What the integrations refuse: no identity means a fast, clear error; a revoked JWT-SVID is never handed out again."""

from __future__ import annotations

import re
import time

import pytest

from spiffe_py.errors import NoIdentityError, WorkloadApiError
from spiffe_py.integrations import JwtSvidProvider
from spiffe_py.integrations.openai import workload_identity
from spiffe_py.workloadapi import WorkloadApiClient
from tests.integration.ai.conftest import World
from tests.support.agent_proc import AgentProc


@pytest.fixture
def agent_without_entries(world: World) -> AgentProc:
    return world.bare_agent


def test_a_workload_without_an_entry_gets_a_clear_error_not_a_hang(agent_without_entries: AgentProc) -> None:
    provider = JwtSvidProvider("https://api.openai.com/v1", address=agent_without_entries.address, timeout=3)
    started = time.monotonic()
    expected = "no JWT-SVID is issued to this workload for audience 'https://api.openai.com/v1': no registration entry"
    with pytest.raises(NoIdentityError, match=re.escape(expected)):
        provider.get_token()
    assert time.monotonic() - started < 2  # one refused call, not a wait for the timeout
    provider.close()


def test_the_openai_sdk_passes_that_error_on_before_any_exchange(agent_without_entries: AgentProc,
                                                                world: World) -> None:
    from openai import OpenAI

    identity = workload_identity("idp_spiffe_example", "sa_billing", timeout=3)
    identity["provider"]["get_token"] = JwtSvidProvider("https://api.openai.com/v1",
                                                        address=agent_without_entries.address, timeout=3)
    client = OpenAI(workload_identity=identity, base_url="https://api.openai.invalid/v1", max_retries=0)
    before = world.standins.ledger.snapshot()["exchange_refusals"]
    started = time.monotonic()
    with pytest.raises(NoIdentityError, match="no registration entry matches it"):
        client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}])
    assert time.monotonic() - started < 6
    assert world.standins.ledger.snapshot()["exchange_refusals"] == before  # nothing reached the exchange


def test_a_revoked_jwt_svid_is_not_handed_out_again(world: World) -> None:
    audience = "https://revocation.example.test"
    with JwtSvidProvider(audience, address=world.address) as provider, \
            WorkloadApiClient(world.address, timeout=5) as client:
        first = provider.fetch()
        jti = first.claims["jti"]
        issued = first.issued_at
        assert issued is not None
        world.server.cli("revoke", "svid", "--jti", jti, "--reason", "token leaked")
        deadline = time.monotonic() + 10
        while True:  # until the agent knows (its ValidateJWTSVID refuses the jti)
            try:
                client.validate_jwt_svid(first.token, audience)
            except WorkloadApiError as err:
                assert "revoked" in str(err)
                break
            assert time.monotonic() < deadline, "the revocation never reached the agent"
            time.sleep(0.1)
        tokens = [provider.fetch() for _ in range(20)]
        assert all(t.claims["jti"] != jti for t in tokens)
        # ...replaced because it was revoked, not because it reached half-life (10 s TTL -> 5 s)
        half_life = issued + (first.expiry - issued) / 2
        assert min(t.issued_at for t in tokens if t.issued_at) < half_life

"""The unmodified openai and anthropic SDKs call their APIs with no key, only the workload's JWT-SVIDs.

Each SDK runs as its own process (examples/openai_without_a_key/app.py) with its built-in URLs;
HTTPS_PROXY and SSL_CERT_FILE bring them to the local stand-ins, which validate every JWT-SVID
through our OIDC discovery and JWKS over HTTPS. JWT-SVIDs live 10 s and the stand-ins' access
tokens 8 s, so over the 40 s run each SDK re-exchanges several times with fresh JWT-SVIDs. The
third app is OpenAI's mTLS variant: the X509-SVID (10 s too) is the client certificate.
The apps run from the ``sdk_runs`` fixture, alongside the helper/nginx test.
"""

from __future__ import annotations

import pytest

from tests.integration.ai.conftest import ANTHROPIC_AUDIENCE, OPENAI_AUDIENCE, WORKLOAD_ID, SdkRuns, World


@pytest.mark.slow
def test_three_sdk_clients_keep_calling_across_svid_rotation_with_no_failure(world: World, sdk_runs: SdkRuns) -> None:
    started = sdk_runs.started
    results = sdk_runs.results()
    ledger = world.standins.ledger.snapshot()
    assert ledger["exchange_refusals"] == [] and ledger["api_refusals"] == []
    for name, audience in (("openai", OPENAI_AUDIENCE), ("anthropic", ANTHROPIC_AUDIENCE)):
        assert results[name]["failed"] == 0 and results[name]["ok"] >= 40, results[name]
        exchanges = [e for e in ledger["exchanges"] if e["provider"] == name and e["iat"] >= started - 10]
        # each exchange carried a JWT-SVID the stand-in validated through discovery (iss, aud, kid, exp, iat)
        assert all(e["sub"] == WORKLOAD_ID and e["iss"] == world.issuer and e["kid"] for e in exchanges)
        assert all(audience in (e["aud"] if isinstance(e["aud"], list) else [e["aud"]]) for e in exchanges)
        # the SVID rotated under the SDK: several distinct JWT-SVIDs, the later ones issued well after the start
        distinct = {e["jti"] for e in exchanges}
        assert len(distinct) >= 3, (name, len(distinct))
        assert max(e["iat"] for e in exchanges) - min(e["iat"] for e in exchanges) >= 15
    # the mTLS variant: the SDK's HTTP client presented each newly rotated X509-SVID to the token endpoint
    assert results["openai-x509"]["failed"] == 0 and results["openai-x509"]["ok"] >= 40, results["openai-x509"]
    x509_exchanges = [e for e in ledger["exchanges"] if e["provider"] == "openai-x509"]
    assert all(e["sub"] == WORKLOAD_ID for e in x509_exchanges)
    assert all(e["not_after"] > e["iat"] for e in x509_exchanges)  # "iat" here: when the stand-in issued
    assert len({e["serial"] for e in x509_exchanges}) >= 3, len({e["serial"] for e in x509_exchanges})

"""The credential broker end to end: official SDKs through spiffe-broker to a provider stand-in.

Real processes: spiffe-server, spiffe-agent, spiffe-broker and the stand-in; the SDKs run here,
as the workload, with no provider key anywhere in this process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2  # the anthropic SDK's own HTTP client package
import jwt as pyjwt
import openai
import pytest

from spiffe_py.audit import load_jsonl, verify_chain
from tests.integration.broker.conftest import (
    ANTHROPIC_KEY,
    BROKER_ID,
    OPENAI_KEY,
    TD,
    BrokerEnv,
    create_entries,
    wait_until,
)

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "hello"}]
BOUND_WORKLOAD = Path(__file__).parents[1] / "revocation" / "bound_workload.py"
SEEN: list[str] = []  # every response body and error message the workload saw


def openai_client(env: BrokerEnv, *, token: str | None = None, mtls: str | None = None) -> openai.OpenAI:
    ctx = env.mtls_context(mtls)[0] if mtls else env.verify_context()
    # with mTLS the SDK still wants an api_key: a placeholder, which the broker strips
    return openai.OpenAI(base_url=f"{env.base}/openai", api_key=token or "unused-placeholder",
                         http_client=httpx.Client(verify=ctx), max_retries=0)


def refusal(err: openai.APIStatusError | anthropic.APIStatusError) -> dict[str, Any]:
    SEEN.append(str(err))
    body: dict[str, Any] = err.response.json()["error"]
    return body


def test_openai_sdk_with_jwt_svid_non_streaming_and_streaming(broker_env: BrokerEnv) -> None:
    client = openai_client(broker_env, token=broker_env.jwt("agent"))
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    SEEN.append(reply.model_dump_json())
    assert reply.choices[0].message.content == "hello from the stand-in"
    assert reply.usage is not None and reply.usage.total_tokens == 15
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,  # type: ignore[arg-type]
                                                 stream=True))
    SEEN.extend(c.model_dump_json() for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(f"t{i} " for i in range(20))
    seen = [r for r in broker_env.upstream_requests() if r["route"] == "openai"]
    assert seen and all(r["key_ok"] and r["leaked"] is None for r in seen)
    assert all("x-api-key" not in [h.lower() for h in r["headers"]] for r in seen)  # type: ignore[union-attr]


def test_streams_pass_through_unbuffered(broker_env: BrokerEnv) -> None:
    """The stand-in sends 20 events 10 ms apart: the first must arrive well before the last was sent."""
    headers = {"Authorization": f"Bearer {broker_env.jwt('agent')}"}
    arrivals: list[float] = []
    with broker_env.client() as client, client.stream(
            "POST", f"{broker_env.base}/openai/chat/completions", headers=headers,
            json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        start = time.monotonic()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                arrivals.append(time.monotonic() - start)
    assert len(arrivals) == 21
    assert arrivals[-1] - arrivals[0] >= 0.15, f"events arrived together (buffered): {arrivals}"


def test_openai_sdk_with_mtls_svid(broker_env: BrokerEnv) -> None:
    client = openai_client(broker_env, mtls="mtls")
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    SEEN.append(reply.model_dump_json())
    assert reply.choices[0].message.content == "hello from the stand-in"
    # the broker appends its record as the response completes: the client may read it first
    wait_until(lambda: any(r["spiffe_id"] == broker_env.spiffe_id("mtls") and r["details"].get("status") == 200
                           and r["serial"] for r in load_jsonl(broker_env.audit_path)),
               "the mTLS caller's record, with its serial", timeout=5)


def test_anthropic_sdk_with_x_api_key_injection(broker_env: BrokerEnv) -> None:
    client = anthropic.Anthropic(base_url=f"{broker_env.base}/anthropic", auth_token=broker_env.jwt("agent"),
                                 http_client=httpx2.Client(verify=broker_env.verify_context()), max_retries=0)
    message = client.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES)  # type: ignore[arg-type]
    SEEN.append(message.model_dump_json())
    assert message.content[0].text == "hello from the stand-in"  # type: ignore[union-attr]
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES) as stream:  # type: ignore[arg-type]
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    SEEN.append(final.model_dump_json())
    assert text == "".join(f"t{i} " for i in range(20)) and final.usage.output_tokens == 20
    seen = [r for r in broker_env.upstream_requests() if r["route"] == "anthropic"]
    assert len(seen) == 2 and all(r["key_ok"] and r["leaked"] is None for r in seen)

    def tokens() -> list[object]:
        return [r["details"].get("tokens") for r in load_jsonl(broker_env.audit_path)
                if r["details"].get("upstream") == "anthropic" and r["details"].get("status") == 200]

    wait_until(lambda: len(tokens()) >= 2, "both anthropic records", timeout=5)
    assert tokens() == [15, 30]  # input + output, from the body and from the stream


def test_policy_model_allow_list_and_max_tokens_cap(broker_env: BrokerEnv) -> None:
    client = openai_client(broker_env, token=broker_env.jwt("agent"))
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.chat.completions.create(model="gpt-5-expensive", messages=MESSAGES)  # type: ignore[arg-type]
    assert refusal(denied.value) == {"type": "forbidden", "message": "model not on the allow list",
                                     "rule": "model-allow-list"}
    with pytest.raises(openai.PermissionDeniedError) as capped:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=4096)  # type: ignore[arg-type]
    assert refusal(capped.value)["rule"] == "max-tokens-cap"
    outsider = openai.OpenAI(base_url=f"{broker_env.base}/budgeted", api_key=broker_env.jwt("agent"),
                             http_client=httpx.Client(verify=broker_env.verify_context()), max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as not_allowed:
        outsider.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert refusal(not_allowed.value)["rule"] == "upstream.allow"


def test_bad_requests_get_precise_statuses(broker_env: BrokerEnv) -> None:
    """Too large (413), unknown upstream (404), upstream down (502): JSON errors naming the rule."""
    headers = {"Authorization": f"Bearer {broker_env.jwt('agent')}"}
    with broker_env.client() as client:
        big = client.post(f"{broker_env.base}/openai/chat/completions", headers=headers,
                          json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 70000}]})
        unknown = client.post(f"{broker_env.base}/nowhere/chat/completions", headers=headers, json={})
        down = client.post(f"{broker_env.base}/down/chat/completions", headers=headers,
                           json={"model": "gpt-4o-mini", "messages": MESSAGES})
    SEEN.extend(r.text for r in (big, unknown, down))
    assert (big.status_code, big.json()["error"]["rule"]) == (413, "max_request_bytes")
    assert (unknown.status_code, unknown.json()["error"]["rule"]) == (404, "upstream")
    assert (down.status_code, down.json()["error"]["rule"]) == (502, "upstream.error")


def test_token_budget_runs_out_mid_stream(broker_env: BrokerEnv) -> None:
    """25 tokens a day: the first stream (30 tokens) finishes whole, the next request is 429 with Retry-After."""
    client = openai.OpenAI(base_url=f"{broker_env.base}/budgeted", api_key=broker_env.jwt("budget"),
                           http_client=httpx.Client(verify=broker_env.verify_context()), max_retries=0)
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,  # type: ignore[arg-type]
                                                 stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).count("t") == 20
    # the broker asked the provider for the usage chunk, which the workload sees as the last chunk
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 30
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert refusal(limited.value)["rule"] == "tokens_per_day"
    assert 0 < int(limited.value.response.headers["Retry-After"]) <= 86400


def _refused_within(env: BrokerEnv, client: httpx.Client, headers: dict[str, str], start: float) -> float:
    def refused() -> bool:
        r = client.post(f"{env.base}/openai/chat/completions", headers=headers,
                        json={"model": "gpt-4o-mini", "messages": MESSAGES})
        SEEN.append(r.text)
        assert r.status_code in (200, 401), r.text
        return r.status_code == 401
    wait_until(refused, "the broker to refuse the revoked caller", timeout=10, step=0.01)
    return time.monotonic() - start


def test_revoked_jwt_svid_refused_within_one_second(broker_env: BrokerEnv) -> None:
    token = broker_env.jwt("revoked-jwt")
    headers = {"Authorization": f"Bearer {token}"}
    with broker_env.client() as client:
        assert client.post(f"{broker_env.base}/openai/chat/completions", headers=headers,
                           json={"model": "gpt-4o-mini", "messages": MESSAGES}).status_code == 200
        jti = pyjwt.decode(token, options={"verify_signature": False})["jti"]
        broker_env.server.cli("revoke", "svid", "--jti", jti, "--reason", "test")
        took = _refused_within(broker_env, client, headers, time.monotonic())
    print(f"JWT-SVID revocation -> refusal: {took:.3f}s")
    assert took < 1.0


def test_revoked_x509_svid_refused_within_one_second_on_a_kept_alive_connection(broker_env: BrokerEnv) -> None:
    ctx, serial = broker_env.mtls_context("revoked-x509")
    with broker_env.client(ctx) as client:
        assert client.post(f"{broker_env.base}/openai/chat/completions",
                           json={"model": "gpt-4o-mini", "messages": MESSAGES}).status_code == 200
        broker_env.server.cli("revoke", "svid", "--serial", f"{serial:x}", "--reason", "test")
        took = _refused_within(broker_env, client, {}, time.monotonic())
    print(f"X509-SVID revocation -> refusal: {took:.3f}s")
    assert took < 1.0


def test_quarantined_entry_refused_within_one_second(broker_env: BrokerEnv) -> None:
    headers = {"Authorization": f"Bearer {broker_env.jwt('quarantined')}"}
    with broker_env.client() as client:
        assert client.post(f"{broker_env.base}/openai/chat/completions", headers=headers,
                           json={"model": "gpt-4o-mini", "messages": MESSAGES}).status_code == 200
        broker_env.server.cli("entry", "quarantine", "--entry-id", broker_env.entries["quarantined"],
                              "--reason", "prompt injection suspected")
        took = _refused_within(broker_env, client, headers, time.monotonic())
    print(f"quarantine -> refusal: {took:.3f}s")
    assert took < 1.0


def test_ended_tasks_refused_within_one_second(broker_env: BrokerEnv) -> None:
    """A --bind-to-process caller that exits, and an --expires-at task that ends."""
    env = broker_env
    bound_id = f"spiffe://{TD}/ai/bound"
    expires_at = int(time.time()) + 8
    create_entries(env, [{"spiffe_id": bound_id, "bind_to_process": True},
                         {"spiffe_id": env.spiffe_id("task"), "expires_at": expires_at}])
    wait_until(lambda: _can_fetch(env, "task"), "the task entry to reach the agent")
    task_headers = {"Authorization": f"Bearer {env.jwt('task')}"}
    proc = subprocess.Popen([sys.executable, str(BOUND_WORKLOAD), env.agent.address, bound_id, BROKER_ID],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    line = proc.stdout.readline()
    if not line:  # the bound entry may not have reached the agent yet
        proc.wait(10)
        wait_until(lambda: _can_fetch(env, "bound"), "the bound entry to reach the agent")
        proc = subprocess.Popen([sys.executable, str(BOUND_WORKLOAD), env.agent.address, bound_id, BROKER_ID],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdin is not None and proc.stdout is not None
        line = proc.stdout.readline()
    bound_headers = {"Authorization": f"Bearer {json.loads(line)['token']}"}
    with env.client() as client:
        for headers in (bound_headers, task_headers):
            assert client.post(f"{env.base}/openai/chat/completions", headers=headers,
                               json={"model": "gpt-4o-mini", "messages": MESSAGES}).status_code == 200
        proc.stdin.close()
        proc.wait(10)
        took = _refused_within(env, client, bound_headers, time.monotonic())
        print(f"bound process exit -> refusal: {took:.3f}s")
        assert took < 1.0
        time.sleep(max(0.0, expires_at - time.time() - 0.3))
        wait = time.time()
        took = _refused_within(env, client, task_headers, time.monotonic()) - max(0.0, expires_at - wait)
        print(f"task end (--expires-at) -> refusal: {took:.3f}s after expires_at")
        assert took < 1.0


def _can_fetch(env: BrokerEnv, name: str) -> bool:
    try:
        env.jwt(name)
    except Exception:
        return False
    return True


# ---- token exchange ----------------------------------------------------------------------------


def exchange(env: BrokerEnv, client: httpx.Client, **form: str) -> httpx.Response:
    data = {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", **form}
    r = client.post(f"{env.base}/token", data=data)
    SEEN.append(r.text)
    return r


def jwt_form(token: str, kind: str = "subject") -> dict[str, str]:
    return {f"{kind}_token": token, f"{kind}_token_type": "urn:ietf:params:oauth:token-type:jwt"}


def test_token_exchange_nested_act_chain_validated_with_pyjwt(broker_env: BrokerEnv) -> None:
    env = broker_env
    with env.client() as client:
        jwks = pyjwt.PyJWKSet.from_dict(client.get(f"{env.base}/.well-known/jwks.json").json())
        first = exchange(env, client, **jwt_form(env.jwt("orchestrator")), **jwt_form(env.jwt("sub-agent"), "actor"),
                         audience="openai")
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
        assert body["token_type"] == "Bearer" and 0 < body["expires_in"] <= 120  # the policy's max_ttl
        key = jwks[pyjwt.get_unverified_header(body["access_token"])["kid"]]
        claims = pyjwt.decode(body["access_token"], key, algorithms=["ES256"], audience="openai", issuer=BROKER_ID)
        assert claims["sub"] == env.spiffe_id("orchestrator")
        assert claims["act"] == {"sub": env.spiffe_id("sub-agent")}
        assert claims["exp"] - claims["iat"] <= 120
        second = exchange(env, client, **jwt_form(body["access_token"]), **jwt_form(env.jwt("sub-sub-agent"), "actor"),
                          audience="openai")
        assert second.status_code == 200, second.text
        nested = pyjwt.decode(second.json()["access_token"], key, algorithms=["ES256"], audience="openai")
        assert nested["sub"] == env.spiffe_id("orchestrator")
        assert nested["act"] == {"sub": env.spiffe_id("sub-sub-agent"), "act": {"sub": env.spiffe_id("sub-agent")}}
        assert nested["exp"] <= claims["exp"]
        # a third actor would exceed max_act_depth = 2
        third = exchange(env, client, **jwt_form(second.json()["access_token"]), **jwt_form(env.jwt("agent"), "actor"),
                         audience="openai")
        assert third.status_code == 400 and third.json()["error"] == "invalid_request"
        assert "max_act_depth" in third.json()["error_description"]
        # an exchanged token is exchange-only: it never authenticates a proxied request
        used = client.post(f"{env.base}/openai/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES},
                           headers={"Authorization": f"Bearer {body['access_token']}"})
        SEEN.append(used.text)
        assert used.status_code == 401 and used.json()["error"]["rule"] == "exchange_only"
        # and a downstream tool audience, by resource
        tool = exchange(env, client, **jwt_form(env.jwt("orchestrator")), resource=f"spiffe://{TD}/tools/search")
        assert tool.status_code == 200, tool.text
    ctx, _ = env.mtls_context("mtls")
    with env.client(ctx) as client:
        by_mtls = exchange(env, client, audience="anthropic")
        assert by_mtls.status_code == 200, by_mtls.text
        assert pyjwt.decode(by_mtls.json()["access_token"], key, algorithms=["ES256"],
                            audience="anthropic")["sub"] == env.spiffe_id("mtls")


def test_token_exchange_refusals(broker_env: BrokerEnv) -> None:
    env = broker_env
    with env.client() as client:
        wrong_aud = exchange(env, client, **jwt_form(env.jwt("wrong-aud", audience="someone-else")), audience="openai")
        assert wrong_aud.status_code == 400 and wrong_aud.json()["error"] == "invalid_grant"
        assert "audience" in wrong_aud.json()["error_description"]
        target = exchange(env, client, **jwt_form(env.jwt("agent")), audience="not-a-configured-target")
        assert target.status_code == 400 and target.json()["error"] == "invalid_target"
        grant = client.post(f"{env.base}/token", data={"grant_type": "password", "username": "x"})
        assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"
        anonymous = exchange(env, client, audience="openai")
        assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"
        # revoked subject: a JWT-SVID whose jti the server revoked
        token = env.jwt("revoked-jwt")
        jti = pyjwt.decode(token, options={"verify_signature": False})["jti"]
        env.server.cli("revoke", "svid", "--jti", jti, "--reason", "test")
        wait_until(lambda: exchange(env, client, **jwt_form(token), audience="openai").status_code == 400,
                   "the revoked subject to be refused", timeout=5)
        revoked = exchange(env, client, **jwt_form(token), audience="openai")
        assert revoked.json()["error"] == "invalid_grant" and "revoked" in revoked.json()["error_description"]
        # expired subject: a JWT-SVID past its exp (signed by the server's key, so only time refuses it)
        expired = env.server.cli_json("jwt", "mint", "--spiffe-id", env.spiffe_id("agent"), "--audience", BROKER_ID,
                                      "--ttl", "1s")
        time.sleep(2.5)
        late = exchange(env, client, **jwt_form(expired["token"]), audience="openai")
        assert late.status_code == 400 and late.json()["error"] == "invalid_grant"
        assert "expired" in late.json()["error_description"]


def test_secret_rotation_followed_on_file_change_and_sighup(broker_env: BrokerEnv) -> None:
    env = broker_env
    key_file = env.root / "openai.key"
    headers = {"Authorization": f"Bearer {env.jwt('agent')}"}

    def ok() -> bool:
        r = client.post(f"{env.base}/openai/chat/completions", headers=headers,
                        json={"model": "gpt-4o-mini", "messages": MESSAGES})
        SEEN.append(r.text)
        return r.status_code == 200

    def rotate(value: str) -> None:
        tmp = env.root / "openai.key.new"
        tmp.touch(mode=0o600)
        tmp.write_text(value + "\n")
        os.replace(tmp, key_file)  # what a secret manager's atomic update looks like

    with env.client() as client:
        try:
            rotate(OPENAI_KEY + "-rotated")
            took = wait_until(ok, "the broker to pick up the rotated key", timeout=10, step=0.1)
            print(f"file change -> new key in use after {took:.2f}s")
            key_file.write_text(OPENAI_KEY + "-hup\n")  # in place, then SIGHUP
            assert env.broker is not None
            env.broker.send_signal(signal.SIGHUP)
            wait_until(ok, "the broker to re-read the key on SIGHUP", timeout=10, step=0.05)
        finally:
            rotate(OPENAI_KEY)
            wait_until(ok, "the original key back in use", timeout=10, step=0.1)
    assert "-rotated" not in env.log_text() and "-hup" not in env.log_text()


def test_prometheus_metrics_per_upstream_and_caller(broker_env: BrokerEnv) -> None:
    text = httpx.get(f"http://127.0.0.1:{broker_env.metrics_port}/metrics").text
    agent = broker_env.spiffe_id("agent")
    assert f'spiffe_broker_requests_total{{caller="{agent}",status="200",upstream="openai"}}' in text
    assert f'spiffe_broker_tokens_total{{caller="{agent}",upstream="anthropic"}} 45.0' in text
    assert 'spiffe_broker_refusals_total{reason="model-allow-list",upstream="openai"} 1.0' in text


def test_the_workload_never_sees_the_key(broker_env: BrokerEnv) -> None:
    """Not in this process's environment, any response or error it got, the broker's log or its audit trail."""
    env = broker_env
    with env.client() as client:
        bad = client.post(f"{env.base}/openai/chat/completions", headers={"Authorization": "Bearer not-a-jwt"},
                          json={"model": "gpt-4o-mini", "messages": MESSAGES})
        SEEN.append(bad.text)
        assert bad.status_code == 401
        SEEN.append(client.get(f"{env.base}/nope/x", headers={"Authorization": "Bearer x"}).text)
    assert len(SEEN) > 20
    places = {"environment": "\n".join(f"{k}={v}" for k, v in os.environ.items()),
              "responses and errors": "\n".join(SEEN), "broker log": env.log_text(),
              "audit trail": env.audit_path.read_text()}
    for where, text in places.items():
        for secret in (OPENAI_KEY, ANTHROPIC_KEY, OPENAI_KEY[10:30], ANTHROPIC_KEY[10:30], "-rotated", "-hup"):
            assert secret not in text, f"a provider key leaked into the {where}"
    records = load_jsonl(env.audit_path)
    assert verify_chain(records).ok
    assert not any("eyJ" in json.dumps(r) for r in records)  # no token in the trail either
    proxied = [r for r in records if r["method"] == "BrokerProxy" and r["details"].get("status") == 200]
    assert {"upstream", "http_method", "path", "model", "status", "tokens", "duration_ms"} <= set(proxied[0]["details"])

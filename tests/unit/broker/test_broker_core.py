"""The broker's pure parts: config, header filtering, body fields, usage metering, budgets, token exchange
parsing, and the agent's revocation watch messages with the client that applies them."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spiffe_agent.manager.cache import RevocationState as AgentRevocations
from spiffe_agent.workloadapi.revocations import MAX_VALUES_PER_MESSAGE, revocation_messages
from spiffe_broker.budget import Budgets
from spiffe_broker.config import ConfigError, parse_config
from spiffe_broker.exchange import GRANT_TYPE, JWT_TYPE, ExchangeError, act_depth, nest_act, parse_request
from spiffe_broker.proxy import body_fields, response_headers, upstream_headers, with_stream_usage
from spiffe_broker.secrets import Secret, SecretFileError, SecretStore, read_secret
from spiffe_broker.usage import SseUsage, body_tokens
from spiffe_py.spiffeid import SpiffeId
from spiffe_py.workloadapi import RevocationState
from spiffe_py.workloadapi._revocations import apply_message

NOW = datetime(2026, 12, 7, 23, 59, 30, tzinfo=UTC)
UPSTREAM = """
[[upstream]]
name = "openai"
base_url = "https://api.openai.com/v1/"
secret_file = "/etc/spiffe/openai.key"
inject = "bearer"
allow = ["spiffe://example.org/ai/*", "spiffe://example.org/exact"]
requests_per_minute = 2
tokens_per_day = 100
"""


def test_config_names_and_defaults() -> None:
    cfg = parse_config(UPSTREAM + '\n', source="b.toml")
    up = cfg.upstreams["openai"]
    assert (cfg.bind_address, cfg.bind_port, cfg.audience) == ("127.0.0.1", 8445, "")
    assert up.base_url == "https://api.openai.com/v1" and up.header == "authorization"
    assert up.header_value("k") == "Bearer k"
    assert up.allows("spiffe://example.org/ai/agent") and up.allows("spiffe://example.org/exact")
    assert not up.allows("spiffe://example.org/aix") and not up.allows("spiffe://example.org/exact/sub")


@pytest.mark.parametrize(("text", "key"), [
    (UPSTREAM.replace("https://api.openai.com", "http://api.openai.com"), "base_url"),
    (UPSTREAM.replace('inject = "bearer"', 'inject = "host"'), "inject"),
    (UPSTREAM.replace('"/etc/spiffe/openai.key"', '"relative.key"'), "secret_file"),
    (UPSTREAM.replace('name = "openai"', 'name = "token"'), "name"),
    (UPSTREAM.replace("allow = [", "allow = [\"not-an-id\", "), "allow"),
    (UPSTREAM + "\nsurprise = 1\n", "unknown keys"),
    ("bind_port = 8445\n", "upstream"),
])
def test_config_refusals_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        parse_config(text)


def test_workload_api_socket_takes_a_uri_or_a_bare_path_and_refuses_anything_else() -> None:
    assert parse_config(UPSTREAM).workload_api_socket == ""  # SPIFFE_ENDPOINT_SOCKET then
    for given, kept in (("/run/agent/api.sock", "unix:///run/agent/api.sock"),
                        ("unix:///run/agent/api.sock", "unix:///run/agent/api.sock")):
        assert parse_config(f'workload_api_socket = "{given}"\n' + UPSTREAM).workload_api_socket == kept
    for bad in ("agent.sock", "http://127.0.0.1:1"):  # a clear ConfigError, not a traceback at start
        with pytest.raises(ConfigError, match="workload_api_socket"):
            parse_config(f'workload_api_socket = "{bad}"\n' + UPSTREAM)


def test_server_address_is_optional_host_and_port() -> None:
    assert parse_config(UPSTREAM).server_address is None  # the audit trail stays local
    assert parse_config('server_address = "spiffe.example.org:8081"\n' + UPSTREAM).server_address == (
        "spiffe.example.org", 8081)
    assert parse_config('server_address = "[::1]:8081"\n' + UPSTREAM).server_address == ("::1", 8081)
    for bad in ("127.0.0.1", "127.0.0.1:0", "h:8081/x", "u@h:8081", "h :8081", "h:8081?x"):
        with pytest.raises(ConfigError, match="server_address: must be host:port"):
            parse_config(f'server_address = "{bad}"\n' + UPSTREAM)


def test_http_upstream_only_to_loopback() -> None:
    cfg = parse_config(UPSTREAM.replace("https://api.openai.com", "http://127.0.0.1:9"))
    assert cfg.upstreams["openai"].base_url == "http://127.0.0.1:9/v1"


def test_headers_strip_caller_credentials_and_hop_by_hop_then_inject() -> None:
    up = parse_config(UPSTREAM).upstreams["openai"]
    incoming = [("Host", "broker"), ("Authorization", "Bearer eyJcaller"), ("X-Api-Key", "caller"),
                ("Cookie", "s=1"), ("Connection", "keep-alive, X-Drop"), ("X-Drop", "1"), ("Keep-Alive", "5"),
                ("TE", "trailers"), ("Content-Type", "application/json"), ("OpenAI-Organization", "org")]
    out = upstream_headers(incoming, up, "sk-secret")
    names = [k.lower() for k, _ in out]
    assert names.count("authorization") == 1 and ("authorization", "Bearer sk-secret") in [(k.lower(), v) for k, v
                                                                                          in out]
    for gone in ("x-api-key", "cookie", "connection", "x-drop", "keep-alive", "te", "host"):
        assert gone not in names
    assert ("Content-Type", "application/json") in out and ("OpenAI-Organization", "org") in out
    back = response_headers([("Transfer-Encoding", "chunked"), ("Content-Length", "5"), ("X-Request-Id", "r"),
                             ("Set-Cookie", "a=b")])
    assert back == [("X-Request-Id", "r")]


def test_body_fields_and_stream_usage_rewrite() -> None:
    body = json.dumps({"model": "gpt-4o-mini", "max_tokens": 50, "stream": True, "messages": []}).encode()
    fields = body_fields(body, "application/json")
    assert (fields.model, fields.max_tokens, fields.stream) == ("gpt-4o-mini", 50, True)
    rewritten = with_stream_usage(fields, "chat/completions")
    assert rewritten is not None and json.loads(rewritten)["stream_options"] == {"include_usage": True}
    assert with_stream_usage(body_fields(rewritten, "application/json"), "chat/completions") is None
    assert body_fields(b"not json", "application/json").model is None
    assert body_fields(body, "text/plain").model is None


def test_usage_from_bodies_and_streams() -> None:
    assert body_tokens(b'{"usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}') == 7
    assert body_tokens(b'{"usage": {"input_tokens": 3, "output_tokens": 4}}') == 7
    openai = SseUsage()
    stream = (b'data: {"choices": []}\n\ndata: {"choices": [], "usage": {"prompt_tokens": 10, '
              b'"completion_tokens": 20, "total_tokens": 30}}\n\ndata: [DONE]\n\n')
    for i in range(0, len(stream), 7):  # split anywhere, even inside a line
        openai.feed(stream[i:i + 7])
    assert openai.tokens == 30
    anthropic = SseUsage()
    anthropic.feed(b'event: message_start\ndata: {"type": "message_start", "message": {"usage": {"input_tokens": 10, '
                   b'"output_tokens": 1}}}\n\nevent: message_delta\ndata: {"type": "message_delta", "usage": '
                   b'{"output_tokens": 20}}\n\n')
    assert anthropic.tokens == 30
    long_line = SseUsage()
    long_line.feed(b"data: {" + b"x" * 300_000)
    long_line.feed(b'}\ndata: {"usage": {"input_tokens": 1, "output_tokens": 1}}\n')
    assert long_line.tokens == 2


def test_budgets_requests_per_minute_and_tokens_per_day() -> None:
    up = parse_config(UPSTREAM).upstreams["openai"]
    b = Budgets()
    key = ("spiffe://example.org/ai/a", "openai")
    for _ in range(2):
        assert b.check(key, up, now=NOW) is None
        b.count_request(key, now=NOW)
    limited = b.check(key, up, now=NOW + timedelta(seconds=20))
    assert limited is not None and limited.rule == "requests_per_minute" and limited.retry_after == 40
    assert b.check(key, up, now=NOW + timedelta(seconds=60)) is None  # the window moved on
    b.add_tokens(key, 100, now=NOW + timedelta(seconds=60))
    spent = b.check(key, up, now=NOW + timedelta(seconds=61))
    assert spent is not None and spent.rule == "tokens_per_day"
    assert spent.retry_after == 86400 - 61 + 30  # until the next UTC midnight
    assert b.check(key, up, now=NOW + timedelta(days=1, seconds=60)) is None  # a new UTC day
    assert b.check(("spiffe://example.org/ai/other", "openai"), up, now=NOW) is None


def test_secret_files_must_be_private_single_line(tmp_path: Path) -> None:
    good = tmp_path / "k"
    good.touch(mode=0o600)
    good.write_text("sk-abc\n")
    secret, _ = read_secret(good)
    assert secret.reveal() == "sk-abc" and "sk-abc" not in repr(secret) and "sk-abc" not in str(secret)
    os.chmod(good, 0o644)
    with pytest.raises(SecretFileError, match="too open") as err:
        read_secret(good)
    assert "sk-abc" not in str(err.value)
    os.chmod(good, 0o600)
    good.write_text("two words\n")
    with pytest.raises(SecretFileError, match="printable"):
        read_secret(good)
    good.write_text("sk-new\n")
    store = SecretStore({"u": good})
    good.write_text("sk-newer\n")
    assert store.reload() == ["u"] and store.get("u") == Secret("sk-newer")
    os.chmod(good, 0o640)
    assert store.reload() == [] and store.get("u").reveal() == "sk-newer"  # the old one stays in force


def form(**fields: str) -> dict[str, list[str]]:
    return {k: [v] for k, v in {"grant_type": GRANT_TYPE, **fields}.items()}


def test_exchange_request_parsing_and_act_chains() -> None:
    req = parse_request(form(subject_token="t", subject_token_type=JWT_TYPE, audience="openai"))
    assert (req.subject_token, req.actor_token, req.target) == ("t", None, "openai")
    for bad, code in [(form(audience="x", grant_type="password"), "unsupported_grant_type"),
                      (form(subject_token="t", audience="x"), "invalid_request"),
                      (form(subject_token="t", subject_token_type=JWT_TYPE), "invalid_request"),
                      (form(audience="a", resource="b"), "invalid_target"),
                      ({**form(audience="a"), "audience": ["a", "b"]}, "invalid_request")]:
        with pytest.raises(ExchangeError) as err:
            parse_request(bad)
        assert err.value.code == code
    agent, sub = SpiffeId.parse("spiffe://td/agent"), SpiffeId.parse("spiffe://td/sub")
    chain = nest_act(sub, nest_act(agent, None))
    assert chain == {"sub": "spiffe://td/sub", "act": {"sub": "spiffe://td/agent"}}
    assert act_depth(chain) == 2 and act_depth(None) == 0


def test_revocation_messages_full_then_additions_and_chunks() -> None:
    first = AgentRevocations(frozenset({"a1"}), frozenset({"j1"}))
    msgs = revocation_messages(None, first)
    assert [(m.full, list(m.x509_serials), list(m.jwt_ids), m.more) for m in msgs] == [(True, ["a1"], ["j1"], False)]
    state = apply_message(RevocationState(), msgs[0])
    assert state.x509_revoked(0xA1) and state.jwt_revoked("j1") and not state.jwt_revoked("j2")
    assert revocation_messages(first, first) == []
    more = AgentRevocations(frozenset({"a1", "b2"}), frozenset({"j1"}))
    (delta,) = revocation_messages(first, more)
    assert not delta.full and list(delta.x509_serials) == ["b2"]
    state = apply_message(state, delta)
    assert state.x509_revoked(0xB2) and state.x509_revoked(0xA1)
    shrunk = AgentRevocations(frozenset({"b2"}), frozenset())
    (full,) = revocation_messages(more, shrunk)
    assert full.full and apply_message(state, full).x509_serials == frozenset({"b2"})
    big = AgentRevocations(frozenset(f"{i:x}" for i in range(MAX_VALUES_PER_MESSAGE + 10)), frozenset())
    chunks = revocation_messages(None, big)
    assert [m.full for m in chunks] == [True, False] and [m.more for m in chunks] == [True, False]
    state = RevocationState()
    for m in chunks:
        state = apply_message(state, m)
    assert len(state.x509_serials) == MAX_VALUES_PER_MESSAGE + 10

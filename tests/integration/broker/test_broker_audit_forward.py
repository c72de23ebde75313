"""The broker's audit trail reaches the server's central chain (``server_address``, ``[audit] forwarders``).

Real processes: spiffe-server (SQLite, ``[audit] forwarders = [<broker>]``), spiffe-agent, the
broker and the provider stand-in of conftest; a second broker whose SPIFFE ID is not listed is
refused with PERMISSION_DENIED, and the refusal is in the central chain too.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.broker.conftest import (
    ANTHROPIC_KEY,
    BROKER_ID,
    OPENAI_KEY,
    UNLISTED_BROKER_ID,
    BrokerEnv,
    broker_config,
    start_broker,
    wait_until,
)
from tests.support.proc import terminate
from tests.support.server_proc import free_port

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "hello"}]


def central(env: BrokerEnv, *args: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = env.server.cli_json("audit", "show", *args)["records"]
    return records


def test_a_proxied_request_is_in_the_servers_audit_chain_without_key_or_token(broker_env: BrokerEnv) -> None:
    env = broker_env
    token = env.jwt("audited")  # a caller no other test uses: its records are this test's
    with env.client() as client:
        reply = client.post(
            f"{env.base}/openai/chat/completions",
            headers={"Authorization": f"Bearer {token}"},
            json={"model": "gpt-4o-mini", "messages": MESSAGES},
        )
    assert reply.status_code == 200

    def forwarded() -> list[dict[str, Any]]:
        return [r for r in central(env, "--spiffe-id", env.spiffe_id("audited")) if r["actor"] == BROKER_ID]

    wait_until(lambda: bool(forwarded()), "the broker's record in the server's audit chain", timeout=10, step=0.2)
    [record] = forwarded()
    inner = record["details"]["forwarded"]
    assert (record["method"], record["decision"], inner["actor"]) == ("BrokerProxy", "allow", "broker")
    assert {k: inner["details"][k] for k in ("upstream", "http_method", "path", "model", "status", "tokens")} == {
        "upstream": "openai",
        "http_method": "POST",
        "path": "/openai/chat/completions",
        "model": "gpt-4o-mini",
        "status": 200,
        "tokens": 15,
    }
    assert inner["details"]["duration_ms"] > 0
    text = json.dumps(central(env))
    for secret in (token, token.split(".")[1], OPENAI_KEY, ANTHROPIC_KEY, OPENAI_KEY[10:30], "eyJ"):
        assert secret not in text
    assert env.server.cli("audit", "verify").returncode == 0


def test_a_broker_not_listed_in_forwarders_is_refused_and_the_refusal_audited(broker_env: BrokerEnv) -> None:
    env = broker_env
    port, log = free_port(), env.root / "unlisted.log"
    config = env.root / "unlisted.toml"
    config.write_text(broker_config(env, port=port, spiffe_id=UNLISTED_BROKER_ID, data_dir="unlisted"))
    proc = start_broker(env, config, log, port)
    try:
        with env.client() as client:  # refused by the broker (no credentials): a record to forward all the same
            assert client.get(f"https://localhost:{port}/openai/models").status_code == 401

        def refusals() -> list[dict[str, Any]]:
            return [
                r
                for r in central(env, "--decision", "deny", "--spiffe-id", UNLISTED_BROKER_ID)
                if r["method"] == "ForwardAudit"
            ]

        wait_until(lambda: bool(refusals()), "the refusal in the server's audit chain", timeout=10, step=0.2)
        wait_until(lambda: "PERMISSION_DENIED" in log.read_text(), "the broker to log the refusal", timeout=5)
    finally:
        terminate(proc)
    assert refusals()[0]["actor"] == UNLISTED_BROKER_ID
    assert "not listed in [audit] forwarders" in refusals()[0]["reason"]
    assert "audit: the server refused ForwardAudit: PERMISSION_DENIED" in log.read_text()
    assert not [r for r in central(env) if r["actor"] == UNLISTED_BROKER_ID and r["method"] != "ForwardAudit"]
    assert not (env.root / "unlisted" / "audit.forwarded").exists()  # nothing was acknowledged

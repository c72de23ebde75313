"""The agent's node attestor registry and its two plugins (config checks; pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from spiffe_agent.config import build_config
from spiffe_agent.errors import AgentConfigError, NodeAttestationError
from spiffe_agent.nodeattest.base import register_node_attestor
from spiffe_agent.nodeattest.registry import build_node_attestor, node_attestor_names
from spiffe_py._x509pop import new_nonce, verify_x509pop_response
from tests.support.ca import CA


def test_the_builtin_attestors_are_registered() -> None:
    assert {"join_token", "x509pop"} <= set(node_attestor_names())
    with pytest.raises(AgentConfigError, match="node_attestor must be one of"):
        build_node_attestor("tpm", {})


def test_join_token_sends_the_token_and_refuses_a_challenge() -> None:
    client = build_node_attestor("join_token", {"token": "abc"})
    assert client.payload() == b"abc" and not client.reusable
    assert "abc" not in repr(client)
    with pytest.raises(NodeAttestationError):
        client.answer(b"x" * 32)


def test_x509pop_answers_with_the_certificate_key(tmp_path: Path) -> None:
    issued = CA.create("nodes.test").issue_svid("spiffe://nodes.test/n")
    (tmp_path / "c.pem").write_bytes(issued.chain_pem())
    (tmp_path / "k.pem").write_bytes(issued.key_pem())
    client = build_node_attestor("x509pop", {"cert_file": str(tmp_path / "c.pem"), "key_file": str(tmp_path / "k.pem")})
    assert client.reusable and client.payload() == issued.chain_der()
    nonce = new_nonce()
    verify_x509pop_response(nonce, client.answer(nonce), issued.leaf.public_key())


def test_x509pop_refuses_a_key_of_another_certificate(tmp_path: Path) -> None:
    ca = CA.create("nodes.test")
    (tmp_path / "c.pem").write_bytes(ca.issue_svid("spiffe://nodes.test/a").chain_pem())
    (tmp_path / "k.pem").write_bytes(ca.issue_svid("spiffe://nodes.test/b").key_pem())
    with pytest.raises(AgentConfigError, match="does not hold the key"):
        build_node_attestor("x509pop", {"cert_file": str(tmp_path / "c.pem"), "key_file": str(tmp_path / "k.pem")})
    with pytest.raises(AgentConfigError, match="needs 'cert_file'"):
        build_node_attestor("x509pop", {"key_file": str(tmp_path / "k.pem")})


def test_config_picks_the_attestor_and_keeps_flags_and_table_apart() -> None:
    assert build_config({"trust_domain": "example.org"}).node_attestor_client() is None  # stored identity only
    token = build_config({"trust_domain": "example.org", "join_token": "t"}).node_attestor_client()
    assert token is not None and token.name == "join_token"
    with pytest.raises(AgentConfigError, match=r"\[x509pop\] is set"):
        build_config({"trust_domain": "example.org", "x509pop": {"cert_file": "c"}}).node_attestor_client()


@dataclass(frozen=True)
class _ToyClient:
    name: str = "toy"
    reusable: bool = True

    def payload(self) -> bytes:
        return b"toy"

    def answer(self, challenge: bytes) -> bytes:
        return challenge[::-1]


def test_a_new_node_attestor_needs_only_a_registry_line() -> None:
    def factory(table: Mapping[str, Any]) -> _ToyClient:
        return _ToyClient()

    register_node_attestor("toy-node", factory)
    assert build_node_attestor("toy-node", {}).answer(b"ab") == b"ba"
    with pytest.raises(ValueError, match="already registered"):
        register_node_attestor("toy-node", factory)

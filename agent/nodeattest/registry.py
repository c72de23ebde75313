"""The agent's node attestors, by attestation type: one line per plugin."""

from __future__ import annotations

from spiffe_agent.nodeattest import join_token, x509pop
from spiffe_agent.nodeattest.base import build_node_attestor, node_attestor_names, register_node_attestor

register_node_attestor(join_token.NAME, join_token.JoinTokenClient.from_config)
register_node_attestor(x509pop.NAME, x509pop.X509PopClient.from_config)

__all__ = ["build_node_attestor", "node_attestor_names"]

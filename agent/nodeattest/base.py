"""The agent's node attestor seam and its registry (the server halves live in server/nodeattest).

A plugin gives the payload of the first AttestAgent message and answers the server's challenges.
It is built by the factory registered under its attestation type, from its own config table::

    attestor = build_node_attestor("x509pop", {"cert_file": "node.pem", "key_file": "node.key"})
    payload = attestor.payload()
    answer = attestor.answer(challenge)

Adding a node attestor to the agent is one module plus one ``register_node_attestor`` line in
:mod:`spiffe_agent.nodeattest.registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from spiffe_agent.errors import AgentConfigError


class NodeAttestorClient(Protocol):
    """The agent half of one attestation type."""

    @property
    def name(self) -> str:
        """The attestation type, as the server knows it (``join_token``, ``x509pop``)."""
        ...

    @property
    def reusable(self) -> bool:
        """True when the evidence can be presented again, so re-attestation needs no operator."""
        ...

    def payload(self) -> bytes:
        """The evidence sent with the attestation params."""
        ...

    def answer(self, challenge: bytes) -> bytes:
        """The answer to one server challenge; NodeAttestationError when none is expected."""
        ...


NodeAttestorFactory = Callable[[Mapping[str, Any]], NodeAttestorClient]

_FACTORIES: dict[str, NodeAttestorFactory] = {}


def register_node_attestor(name: str, factory: NodeAttestorFactory) -> None:
    """Make ``name`` configurable; ``factory`` validates its own table (AgentConfigError)."""
    if name in _FACTORIES:
        raise ValueError(f"node attestor {name!r} is already registered")
    _FACTORIES[name] = factory


def node_attestor_names() -> tuple[str, ...]:
    """The registered attestation types."""
    return tuple(sorted(_FACTORIES))


def build_node_attestor(name: str, table: Mapping[str, Any]) -> NodeAttestorClient:
    """The plugin ``name`` built from its config table."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise AgentConfigError(f"config: node_attestor must be one of {node_attestor_names()!r}: {name!r}")
    return factory(table)


def config_str(table: Mapping[str, Any], plugin: str, key: str) -> str:
    """A required string of a plugin's table."""
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise AgentConfigError(f"config: node attestor {plugin!r} needs {key!r}")
    return value

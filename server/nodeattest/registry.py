"""The server's node attestor catalog: one line per plugin.

    plugins = node_attestor_plugins()                 # name -> NodeAttestorPlugin
    attestor = plugins["x509pop"].build(config, PluginHost(trust_domain=td, store=store))

Adding a node attestor to the server is one module (an attestor, a ``parse_config`` and a
``build``) plus one line here; its table is ``[node_attestors.<name>]``.
"""

from __future__ import annotations

from types import MappingProxyType

from spiffe_server.nodeattest import join_token, x509pop
from spiffe_server.nodeattest.base import NodeAttestorPlugin

_PLUGINS = MappingProxyType({p.name: p for p in (
    NodeAttestorPlugin(join_token.NAME, join_token.parse_config, join_token.build, enabled_by_default=True),
    NodeAttestorPlugin(x509pop.NAME, x509pop.parse_config, x509pop.build),
)})


def node_attestor_plugins() -> MappingProxyType[str, NodeAttestorPlugin]:
    """Every node attestor the server can run, by attestation type."""
    return _PLUGINS

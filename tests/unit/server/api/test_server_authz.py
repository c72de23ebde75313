"""Table tests for server.authz (pure entry authorization)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from grpclib.const import Status

from spiffe_py.errors import AuthorizationError
from spiffe_py.selectors import Selector
from spiffe_server.api.errors import status_for
from spiffe_server.authz import authorized_entries, check_entry_authorized, node_aliases

TD = "spiffe://example.org"
SERVER = f"{TD}/spire/server"
AGENT = f"{TD}/spire/agent/x509pop/abc"
OTHER = f"{TD}/spire/agent/x509pop/def"
NODE_SELECTORS = (Selector.parse("x509pop:subject:cn:node1"), Selector.parse("x509pop:ca:fp"))


@dataclass(frozen=True)
class E:
    id: str
    spiffe_id: str
    parent_id: str
    selectors: tuple[Selector, ...] = (Selector.parse("unix:uid:0"),)


ENTRIES = [
    E("direct", f"{TD}/web", AGENT),
    E("nested", f"{TD}/web/child", f"{TD}/web"),
    E("deep", f"{TD}/web/child/grand", f"{TD}/web/child"),
    E("alias", f"{TD}/cluster/a", SERVER, (Selector.parse("x509pop:subject:cn:node1"),)),
    E("via-alias", f"{TD}/db", f"{TD}/cluster/a"),
    E("alias-miss", f"{TD}/cluster/b", SERVER, (Selector.parse("x509pop:subject:cn:node2"),)),
    E("via-miss", f"{TD}/cache", f"{TD}/cluster/b"),
    E("foreign", f"{TD}/other", OTHER),
    E("cycle-a", f"{TD}/loop/a", f"{TD}/loop/b"),
    E("cycle-b", f"{TD}/loop/b", f"{TD}/loop/a"),
    E("server-child", f"{TD}/srv", SERVER, (Selector.parse("x509pop:subject:cn:node1"),
                                             Selector.parse("x509pop:extra:x"))),
]


@pytest.mark.parametrize(("entry_id", "allowed"), [
    ("direct", True),          # parented to the agent
    ("nested", True),          # child of an authorized entry
    ("deep", True),            # grandchild (recursive)
    ("via-alias", True),       # parented to a node alias whose selectors ⊆ node selectors
    ("alias", False),          # the node-alias entry itself is the server's, not the agent's
    ("via-miss", False),       # alias selectors not all on this node
    ("alias-miss", False),
    ("foreign", False),        # another agent's entry
    ("cycle-a", False),        # unreachable cycle
    ("server-child", False),   # selector superset of node selectors: not an alias
])
def test_authorized_entries_table(entry_id: str, allowed: bool) -> None:
    result = authorized_entries(AGENT, NODE_SELECTORS, ENTRIES, server_id=SERVER)
    assert (entry_id in result) is allowed


def test_node_aliases_requires_subset() -> None:
    assert node_aliases(NODE_SELECTORS, ENTRIES, server_id=SERVER) == {f"{TD}/cluster/a"}


def test_node_aliases_none_without_node_selectors() -> None:
    assert node_aliases((), ENTRIES, server_id=SERVER) == set()


def test_cycle_reachable_from_agent_terminates() -> None:
    entries = [E("a", f"{TD}/a", AGENT), E("b", f"{TD}/b", f"{TD}/a"), E("c", f"{TD}/a", f"{TD}/b")]
    assert set(authorized_entries(AGENT, (), entries, server_id=SERVER)) == {"a", "b", "c"}


def test_entry_parented_to_server_id_is_never_inherited() -> None:
    # an entry whose spiffe_id is the server ID must not make the server's children the agent's
    entries = [E("evil", SERVER, AGENT), E("srv", f"{TD}/s", SERVER)]
    assert set(authorized_entries(AGENT, (), entries, server_id=SERVER)) == {"evil"}


def test_check_entry_authorized_raises_permission_denied() -> None:
    allowed = authorized_entries(AGENT, (), ENTRIES, server_id=SERVER)
    assert check_entry_authorized("direct", allowed).spiffe_id == f"{TD}/web"
    with pytest.raises(AuthorizationError, match="authz: entry is not authorized for this agent: 'foreign'") as exc:
        check_entry_authorized("foreign", allowed)
    assert status_for(exc.value) is Status.PERMISSION_DENIED

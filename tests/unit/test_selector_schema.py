"""The selector schema the server checks entries against agrees with what the attestors produce,
and a typo is refused with a suggestion."""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from spiffe_agent.attest.docker import ContainerInfo, container_selectors
from spiffe_agent.attest.procfs import StatusIds
from spiffe_agent.attest.registry import default_registry
from spiffe_agent.attest.unix import unix_id_selectors
from spiffe_py._selector_schema import KNOWN, check_selector
from spiffe_server.nodeattest.x509pop import build_selectors
from tests.support.ca import CA


class _Names:
    def user_name(self, uid: int) -> str | None:
        return "alice"

    def group_name(self, gid: int) -> str | None:
        return "staff"


def _all_ok(selectors: object) -> list[str]:
    return [p for s in selectors for p in [check_selector(s.type, s.value)] if p]  # type: ignore[attr-defined]


def test_every_workload_attestor_of_the_agent_is_known() -> None:
    assert set(default_registry().names()) <= set(KNOWN)


def test_unix_selectors_the_attestor_produces_pass() -> None:
    produced = unix_id_selectors(StatusIds(euid=1000, egid=50, groups=(4, 27)), _Names())
    keys = {s.value.split(":")[0] for s in produced}
    assert keys == {"uid", "gid", "user", "group", "supplementary_gid", "supplementary_group"}
    assert _all_ok(produced) == []
    assert _all_ok([type(next(iter(produced)))("unix", v) for v in ("path:/usr/bin/app", "sha256:ab12")]) == []


def test_docker_selectors_the_attestor_produces_pass() -> None:
    produced = container_selectors(ContainerInfo(labels={"app": "web:1"}, env=("A=b",), image="busybox:1",
                                                 image_id="sha256:00"))
    assert len(produced) == 4 and _all_ok(produced) == []


def test_x509pop_selectors_the_attestor_produces_pass() -> None:
    ca = CA.create()
    leaf = ca.issue_svid("spiffe://example.org/node", dns_names=["node.example.org"],
                         subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node-1")])).leaf
    produced = build_selectors([leaf, ca.cert])
    kinds = {":".join(s.value.split(":")[:2]) for s in produced}
    assert {"subject:cn", "ca:fingerprint", "san:dns", "san:uri"} <= kinds
    assert _all_ok(produced) == []


def test_typos_from_the_field_are_refused_with_a_suggestion() -> None:
    wrong_key = check_selector("unix", "userid:1000")
    assert wrong_key is not None and "unknown key 'userid'" in wrong_key and "'unix:uid:1000'" in wrong_key
    unknown_type = check_selector("k8s", "ns:default")
    assert unknown_type is not None and "unknown selector type 'k8s'" in unknown_type
    assert "extra_selector_types" in unknown_type and "--allow-unknown-selector" in unknown_type
    bare_key = check_selector("uid", "0")
    assert bare_key is not None and "did you mean 'unix:uid:0'?" in bare_key
    near_type = check_selector("dockr", "label:a:b")
    assert near_type is not None and "'docker:label:a:b'" in near_type
    case = check_selector("x509pop", "subject:CN:node-1")
    assert case is not None and "'x509pop:subject:cn:node-1'" in case
    assert check_selector("unix", "uid") is not None  # a key with no value matches nothing
    assert check_selector("spiffe_id", "not-an-id") is not None


def test_explicitly_allowed_types_pass_unchecked() -> None:
    assert check_selector("k8s", "ns:default", extra_types=frozenset({"k8s"})) is None
    assert check_selector("spiffe_id", "spiffe://example.org/spire/agent/x") is None


def test_the_config_names_extra_selector_types() -> None:
    import pytest

    from spiffe_server.config import ConfigError, parse_config

    cfg = parse_config('trust_domain = "example.org"\nextra_selector_types = ["k8s", "tpm"]\n')
    assert cfg.extra_selector_types == ("k8s", "tpm")
    for bad in ('["k8s:ns"]', '[""]', '"k8s"', "[1]"):
        with pytest.raises(ConfigError, match="extra_selector_types"):
            parse_config(f'trust_domain = "example.org"\nextra_selector_types = {bad}\n')

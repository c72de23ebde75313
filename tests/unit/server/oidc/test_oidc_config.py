"""The [oidc] table: keys exactly as named, one issuer shared with JWT-SVID "iss", HTTPS unless explicitly plain."""

from __future__ import annotations

from pathlib import Path

import pytest

from spiffe_server.app import build_ca
from spiffe_server.config import ConfigError, parse_config

BASE = {"trust_domain": "example.org", "data_dir": "/tmp/d"}
TLS = 'cert_file = "/etc/spiffe/oidc.pem"\nkey_file = "/etc/spiffe/oidc.key"\n'


def test_oidc_table_keys_as_named() -> None:
    cfg = parse_config('[oidc]\nbind_address = "127.0.0.1"\nbind_port = 8444\n'
                       'issuer = "https://oidc.example.test/tenant-a"\n' + TLS, BASE)
    assert cfg.oidc is not None
    assert (cfg.oidc.bind_address, cfg.oidc.bind_port) == ("127.0.0.1", 8444)
    assert cfg.oidc.cert_file == Path("/etc/spiffe/oidc.pem") and cfg.oidc.key_file == Path("/etc/spiffe/oidc.key")
    assert not cfg.oidc.insecure_http
    assert cfg.jwt_issuer == "https://oidc.example.test/tenant-a"  # the issuer feeds JWT-SVID "iss"
    assert cfg.warnings() == []


def test_oidc_issuer_becomes_the_iss_of_minted_jwt_svids(tmp_path: Path) -> None:
    import jwt

    from spiffe_py.clock import SystemClock
    from spiffe_py.spiffeid import SpiffeId
    from spiffe_server.ca.templates import JwtSvidParams
    from spiffe_server.datastore import open_datastore

    cfg = parse_config('[oidc]\nissuer = "https://oidc.example.test/tenant-a"\ninsecure_http = true\n',
                       {"trust_domain": "example.org", "data_dir": str(tmp_path)})
    store = open_datastore(cfg.database_url)
    try:
        ca = build_ca(cfg, store, SystemClock())
        ca.tick()
        token = ca.sign_jwt_svid(JwtSvidParams(spiffe_id=SpiffeId.parse("spiffe://example.org/w"), audience=("a",)))
    finally:
        store.close()
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == "https://oidc.example.test/tenant-a"


def test_same_jwt_issuer_and_oidc_issuer_is_accepted() -> None:
    cfg = parse_config('jwt_issuer = "https://i.example"\n[oidc]\nissuer = "https://i.example"\n' + TLS, BASE)
    assert cfg.jwt_issuer == "https://i.example"


@pytest.mark.parametrize(("text", "message"), [
    ('jwt_issuer = "https://a.example"\n[oidc]\nissuer = "https://b.example"\n' + TLS, "differs from oidc.issuer"),
    ("[oidc]\n" + TLS, "oidc.issuer: required"),
    ('[oidc]\nissuer = "https://i.example"\n', "oidc.cert_file: required unless insecure_http"),
    ('[oidc]\nissuer = "https://i.example"\ncert_file = "/c"\n', "oidc.key_file: required"),
    ('[oidc]\nissuer = "https://i.example"\ninsecure_http = true\n' + TLS, "not both"),
    ('[oidc]\nissuer = "http://i.example"\n' + TLS, "must be an https:// URL"),
    ('[oidc]\nissuer = "https:///nohost"\n' + TLS, "must be an https:// URL with a host"),
    ('[oidc]\nissuer = "https://i.example/?q=1"\n' + TLS, "query or fragment"),
    ('[oidc]\nissuer = "https://i.example/#f"\n' + TLS, "query or fragment"),
    ('[oidc]\nissuer = "https://u:p@i.example"\n' + TLS, "credentials"),
    ('[oidc]\nissuer = " https://i.example"\n' + TLS, "without spaces"),
    ('[oidc]\nissuer = "https://i.example:99999"\n' + TLS, "not a valid URL"),
    ('[oidc]\nissuer = "https://i.example"\nport = 1\n' + TLS, "unknown key 'oidc.port'"),
    ('[oidc]\nissuer = "https://i.example"\ninsecure_http = "yes"\n', "oidc.insecure_http: expected a boolean"),
])
def test_bad_oidc_tables_are_refused_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("?", r"\?")):
        parse_config(text, BASE)


def test_insecure_http_and_an_issuer_port_are_warned_about() -> None:
    cfg = parse_config('[oidc]\nissuer = "https://i.example:8443/x"\ninsecure_http = true\n', BASE)
    warnings = "\n".join(cfg.warnings())
    assert "oidc.insecure_http" in warnings and "plain HTTP" in warnings
    assert "oidc.issuer: has a port" in warnings

"""TDB-05: every bundle the server serves or prints carries spiffe_refresh_hint (integer seconds)."""

from __future__ import annotations

import json
import urllib.request

from tests.support.server_proc import ServerProc, free_port


def test_bundle_show_and_bundle_endpoint_carry_the_refresh_hint_tdb05() -> None:
    port = free_port()
    config = f'ca_ttl = "20m"\n[federation.bundle_endpoint]\ninsecure_http = true\nbind_port = {port}\n'
    with ServerProc.start(config_text=config) as srv:
        printed = json.loads(srv.cli("bundle", "show", "--format", "spiffe").stdout)
        assert printed["spiffe_refresh_hint"] == 120  # ca_ttl / 10
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/bundle", timeout=10) as resp:
            served = json.loads(resp.read())
        assert served["spiffe_refresh_hint"] == 120
        assert served["spiffe_sequence"] == printed["spiffe_sequence"]

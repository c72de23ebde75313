"""``spiffe-agent helper`` with ``daemon_mode = false``: write every file once and exit; any error exits 1."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.integration.ai.conftest import WORKLOAD_ID, World

HELPER = str(Path(sys.executable).parent / "spiffe-agent")


def _config(tmp: Path, address: str) -> Path:
    path = tmp / "helper.toml"
    path.write_text(f'agent_address = "{address}"\ncert_dir = "{tmp}"\ndaemon_mode = false\n'
                    'svid_file_name = "svid.pem"\nsvid_key_file_name = "svid_key.pem"\n'
                    'svid_bundle_file_name = "bundle.pem"\njwt_bundle_file_name = "jwt_bundle.json"\n'
                    'jwt_svids = [{ jwt_audience = "sts.amazonaws.com", jwt_svid_file_name = "aws.jwt" }]\n')
    return path


def test_one_shot_writes_the_files_and_exits_0(world: World, tmp_path: Path) -> None:
    done = subprocess.run([HELPER, "helper", "--config", str(_config(tmp_path, world.address))],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    chain = x509.load_pem_x509_certificates((tmp_path / "svid.pem").read_bytes())
    key = serialization.load_pem_private_key((tmp_path / "svid_key.pem").read_bytes(), None)
    assert chain[0].public_key() == key.public_key()
    assert (tmp_path / "svid_key.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert x509.load_pem_x509_certificates((tmp_path / "bundle.pem").read_bytes())
    assert "example.org" in json.loads((tmp_path / "jwt_bundle.json").read_text())
    assert (tmp_path / "aws.jwt").read_text().count(".") == 2
    for secret in ("svid_key.pem", "aws.jwt"):
        assert stat.S_IMODE((tmp_path / secret).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "svid.pem").stat().st_mode) == 0o644
    uris = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uris.get_values_for_type(x509.UniformResourceIdentifier) == [WORKLOAD_ID]


def test_one_shot_without_an_identity_exits_1_with_the_reason(world: World, tmp_path: Path) -> None:
    done = subprocess.run([HELPER, "helper", "--config", str(_config(tmp_path, world.bare_agent.address))],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "PERMISSION_DENIED" in done.stderr or "no identity" in done.stderr.lower(), done.stderr
    assert not (tmp_path / "svid_key.pem").exists()

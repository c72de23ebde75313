"""Checks shared by the CA tests: every issued leaf must pass spiffe_py parsing and `openssl verify`."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import pytest
from cryptography import x509

from spiffe_py import _pem
from spiffe_py.bundle import X509Bundle
from spiffe_py.spiffeid import SpiffeId
from spiffe_py.x509svid import X509Svid, verify_x509_svid
from tests.support.ca import PrivateKey

CheckSvid = Callable[[Sequence[x509.Certificate], PrivateKey, Sequence[x509.Certificate], datetime], SpiffeId]


@pytest.fixture
def check_svid(tmp_path: Path) -> CheckSvid:
    """Parse the chain with spiffe_py, verify it against ``roots`` at ``now``, and run `openssl verify`."""

    def check(chain: Sequence[x509.Certificate], key: PrivateKey, roots: Sequence[x509.Certificate],
              now: datetime) -> SpiffeId:
        svid = X509Svid.parse(_pem.certificates_to_der(chain), _pem.private_key_to_der(key))
        bundle = X509Bundle(svid.spiffe_id.trust_domain, tuple(roots))
        assert verify_x509_svid(chain, bundle, now=now) == svid.spiffe_id
        (tmp_path / "roots.pem").write_bytes(_pem.certificates_to_pem(roots))
        (tmp_path / "leaf.pem").write_bytes(_pem.certificates_to_pem(chain[:1]))
        command = ["openssl", "verify", "-x509_strict", "-attime", str(int(now.timestamp())),
                   "-CAfile", str(tmp_path / "roots.pem")]
        if len(chain) > 1:
            (tmp_path / "untrusted.pem").write_bytes(_pem.certificates_to_pem(chain[1:]))
            command += ["-untrusted", str(tmp_path / "untrusted.pem")]
        result = subprocess.run([*command, str(tmp_path / "leaf.pem")], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip().endswith(": OK")
        return svid.spiffe_id

    return check

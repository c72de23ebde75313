"""Exchange a JWT-SVID for a cloud provider's access token through OIDC discovery, no static keys.

Self-contained (it starts its own spiffe-server with an ``[oidc]`` table)::

    python -m examples.oidc_token_exchange

1. A throwaway web CA and a serving certificate for ``localhost`` stand in for the public
   certificate a real issuer would have; the server publishes discovery and keys over HTTPS at
   the issuer ``https://localhost:<port>/tenant-a``.
2. The operator "registers" that issuer and an audience with the provider (here the stand-in
   STS in ``sts.py``, which checks iss, aud, exp, iat, sub, kid and the signature via discovery,
   as AWS, GCP, Azure and OpenAI do; see docs/federation.md).
3. A JWT-SVID for ``spiffe://example.org/examples/billing-client`` with that audience is
   exchanged (RFC 8693) for a provider token. A workload would fetch it from the Workload API;
   here ``spiffe-server jwt mint`` mints it so the example needs no agent.

Exits 0 only if the right token gets a provider token and a wrong-audience, expired, forged
or foreign-issuer token is refused.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from examples._common import check
from examples.oidc_token_exchange.sts import JWT_TYPES, TOKEN_EXCHANGE, Registration, serve

SPIFFE_ID = "spiffe://example.org/examples/billing-client"
AUDIENCE = "https://sts.example.test/v1/token"  # what the provider registration expects
SERVER = [sys.executable, "-m", "spiffe_server.cli"]


def web_pki(directory: Path) -> tuple[Path, Path, Path]:
    """A root CA and a ``localhost`` serving certificate; returns (root, cert, key) paths."""
    now = datetime.now(UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example web root")])
    root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(root_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(root_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(root_key, hashes.SHA256()))
    paths = directory / "root.pem", directory / "oidc.pem", directory / "oidc.key"
    paths[0].write_bytes(root.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(paths[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def mint(sock: Path, audience: str = AUDIENCE, ttl: int = 120) -> str:
    out = subprocess.run([*SERVER, "jwt", "mint", "--spiffe-id", SPIFFE_ID, "--audience", audience,
                          "--ttl", str(ttl), "--output", "json", "--socket-path", str(sock)],
                         check=True, capture_output=True, text=True, timeout=60)
    token: str = json.loads(out.stdout)["token"]
    return token


def exchange(sts_port: int, token: str) -> tuple[int, dict[str, Any]]:
    """RFC 8693 token exchange at the stand-in STS; returns (HTTP status, JSON body)."""
    form = urllib.parse.urlencode({"grant_type": TOKEN_EXCHANGE, "subject_token": token,
                                   "subject_token_type": JWT_TYPES[0], "audience": AUDIENCE}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{sts_port}/v1/token", data=form, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def forged(token: str) -> str:
    """The same token with its subject changed (so the signature no longer covers the payload)."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "spiffe://example.org/examples/admin"
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{body}.{signature}"


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="oidc-example-", dir="/tmp"))
    server = None
    try:
        root, cert, key = web_pki(tmp)
        oidc_port, agent_port = free_port(), free_port()
        issuer = f"https://localhost:{oidc_port}/tenant-a"
        (tmp / "server.toml").write_text(f'[oidc]\nbind_port = {oidc_port}\nissuer = "{issuer}"\n'
                                         f'cert_file = "{cert}"\nkey_file = "{key}"\n')
        sock = tmp / "server" / "api.sock"
        server = subprocess.Popen([*SERVER, "run", "--trust-domain", "example.org", "--data-dir", str(tmp / "server"),
                                   "--bind-port", str(agent_port), "--config", str(tmp / "server.toml")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while subprocess.run([*SERVER, "healthcheck", "--socket-path", str(sock)], capture_output=True,
                             check=False).returncode != 0:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("spiffe-server did not start")
            time.sleep(0.3)
        print(f"spiffe-server up; OIDC issuer {issuer}")

        trust = ssl.create_default_context(cafile=str(root))
        sts = serve(Registration(issuer=issuer, audience=AUDIENCE, tls=trust))
        sts_port = sts.server_address[1]
        other = serve(Registration(issuer="https://other.example.test", audience=AUDIENCE, tls=trust))

        token = mint(sock)
        status, body = exchange(sts_port, token)
        results = [check(status == 200 and body.get("token_type") == "Bearer" and body.get("subject") == SPIFFE_ID,
                         f"our JWT-SVID -> provider token for {body.get('subject')}")]
        cases = [
            ("a JWT-SVID for another audience", mint(sock, audience="https://elsewhere.example")),
            ("a forged JWT-SVID (payload changed)", forged(token)),
        ]
        short = mint(sock, ttl=1)
        time.sleep(2.2)
        cases.append(("an expired JWT-SVID", short))
        for what, bad in cases:
            status, body = exchange(sts_port, bad)
            results.append(check(status == 400 and body.get("error") == "invalid_grant",
                                 f"{what} -> 400 {body.get('error')}: {body.get('error_description')}"))
        status, body = exchange(other.server_address[1], token)
        results.append(check(status == 400, f"our JWT-SVID at a provider that registered another issuer -> {status}"))
        sts.shutdown()
        other.shutdown()
        return 0 if all(results) else 1
    finally:
        if server is not None:
            server.terminate()
            server.wait(15)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())

"""Fixtures for the workload library against a real fake Workload API on a Unix socket."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from spiffe_py._proto import workload_pb2 as pb
from spiffe_py.bundle import BundleSet, X509Bundle
from spiffe_py.spiffeid import TrustDomain
from spiffe_py.x509svid import X509Svid
from tests.support.ca import CA, Issued
from tests.support.fake_workload_api import FakeWorkloadApi, x509_response

TD = "example.org"
WEB_ID = "spiffe://example.org/web"
WAIT_SECONDS = 20.0


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
    """Poll ``predicate`` until it holds; fail the test with ``what`` otherwise (no timing asserted)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory: Unix socket paths are limited to ~107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="wl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ca() -> CA:
    return CA.create(TD)


@pytest.fixture
def api(short_dir: Path, ca: CA) -> Iterator[FakeWorkloadApi]:
    """A started fake serving one X509-SVID for WEB_ID."""
    fake = FakeWorkloadApi(short_dir / "api.sock")
    fake.set_x509(x509_response([ca.issue_svid(WEB_ID)], ca))
    with fake:
        yield fake


@dataclass
class StaticSource:
    """A fixed SVID and bundle set: the side of a TLS test that does not rotate."""

    svid: X509Svid
    bundles: BundleSet

    def get_x509_svid(self) -> X509Svid:
        return self.svid

    def get_x509_bundle_for_trust_domain(self, trust_domain: TrustDomain) -> X509Bundle:
        return self.bundles.get_x509_bundle_for_trust_domain(trust_domain)


def static_source(issued: Issued, ca: CA) -> StaticSource:
    """``issued`` as an X509Svid, trusting ``ca``'s root."""
    return StaticSource(X509Svid.parse(issued.chain_pem(), issued.key_pem()), BundleSet.of(ca.x509_bundle()))


def client_calls(token: str = "") -> dict[str, tuple[str, Callable[[Any], Any]]]:
    """Each one-shot client method and its RPC; serves both clients (async calls return awaitables)."""
    return {
        "fetch_x509_context": ("FetchX509SVID", lambda c: c.fetch_x509_context()),
        "fetch_x509_svid": ("FetchX509SVID", lambda c: c.fetch_x509_svid()),
        "fetch_x509_svids": ("FetchX509SVID", lambda c: c.fetch_x509_svids()),
        "fetch_x509_bundles": ("FetchX509Bundles", lambda c: c.fetch_x509_bundles()),
        "fetch_jwt_bundles": ("FetchJWTBundles", lambda c: c.fetch_jwt_bundles()),
        "fetch_jwt_svid": ("FetchJWTSVID", lambda c: c.fetch_jwt_svid("aud-1")),
        "fetch_jwt_svids": ("FetchJWTSVID", lambda c: c.fetch_jwt_svids(["aud-1"])),
        "validate_jwt_svid": ("ValidateJWTSVID", lambda c: c.validate_jwt_svid(token, "aud-1")),
    }


def jwt_token(ca: CA, audience: tuple[str, ...] = ("aud-1",), sub: str = WEB_ID) -> str:
    """A JWT-SVID signed by ``ca``, valid for an hour from the CA's clock."""
    exp = int(ca.now.timestamp()) + 3600
    return ca.sign_jwt({"sub": sub, "aud": list(audience), "exp": exp, "iat": int(ca.now.timestamp())})


def serve_jwt(api: FakeWorkloadApi, token: str, hint: str = "") -> None:
    """Make ``api`` answer FetchJWTSVID with ``token`` for WEB_ID."""
    api.set_response("FetchJWTSVID", pb.JWTSVIDResponse(svids=[pb.JWTSVID(spiffe_id=WEB_ID, svid=token, hint=hint)]))


def serve_everything(api: FakeWorkloadApi, ca: CA) -> str:
    """Give ``api`` a response for every one-shot RPC; returns the served JWT-SVID."""
    token = jwt_token(ca)
    root_der = ca.root.cert.public_bytes(Encoding.DER)
    api.set_response("FetchX509Bundles", pb.X509BundlesResponse(bundles={f"spiffe://{TD}": root_der}))
    api.set_response("FetchJWTBundles", pb.JWTBundlesResponse(bundles={f"spiffe://{TD}": ca.jwt_bundle().to_jwks()}))
    serve_jwt(api, token)
    claims: dict[str, Any] = {"sub": WEB_ID}
    api.set_response("ValidateJWTSVID", pb.ValidateJWTSVIDResponse(spiffe_id=WEB_ID, claims=claims))
    return token

"""spiffe_py.tls: a refused mTLS peer is reported by stage (chain, trust domain, authorizer) and ID.

Real TLS handshakes over a socketpair, one side in a thread.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass

import pytest
from OpenSSL import SSL

from spiffe_py.bundle import X509Bundle
from spiffe_py.errors import AuthorizationError, BundleNotFoundError, SpiffeError, VerificationError
from spiffe_py.spiffeid import SpiffeId
from spiffe_py.tls import Authorizer, authorize_any, authorize_id, client_context, handshake, server_context
from spiffe_py.x509svid import X509Svid
from tests.support.ca import CA

SERVER_ID, CLIENT_ID = "spiffe://example.org/server", "spiffe://example.org/client"


@dataclass
class Svids:
    svid: X509Svid

    def get_x509_svid(self) -> X509Svid:
        return self.svid


def _svid(ca: CA, spiffe_id: str) -> Svids:
    issued = ca.issue_svid(spiffe_id)
    return Svids(X509Svid(SpiffeId.parse(spiffe_id), issued.chain, issued.key))  # type: ignore[arg-type]


def _run(server_ca: CA, client_ca: CA, *, server_bundle: X509Bundle, server_authorizer: Authorizer,
         ) -> tuple[SpiffeError | SSL.Error | None, SpiffeError | SSL.Error | None]:
    """Handshake a client (trusting the server's CA, any ID) against the server; each side's error."""
    a, b = socket.socketpair()
    server = SSL.Connection(server_context(_svid(server_ca, SERVER_ID), server_bundle, server_authorizer), a)
    server.set_accept_state()
    client = SSL.Connection(client_context(_svid(client_ca, CLIENT_ID), server_ca.x509_bundle(), authorize_any()), b)
    client.set_connect_state()
    errors: dict[str, SpiffeError | SSL.Error | None] = {"server": None, "client": None}

    def serve() -> None:
        try:
            handshake(server)
        except (SpiffeError, SSL.Error) as err:
            errors["server"] = err
        finally:
            a.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        handshake(client)
        client.recv(1)  # TLS 1.3: the server's verdict on the client certificate arrives after the handshake
    except (SpiffeError, SSL.Error) as err:
        errors["client"] = err
    finally:
        thread.join(10)
        b.close()
    return errors["server"], errors["client"]


def test_an_unauthorized_id_names_the_authorizer_and_the_presented_id() -> None:
    ca = CA.create("example.org")
    refused, _ = _run(ca, ca, server_bundle=ca.x509_bundle(),
                      server_authorizer=authorize_id(SpiffeId.parse("spiffe://example.org/someone-else")))
    assert isinstance(refused, AuthorizationError)
    assert "refused by the authorizer" in str(refused) and CLIENT_ID in str(refused)


def test_a_foreign_trust_domain_names_the_trust_domain_stage() -> None:
    ca, foreign = CA.create("example.org"), CA.create("other.org")
    issued = foreign.issue_svid("spiffe://other.org/client")
    svid = X509Svid(SpiffeId.parse("spiffe://other.org/client"), issued.chain, issued.key)  # type: ignore[arg-type]
    a, b = socket.socketpair()
    server = SSL.Connection(server_context(_svid(ca, SERVER_ID), ca.x509_bundle(), authorize_any()), a)
    server.set_accept_state()
    client = SSL.Connection(client_context(Svids(svid), ca.x509_bundle(), authorize_any()), b)
    client.set_connect_state()
    thread = threading.Thread(target=lambda: _quiet(client))
    thread.start()
    with pytest.raises(BundleNotFoundError, match=r"presenting .spiffe://other.org/client. refused by trust domain"):
        handshake(server)
    a.close()
    thread.join(10)
    b.close()


def test_a_chain_from_an_untrusted_ca_names_chain_verification() -> None:
    ca, rogue = CA.create("example.org"), CA.create("example.org")  # same trust domain, other key
    refused, _ = _run(ca, rogue, server_bundle=ca.x509_bundle(), server_authorizer=authorize_any())
    assert isinstance(refused, VerificationError)
    assert "refused by chain verification" in str(refused) and CLIENT_ID in str(refused)


def _quiet(conn: SSL.Connection) -> None:
    try:
        handshake(conn)
        conn.recv(1)
    except (SpiffeError, SSL.Error, OSError):
        pass

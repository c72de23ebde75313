"""Agent API messages -> agent domain (server input is validated) and helpers of the manager."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from spiffe_agent.manager.cache import Entry
from spiffe_agent.manager.convert import (
    ServerResponseError,
    bundle_from_proto,
    entry_from_proto,
    issued_svid,
    jws_key_id,
    sync_update_from_proto,
)
from spiffe_agent.manager.identity import build_csr, display_id
from spiffe_py._proto.spiffepy.server.v1 import agent_pb2, types_pb2
from spiffe_py.selectors import Selector
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from tests.support.ca import CA

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SID = SpiffeId.parse("spiffe://example.org/web")


def _entry_msg(**kw: object) -> types_pb2.Entry:
    base: dict[str, object] = {
        "id": "e1",
        "spiffe_id": str(SID),
        "selectors": [types_pb2.Selector(type="unix", value="uid:1000")],
        "federates_with": ["fed.example"],
        "hint": "web",
        "revision": 3,
    }
    base.update(kw)
    return types_pb2.Entry(**base)  # type: ignore[arg-type]


def test_entry_from_proto() -> None:
    e = entry_from_proto(_entry_msg())
    assert e.selectors == {Selector("unix", "uid:1000")}
    assert e.federates_with == (TrustDomain.parse("fed.example"),)
    assert (e.id, e.spiffe_id, e.hint, e.revision) == ("e1", SID, "web", 3)


@pytest.mark.parametrize(
    "bad",
    [
        {"spiffe_id": "not-an-id"},
        {"selectors": [types_pb2.Selector(type="unix", value="")]},
        {"federates_with": ["Bad TD"]},
    ],
)
def test_entry_from_proto_rejects_bad_server_input(bad: dict[str, object]) -> None:
    with pytest.raises(ServerResponseError, match="server sent an invalid entry"):
        entry_from_proto(_entry_msg(**bad))


def test_bundle_and_sync_update_from_proto() -> None:
    ca = CA.create("example.org", now=NOW)
    spki = ca.key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    bundle = types_pb2.Bundle(
        trust_domain="example.org",
        x509_authorities=[ca.cert.public_bytes(Encoding.DER)],
        jwt_authorities=[types_pb2.JwtKey(key_id="k1", public_key=spki)],
        sequence_number=7,
    )
    parsed = bundle_from_proto(bundle)
    assert parsed.x509_authorities == (ca.cert,) and set(parsed.jwt_authorities) == {"k1"}
    full = sync_update_from_proto(agent_pb2.SyncAuthorizedResponse(full=True, entries=[_entry_msg()], bundle=bundle))
    assert full.full and full.federated_bundles == () and full.bundle is not None
    delta = sync_update_from_proto(agent_pb2.SyncAuthorizedResponse(removed_entry_ids=["x"]))
    assert (delta.bundle, delta.federated_bundles, delta.removed_entry_ids) == (None, None, ("x",))


def test_bundle_from_proto_rejects_garbage_certificate() -> None:
    with pytest.raises(ServerResponseError, match="invalid bundle"):
        bundle_from_proto(types_pb2.Bundle(trust_domain="example.org", x509_authorities=[b"\x30\x00"]))


def _issued_for(spiffe_id: str, key: ec.EllipticCurvePrivateKey) -> list[bytes]:
    issued = CA.create("example.org", now=NOW).child_ca().issue_svid(spiffe_id, key=key)
    return [c.public_bytes(Encoding.DER) for c in issued.chain]


def test_issued_svid_checks_id_and_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    entry = Entry(id="e1", spiffe_id=SID, selectors=frozenset({Selector("unix", "uid:1")}))
    svid = issued_svid(entry, _issued_for(str(SID), key), key)
    assert (svid.spiffe_id, len(svid.cert_chain)) == (SID, 2)
    with pytest.raises(ServerResponseError, match="wrong spiffe id"):
        issued_svid(entry, _issued_for("spiffe://example.org/other", key), key)
    with pytest.raises(ServerResponseError, match="does not match our key"):
        issued_svid(entry, _issued_for(str(SID), ec.generate_private_key(ec.SECP256R1())), key)
    with pytest.raises(ServerResponseError, match="empty or oversized"):
        issued_svid(entry, [], key)


@pytest.mark.parametrize(
    "uris",
    [
        ["spiffe://EXAMPLE.org/web"],  # another spelling, not the entry's ID
        ["spiffe://example.org/web/"],
        [str(SID), "spiffe://example.org/other"],
        [str(SID), "https://example.org/"],
        [],
    ],
)
def test_issued_svid_needs_the_entry_id_as_its_only_uri_san(uris: list[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    entry = Entry(id="e1", spiffe_id=SID, selectors=frozenset({Selector("unix", "uid:1")}))
    issued = CA.create("example.org", now=NOW).child_ca().issue_svid(str(SID), key=key, uris=uris)
    chain = [c.public_bytes(Encoding.DER) for c in issued.chain]
    with pytest.raises(ServerResponseError, match="wrong spiffe id"):
        issued_svid(entry, chain, key)


def test_build_csr_carries_spiffe_id() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.load_der_x509_csr(build_csr(key, SID))
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [str(SID)]
    assert csr.is_signature_valid


def test_display_id_masks_join_token() -> None:
    sid = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/abc123")
    assert display_id(sid) == "spiffe://example.org/spire/agent/join_token/[REDACTED]"
    assert display_id(SID) == str(SID)


def _spki() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def test_jws_key_id() -> None:
    token = CA.create("example.org", now=NOW).sign_jwt({"sub": str(SID), "aud": ["a"], "exp": 1767225600})
    assert jws_key_id(token) == "jwt-key-1"
    assert jws_key_id("garbage") == ""
    assert jws_key_id("W10.x.y") == ""  # header is a JSON list


def test_sync_update_carries_revocations_crls_and_tainted_ids() -> None:
    msg = agent_pb2.SyncAuthorizedResponse(
        revocations=[types_pb2.Revocation(kind="x509", value="0a1b"), types_pb2.Revocation(kind="jwt", value="j")],
        crls=agent_pb2.CrlSet(crls=[b"c1"]),
        bundle=types_pb2.Bundle(
            trust_domain="example.org",
            tainted_x509_authorities=["AA:BB"],
            jwt_authorities=[types_pb2.JwtKey(key_id="k1", public_key=_spki(), tainted=True)],
        ),
    )
    update = sync_update_from_proto(msg)
    assert update.revocations == (("x509", "0a1b"), ("jwt", "j"))
    assert update.crls == (b"c1",)
    assert update.tainted_authorities == frozenset({"aabb"})
    assert update.tainted_jwt_keys == frozenset({"k1"})
    assert sync_update_from_proto(agent_pb2.SyncAuthorizedResponse()).crls is None


def test_issued_svid_records_serial_and_issuing_authorities() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    mid = CA.create("example.org", now=NOW).child_ca()
    issued = mid.issue_svid(str(SID), key=key)
    entry = Entry(id="e1", spiffe_id=SID, selectors=frozenset({Selector("unix", "uid:1")}))
    svid = issued_svid(entry, [c.public_bytes(Encoding.DER) for c in issued.chain], key)
    mid_ski = mid.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
    assert svid.serial == issued.leaf.serial_number
    assert mid_ski in svid.authority_ids
    def ids(cert: x509.Certificate) -> set[str]:
        exts = cert.extensions
        return {exts.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex(),
                cast(bytes, exts.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier).hex()}
    leaf_aki = issued.leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    expected = {cast(bytes, leaf_aki).hex()}.union(*(ids(c) for c in issued.chain[1:]))
    assert svid.authority_ids == expected  # the leaf's issuer, and every CA above it by its own and its issuer's id
    again = issued_svid(entry, [c.public_bytes(Encoding.DER) for c in issued.chain], key)
    assert again.authority_ids == expected  # the CA part is memoised per chain: the same answer


def test_entry_ttl_in_force_and_svid_names_are_kept_for_re_evaluation() -> None:
    """The agent compares live SVIDs with the entry: the server's TTL in force, the leaf's DNS names, the version."""
    assert entry_from_proto(_entry_msg(x509_svid_ttl_in_force=120)).x509_ttl_in_force == 120
    assert entry_from_proto(_entry_msg(x509_svid_ttl_in_force=-5)).x509_ttl_in_force == 0
    key = ec.generate_private_key(ec.SECP256R1())
    entry = Entry(id="e1", spiffe_id=SID, selectors=frozenset({Selector("unix", "uid:1")}), revision=4,
                  x509_ttl_in_force=120, dns_names=("a.example.org", "b.example.org"))
    issued = CA.create("example.org", now=NOW).child_ca().issue_svid(
        str(SID), key=key, dns_names=("a.example.org", "b.example.org"))
    svid = issued_svid(entry, [c.public_bytes(Encoding.DER) for c in issued.chain], key)
    assert svid.dns_names == ("a.example.org", "b.example.org")
    assert svid.entry_version == (4, 120)
    assert issued_svid(entry, _issued_for(str(SID), key), key).dns_names == ()

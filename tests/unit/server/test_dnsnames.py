"""DNS SAN validation: whatever it accepts, the X.509 builder takes; whatever it refuses, it says why."""

from __future__ import annotations

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from spiffe_server.dnsnames import DnsNameError, check_dns_name


@pytest.mark.parametrize("name", ["web.example.org", "*.example.org", "xn--bcher-kva.example", "a", "1.2.example",
                                  "a" * 63 + ".org", ".".join(["a" * 63] * 3) + "." + "a" * 61])
def test_accepts_ldh_names_and_a_left_most_wildcard(name: str) -> None:
    assert check_dns_name(name) == name
    x509.DNSName(name)  # and the certificate builder agrees


@given(st.text(max_size=300))
def test_any_text_is_accepted_only_if_the_certificate_builder_takes_it(text: str) -> None:
    """Nothing but DnsNameError comes out, and an accepted name never makes signing raise."""
    try:
        check_dns_name(text)
    except DnsNameError as err:
        assert str(err)
        return
    x509.DNSName(text)
    assert text.isascii() and len(text) <= 253 and " " not in text

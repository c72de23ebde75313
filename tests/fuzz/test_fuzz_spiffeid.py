"""SPIFFE IDs, trust domain names and selectors from untrusted text (SAN URIs, JWT ``sub``, requests)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from spiffe_py.errors import InvalidSelectorError, InvalidSpiffeIdError
from spiffe_py.selectors import Selector
from spiffe_py.spiffeid import SpiffeId, TrustDomain, validate_path
from tests.fuzz._fuzz import CHEAP, assert_outcome, attempt

# Text near the grammar: the scheme, separators, percent signs, dots, upper case and non-ASCII.
_ID_ALPHABET = st.sampled_from(list("spiffe:/.%-_AZaz09?#@ \t\x00\x7fé\u2028"))
_near_ids = st.lists(_ID_ALPHABET, max_size=60).map("".join)


@CHEAP
@given(st.one_of(st.text(max_size=300), _near_ids, _near_ids.map(lambda s: "spiffe://" + s)))
def test_spiffe_id_parse_raises_only_invalid_spiffe_id(text: str) -> None:
    outcome = attempt(SpiffeId.parse, text)
    assert_outcome(outcome, SpiffeId, InvalidSpiffeIdError)
    if isinstance(outcome, SpiffeId):
        assert str(outcome) == text  # a valid ID round-trips unchanged


@CHEAP
@given(st.one_of(st.text(max_size=300), _near_ids, _near_ids.map(lambda s: "spiffe://" + s)))
def test_trust_domain_parse_raises_only_invalid_spiffe_id(text: str) -> None:
    outcome = attempt(TrustDomain.parse, text)
    assert_outcome(outcome, TrustDomain, InvalidSpiffeIdError)
    if isinstance(outcome, TrustDomain):
        assert TrustDomain.parse(outcome.id_string()) == outcome


@CHEAP
@given(st.one_of(st.text(max_size=200), _near_ids.map(lambda s: "/" + s)))
def test_validate_path_raises_only_invalid_spiffe_id(path: str) -> None:
    assert_outcome(attempt(validate_path, path), type(None), InvalidSpiffeIdError)


@CHEAP
@given(st.one_of(st.text(max_size=300), st.lists(st.sampled_from(list("unix:uid:0\x00\n é")), max_size=40)
                 .map("".join)))
def test_selector_parse_raises_only_invalid_selector(text: str) -> None:
    outcome = attempt(Selector.parse, text)
    assert_outcome(outcome, Selector, InvalidSelectorError)
    if isinstance(outcome, Selector):
        assert Selector.parse(str(outcome)) == outcome

"""SPIFFE ID and trust domain parsing (SPIFFE-ID.md, rules ID-01..ID-19)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spiffe_py import spiffeid as m
from spiffe_py.errors import InvalidSpiffeIdError, InvalidTrustDomainError, SpiffeError
from spiffe_py.spiffeid import SpiffeId, TrustDomain, validate_path, validate_path_segment

TD = TrustDomain.parse("example.org")

# (case name with rule ID, input, expected reason)
INVALID_IDS = [
    ("ID-01-empty", "", m.ERR_EMPTY),
    ("ID-01-no-scheme", "example.org/a", m.ERR_WRONG_SCHEME),
    ("ID-01-wrong-scheme", "http://example.org/a", m.ERR_WRONG_SCHEME),
    ("ID-01-one-slash", "spiffe:/example.org/a", m.ERR_WRONG_SCHEME),
    ("ID-19-uppercase-scheme", "SPIFFE://example.org/a", m.ERR_WRONG_SCHEME),
    ("ID-19-mixed-case-scheme", "Spiffe://example.org/a", m.ERR_WRONG_SCHEME),
    ("ID-02-empty-td", "spiffe://", m.ERR_MISSING_TRUST_DOMAIN),
    ("ID-02-empty-td-with-path", "spiffe:///a", m.ERR_MISSING_TRUST_DOMAIN),
    ("ID-03-query", "spiffe://example.org/a?x=1", m.ERR_QUERY),
    ("ID-03-empty-query", "spiffe://example.org?", m.ERR_QUERY),
    ("ID-04-fragment", "spiffe://example.org/a#frag", m.ERR_FRAGMENT),
    ("ID-04-empty-fragment", "spiffe://example.org#", m.ERR_FRAGMENT),
    ("ID-04-fragment-before-query", "spiffe://example.org/a#b?c", m.ERR_FRAGMENT),
    ("ID-05-userinfo", "spiffe://user@example.org/a", m.ERR_USERINFO),
    ("ID-05-empty-userinfo", "spiffe://@example.org/a", m.ERR_USERINFO),
    ("ID-06-port", "spiffe://example.org:8080/a", m.ERR_PORT),
    ("ID-06-empty-port", "spiffe://example.org:/a", m.ERR_PORT),
    ("ID-07-uppercase-td", "spiffe://Example.org/a", m.ERR_BAD_TRUST_DOMAIN_CHAR),
    ("ID-07-kelvin-sign-td", "spiffe://\u212aelvin.org/a", m.ERR_NOT_ASCII),
    ("ID-08-ipv6-td", "spiffe://[::1]/a", m.ERR_PORT),
    ("ID-08-bad-td-char", "spiffe://exa+mple.org/a", m.ERR_BAD_TRUST_DOMAIN_CHAR),
    ("ID-08-td-trailing-newline", "spiffe://example.org\n", m.ERR_BAD_TRUST_DOMAIN_CHAR),
    ("ID-09-percent-td", "spiffe://ex%41mple.org/a", m.ERR_TD_PERCENT),
    ("ID-11-percent-path", "spiffe://example.org/%2e%2e", m.ERR_PATH_PERCENT),
    ("ID-12-empty-segment", "spiffe://example.org/a//b", m.ERR_EMPTY_SEGMENT),
    ("ID-13-dot-segment", "spiffe://example.org/a/./b", m.ERR_DOT_SEGMENT),
    ("ID-13-dotdot-segment", "spiffe://example.org/a/../b", m.ERR_DOT_SEGMENT),
    ("ID-13-trailing-dotdot", "spiffe://example.org/..", m.ERR_DOT_SEGMENT),
    ("ID-14-trailing-slash", "spiffe://example.org/a/", m.ERR_TRAILING_SLASH),
    ("ID-14-root-trailing-slash", "spiffe://example.org/", m.ERR_TRAILING_SLASH),
    ("ID-15-bad-path-char", "spiffe://example.org/a b", m.ERR_BAD_PATH_SEGMENT_CHAR),
    ("ID-15-tilde", "spiffe://example.org/~a", m.ERR_BAD_PATH_SEGMENT_CHAR),
    ("ID-15-path-trailing-newline", "spiffe://example.org/a\n", m.ERR_BAD_PATH_SEGMENT_CHAR),
    ("ID-15-non-ascii-path", "spiffe://example.org/caf\u00e9", m.ERR_NOT_ASCII),
    ("ID-16-too-long", "spiffe://example.org/" + "a" * (2048 - 21 + 1), m.ERR_ID_TOO_LONG),
    ("ID-18-td-too-long", "spiffe://" + "a" * 256 + "/x", m.ERR_TD_TOO_LONG),
]


@pytest.mark.parametrize(("text", "reason"), [c[1:] for c in INVALID_IDS], ids=[c[0] for c in INVALID_IDS])
def test_parse_rejects(text: str, reason: str) -> None:
    with pytest.raises(InvalidSpiffeIdError) as info:
        SpiffeId.parse(text)
    assert info.value.reason == reason
    assert str(info.value).startswith(f"spiffeid: {reason}: ")


VALID_IDS = [
    ("ID-14-root-id", "spiffe://example.org", "example.org", ""),
    ("ID-13-dot-prefixed-segments", "spiffe://example.org/.a/..a/...", "example.org", "/.a/..a/..."),
    ("ID-08-ipv4-td", "spiffe://10.0.0.1/a", "10.0.0.1", "/a"),
    ("ID-10-no-dns-label-rules", "spiffe://-_._-/a", "-_._-", "/a"),
    ("ID-19-path-case-kept", "spiffe://example.org/NS/Web", "example.org", "/NS/Web"),
    ("ID-16-max-length", "spiffe://example.org/" + "a" * (2048 - 21), "example.org", "/" + "a" * (2048 - 21)),
    ("ID-18-max-td", "spiffe://" + "a" * 255, "a" * 255, ""),
]


@pytest.mark.parametrize(("text", "td", "path"), [c[1:] for c in VALID_IDS], ids=[c[0] for c in VALID_IDS])
def test_parse_accepts(text: str, td: str, path: str) -> None:
    sid = SpiffeId.parse(text)
    assert (sid.trust_domain.name, sid.path) == (td, path)
    assert str(sid) == text
    assert SpiffeId.parse(str(sid)) == sid


def test_error_message_pins_dot_segment() -> None:
    with pytest.raises(InvalidSpiffeIdError, match=r"^spiffeid: path cannot contain dot segments: '/a/\.\./b'$"):
        validate_path("/a/../b")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("a", m.ERR_NO_LEADING_SLASH),
        ("/", m.ERR_TRAILING_SLASH),
        ("/a//b", m.ERR_EMPTY_SEGMENT),
        ("/a/.", m.ERR_DOT_SEGMENT),
        ("/a?", m.ERR_BAD_PATH_SEGMENT_CHAR),
    ],
)
def test_validate_path_rejects(path: str, reason: str) -> None:
    with pytest.raises(InvalidSpiffeIdError) as info:
        validate_path(path)
    assert info.value.reason == reason
    assert info.value.value == path


@pytest.mark.parametrize(
    ("segment", "reason"),
    [
        ("", m.ERR_EMPTY_SEGMENT),
        (".", m.ERR_DOT_SEGMENT),
        ("..", m.ERR_DOT_SEGMENT),
        ("a/b", m.ERR_BAD_PATH_SEGMENT_CHAR),
    ],
)
def test_validate_path_segment_rejects(segment: str, reason: str) -> None:
    with pytest.raises(InvalidSpiffeIdError) as info:
        validate_path_segment(segment)
    assert info.value.reason == reason


def test_from_path_and_segments_build_the_same_id() -> None:
    by_path = SpiffeId.from_path(TD, "/ns/prod/web")
    assert by_path == SpiffeId.from_segments(TD, "ns", "prod", "web")
    assert str(by_path) == "spiffe://example.org/ns/prod/web"
    assert SpiffeId.from_segments(TD) == TD.spiffe_id()


def test_from_segments_rejects_slash_inside_segment() -> None:
    with pytest.raises(InvalidSpiffeIdError, match="path segment characters"):
        SpiffeId.from_segments(TD, "a/b")


def test_from_path_rejects_too_long_id() -> None:
    """ID-16: the length limit holds however the ID is built."""
    with pytest.raises(InvalidSpiffeIdError) as info:
        SpiffeId.from_path(TD, "/" + "a" * 2048)
    assert info.value.reason == m.ERR_ID_TOO_LONG


def test_constructor_validates() -> None:
    with pytest.raises(InvalidTrustDomainError):
        TrustDomain("Example.org")
    with pytest.raises(InvalidSpiffeIdError):
        SpiffeId(TD, "/a/")
    with pytest.raises(TypeError):
        SpiffeId("example.org", "/a")  # type: ignore[arg-type]


def test_trust_domain_parse_forms() -> None:
    assert TrustDomain.parse("example.org") == TD
    assert TrustDomain.parse("spiffe://example.org") == TD
    # a full SPIFFE ID names its trust domain, as go-spiffe's TrustDomainFromString and py-spiffe
    assert TrustDomain.parse("spiffe://example.org/some/path") == TD
    assert TD.id_string() == "spiffe://example.org"
    assert str(TD) == "example.org"
    assert TD.spiffe_id().is_root


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", m.ERR_MISSING_TRUST_DOMAIN),
        ("Example.org", m.ERR_BAD_TRUST_DOMAIN_CHAR),
        ("spiffe://example.org/a/../b", m.ERR_DOT_SEGMENT),
        ("SPIFFE://example.org", m.ERR_WRONG_SCHEME),
        ("example.org:80", m.ERR_PORT),
        ("a" * 256, m.ERR_TD_TOO_LONG),
        ("\u212a", m.ERR_NOT_ASCII),
    ],
)
def test_trust_domain_parse_rejects(text: str, reason: str) -> None:
    with pytest.raises(InvalidSpiffeIdError) as info:
        TrustDomain.parse(text)
    assert info.value.reason == reason


def test_equality_hash_and_order_are_same_type_only() -> None:
    a = SpiffeId.parse("spiffe://example.org/a")
    assert a == SpiffeId.from_path(TD, "/a")
    assert hash(a) == hash(SpiffeId.from_path(TD, "/a"))
    assert a != "spiffe://example.org/a"  # type: ignore[comparison-overlap]
    assert TD != "example.org"  # type: ignore[comparison-overlap]
    assert {a: 1}[SpiffeId.parse("spiffe://example.org/a")] == 1
    assert sorted([SpiffeId.parse("spiffe://z/x"), a]) == [a, SpiffeId.parse("spiffe://z/x")]
    with pytest.raises(TypeError):
        _ = a < "spiffe://x"  # type: ignore[operator]


def test_immutable() -> None:
    a = SpiffeId.parse("spiffe://example.org/a")
    with pytest.raises(AttributeError):
        a.path = "/b"  # type: ignore[misc]


def test_member_of() -> None:
    a = SpiffeId.parse("spiffe://example.org/a")
    assert a.member_of(TD)
    assert not a.member_of(TrustDomain.parse("example.com"))


def test_error_value_is_bounded() -> None:
    with pytest.raises(InvalidSpiffeIdError) as info:
        SpiffeId.parse("x" * 100_000)
    assert len(str(info.value)) < 400


@given(st.text(max_size=300))
def test_parse_raises_only_spiffe_errors(text: str) -> None:
    for parse in (SpiffeId.parse, TrustDomain.parse):
        with contextlib.suppress(SpiffeError):
            parse(text)


@given(st.text(alphabet="spiffe:/abcAB.-_%?#@0123", max_size=60))
def test_parse_round_trips_whatever_it_accepts(text: str) -> None:
    try:
        sid = SpiffeId.parse(text)
    except InvalidSpiffeIdError:
        return
    assert str(sid) == text
    assert SpiffeId.parse(str(sid)) == sid


@given(st.lists(st.text(alphabet="abcXYZ019.-_", min_size=1, max_size=8), max_size=6))
def test_from_segments_round_trips(segments: list[str]) -> None:
    if any(s in (".", "..") for s in segments):
        return
    sid = SpiffeId.from_segments(TD, *segments)
    assert SpiffeId.parse(str(sid)) == sid


def test_trust_domain_parse_id_refuses_a_path() -> None:
    """Wire formats keyed by trust domain IDs (WA-17) keep refusing a path that TrustDomain.parse now accepts."""
    assert TrustDomain.parse_id("spiffe://example.org") == TD
    with pytest.raises(InvalidSpiffeIdError) as info:
        TrustDomain.parse_id("spiffe://example.org/a")
    assert info.value.reason == m.ERR_TD_HAS_PATH

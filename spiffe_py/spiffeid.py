"""SPIFFE IDs and trust domains, parsed strictly per SPIFFE-ID.md.

Uppercase schemes and trust domains are rejected (go-spiffe behaviour), never lowercased::

    td = TrustDomain.parse("example.org")
    sid = SpiffeId.parse("spiffe://example.org/ns/prod/web")
    assert sid.member_of(td) and str(sid) == "spiffe://example.org/ns/prod/web"
    web = SpiffeId.from_segments(td, "ns", "prod", "web")
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from spiffe_py.errors import InvalidSpiffeIdError, InvalidTrustDomainError

SCHEME_PREFIX = "spiffe://"
MAX_ID_BYTES = 2048  # SPIFFE-ID §2.3 (ID-16)
MAX_TRUST_DOMAIN_BYTES = 255  # SPIFFE-ID §2.3 (ID-18)

# Reasons (go-spiffe wording where go-spiffe has one); public so tests and callers can match on them.
ERR_EMPTY = "cannot be empty"
ERR_NOT_ASCII = "must contain only ascii characters"
ERR_WRONG_SCHEME = "scheme is missing or invalid"
ERR_MISSING_TRUST_DOMAIN = "trust domain is missing"
ERR_BAD_TRUST_DOMAIN_CHAR = (
    "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores"
)
ERR_BAD_PATH_SEGMENT_CHAR = "path segment characters are limited to letters, numbers, dots, dashes, and underscores"
ERR_DOT_SEGMENT = "path cannot contain dot segments"
ERR_EMPTY_SEGMENT = "path cannot contain empty segments"
ERR_TRAILING_SLASH = "path cannot have a trailing slash"
ERR_NO_LEADING_SLASH = "path must have a leading slash"
ERR_QUERY = "cannot contain a query"
ERR_FRAGMENT = "cannot contain a fragment"
ERR_USERINFO = "trust domain cannot contain userinfo"
ERR_PORT = "trust domain cannot contain a port"
ERR_TD_PERCENT = "trust domain cannot contain percent-encoded characters"
ERR_PATH_PERCENT = "path cannot contain percent-encoded characters"
ERR_ID_TOO_LONG = f"spiffe id is longer than {MAX_ID_BYTES} bytes"
ERR_TD_TOO_LONG = f"trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes"
ERR_TD_HAS_PATH = "trust domain cannot have a path"

_TD_CHARS = frozenset(string.ascii_lowercase + string.digits + ".-_")
_SEGMENT_CHARS = frozenset(string.ascii_letters + string.digits + ".-_")
_MAX_SHOWN = 300  # keep error messages bounded for hostile input


def _shown(text: str) -> str:
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def _trust_domain_problem(name: str) -> str | None:
    """Reason why ``name`` is not a valid trust domain name, or None."""
    if not name:
        return ERR_MISSING_TRUST_DOMAIN
    if not name.isascii():
        return ERR_NOT_ASCII
    if len(name) > MAX_TRUST_DOMAIN_BYTES:
        return ERR_TD_TOO_LONG
    if _TD_CHARS.issuperset(name):
        return None
    if "@" in name:
        return ERR_USERINFO
    if ":" in name:
        return ERR_PORT
    if "%" in name:
        return ERR_TD_PERCENT
    return ERR_BAD_TRUST_DOMAIN_CHAR


def _segment_problem(segment: str) -> str | None:
    """Reason why ``segment`` is not a valid path segment, or None."""
    if not segment:
        return ERR_EMPTY_SEGMENT
    if segment in (".", ".."):
        return ERR_DOT_SEGMENT
    if _SEGMENT_CHARS.issuperset(segment):
        return None
    if segment.isascii() and "%" in segment:
        return ERR_PATH_PERCENT
    return ERR_BAD_PATH_SEGMENT_CHAR if segment.isascii() else ERR_NOT_ASCII


def _path_problem(path: str) -> str | None:
    """Reason why ``path`` is not a valid SPIFFE ID path ("" is the root path), or None."""
    if not path:
        return None
    if not path.startswith("/"):
        return ERR_NO_LEADING_SLASH
    segments = path[1:].split("/")
    for index, segment in enumerate(segments):
        problem = _segment_problem(segment)
        if problem == ERR_EMPTY_SEGMENT and index == len(segments) - 1:
            return ERR_TRAILING_SLASH
        if problem is not None:
            return problem
    return None


def validate_path(path: str) -> None:
    """Check a SPIFFE ID path ("" or "/seg/seg"); raise InvalidSpiffeIdError if invalid."""
    problem = _path_problem(path)
    if problem is not None:
        raise InvalidSpiffeIdError(problem, _shown(path))


def validate_path_segment(segment: str) -> None:
    """Check one path segment (no slashes); raise InvalidSpiffeIdError if invalid."""
    problem = _segment_problem(segment)
    if problem is not None:
        raise InvalidSpiffeIdError(problem, _shown(segment))


@dataclass(frozen=True, slots=True, order=True, repr=False)
class TrustDomain:
    """A trust domain name such as ``example.org`` (validated on construction)."""

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError("trust domain name must be a str")
        problem = _trust_domain_problem(self.name)
        if problem is not None:
            raise InvalidTrustDomainError(problem, _shown(self.name))

    @classmethod
    def parse(cls, text: str) -> TrustDomain:
        """Parse ``example.org``, or the trust domain of a SPIFFE ID (``spiffe://example.org/any/path``).

        As go-spiffe's ``TrustDomainFromString`` and py-spiffe do: a full, valid SPIFFE ID names
        its trust domain; the path must still be valid.
        """
        if not isinstance(text, str):
            raise TypeError("trust domain must be a str")
        if not text:
            raise InvalidTrustDomainError(ERR_MISSING_TRUST_DOMAIN, text)
        if ":/" not in text:
            return cls(text)
        return SpiffeId.parse(text).trust_domain

    @classmethod
    def parse_id(cls, text: str) -> TrustDomain:
        """Parse exactly a trust domain's own SPIFFE ID, ``spiffe://example.org`` (no path).

        For wire formats whose keys must be trust domain IDs (Workload API bundle maps, WA-17;
        SPIFFE bundle maps), where a path means a malformed peer.
        """
        sid = SpiffeId.parse(text)
        if not sid.is_root:
            raise InvalidTrustDomainError(ERR_TD_HAS_PATH, _shown(text))
        return sid.trust_domain

    def id_string(self) -> str:
        """The trust domain's SPIFFE ID as a string, ``spiffe://<name>``."""
        return SCHEME_PREFIX + self.name

    def spiffe_id(self) -> SpiffeId:
        """The trust domain's own (root) SPIFFE ID."""
        return SpiffeId(self, "")

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"TrustDomain({self.name!r})"


@dataclass(frozen=True, slots=True, order=True, repr=False)
class SpiffeId:
    """A SPIFFE ID: a trust domain plus a path ("" for the trust domain's root ID)."""

    trust_domain: TrustDomain
    path: str

    def __post_init__(self) -> None:
        if not isinstance(self.trust_domain, TrustDomain) or not isinstance(self.path, str):
            raise TypeError("SpiffeId needs a TrustDomain and a str path")
        validate_path(self.path)
        if len(SCHEME_PREFIX) + len(self.trust_domain.name) + len(self.path.encode()) > MAX_ID_BYTES:
            raise InvalidSpiffeIdError(ERR_ID_TOO_LONG, _shown(str(self)))

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        """Parse ``spiffe://<td><path>``; raise InvalidSpiffeIdError on any rule violation."""
        if not isinstance(text, str):
            raise TypeError("spiffe id must be a str")
        if not text:
            raise InvalidSpiffeIdError(ERR_EMPTY, text)
        if not text.isascii():
            raise InvalidSpiffeIdError(ERR_NOT_ASCII, _shown(text))
        if len(text) > MAX_ID_BYTES:
            raise InvalidSpiffeIdError(ERR_ID_TOO_LONG, _shown(text))
        if not text.startswith(SCHEME_PREFIX):
            raise InvalidSpiffeIdError(ERR_WRONG_SCHEME, _shown(text))
        rest = text[len(SCHEME_PREFIX) :]
        _reject_query_or_fragment(rest, text)
        name, slash, path = rest.partition("/")
        # The constructors validate; their errors are re-raised naming the whole text.
        try:
            return cls(TrustDomain(name), slash + path)
        except InvalidSpiffeIdError as err:
            raise type(err)(err.reason, _shown(text)) from None

    @classmethod
    def from_path(cls, trust_domain: TrustDomain, path: str) -> SpiffeId:
        """Build from a trust domain and a path such as ``/ns/web`` ("" for the root ID)."""
        return cls(trust_domain, path)

    @classmethod
    def from_segments(cls, trust_domain: TrustDomain, *segments: str) -> SpiffeId:
        """Build from a trust domain and path segments, each validated on its own."""
        for segment in segments:
            validate_path_segment(segment)
        return cls(trust_domain, "".join("/" + segment for segment in segments))

    @property
    def is_root(self) -> bool:
        """True for the trust domain's own ID (empty path)."""
        return not self.path

    def member_of(self, trust_domain: TrustDomain) -> bool:
        """True if this ID belongs to ``trust_domain``."""
        return self.trust_domain == trust_domain

    def __str__(self) -> str:
        return SCHEME_PREFIX + self.trust_domain.name + self.path

    def __repr__(self) -> str:
        return f"SpiffeId({str(self)!r})"


def _reject_query_or_fragment(rest: str, text: str) -> None:
    # SPIFFE-ID §2 (ID-03, ID-04): the first of '?' / '#' decides which component it is.
    marks = [index for index in (rest.find("?"), rest.find("#")) if index >= 0]
    if marks:
        reason = ERR_QUERY if rest[min(marks)] == "?" else ERR_FRAGMENT
        raise InvalidSpiffeIdError(reason, _shown(text))

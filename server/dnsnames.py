"""DNS names an entry may put in its X509-SVIDs' DNS SANs (pure).

A name is ASCII: letter-digit-hyphen labels of 1..63 characters, at most 253 characters in
all, no trailing dot. Internationalised names are given in their IDNA A-label (``xn--``) form;
a ``*`` wildcard may only be the whole left-most label::

    check_dns_name("web.example.org")        # ok
    check_dns_name("*.example.org")          # ok
    check_dns_name("bücher.example")         # DnsNameError: ... use the A-label form 'xn--bcher-kva.example'
"""

from __future__ import annotations

import re

MAX_NAME_LEN = 253
MAX_LABEL_LEN = 63
_LDH = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")


class DnsNameError(ValueError):
    """Why a DNS name is refused; the message quotes the name with repr (no raw control characters)."""


def _a_label_hint(name: str) -> str:
    try:
        return f"; use the IDNA A-label (punycode) form {name.encode('idna').decode('ascii')!r}"
    except UnicodeError:
        return "; use the IDNA A-label (punycode) form"


def _check_a_label(label: str, name: str) -> None:
    try:
        label[4:].encode("ascii").decode("punycode")
    except UnicodeError:
        raise DnsNameError(f"label {label!r} of {name!r} is not a valid IDNA A-label") from None


def check_dns_name(name: str) -> str:
    """Return ``name`` unchanged if it is a valid DNS SAN; raise :class:`DnsNameError` otherwise."""
    if not name:
        raise DnsNameError("must not be empty")
    if not name.isascii():
        raise DnsNameError(f"{name!r} is not ASCII{_a_label_hint(name)}")
    if len(name) > MAX_NAME_LEN:
        raise DnsNameError(f"{name[:32]!r}... is {len(name)} characters, at most {MAX_NAME_LEN} allowed")
    if name.endswith("."):
        raise DnsNameError(f"{name!r} must not end with a dot")
    labels = name.split(".")
    for index, label in enumerate(labels):
        if label == "*":
            if index != 0:
                raise DnsNameError(f"{name!r}: a wildcard is allowed only as the whole left-most label")
            if len(labels) == 1:
                raise DnsNameError(f"{name!r}: a wildcard must be followed by a domain")
            continue
        if not label:
            raise DnsNameError(f"{name!r} has an empty label")
        if len(label) > MAX_LABEL_LEN:
            raise DnsNameError(f"label {label[:16]!r}... of {name[:32]!r} is {len(label)} characters, "
                               f"at most {MAX_LABEL_LEN} allowed")
        if "*" in label:
            raise DnsNameError(f"{name!r}: a wildcard is allowed only as the whole left-most label")
        if not _LDH.fullmatch(label):
            raise DnsNameError(f"label {label!r} of {name!r} must hold only letters, digits and inner hyphens")
        if label[:4].lower() == "xn--":
            _check_a_label(label, name)
    return name

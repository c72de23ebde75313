"""The selector types and keys spiffe-py's attestors produce, for checking registration entries (pure).

The server validates entry selectors against this table; the agent's workload attestors and the
server's node attestors are what produce them, so a test checks they agree. A selector is
``type:key:rest``; ``rest`` is free-form (a uid, a path, a label ``name:value``)::

    problem = check_selector("unix", "userid:1000")
    # "unknown key 'userid' for selector type 'unix' ... did you mean 'unix:uid:1000'?"
    check_selector("k8s", "ns:default", extra_types=frozenset({"k8s"}))   # None: explicitly allowed
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SelectorType:
    """One selector type: the attestor that produces it and the keys its values start with."""

    name: str
    keys: tuple[str, ...]  # "uid", "subject:cn", ...; empty: the whole value is the subject
    produced_by: str  # who attests it, for the docs and the error message


KNOWN: dict[str, SelectorType] = {t.name: t for t in (
    SelectorType("unix", ("uid", "user", "gid", "group", "supplementary_gid", "supplementary_group", "path",
                          "sha256"), "the agent's unix workload attestor"),
    SelectorType("docker", ("label", "env", "image_id", "image_config_digest"),
                 "the agent's docker workload attestor"),
    SelectorType("x509pop", ("subject:cn", "ca:fingerprint", "san:dns", "san:uri", "serialnumber"),
                 "the server's x509pop node attestor"),
    SelectorType("spiffe_id", (), "the server (an entry for an agent's own SPIFFE ID, as token generate writes)"),
)}


def _suggest(word: str, choices: list[str]) -> list[str]:
    return difflib.get_close_matches(word, choices, n=2, cutoff=0.6)


def _did_you_mean(options: list[str]) -> str:
    return f"; did you mean {' or '.join(repr(o) for o in options)}?" if options else ""


def _key_of(selector_type: SelectorType, value: str) -> str | None:
    """The key ``value`` starts with (followed by ``:`` and something), or None."""
    for key in selector_type.keys:
        if value.startswith(key + ":") and len(value) > len(key) + 1:
            return key
    return None


def check_selector(kind: str, value: str, *, extra_types: frozenset[str] = frozenset()) -> str | None:
    """None when ``kind:value`` is a selector some attestor can produce, else what is wrong with it.

    ``extra_types`` are types accepted without a check (attestors that run only on agents).
    """
    if kind in extra_types:
        return None
    known = KNOWN.get(kind)
    if known is None:
        return _unknown_type(kind, value)
    if not known.keys:
        if kind == "spiffe_id" and not value.startswith("spiffe://"):
            return f"selector {kind}:{value}: the value of a spiffe_id selector is a SPIFFE ID (spiffe://...)"
        return None
    if _key_of(known, value) is not None:
        return None
    key = value.split(":", 1)[0]
    bare = any(value == k for k in known.keys)
    if bare:
        return f"selector {kind}:{value}: {kind}:{value} needs a value after it ({kind}:{value}:...)"
    # keys of two segments (subject:cn): compare the same number of segments
    scored = []
    for candidate in known.keys:
        segments = candidate.count(":") + 1
        head = ":".join(value.split(":")[:segments])
        ratio = difflib.SequenceMatcher(None, head.lower(), candidate).ratio()
        if ratio >= 0.6:
            rest = value.split(":", segments)[segments] if value.count(":") >= segments else "..."
            scored.append((-ratio, f"{kind}:{candidate}:{rest}"))
    guesses = [guess for _, guess in sorted(scored)]
    return (f"selector {kind}:{value}: unknown key {key!r} for selector type {kind!r} "
            f"(known keys: {', '.join(known.keys)}){_did_you_mean(guesses[:2])}")


def _unknown_type(kind: str, value: str) -> str:
    guesses = [f"{t}:{value}" for t in _suggest(kind, sorted(KNOWN))]
    # a key given without its type: uid:0 -> unix:uid:0
    guesses += [f"{t.name}:{kind}:{value}" for t in KNOWN.values() if kind in t.keys]
    return (f"selector {kind}:{value}: unknown selector type {kind!r} (known types: {', '.join(sorted(KNOWN))})"
            f"{_did_you_mean(guesses[:2]) or '.'} For an attestor that runs only on agents, add {kind!r} to the "
            f"server's extra_selector_types or pass --allow-unknown-selector")

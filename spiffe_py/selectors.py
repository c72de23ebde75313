"""Selectors: ``type:value`` facts about a node or a workload.

The type is the attestor name; the value may contain further colons::

    sel = Selector.parse("docker:label:app:web")   # type "docker", value "label:app:web"
    matches({sel}, workload_selectors)             # entry selectors must be a subset
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from spiffe_py.errors import InvalidSelectorError

MAX_SELECTOR_LEN = 1024


def _check(text: str, what: str) -> None:
    if not text or len(text) > MAX_SELECTOR_LEN or not text.isprintable():
        raise InvalidSelectorError(f"selector: {what} must be 1..{MAX_SELECTOR_LEN} printable characters")


@dataclass(frozen=True, slots=True, order=True)
class Selector:
    """One selector; build with :meth:`parse` or the constructor (validated)."""

    type: str
    value: str

    def __post_init__(self) -> None:
        _check(self.type, "type")
        _check(self.value, "value")
        if ":" in self.type:
            raise InvalidSelectorError(f"selector: type cannot contain ':': {self.type!r}")

    @classmethod
    def parse(cls, text: str) -> Selector:
        """Parse ``type:value``."""
        kind, sep, value = text.partition(":")
        if not sep or not kind or not value:
            raise InvalidSelectorError(f"selector: must be of the form type:value: {text!r}")
        return cls(kind, value)

    def __str__(self) -> str:
        return f"{self.type}:{self.value}"


def matches(entry_selectors: Iterable[Selector], workload_selectors: Iterable[Selector]) -> bool:
    """True if every entry selector is among the workload's selectors (and there is at least one)."""
    wanted = frozenset(entry_selectors)
    return bool(wanted) and wanted <= frozenset(workload_selectors)

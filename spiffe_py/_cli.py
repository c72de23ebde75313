"""What the ``spiffe-server`` and ``spiffe-agent`` command lines share: help, ``--version`` and
human-readable output (pure, standard library only, so that a CLI call stays fast).

::

    parser = CliParser(prog="spiffe-server")          # every flag's help shows its default
    add_version(parser)                               # --version from the installed package
    print(fields([("SPIFFE ID", sid), ("Expires at", when(exp, now=now))]))

Times print as RFC 3339 with a relative part (``2026-12-07T05:00:00Z (in 59m)``, ``(expired 3h
ago)``); durations Go-style (``1h30m``). ``now`` is passed in: the caller reads the clock.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from spiffe_py._text import printable

DIST_NAME = "spiffe-py"
_NO_DEFAULT: tuple[object, ...] = (None, False, "", [], ())


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to a flag's help unless it has no meaningful default or names one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        if text is None or text == argparse.SUPPRESS or "default" in text or not action.option_strings:
            return text
        if action.default is argparse.SUPPRESS or any(action.default is d or action.default == d
                                                      for d in _NO_DEFAULT):
            return text
        return f"{text} (default: %(default)s)"


class CliParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose help (and every sub-parser's) uses :class:`HelpFormatter`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def package_version() -> str:
    """The installed distribution's version (``unknown`` when run from a tree that is not installed)."""
    from importlib import metadata

    try:
        return metadata.version(DIST_NAME)
    except metadata.PackageNotFoundError:
        return "unknown"


class _VersionAction(argparse.Action):
    """``--version``: looks the version up only when asked (package metadata costs start-up time)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: Any = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog} {package_version()}")
        parser.exit()


def add_version(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` a ``--version`` flag printing ``<prog> <version>``."""
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[argparse.ArgumentParser, str | None]]:
    """Every sub-parser below ``parser`` with the help its parent lists for it, depth first."""
    out: list[tuple[argparse.ArgumentParser, str | None]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                out.append((sub, helps.get(name)))
                out.extend(subcommands(sub))
    return out


# -- output ----------------------------------------------------------------------------------------


def rfc3339(unix: int | float) -> str:
    """Unix seconds as ``2026-12-07T05:00:00Z``."""
    return datetime.fromtimestamp(int(unix), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration(seconds: int | float) -> str:
    """Seconds Go-style: ``90`` -> ``1m30s``, ``86400`` -> ``24h``, ``0`` -> ``0s``."""
    hours, rest = divmod(int(abs(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    text += f"{secs}s" if secs or not text else ""
    return ("-" if seconds < 0 else "") + text


def _ago(seconds: int) -> str:
    """A coarse age: ``3h``, ``2d``, ``45s``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def when(unix: int | float, *, now: datetime, expiry: bool = True) -> str:
    """A time for people: RFC 3339 plus how far away it is.

    ``expiry`` times read ``(in 59m)`` / ``(expired 3h ago)``; others ``(3h ago)`` / ``(in 2m)``.
    0 means "not set" and prints ``-``.
    """
    if not unix:
        return "-"
    delta = int(unix) - int(now.timestamp())
    if delta > 0:
        rel = f"in {_ago(delta)}"
    elif expiry:
        rel = f"expired {_ago(-delta)} ago" if delta < 0 else "expires now"
    else:
        rel = f"{_ago(-delta)} ago" if delta < 0 else "now"
    return f"{rfc3339(unix)} ({rel})"


def expired(unix: int | float, *, now: datetime) -> bool:
    """True when ``unix`` (a NotAfter) is set and not after ``now``."""
    return bool(unix) and int(unix) <= int(now.timestamp())


Row = tuple[str, "str | Sequence[str]"]


def fields(rows: Sequence[Row], *, indent: str = "") -> str:
    """Aligned ``Label : value`` lines; a list value continues on lines of its own under the first.

    Every value goes through :func:`printable`: what is shown comes from operators and peers.
    """
    width = max((len(label) for label, _ in rows), default=0)
    lines = []
    for label, value in rows:
        values = [value] if isinstance(value, str) else list(value) or ["-"]
        lines.append(f"{indent}{label.ljust(width)} : {printable(values[0])}")
        lines.extend(f"{indent}{' ' * width}   {printable(v)}" for v in values[1:])
    return "\n".join(lines)


def yes_no(flag: bool) -> str:
    """``yes`` / ``no``."""
    return "yes" if flag else "no"


def json_scalar(value: Any) -> str:
    """A JSON-ish scalar for people: strings bare, numbers as written, others as compact JSON."""
    import json

    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))

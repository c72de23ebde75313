"""Both CLIs document themselves: every command and flag has one-line help, defaults are shown,
``--version`` prints the installed version, and ``spiffe-agent api --help`` names every verb."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from spiffe_agent.cli import build_parser as agent_parser
from spiffe_py._cli import HelpFormatter, subcommands
from spiffe_server.cli import build_parser as server_parser

PARSERS = {"spiffe-server": server_parser, "spiffe-agent": agent_parser}


def _undocumented(parser: argparse.ArgumentParser) -> list[str]:
    """Commands and flags of ``parser`` and every parser below it that have no help text."""
    missing = []
    for sub, help_text in [(parser, parser.description), *subcommands(parser)]:
        if not (help_text or "").strip():
            missing.append(f"{sub.prog}: no help")
        helped = {a.dest for a in sub._actions if a.help not in (None, "", argparse.SUPPRESS)}
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            name = f"{sub.prog} {'/'.join(action.option_strings) or action.dest}"
            if action.help == argparse.SUPPRESS:
                if action.dest not in helped:  # a hidden alias is fine when its twin is documented
                    missing.append(f"{name}: hidden, and no documented flag sets {action.dest}")
            elif not (action.help or "").strip():
                missing.append(f"{name}: no help")
    return missing


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_every_command_and_flag_has_help(prog: str) -> None:
    parser = PARSERS[prog]()
    assert len(subcommands(parser)) > 5  # the walk reaches the sub-commands
    assert _undocumented(parser) == []


def test_the_walk_catches_a_flag_without_help() -> None:
    parser = server_parser()
    entry = next(sub for sub, _ in subcommands(parser) if sub.prog == "spiffe-server entry count")
    entry.add_argument("--undocumented")
    assert _undocumented(parser) == ["spiffe-server entry count --undocumented: no help"]


@pytest.mark.parametrize(("prog", "argv", "shown"), [
    ("spiffe-server", ["token", "generate"], "(default: 10m)"),
    ("spiffe-server", ["agent", "purge"], "(default: 720h)"),
    ("spiffe-server", ["entry", "show"], "(default: pretty)"),
    ("spiffe-agent", ["api", "fetch"], "(default: pretty)"),
    ("spiffe-agent", ["run"], "default join_token"),
])
def test_help_shows_defaults(prog: str, argv: list[str], shown: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        PARSERS[prog]().parse_args([*argv, "--help"])
    assert shown in " ".join(capsys.readouterr().out.split())


def test_the_formatter_appends_a_real_default_only() -> None:
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    parser.add_argument("--n", type=int, default=3, help="count")
    parser.add_argument("--flag", action="store_true", help="a switch")
    parser.add_argument("--path", help="a path")
    text = " ".join(parser.format_help().split())
    assert "count (default: 3)" in text
    assert "a switch (default" not in text and "a path (default" not in text


def test_agent_api_help_names_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        agent_parser().parse_args(["api", "--help"])
    out = capsys.readouterr().out
    for verb in ("fetch", "validate", "watch"):
        line = next(line for line in out.splitlines() if line.strip().startswith(verb))
        assert len(line.split()) > 2, line  # the verb and its description


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_version_prints_the_package_version(prog: str) -> None:
    script = Path(sys.executable).parent / prog
    res = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"{prog} {metadata.version('spiffe-py')}"


def test_agent_api_fetch_defaults_to_x509() -> None:
    parser = agent_parser()
    bare = parser.parse_args(["api", "fetch", "--socket-path", "/run/a.sock", "--write", "out"])
    explicit = parser.parse_args(["api", "fetch", "x509", "--socket-path", "/run/a.sock", "--write", "out"])
    before = parser.parse_args(["api", "fetch", "--socket-path", "/run/a.sock", "x509"])
    assert bare.func.__qualname__ == explicit.func.__qualname__
    assert "_fetch_x509" in repr(bare.func.__closure__[0].cell_contents)  # type: ignore[index]
    assert (bare.socket_path, bare.write) == (explicit.socket_path, explicit.write) == ("/run/a.sock", "out")
    assert before.socket_path == "/run/a.sock"  # a flag given before the kind is kept
    jwt = parser.parse_args(["api", "fetch", "jwt", "--audience", "a"])
    assert "_fetch_jwt" in repr(jwt.func.__closure__[0].cell_contents)  # type: ignore[index]


def test_the_lazy_top_level_matches_the_modules() -> None:
    """``spiffe-server X`` builds only X's module; the one-liners of the others are the modules' own."""
    from spiffe_server.cli import COMMANDS

    full = {sub.prog.split()[1]: text for sub, text in subcommands(server_parser()) if sub.prog.count(" ") == 1}
    assert full == {name: text for _, commands in COMMANDS for name, text in commands}
    for _, commands in COMMANDS:
        for name, _ in commands:
            lazy = server_parser(name)
            built = [sub.prog.split()[1] for sub, _ in subcommands(lazy) if sub.prog.count(" ") == 2]
            assert name in built or not any(s.prog.startswith(f"spiffe-server {name} ")
                                             for s, _ in subcommands(server_parser()))

"""Repository rules checked on the source tree (docs/contracts.md, "Rules that bind every module").

- Imports point one way: `spiffe_py` imports neither `server` nor `agent`; those two never
  import each other.
- Only the allow-listed shells read the wall clock (`datetime.now()`, `time.time()`, ...);
  everything else takes `now=` or a `Clock`.
- Under CI=true a skipped test fails (tests/conftest.py).

Each checker is also run on a synthetic tree, so a checker that finds nothing is proven able
to find something.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("spiffe_py", "server", "agent")
FORBIDDEN_IMPORTS = {"spiffe_py": {"server", "agent"}, "server": {"agent"}, "agent": {"server"}}
# Test-only dependencies (the `test` extra): runtime code must not need them, or
# `pip install spiffe-py` (and ./quickstart.sh) would break at import time.
TEST_ONLY_IMPORTS = frozenset({"jwt", "spiffe", "pytest", "hypothesis", "grpc_tools", "tests"})
GENERATED = "spiffe_py/_proto"

# Files allowed to read the wall clock. Keep this tiny: each entry is an I/O shell.
WALL_CLOCK_ALLOWLIST = frozenset(
    {
        "spiffe_py/clock.py",  # SystemClock, the one real clock everything else is handed
    }
)
# (module-ish name, attribute): datetime.now, date.today, time.time, ...
WALL_CLOCK_ATTRS = {
    "datetime": {"now", "utcnow", "today"},
    "date": {"today"},
    "time": {"time", "time_ns"},
}


def source_files(root: Path) -> Iterator[tuple[str, ast.Module]]:
    """(repo-relative path, parsed module) for every .py in the packages, generated code excluded."""
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if not rel.startswith(GENERATED):
                yield rel, ast.parse(path.read_text(), filename=rel)


def imported_modules(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import; relative imports stay inside their package."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def import_violations(root: Path) -> list[str]:
    """Imports that point the wrong way, as 'path:line: message'."""
    found = []
    for rel, tree in source_files(root):
        package = rel.split("/", 1)[0]
        for line, module in imported_modules(tree):
            top = module.split(".", 1)[0]
            if top in FORBIDDEN_IMPORTS[package] or top in TEST_ONLY_IMPORTS:
                found.append(f"{rel}:{line}: {package} must not import {module}")
    return found


def _dotted_tail(node: ast.expr) -> str | None:
    """Last name of `x`, `a.b.x`: what an attribute is looked up on."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def wall_clock_reads(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, expression) of each wall-clock read, called or passed as a reference."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = _dotted_tail(node.value)
            if owner in WALL_CLOCK_ATTRS and node.attr in WALL_CLOCK_ATTRS[owner]:
                yield node.lineno, f"{owner}.{node.attr}"
        elif isinstance(node, ast.ImportFrom) and node.module == "time":
            # `from time import time` would hide the read behind a bare name.
            for alias in node.names:
                if alias.name in WALL_CLOCK_ATTRS["time"]:
                    yield node.lineno, f"from time import {alias.name}"


def wall_clock_violations(root: Path, allowlist: frozenset[str] = WALL_CLOCK_ALLOWLIST) -> list[str]:
    """Wall-clock reads outside the allow-listed shells, as 'path:line: message'."""
    return [
        f"{rel}:{line}: {expr} reads the wall clock; take now= or a Clock"
        for rel, tree in source_files(root)
        if rel not in allowlist
        for line, expr in wall_clock_reads(tree)
    ]


def test_imports_point_one_way() -> None:
    """spiffe_py <- server, spiffe_py <- agent; never server <-> agent."""
    assert import_violations(REPO_ROOT) == []


def test_no_wall_clock_outside_allowlist() -> None:
    """Logic takes time as input; only SystemClock reads it."""
    assert wall_clock_violations(REPO_ROOT) == []


def test_wall_clock_allowlist_entries_exist() -> None:
    """A stale allowlist entry would silently widen the rule if the path came back later."""
    assert [p for p in WALL_CLOCK_ALLOWLIST if not (REPO_ROOT / p).is_file()] == []


def _write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_import_checker_catches_violations(tmp_path: Path) -> None:
    """Self-test: every forbidden direction is reported with its line; allowed ones are not."""
    _write_tree(
        tmp_path,
        {
            "spiffe_py/a.py": "import os\nimport server.x\n",
            "spiffe_py/_proto/gen.py": "import agent\n",  # generated code is not checked
            "server/b.py": "from spiffe_py import x\nfrom agent.y import z\nfrom . import sibling\n",
            "agent/c.py": "import spiffe_py\n\n\ndef f():\n    import server\n",
            "server/d.py": "import jwt\n",  # PyJWT is a test-only dependency
        },
    )
    assert import_violations(tmp_path) == [
        "spiffe_py/a.py:2: spiffe_py must not import server.x",
        "server/b.py:2: server must not import agent.y",
        "server/d.py:1: server must not import jwt",
        "agent/c.py:5: agent must not import server",
    ]


def test_wall_clock_checker_catches_violations(tmp_path: Path) -> None:
    """Self-test: calls, references and hidden imports are reported; monotonic and allowlist are not."""
    _write_tree(
        tmp_path,
        {
            "spiffe_py/clock.py": "import datetime\nx = datetime.datetime.now()\n",
            "spiffe_py/d.py": "from datetime import datetime\nt = datetime.now(UTC)\n",
            "server/e.py": "import time\nf = time.time\ng = time.monotonic()\n",
            "agent/f.py": (
                "import datetime as dt\nfrom time import time_ns\nd = dt.date.today()\nu = dt.datetime.utcnow()\n"
            ),
        },
    )
    found = wall_clock_violations(tmp_path, allowlist=frozenset({"spiffe_py/clock.py"}))
    assert [v.split(" reads", 1)[0] for v in found] == [
        "spiffe_py/d.py:2: datetime.now",
        "server/e.py:2: time.time",
        "agent/f.py:2: from time import time_ns",
        "agent/f.py:3: date.today",
        "agent/f.py:4: datetime.utcnow",
    ]


SKIPPING_TESTS = """
import pytest

def test_skipped():
    pytest.skip("no widget here")

def test_passes():
    assert True
"""


@pytest.mark.parametrize(
    ("ci", "expected"),
    [("true", {"failed": 1, "passed": 1}), ("", {"skipped": 1, "passed": 1})],
    ids=["ci-skip-fails", "local-skip-skips"],
)
def test_skip_is_failure_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str, expected: dict[str, int]
) -> None:
    """tests/conftest.py turns a skip into a failure when CI=true, and keeps the reason."""
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    pytester.makepyfile(test_sample=SKIPPING_TESTS)
    result = pytester.runpytest_subprocess("-p", "tests.conftest", "-ra")
    result.assert_outcomes(**expected)
    result.stdout.fnmatch_lines(["*no widget here*"])


def test_module_skip_is_collection_error_under_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module-level skip cannot hide a whole file under CI=true."""
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    pytester.makepyfile(test_sample='import pytest\npytest.skip("no module", allow_module_level=True)\n')
    result = pytester.runpytest_subprocess("-p", "tests.conftest")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*skipped under CI=true*no module*"])

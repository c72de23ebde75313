"""Repository rules checked on the source tree (docs/contracts.md, "Rules that bind every module").

- Imports point one way: `spiffe_py` imports neither `spiffe_server` nor `spiffe_agent`; those
  two never import each other. The folders `server/` and `agent/` are installed under those
  names (pyproject's package-dir); nothing imports the generic names `server` or `agent`, and
  pyproject lists every package of the three folders.
- No import cycles among the modules of `spiffe_py`, `server` and `agent` (every import counts:
  module level, under `TYPE_CHECKING` and inside functions).
- The public library (`spiffe_py` modules with no `_`-prefixed part) pulls in none of the
  server-side dependencies, directly or through the modules it imports.
- Only the allow-listed shells read the wall clock (`datetime.now()`, `time.time()`, ...);
  everything else takes `now=` or a `Clock`.
- Under CI=true a skipped test fails (tests/conftest.py).

Each checker is also run on a synthetic tree, so a checker that finds nothing is proven able
to find something.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# folder -> installed import name
PACKAGES = {"spiffe_py": "spiffe_py", "server": "spiffe_server", "agent": "spiffe_agent", "broker": "spiffe_broker"}
GENERIC = {"server", "agent", "broker"}  # the folder names: never imported (the wheel does not install them)
FORBIDDEN_IMPORTS = {"spiffe_py": {"spiffe_server", "spiffe_agent", "spiffe_broker", *GENERIC},
                     "server": {"spiffe_agent", "spiffe_broker", *GENERIC},
                     "agent": {"spiffe_server", "spiffe_broker", *GENERIC},
                     "broker": {"spiffe_server", "spiffe_agent", *GENERIC}}
# Test-only dependencies (the `test` extra): runtime code must not need them, or
# `pip install spiffe-py` (and ./quickstart.sh) would break at import time.
TEST_ONLY_IMPORTS = frozenset({"jwt", "spiffe", "pytest", "hypothesis", "grpc_tools", "tests"})
GENERATED = "spiffe_py/_proto"
# Installed by the server and agent only: a workload that imports the public library needs none of them.
SERVER_ONLY_IMPORTS = frozenset({"grpclib", "cel", "psycopg", "prometheus_client"})

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


def module_name(rel: str) -> str:
    """``server/b/c.py`` -> ``spiffe_server.b.c``; ``a/b/__init__.py`` -> ``a.b`` (installed names)."""
    parts = rel.removesuffix(".py").split("/")
    parts[0] = PACKAGES.get(parts[0], parts[0])
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules(root: Path) -> dict[str, tuple[bool, ast.Module]]:
    """Every module of the packages, generated code included: name -> (is a package, parsed module)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            found[module_name(rel)] = (path.name == "__init__.py", ast.parse(path.read_text(), filename=rel))
    return found


def _imports_of(name: str, is_package: bool, tree: ast.Module) -> Iterator[tuple[str, str | None]]:
    """(absolute module, imported name or None) of every import in ``tree``, relative ones resolved."""
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield from ((base, alias.name) for alias in node.names)


def import_graph(modules: Mapping[str, tuple[bool, ast.Module]]) -> dict[str, set[str]]:
    """Module -> the modules of the packages it imports (``from p import m`` counts as importing p.m)."""
    graph: dict[str, set[str]] = {}
    for name, (is_package, tree) in modules.items():
        edges = graph.setdefault(name, set())
        for module, imported in _imports_of(name, is_package, tree):
            target = f"{module}.{imported}" if imported and f"{module}.{imported}" in modules else module
            while target and target not in modules:
                target = target.rpartition(".")[0]  # `import a.b.c` of a name inside a.b: the module a.b
            if target and target != name:
                edges.add(target)
    return graph


def import_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The import cycles (strongly connected groups of two or more modules), each sorted, in order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def cycle_violations(root: Path) -> list[str]:
    """Every import cycle among the packages' modules, as 'a <-> b <-> c'."""
    modules = {name: mod for name, mod in all_modules(root).items() if not name.startswith(module_name(GENERATED))}
    return [" <-> ".join(group) for group in import_cycles(import_graph(modules))]


def is_public(module: str) -> bool:
    """A module of the public library: under spiffe_py, no part starting with ``_``."""
    parts = module.split(".")
    return parts[0] == "spiffe_py" and not any(p.startswith("_") for p in parts)


def public_surface_violations(root: Path) -> list[str]:
    """Server-only packages a public spiffe_py module imports, itself or through the modules it imports."""
    modules = all_modules(root)
    graph = import_graph(modules)
    third_party = {
        name: {m.split(".", 1)[0] for m, _ in _imports_of(name, *modules[name])} & SERVER_ONLY_IMPORTS
        for name in modules
    }
    found = []
    for start in sorted(m for m in modules if is_public(m)):
        seen, todo = {start}, [start]
        while todo:
            current = todo.pop()
            for package in sorted(third_party[current]):
                path = start if current == start else f"{start} -> ... -> {current}"
                found.append(f"{path} imports {package}")
            for succ in sorted(graph[current] - seen):
                seen.add(succ)
                todo.append(succ)
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
    """spiffe_py <- spiffe_server, spiffe_py <- spiffe_agent; never server <-> agent."""
    assert import_violations(REPO_ROOT) == []


def packaged(root: Path) -> tuple[set[str], set[str]]:
    """(the packages pyproject installs, the packages the three folders hold), by import name."""
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {name: folder for folder, name in PACKAGES.items() if name != folder}
    on_disk = {module_name(p.relative_to(root).as_posix()) for folder in PACKAGES
               for p in (root / folder).rglob("__init__.py")}
    return set(setuptools["packages"]), on_disk


def test_pyproject_installs_every_package_under_its_own_name() -> None:
    """A package missing from the list would be left out of the wheel (and of editable installs)."""
    listed, on_disk = packaged(REPO_ROOT)
    assert listed == on_disk
    assert not {p.split(".", 1)[0] for p in listed} & GENERIC


def test_no_wall_clock_outside_allowlist() -> None:
    """Logic takes time as input; only SystemClock reads it."""
    assert wall_clock_violations(REPO_ROOT) == []


def test_no_import_cycles() -> None:
    """Modules form layers: no module imports itself back through others."""
    assert cycle_violations(REPO_ROOT) == []


def test_public_library_imports_no_server_only_package() -> None:
    """`import spiffe_py.x` for a public x never needs grpclib, CEL, psycopg or prometheus-client."""
    assert public_surface_violations(REPO_ROOT) == []


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
            "spiffe_py/a.py": "import os\nimport spiffe_server.x\n",
            "spiffe_py/_proto/gen.py": "import spiffe_agent\n",  # generated code is not checked
            "server/b.py": "from spiffe_py import x\nfrom spiffe_agent.y import z\nfrom . import sibling\n",
            "agent/c.py": "import spiffe_py\n\n\ndef f():\n    import spiffe_server\n",
            "server/d.py": "import jwt\n",  # PyJWT is a test-only dependency
            "server/e.py": "from server.api import x\n",  # the folder name is not an import name
        },
    )
    assert import_violations(tmp_path) == [
        "spiffe_py/a.py:2: spiffe_py must not import spiffe_server.x",
        "server/b.py:2: server must not import spiffe_agent.y",
        "server/d.py:1: server must not import jwt",
        "server/e.py:1: server must not import server.api",
        "agent/c.py:5: agent must not import spiffe_server",
    ]


def test_packaging_checker_sees_a_missing_package(tmp_path: Path) -> None:
    """Self-test: a package on disk that pyproject does not list is reported."""
    _write_tree(tmp_path, {
        "pyproject.toml": ('[tool.setuptools]\npackages = ["spiffe_py", "spiffe_server"]\n'
                           'package-dir = {"spiffe_server" = "server", "spiffe_agent" = "agent", '
                           '"spiffe_broker" = "broker"}\n'),
        "spiffe_py/__init__.py": "", "server/__init__.py": "", "server/api/__init__.py": "",
    })
    listed, on_disk = packaged(tmp_path)
    assert on_disk - listed == {"spiffe_server.api"}


def test_cycle_checker_catches_cycles(tmp_path: Path) -> None:
    """Self-test: direct, relative, TYPE_CHECKING and function-level cycles are found; layers are not."""
    _write_tree(
        tmp_path,
        {
            "spiffe_py/__init__.py": "from spiffe_py.base import X\n",  # a package re-exporting is no cycle
            "spiffe_py/base.py": "import os\n",
            "server/__init__.py": "",
            "server/api/__init__.py": "",
            "server/api/context.py": "from spiffe_server.api.revocations import Hub\nimport spiffe_py\n",
            "server/api/revocations.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from spiffe_server.api.context import Ctx\n"
            ),
            "agent/__init__.py": "",
            "agent/a.py": "from . import b\n",
            "agent/b.py": "def f():\n    from spiffe_agent.c import g\n",
            "agent/c.py": "import spiffe_agent.a.thing\n",
        },
    )
    assert cycle_violations(tmp_path) == [
        "spiffe_agent.a <-> spiffe_agent.b <-> spiffe_agent.c",
        "spiffe_server.api.context <-> spiffe_server.api.revocations",
    ]


def test_public_surface_checker_catches_server_only_imports(tmp_path: Path) -> None:
    """Self-test: direct and indirect (through a private module) imports are found; private modules may."""
    _write_tree(
        tmp_path,
        {
            "spiffe_py/__init__.py": "",
            "spiffe_py/bundle.py": "import cryptography\n",
            "spiffe_py/policy.py": "import cel\n",
            "spiffe_py/audit.py": "from spiffe_py import _helper\n",
            "spiffe_py/_helper.py": "from prometheus_client import Counter\n",
            "spiffe_py/_serving/limits.py": "import grpclib.server\n",
            "spiffe_py/workloadapi/client.py": "import grpc\nfrom ..bundle import B\n",
            "server/x.py": "import psycopg\n",
        },
    )
    assert public_surface_violations(tmp_path) == [
        "spiffe_py.audit -> ... -> spiffe_py._helper imports prometheus_client",
        "spiffe_py.policy imports cel",
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

"""What the agent and server import at start: no package whose import alone costs a noticeable
part of start-up when it is not used.

``import cel`` loads the package's REPL (typer, rich, prompt_toolkit; about 0.25 s) and is needed
only where a policy is compiled or evaluated; the agent's server connections use grpclib, so it
has no use for grpcio (the workload-side client, through ``spiffe_py.workloadapi``).
"""

from __future__ import annotations

import subprocess
import sys

import pytest


def _loaded(modules: str, names: tuple[str, ...]) -> set[str]:
    code = f"import sys, {modules}; print(' '.join(n for n in {names!r} if n in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return set(out.stdout.split())


@pytest.mark.parametrize(("modules", "unwanted"), [
    ("spiffe_agent.cli, spiffe_agent.app", ("cel", "prompt_toolkit", "grpc", "spiffe_py.workloadapi")),
    ("spiffe_server.app", ("cel", "prompt_toolkit")),
])
def test_start_up_does_not_import_what_it_does_not_use(modules: str, unwanted: tuple[str, ...]) -> None:
    assert _loaded(modules, unwanted) == set()


def test_the_check_sees_an_imported_module() -> None:
    assert _loaded("spiffe_py._policy, cel", ("cel",)) == {"cel"}

"""The README's first command (issue 4, acceptance 8): ``./quickstart.sh`` as a user would run it.

CI also runs ``bash examples/run_all.sh`` itself (.ci/run), so the examples are not repeated here.
"""

from __future__ import annotations

import getpass
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def run_script(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", *argv], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_quickstart_fetches_the_users_svid_and_cleans_up() -> None:
    result = run_script("quickstart.sh")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert f"SPIFFE ID: spiffe://example.org/quickstart/{getpass.getuser()}" in out
    assert re.search(r"^expires: +\d{4}-\d\d-\d\dT", out, re.MULTILINE), out
    assert re.search(r"svid\.0\.pem: OK$", out, re.MULTILINE), out  # openssl verify of the fetched chain
    assert "spiffe-agent stopped" in out and "spiffe-server stopped" in out
    env_dir = re.search(r"(/\S+/spiffe-py-env\.\w+)/", out)
    assert env_dir is not None, out
    assert not Path(env_dir.group(1)).exists()
    leftovers = subprocess.run(["pgrep", "-f", env_dir.group(1)], capture_output=True, text=True, check=False)
    assert leftovers.stdout == "", f"processes left running: {leftovers.stdout}"


def test_run_all_rejects_an_unknown_example_before_starting_anything() -> None:
    result = run_script("examples/run_all.sh", "no_such_example")
    assert result.returncode == 2
    assert "unknown example: no_such_example" in result.stderr
    assert "start spiffe-server" not in result.stdout


def test_quickstart_is_executable() -> None:
    assert os.access(REPO / "quickstart.sh", os.X_OK)

"""Start and stop the test subprocesses (server, agent) the same way everywhere.

Usage::

    proc = spawn(["spiffe-server", "run", ...], log_path)   # stdout+stderr appended to log_path
    code = terminate(proc)                                   # SIGTERM, SIGKILL after STOP_TIMEOUT_S
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

STOP_TIMEOUT_S = 15.0


def spawn(argv: Sequence[str], log_path: Path, extra_env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr appended to ``log_path`` and ``extra_env`` over our environment."""
    with log_path.open("ab") as log:
        return subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(extra_env or {})})


def terminate(proc: subprocess.Popen[bytes] | None) -> int:
    """SIGTERM (if still running) and wait, SIGKILL after STOP_TIMEOUT_S; the exit status (0 for None)."""
    if proc is None:
        return 0
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()

"""The coverage-guided fuzzer over the request message decoders, for a bounded time in CI.

atheris (libFuzzer) runs tests/fuzz/atheris_messages.py in a subprocess, seeded from the corpus kept
in tests/fuzz/corpus/<service>/. New inputs go to a temp directory (the repo corpus stays as
committed); a crash input is written there too and named in the failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECONDS = int(os.environ.get("SPIFFE_PY_ATHERIS_SECONDS", "10"))


def test_atheris_finds_no_crash_in_the_request_decoders(tmp_path: Path) -> None:
    corpus = sorted(str(p) for p in (HERE / "corpus").iterdir() if p.is_dir())
    assert len(corpus) == 3, corpus  # one seed directory per service
    argv = [sys.executable, str(HERE / "atheris_messages.py"), f"-max_total_time={SECONDS}", "-timeout=10",
            "-rss_limit_mb=1024", "-max_len=4096", f"-artifact_prefix={tmp_path}/", "-print_final_stats=1",
            str(tmp_path), *corpus]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=SECONDS + 120, check=False)
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-")))
    assert done.returncode == 0 and not crashes, f"crashes: {crashes}\n{done.stderr[-4000:]}"
    runs = [line for line in done.stderr.splitlines() if line.startswith("stat::number_of_executed_units")]
    assert runs and int(runs[0].split(":")[-1]) > 1000, done.stderr[-2000:]  # it really fuzzed

"""Coverage-guided fuzzing (atheris/libFuzzer) of the request message decoders and their validation.

Run by test_fuzz_atheris.py, or by hand for longer (a crash input is written to the artifact prefix)::

    .venv/bin/python tests/fuzz/atheris_messages.py -max_total_time=600 /tmp/new tests/fuzz/corpus/*/

The arguments are libFuzzer's. Each input's first byte picks the request class of the Workload,
agent or admin API, the rest is the message (tests/fuzz/_targets.py ``check``); the seed corpus
keeps one directory per service.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: tests/ is not installed

with atheris.instrument_imports(include=["spiffe_py", "server", "agent"]):
    from tests.fuzz import _targets


def main() -> None:
    atheris.Setup(sys.argv, _targets.check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Drift check, run by hand (or on a schedule): install the NEWEST versions that pyproject.toml
# allows, ignoring requirements/ci.txt, in a throwaway venv, and report what would break.
# main's CI stays on the lock; this shows a new release's effect before it reaches anyone.
#
#   bash scripts/check_latest.sh            # report + unit tests (a few minutes)
#   bash scripts/check_latest.sh --full     # report + the whole suite (as .ci/run would)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=$(mktemp -d)/venv
trap 'rm -rf "$(dirname "$VENV")"' EXIT
tests=(tests/unit)
[ "${1:-}" = "--full" ] && tests=()

python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q --upgrade --upgrade-strategy eager -e ".[test]" || { echo "DRIFT: install failed"; exit 1; }

echo "== versions that differ from requirements/ci.txt (pinned -> newest allowed)"
"$VENV/bin/python" - <<'PY'
import re
from importlib import metadata
pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", open("requirements/ci.txt").read(), re.M))
for name, want in sorted(pins.items()):
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        continue
    if have != want:
        print(f"  {name}: {want} -> {have}")
PY

report=()
step() { local name=$1; shift; echo "== $name"; "$@" || report+=("$name"); }
step "generated code with the newest generators" "$VENV/bin/python" scripts/genproto.py --check --any-toolchain
step "ruff" "$VENV/bin/ruff" check --no-cache .
step "mypy" "$VENV/bin/mypy" spiffe_py server agent
step "pytest ${tests[*]:-(all)}" env PATH="$VENV/bin:$PATH" VIRTUAL_ENV="$VENV" "$VENV/bin/pytest" -q -p no:cacheprovider "${tests[@]}"

if [ ${#report[@]} -eq 0 ]; then
    echo "no drift breaks anything: refresh the pins (README, 'Refreshing the pins') when convenient"
    exit 0
fi
echo "DRIFT: the newest allowed versions break: ${report[*]}"
echo "(a changed generated file means: refresh the pins, then run scripts/genproto.py and commit both)"
exit 1

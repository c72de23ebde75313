#!/usr/bin/env bash
# mypy --strict over the packages under their installed names (spiffe_py, spiffe_server,
# spiffe_agent, spiffe_broker). The folders are server/ and agent/, and mypy does not follow setuptools' editable
# finder, so it reads them through a tree of symlinks named like the packages.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tree=build/typecheck
mkdir -p "$tree"
ln -sfn ../../spiffe_py "$tree/spiffe_py"
ln -sfn ../../server "$tree/spiffe_server"
ln -sfn ../../agent "$tree/spiffe_agent"
ln -sfn ../../broker "$tree/spiffe_broker"
cd "$tree"
exec "${MYPY:-mypy}" --config-file ../../pyproject.toml -p spiffe_py -p spiffe_server -p spiffe_agent -p spiffe_broker "$@"

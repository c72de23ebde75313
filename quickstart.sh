#!/usr/bin/env bash
# The README's first command: ./quickstart.sh (from a fresh clone; needs python3 >= 3.11 with venv).
#
# Installs spiffe-py into .venv, starts spiffe-server on its embedded defaults (SQLite,
# self-signed CA) and a spiffe-agent joined with a one-time token, registers an entry for the
# current user (unix:uid), fetches that X509-SVID from the Workload API as a workload, prints
# its SPIFFE ID and expiry, then stops both processes. Everything lives in a fresh temp dir
# that is removed on exit, so running it again starts from scratch.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source examples/_env.sh

started=$SECONDS
env_install
env_start

WORKLOAD_ID=spiffe://$TRUST_DOMAIN/quickstart/$(id -un)
step "register $WORKLOAD_ID for processes running as $(id -un) (uid $(id -u))"
env_register "$WORKLOAD_ID"
env_wait_for "$WORKLOAD_ID"

step "fetch the X509-SVID as a workload: spiffe-agent api fetch x509 --socket-path $AGENT_SOCKET"
spiffe-agent api fetch x509 --socket-path "$AGENT_SOCKET" --write "$ENV_DIR/svid" --output json |
    python -c '
import json, sys
for svid in json.load(sys.stdin):
    print("SPIFFE ID:", svid["spiffe_id"])
    print("expires:  ", svid["expires_at"])
'
if command -v openssl >/dev/null; then
    step "independent check: openssl verify -CAfile bundle.0.pem svid.0.pem"
    openssl verify -CAfile "$ENV_DIR/svid/bundle.0.pem" "$ENV_DIR/svid/svid.0.pem" || fail "openssl verify"
fi

env_stop
printf '\nquickstart OK in %ss. Next: bash examples/run_all.sh\n' "$((SECONDS - started))"

#!/usr/bin/env bash
# Run the examples against a freshly started spiffe-server + spiffe-agent (CI runs this):
#
#   bash examples/run_all.sh                          # all of them
#   bash examples/run_all.sh ai_agent_tool_mtls       # one (workload_identity, watch_svid, ai_agent_tool_mtls, jwt_instead_of_api_key, oidc_token_exchange, ai_agent_via_broker, openai_without_a_key, fastapi_httpx_mtls)
#
# Installs into .venv if needed, registers the examples' entries for the current user (10 s
# X509-SVID TTL so rotations happen within the run), runs each example, and exits non-zero if any failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source examples/_env.sh

ALL=(workload_identity watch_svid ai_agent_tool_mtls jwt_instead_of_api_key oidc_token_exchange ai_agent_via_broker openai_without_a_key fastapi_httpx_mtls)
[ $# -gt 0 ] && SELECTED=("$@") || SELECTED=("${ALL[@]}")
for name in "${SELECTED[@]}"; do
    [[ " ${ALL[*]} " == *" $name "* ]] || { echo "unknown example: $name (known: ${ALL[*]})" >&2; exit 2; }
done

# command line of each example (run from the repo root with SPIFFE_ENDPOINT_SOCKET set)
declare -A COMMAND=(
    [workload_identity]="python -m examples.workload_identity"
    [watch_svid]="python -m examples.watch_svid --spiffe-id spiffe://$TRUST_DOMAIN/examples/watcher --seconds 17 --min-rotations 2"
    [ai_agent_tool_mtls]="python -m examples.ai_agent_tool_mtls --seconds 25"
    [jwt_instead_of_api_key]="python -m examples.jwt_instead_of_api_key"
    [oidc_token_exchange]="python -m examples.oidc_token_exchange"  # starts its own server with [oidc]
    [ai_agent_via_broker]="python -m examples.ai_agent_via_broker"  # starts spiffe-broker and a stand-in chat API
    [openai_without_a_key]="python -m examples.openai_without_a_key --seconds 15"  # own server with [oidc] + agent
    [fastapi_httpx_mtls]="python -m examples.fastapi_httpx_mtls --seconds 20"
)

started=$SECONDS
env_install
if [[ " ${SELECTED[*]} " == *" ai_agent_via_broker "* ]] && ! "$VENV/bin/python" -c "import aiohttp" 2>/dev/null; then
    "$VENV/bin/python" -m pip install -q -e "$REPO[broker]" || fail "pip install -e .[broker]"  # the broker's extra
fi
env_start

step "register the examples' identities"
IDS=()
for path in watcher ai-agent tool billing-client web-api web-client; do
    IDS+=("spiffe://$TRUST_DOMAIN/examples/$path")
    env_register "spiffe://$TRUST_DOMAIN/examples/$path" --x509-svid-ttl 10
done
# the broker serves TLS for https://localhost with its own X509-SVID
env_register "spiffe://$TRUST_DOMAIN/examples/broker" --dns-name localhost
IDS+=("spiffe://$TRUST_DOMAIN/examples/broker")
env_wait_for "${IDS[@]}"

failed=()
for name in "${SELECTED[@]}"; do
    step "example $name: ${COMMAND[$name]}"
    t0=$SECONDS
    rc=0
    ${COMMAND[$name]} || rc=$?
    if [ $rc -eq 0 ]; then echo "--> $name passed in $((SECONDS - t0))s"; else
        echo "--> $name FAILED (exit $rc)"; failed+=("$name"); fi
done

[ ${#failed[@]} -eq 0 ] || fail "${#failed[@]} example(s) failed: ${failed[*]}"
printf '\nall %s example(s) passed in %ss\n' "${#SELECTED[@]}" "$((SECONDS - started))"

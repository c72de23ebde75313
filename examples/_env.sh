# Shared by quickstart.sh and examples/run_all.sh (source it; it defines functions only):
#
#   source examples/_env.sh
#   env_install                    # .venv + `pip install -e .` when missing
#   env_start                      # spiffe-server + spiffe-agent in a fresh temp dir (stopped on EXIT)
#   env_register spiffe://example.org/web --x509-svid-ttl 10   # entry for this user's uid
#   env_wait_for spiffe://example.org/web                      # until the Workload API serves it
#
# After env_start: SPIFFE_ENDPOINT_SOCKET (exported, for workloads), ENV_DIR, ADMIN_SOCKET,
# AGENT_SOCKET, NODE_ID (the agent's alias, parent of every entry).

TRUST_DOMAIN=example.org
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$REPO/.venv
ENV_DIR=""
SERVER_PID=""
AGENT_PID=""

step() { printf '\n==> %s\n' "$*"; }
fail() { printf '\nFAILED: %s\n' "$*" >&2; env_dump_logs; exit 1; }

env_install() {
    step "python environment: $VENV"
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || fail "spiffe-py needs python3 >= 3.11"
        python3 -m venv "$VENV" || fail "python3 -m venv (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
    # Re-install only when the entry points are missing: keeps a second run quick.
    if [ ! -x "$VENV/bin/spiffe-server" ] || [ ! -x "$VENV/bin/spiffe-agent" ]; then
        "$VENV/bin/python" -m pip install -q -e "$REPO" || fail "pip install -e ."
    fi
    export PATH="$VENV/bin:$PATH"
    echo "installed: $(command -v spiffe-server), $(command -v spiffe-agent)"
}

# 8081 is the server's default agent port; fall back to a free one when something holds it.
pick_port() {
    python - <<'EOF'
import socket
for port in (8081, 0):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(s.getsockname()[1])
        break
EOF
}

# wait_until SECONDS WHAT CMD...: poll CMD (quiet on its own) every 0.2 s.
wait_until() {
    local limit=$1 what=$2; shift 2
    local deadline=$((SECONDS + limit))
    until "$@"; do
        [ $SECONDS -lt $deadline ] || fail "timed out after ${limit}s waiting for $what"
        sleep 0.2
    done
}

alive() { kill -0 "$1" 2>/dev/null; }
server_healthy() {
    alive "$SERVER_PID" || fail "spiffe-server exited"
    spiffe-server healthcheck --socket-path "$ADMIN_SOCKET" >/dev/null 2>&1
}
agent_healthy() {
    alive "$AGENT_PID" || fail "spiffe-agent exited"
    spiffe-agent healthcheck --socket-path "$AGENT_SOCKET" >/dev/null 2>&1
}

env_start() {
    ENV_DIR=$(mktemp -d "${TMPDIR:-/tmp}/spiffe-py-env.XXXXXX")
    # Stop both processes however we end: normal exit, failure, Ctrl-C, or a closed output pipe
    # (`./quickstart.sh | head` would otherwise kill us by SIGPIPE before the EXIT trap runs).
    trap env_stop EXIT
    trap 'exit 130' INT TERM HUP
    trap '' PIPE
    ADMIN_SOCKET=$ENV_DIR/server/api.sock
    # The agent insists that the socket's directory belongs to its own user and that nobody else
    # can write there (root-owned when the agent runs as root); a directory inside our fresh 0700
    # temp dir qualifies whoever runs this, and the agent makes it 0755 itself.
    AGENT_SOCKET=$ENV_DIR/public/api.sock
    export SPIFFE_ENDPOINT_SOCKET=unix://$AGENT_SOCKET
    local port; port=$(pick_port)

    step "start spiffe-server (trust domain $TRUST_DOMAIN, SQLite + self-signed CA in $ENV_DIR/server, agent port $port)"
    spiffe-server run --trust-domain "$TRUST_DOMAIN" --data-dir "$ENV_DIR/server" --bind-port "$port" \
        >"$ENV_DIR/server.log" 2>&1 &
    SERVER_PID=$!
    wait_until 60 "server healthcheck" server_healthy
    echo "server healthy (pid $SERVER_PID)"

    step "join token for the agent, and the server's bundle as the agent's trust anchor"
    NODE_ID=spiffe://$TRUST_DOMAIN/node/$(hostname -s 2>/dev/null || echo local)
    local token
    token=$(spiffe-server token generate --spiffe-id "$NODE_ID" --output json --socket-path "$ADMIN_SOCKET" |
        python -c 'import json, sys; print(json.load(sys.stdin)["value"])') || fail "token generate"
    spiffe-server bundle show --format pem --socket-path "$ADMIN_SOCKET" >"$ENV_DIR/bundle.pem" || fail "bundle show"
    echo "token generated (node alias $NODE_ID); bundle in $ENV_DIR/bundle.pem"

    step "start spiffe-agent (Workload API on $AGENT_SOCKET)"
    spiffe-agent run --trust-domain "$TRUST_DOMAIN" --server-port "$port" --data-dir "$ENV_DIR/agent" \
        --socket-path "$AGENT_SOCKET" --join-token "$token" --trust-bundle "$ENV_DIR/bundle.pem" \
        >"$ENV_DIR/agent.log" 2>&1 &
    AGENT_PID=$!
    wait_until 60 "agent healthcheck" agent_healthy
    echo "agent attested and healthy (pid $AGENT_PID)"
}

# env_register ID [entry create flags...]: an entry for processes running as this user.
env_register() {
    local id=$1; shift
    spiffe-server entry create --parent-id "$NODE_ID" --spiffe-id "$id" --selector "unix:uid:$(id -u)" "$@" \
        --socket-path "$ADMIN_SOCKET" >/dev/null || fail "entry create $id"
    echo "registered $id for unix:uid:$(id -u) $*"
}

serves() { spiffe-agent api fetch x509 --output json --socket-path "$AGENT_SOCKET" 2>/dev/null | grep -q "\"$1\""; }

env_wait_for() {
    local id
    for id in "$@"; do wait_until 30 "the Workload API to serve $id" serves "$id"; done
}

# SIGTERM, then SIGKILL after 10 s.
stop_pid() {
    local pid=$1 name=$2
    [ -n "$pid" ] && alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.2; done
    alive "$pid" && { echo "$name did not stop: killing it"; kill -KILL "$pid" 2>/dev/null; }
    wait "$pid" 2>/dev/null || true
    echo "$name stopped"
}

env_dump_logs() {
    [ -n "$ENV_DIR" ] || return 0
    local log
    for log in "$ENV_DIR"/server.log "$ENV_DIR"/agent.log; do
        [ -f "$log" ] && { printf -- '--- last lines of %s\n' "$log"; tail -n 20 "$log"; }
    done
}

env_stop() {
    local rc=$?
    [ -n "$ENV_DIR" ] || return 0
    set +e  # a failing echo (closed stdout) must not stop the cleanup
    step "stop agent and server"
    stop_pid "$AGENT_PID" spiffe-agent
    stop_pid "$SERVER_PID" spiffe-server
    rm -rf "$ENV_DIR"
    ENV_DIR=""
    return $rc
}

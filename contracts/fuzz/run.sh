#!/usr/bin/env bash
# Schema-driven fuzz of the served node-agent contract: a `flatrender serve`
# on a fresh data directory with an enrolled, registered node and a queued
# render, and schemathesis (pinned) sending signed requests generated from
# contracts/rest/node-agent.openapi.yaml (hooks.py signs them). It fails on
# any 5xx, any status the contract does not list for the operation, any
# answer that breaks its schema, and any schema-valid request refused with
# 400 (positive data acceptance: only 2xx, 401, 404, 409 and 422 are
# answers to a valid request). Bounded in examples and time.
#
# Environment: FLATRENDER_BIN (default target/debug/flatrender, built if
# missing), FUZZ_VENV (default target/fuzz-venv), FUZZ_MAX_TIME (seconds of
# generation, default 100), FUZZ_MAX_EXAMPLES (per operation, default 60).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)

SCHEMATHESIS_VERSION=4.32.5
BIN=${FLATRENDER_BIN:-target/debug/flatrender}
VENV=${FUZZ_VENV:-target/fuzz-venv}
MAX_TIME=${FUZZ_MAX_TIME:-100}
MAX_EXAMPLES=${FUZZ_MAX_EXAMPLES:-60}
SPEC=contracts/rest/node-agent.openapi.yaml
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac

[ -x "$BIN" ] || cargo build -p api --bin flatrender
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# The embedded store in the temporary directory, whatever the caller set.
unset DATABASE_URL
export FLATRENDER_DATA_DIR="$WORK/data"
PORT=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export FUZZ_URL="http://127.0.0.1:$PORT"

field() { sed -n "s/^$1 = \"\(.*\)\"$/\1/p"; }
ENROLMENT=$("$BIN" node enroll --name fuzz-01)
export FUZZ_NODE_ID=$(printf '%s\n' "$ENROLMENT" | field node_id)
export FUZZ_KEY_ID=$(printf '%s\n' "$ENROLMENT" | field key_id)
export FUZZ_SECRET=$(printf '%s\n' "$ENROLMENT" | field secret)
TENANT=$("$BIN" tenant create --name "Fuzz Studio" --credit-minor 100000000 --max-running-tasks 1000 | field tenant_id)

RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$PORT" --max-upload-bytes 4194304 \
    >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
    curl -fsS "$FUZZ_URL/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "$FUZZ_URL/readyz" >/dev/null
# Work for the fuzzed nodes to claim, submitted as a studio does.
USER_ID=$("$BIN" user create --tenant "$TENANT" --email fuzz@example.com | field user_id)
FLATRENDER_TOKEN=$("$BIN" token issue --user "$USER_ID") \
    "$BIN" render submit --server "$FUZZ_URL" --scene node-agent/scenes/demo.json \
    --first-frame 1 --last-frame 400 --chunk-size 2 >/dev/null

"$VENV/bin/python" contracts/fuzz/hooks.py register
"$VENV/bin/python" contracts/fuzz/http_layer.py 127.0.0.1 "$PORT"

export FUZZ_SUMMARY="$WORK/summary.json"
export FUZZ_SEED=${FUZZ_SEED:-20261124}
export SCHEMATHESIS_HOOKS="$ROOT/contracts/fuzz/hooks.py"
status=0
# Run in the temporary directory: schemathesis keeps a crash cache in the
# working directory (failures print a curl line to reproduce them).
cd "$WORK"
"$VENV/bin/schemathesis" --config-file "$ROOT/contracts/fuzz/schemathesis.toml" run "$ROOT/$SPEC" \
    --url "$FUZZ_URL" \
    --phases examples,coverage,fuzzing \
    --max-examples "$MAX_EXAMPLES" \
    --max-time "$MAX_TIME" \
    --workers 1 \
    --seed "$FUZZ_SEED" \
    --request-timeout 10 \
    --checks all \
    --exclude-checks ignored_auth,use_after_free,ensure_resource_availability,object_level_authorization \
    --suppress-health-check all \
    --no-color || status=$?
cd "$ROOT"

"$VENV/bin/python" - "$FUZZ_SUMMARY" <<'EOF'
import json, sys
try:
    summary = json.load(open(sys.argv[1]))
except FileNotFoundError:
    sys.exit("the fuzz sent no request")
counts = {}
for row in summary["by_status"]:
    counts[row["status"]] = counts.get(row["status"], 0) + row["count"]
print(f"fuzz: {summary['requests']} signed requests; by status: {dict(sorted(counts.items()))}")
for row in summary["by_status"]:
    print(f"  {row['method']:6} {row['path']:40} {row['status']}  x{row['count']}")
EOF

if grep -qi "panicked" "$WORK/serve.log"; then
    echo "the server panicked:" >&2
    grep -i -A5 "panicked" "$WORK/serve.log" >&2
    status=1
fi
if [ "$status" -ne 0 ]; then
    echo "--- server log (last 40 lines)" >&2
    tail -n 40 "$WORK/serve.log" >&2
    echo "fuzz: 0 passed, 1 failed"
else
    sent=$("$VENV/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["requests"])' "$FUZZ_SUMMARY")
    echo "fuzz: $sent passed, 0 failed"
fi
exit "$status"

#!/usr/bin/env bash
# Load run (not a test): start `decdec serve` on the bundled stories260K model and send 200 sequential
# plus 160 16-way concurrent chat completions (scripts/load_test.py); prints failures, p50/p99 latency
# and tokens/s. Extra arguments go to load_test.py. DECDEC_SERVE overrides the server command.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-models/stories260K}
PORT=${PORT:-18080}
if [ -z "${DECDEC_SERVE:-}" ]; then
    cargo build --release -p decdec-cli
    DECDEC_SERVE="${CARGO_TARGET_DIR:-target}/release/decdec serve"
fi

# shellcheck disable=SC2086  # DECDEC_SERVE is a command with arguments
$DECDEC_SERVE --model "$MODEL" --host 127.0.0.1 --port "$PORT" --max-queue 64 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT

for _ in $(seq 1 600); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$PORT/health', timeout=1)" 2>/dev/null; then
        break
    fi
    kill -0 "$pid" 2>/dev/null || { echo "decdec serve exited early" >&2; exit 1; }
    sleep 0.1
done

python3 scripts/load_test.py --base-url "http://127.0.0.1:$PORT" --model "$(basename "$MODEL")" "$@"
echo "--- server metrics ---"
python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$PORT/metrics').read().decode())" \
    | grep -E '^decdec_(requests_total|completion_tokens_total|decode_tokens_per_second|time_to_first_token_seconds_(sum|count)|queue_depth|dec_)'

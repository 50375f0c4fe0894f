#!/usr/bin/env bash
# Starts mcp-platform (`serve`). With the active provider's API key set (or a key-less local
# provider such as Ollama active) it talks to the real model. Without one it runs the OFFLINE
# DEMO: the built-in `mock-llm` stands in for the model, and says so.
#
#   ./run.sh                     # offline demo unless e.g. GROQ_API_KEY is set
#   GROQ_API_KEY=... ./run.sh    # the real model (llm.active in config.yaml)
#   MCP__LLM__ACTIVE=ollama ./run.sh
set -euo pipefail
cd "$(dirname "$0")"

# make builds jemalloc, the server's allocator; without it cargo fails deep in a build script.
command -v make >/dev/null 2>&1 || { echo "$0: make is required to build jemalloc: apt-get install make" >&2; exit 1; }
cargo build --release --workspace --bins --quiet
bin=target/release/mcp-platform
config=${MCP_CONFIG_PATH:-config.yaml}

# The active provider and the variable its api_key names ("env:NAME"), read from config.yaml.
active=${MCP__LLM__ACTIVE:-$(sed -n 's/^  active: *"\{0,1\}\([A-Za-z0-9_-]*\).*/\1/p' "$config" | head -n1)}
key_spec=$(awk -v provider="    $active:" '
  $0 == provider { inside = 1; next }
  inside && /^    [A-Za-z0-9_-]+:/ { exit }
  inside && /api_key:/ { sub(/^[^:]*: */, ""); gsub(/"/, ""); sub(/ *#.*/, ""); print; exit }
' "$config")
key_var=${key_spec#env:}

demo=0
if [[ $key_spec == env:* && -z ${!key_var:-} ]]; then
  demo=1
fi

if [[ $demo == 1 ]]; then
  mock_port=${MOCK_LLM_PORT:-8089}
  "$bin" mock-llm --port "$mock_port" > target/mock-llm.log 2>&1 &
  mock_pid=$!
  trap 'kill $mock_pid 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do
    grep -q "listening" target/mock-llm.log 2>/dev/null && break
    kill -0 $mock_pid 2>/dev/null || { cat target/mock-llm.log >&2; exit 1; }
    sleep 0.1
  done
  export MCP__LLM__ACTIVE=mock
  export MCP__LLM__PROVIDERS__MOCK__BASE_URL="http://127.0.0.1:${mock_port}/v1"
  cat >&2 <<BANNER
################################################################################
#  OFFLINE DEMO MODE: no ${key_var} in the environment for provider "${active}".
#  Answers come from mcp-platform's built-in mock-llm (a scripted stand-in, not
#  a real model) on port ${mock_port}. It calls the demo MCP server's tools for
#  arithmetic ("what is 2+3") and otherwise echoes. Set ${key_var} (or choose
#  another provider with MCP__LLM__ACTIVE) to talk to a real model.
################################################################################
BANNER
  "$bin" serve "$@" &
  server_pid=$!
  trap 'kill -TERM $server_pid 2>/dev/null; wait $server_pid 2>/dev/null; kill $mock_pid 2>/dev/null || true' EXIT
  trap 'exit 0' INT TERM
  wait $server_pid
else
  exec "$bin" serve "$@"
fi

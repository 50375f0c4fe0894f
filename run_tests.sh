#!/usr/bin/env bash
# The whole check, as CI runs it: formatting, lints, then every test of the workspace.
set -uo pipefail
cd "$(dirname "$0")"

# make builds jemalloc, the server's allocator; without it cargo fails deep in a build script.
command -v make >/dev/null 2>&1 || { echo "$0: make is required to build jemalloc: apt-get install make" >&2; exit 1; }

set -e
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The integration tests spawn the MCP server binaries of the workspace as child processes.
cargo build --workspace --bins --quiet
set +e

mkdir -p target
cargo test --workspace --no-fail-fast 2>&1 | tee target/test-output.txt
status=${PIPESTATUS[0]}

# One line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1); if ($(i) ~ /^ignored;?$/) s += $(i-1) } }
     END { printf "total: %d passed, %d failed, %d skipped\n", p, f, s }' target/test-output.txt | tee target/test-summary.txt
exit "$status"

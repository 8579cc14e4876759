#!/usr/bin/env bash
# The main job: a real load test of the bundled demo target with 20 real Chromium users on the
# local backend. Extra arguments go to `liveload demo` (e.g. --users 40 --duration 60s).
#
# Builds only what the demo needs: the CLI without the cloud backends (no AWS SDK, no SSH
# stack) and the agent. `cargo build --release -p liveload -p liveload-agent` builds them all.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-deps.sh
cargo build --release --locked -p liveload --no-default-features -p liveload-agent
exec ./target/release/liveload demo --users 20 "$@"

#!/usr/bin/env bash
# The main job: a real load test of the bundled demo target with 20 real Chromium users on the
# local backend. Extra arguments go to `liveload demo` (e.g. --users 40 --duration 60s).
#
# Builds only what the demo needs, and fast: the CLI without the cloud backends (no AWS SDK, no
# SSH stack) and the agent, in the dev profile. A cold release build of the same takes about
# 6 minutes on two cores (chromiumoxide's generated CDP types dominate it), a dev build under 3;
# the demo's 20 users spend their CPU in Chromium, not in these binaries, so its figures are
# the same. The test suite builds in the same profile and reuses what this built.
# For real load tests build release binaries: `cargo build --release -p liveload -p liveload-agent`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-deps.sh
cargo build --locked -p liveload --no-default-features -p liveload-agent
exec ./target/debug/liveload demo --users 20 "$@"

#!/usr/bin/env bash
# liveload's browser users against Artillery + Playwright's, on the demo target's demo page and
# heavy page: memory and CPU per user, and the generator's own memory (README, "Density").
#
#   scripts/density-vs-artillery.sh            # demo page 10 and 30 users, heavy 1 and 3
#   DEMO_USERS=10,50 WINDOW=20 scripts/density-vs-artillery.sh
#
# Installs the pinned Artillery (which brings Playwright) from npm into target/, and points
# Playwright at the same Debian chromium-headless-shell liveload drives. Nothing else should
# run on the machine meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-deps.sh
ARTILLERY_VERSION=2.0.34
cargo build --release --locked -p liveload --no-default-features -p liveload-agent -p demo-target >&2
prefix="$PWD/target/artillery-$ARTILLERY_VERSION"
if [ ! -x "$prefix/node_modules/.bin/artillery" ]; then
  command -v npm >/dev/null || apt_install nodejs npm
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$prefix" --no-audit --no-fund "artillery@$ARTILLERY_VERSION" >&2
fi
export LIVELOAD_AGENT_BIN="$PWD/target/release/liveload-agent"
exec python3 scripts/density_vs_artillery.py ./target/release/liveload \
  "$prefix/node_modules/.bin/artillery" /usr/lib/chromium/chromium-headless-shell \
  ./target/release/demo-target

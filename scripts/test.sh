#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit, property, conformance,
# end-to-end with real Chromium). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-deps.sh
ensure_prism
ensure_sshd
ensure_moto
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
# The end-to-end tests run the `liveload` and `liveload-agent` binaries: build them first.
cargo build --locked --workspace --bins
cargo test --locked --workspace

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
# Terraform's own formatter, where a terraform binary exists (HashiCorp's releases are not on
# the registries CI reaches; tests/tests/infra.rs checks the module offline either way).
if command -v terraform >/dev/null 2>&1; then
  terraform fmt -check -recursive terraform
else
  echo "terraform not installed: skipping terraform fmt -check (see terraform/aws/README.md)" >&2
fi
cargo clippy --locked --workspace --all-targets -- -D warnings
# The end-to-end tests run the `liveload` and `liveload-agent` binaries: build them first.
cargo build --locked --workspace --bins
cargo test --locked --workspace

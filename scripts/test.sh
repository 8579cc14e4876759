#!/usr/bin/env bash
# The whole test suite: formatting, lints, unused dependencies, and every test (unit, property,
# conformance, end-to-end with real Chromium) under cargo nextest. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
# CI builds from scratch once: incremental compilation only costs time and disk there (its
# caches for the workspace's crates run to gigabytes).
export CARGO_INCREMENTAL=0
source scripts/ensure-deps.sh
ensure_prism
ensure_phoenix_js
ensure_sshd
ensure_postgres
ensure_registry
ensure_moto
ensure_podman
ensure_machete
ensure_nextest
cargo fmt --all -- --check
# Terraform's own formatter, where a terraform binary exists (HashiCorp's releases are not on
# the registries CI reaches; tests/tests/infra.rs checks the module offline either way).
if command -v terraform >/dev/null 2>&1; then
  terraform fmt -check -recursive terraform
else
  echo "terraform not installed: skipping terraform fmt -check (see backends/ec2/README.md)" >&2
fi
cargo machete
# One feature set for lints and tests, so every crate (the AWS SDK above all) is checked once
# and built once. It adds the example backend (tests only) to the CLI, and its CLI test.
features="liveload/example,liveload-e2e/example-cli"
cargo clippy --locked --workspace --all-targets --features "$features" -- -D warnings
# nextest builds the `liveload` and `liveload-agent` binaries the end-to-end tests run (their
# packages have tests of their own), then runs every test binary in parallel.
cargo nextest run --locked --workspace --features "$features"

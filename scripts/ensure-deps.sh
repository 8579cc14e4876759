#!/usr/bin/env bash
# Installs what liveload's demo and tests need on Debian, when missing:
#   - Chromium: Debian's `chromium-headless-shell` (the browser the agents drive).
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again (it only installs what is
# missing). Needs root or sudo for apt.
set -euo pipefail

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

ensure_chromium() {
  if [ -n "${LIVELOAD_CHROMIUM:-}" ] && [ -x "${LIVELOAD_CHROMIUM}" ]; then
    return
  fi
  if command -v chromium-headless-shell >/dev/null 2>&1; then
    return
  fi
  echo "installing Debian's chromium-headless-shell (and fonts) ..." >&2
  apt_install chromium-headless-shell fonts-liberation
}

# The request-validating mock of Fly's Machines API, for the Fly backend's contract tests
# (npm package, pinned, installed into .tools/npm inside the repository).
PRISM_VERSION=5.16.0
ensure_prism() {
  local here
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  local bin="$here/.tools/npm/node_modules/.bin/prism"
  if [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null | tail -n 1)" = "$PRISM_VERSION" ]; then
    return
  fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "installing Debian's nodejs and npm ..." >&2
    apt_install nodejs npm
  fi
  echo "installing @stoplight/prism-cli $PRISM_VERSION into .tools/npm ..." >&2
  npm install --prefix "$here/.tools/npm" --no-audit --no-fund --loglevel=error \
    "@stoplight/prism-cli@$PRISM_VERSION" >&2
}

ensure_chromium

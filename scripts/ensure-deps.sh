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

ensure_chromium

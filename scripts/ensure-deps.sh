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

# Phoenix's own JavaScript clients (npm `phoenix` and `phoenix_live_view`, pinned) for the demo
# target's LiveView page (`/lv`): the real client proves the demo's LiveView server, which then
# proves liveload's native LiveView engine. Installed into .tools/phoenix-js, never copied into
# the repository; the demo target serves them from there (or from $LIVELOAD_PHOENIX_JS).
PHOENIX_JS_VERSION=1.8.16
PHOENIX_LIVE_VIEW_JS_VERSION=1.2.12
ensure_phoenix_js() {
  local here
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  local modules="$here/.tools/phoenix-js/node_modules"
  if [ "$(node -p "require('$modules/phoenix_live_view/package.json').version" 2>/dev/null)" = "$PHOENIX_LIVE_VIEW_JS_VERSION" ] \
    && [ "$(node -p "require('$modules/phoenix/package.json').version" 2>/dev/null)" = "$PHOENIX_JS_VERSION" ]; then
    return
  fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "installing Debian's nodejs and npm ..." >&2
    apt_install nodejs npm
  fi
  echo "installing phoenix $PHOENIX_JS_VERSION and phoenix_live_view $PHOENIX_LIVE_VIEW_JS_VERSION into .tools/phoenix-js ..." >&2
  npm install --prefix "$here/.tools/phoenix-js" --no-audit --no-fund --loglevel=error \
    "phoenix@$PHOENIX_JS_VERSION" "phoenix_live_view@$PHOENIX_LIVE_VIEW_JS_VERSION" >&2
}

# The EC2 emulator (moto's server, from PyPI, pinned) in a virtual environment inside the
# repository, for the EC2 backend's tests. Each test starts its own server on a free port.
MOTO_VERSION=5.2.5
ensure_moto() {
  local here
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  local venv="$here/.tools/moto-venv"
  if [ -x "$venv/bin/moto_server" ] \
    && [ "$("$venv/bin/python" -c 'import moto; print(moto.__version__)' 2>/dev/null)" = "$MOTO_VERSION" ]; then
    return
  fi
  local python=python3
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "installing Debian's python3-venv ..." >&2
    apt_install python3 python3-venv
    python=/usr/bin/python3
  fi
  echo "installing moto[server] $MOTO_VERSION into .tools/moto-venv ..." >&2
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
}

# OpenSSH's server, for the SSH backend's tests: each test starts its own private sshd (own
# config, host keys and authorized_keys in a temp dir, a free port on 127.0.0.1) and stops it.
# The package's own service must not start: a policy-rc.d that refuses it is in place while apt
# runs (and removed after, unless one was there before).
ensure_sshd() {
  # sshd started by root wants its privilege-separation directory (/run is often empty).
  if [ "$(id -u)" -eq 0 ] && [ ! -d /run/sshd ]; then mkdir -p -m 0755 /run/sshd; fi
  if [ -x /usr/sbin/sshd ]; then
    return
  fi
  echo "installing Debian's openssh-server (its system service is not started) ..." >&2
  apt_install_no_service openssh-server
}

# apt_install, with Debian's policy-rc.d guard so the package's system service is not started
# (a test service is started by the tests themselves, on a free port).
apt_install_no_service() {
  local guard=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod +x /usr/sbin/policy-rc.d
    guard=1
  fi
  apt_install "$@"
  if [ "$guard" -eq 1 ]; then as_root rm -f /usr/sbin/policy-rc.d; fi
}

# Debian's docker-registry (bookworm: 2.8.2), the image registry `liveload doctor`'s image
# checks are tested against; the tests start it on a free port of 127.0.0.1 with their own
# configuration (crates/liveload-test-support/src/registry.rs). Its system service is not
# started.
ensure_registry() {
  if [ -x /usr/bin/docker-registry ]; then
    return
  fi
  echo "installing Debian's docker-registry (its system service is not started) ..." >&2
  apt_install_no_service docker-registry
}

# PostgreSQL (Debian's `postgresql`, bookworm: 15), for the server's PostgreSQL run history:
# the tests make their own cluster in a temp dir and start its server on a free port of
# 127.0.0.1, as the `postgres` user when they run as root (the package creates that user)
# (crates/liveload-test-support/src/postgres.rs). Debian's system service is not started.
ensure_postgres() {
  if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    return
  fi
  echo "installing Debian's postgresql (its system service is not started) ..." >&2
  apt_install_no_service postgresql
}

# podman and what the image tests need, all from Debian's own packages (bookworm: podman 4.3):
# runc (Debian's crun refuses a hybrid cgroup v1/v2 host), netavark and aardvark-dns (podman's
# networks), slirp4netns (the tests' containers reach a target on this host's loopback through
# it), iptables (published ports), uidmap, and mmdebstrap (the base image is made from Debian's
# packages: no image registry is needed). The tests run podman with their own configuration and
# storage (crates/liveload-test-support/src/container.rs); no podman service is started here.
ensure_podman() {
  local wanted=(podman runc netavark aardvark-dns slirp4netns iptables uidmap mmdebstrap)
  local missing=()
  for package in "${wanted[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$package")
    fi
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    return
  fi
  echo "installing Debian's ${missing[*]} ..." >&2
  apt_install "${missing[@]}"
}

# cargo-machete (unused dependencies), from crates.io, pinned; about two and a half minutes
# to build on two cores, once per machine.
MACHETE_VERSION=0.9.2
ensure_machete() {
  if command -v cargo-machete >/dev/null 2>&1 \
    && cargo machete --version 2>/dev/null | grep -q "$MACHETE_VERSION"; then
    return
  fi
  echo "installing cargo-machete $MACHETE_VERSION ..." >&2
  cargo install --locked --quiet cargo-machete --version "$MACHETE_VERSION" >&2
}

# cargo-nextest runs the tests (each in its own process, binaries in parallel). These
# machines have it; elsewhere it is installed from crates.io.
ensure_nextest() {
  if cargo nextest --version >/dev/null 2>&1; then
    return
  fi
  echo "installing cargo-nextest ..." >&2
  cargo install --locked --quiet cargo-nextest >&2
}

ensure_chromium

#!/usr/bin/env bash
# Density: what each change to Chromium's command line or to the per-page DevTools domains
# saves per browser user, measured with `liveload bench users` on the bundled demo target's
# demo page and heavy page (README, "Density").
#
#   scripts/density.sh                 # every variant below; demo page 0 and 20 users, heavy 0 and 2
#   DEMO_USERS=0,40 WINDOW=15 scripts/density.sh before now
#
# Each variant runs alone against the same build, one after another (nothing else should run
# on the machine meanwhile: CPU figures are per user and small). A variant is a set of
# LIVELOAD_BROWSER_* variables, the same knobs an operator has (the agent's `switches.rs`).
# `before` is the browser as liveload drove it before the density work: chromiumoxide's
# per-page DevTools domains and buffers, and none of the adopted switches.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-deps.sh
cargo build --release --locked -p liveload --no-default-features -p liveload-agent >&2
export LIVELOAD_AGENT_BIN="$PWD/target/release/liveload-agent"
liveload=./target/release/liveload
demo_users=${DEMO_USERS:-0,20}
heavy_users=${HEAVY_USERS:-0,2} # a heavy user takes half a core: 4 saturate two, and CPU per user is then the machine's limit
window=${WINDOW:-10}

# The switches adopted by default (keep in step with DENSITY_SWITCHES in agent/src/switches.rs).
adopted="enable-low-end-device-mode"

variant() {
  # Prints the environment of a variant, one VAR=value per line.
  case "$1" in
    before) echo "LIVELOAD_BROWSER_DEVTOOLS=full"
            echo "LIVELOAD_BROWSER_IGNORE_DEFAULT_ARGS=$adopted" ;;
    devtools-trimmed) echo "LIVELOAD_BROWSER_IGNORE_DEFAULT_ARGS=$adopted" ;;
    now) ;;
    low-end) echo "LIVELOAD_BROWSER_DEVTOOLS=full"
             echo "LIVELOAD_BROWSER_ARGS=--enable-low-end-device-mode" ;;
    throttling) echo "LIVELOAD_BROWSER_IGNORE_DEFAULT_ARGS=disable-background-timer-throttling,disable-renderer-backgrounding,disable-backgrounding-occluded-windows" ;;
    optimize-for-size) echo "LIVELOAD_BROWSER_ARGS=--js-flags=--optimize-for-size" ;;
    small-young-gen) echo "LIVELOAD_BROWSER_ARGS=--js-flags=--max-semi-space-size=1" ;;
    single-threaded-gc) echo "LIVELOAD_BROWSER_ARGS=--js-flags=--single-threaded-gc" ;;
    no-field-trials) echo "LIVELOAD_BROWSER_ARGS=--disable-field-trial-config" ;;
    in-process-gpu) echo "LIVELOAD_BROWSER_ARGS=--in-process-gpu" ;;
    *) echo "unknown variant $1" >&2; return 1 ;;
  esac
}

variants=("$@")
if [ ${#variants[@]} -eq 0 ]; then
  # Not measured, and why: --num-raster-threads=1 and --disable-features=PaintHolding are
  # already what chromium-headless-shell gives its renderers; site isolation only matters for
  # cross-site frames, which neither page has.
  variants=(before devtools-trimmed low-end throttling optimize-for-size small-young-gen
            single-threaded-gc no-field-trials in-process-gpu now)
fi

summary=()
for name in "${variants[@]}"; do
  mapfile -t env_of < <(variant "$name")
  for page in demo heavy; do
    echo "== $name on $page: ${env_of[*]:-(defaults)}"
    users=$demo_users
    [ "$page" = heavy ] && users=$heavy_users
    out=$(env "${env_of[@]}" "$liveload" bench users --page "$page" --users "$users" --window "$window")
    echo "$out"
    line=$(echo "$out" | grep '^marginal per user' | tail -1)
    procs=$(echo "$out" | awk '$1 ~ /^[0-9]+$/ {p=$3} END {print p}')
    failed=$(echo "$out" | awk '$1 ~ /^[0-9]+$/ {f+=$NF} END {print f}')
    summary+=("$(printf '%-20s %-6s %s (procs %s, failed %s)' "$name" "$page" "${line#marginal per user }" "$procs" "$failed")")
  done
done
echo
echo "== summary (marginal per user; demo users $demo_users, heavy $heavy_users, ${window}s CPU window)"
printf '%s\n' "${summary[@]}"

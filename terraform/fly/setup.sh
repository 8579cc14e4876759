#!/usr/bin/env bash
# One-time Fly.io setup for liveload: the app that holds agent machines, and its image.
#
# Why a script and not a Terraform module: Fly's own Terraform provider (fly-apps/terraform-
# provider-fly) is archived and unmaintained, and the Machines API is what liveload drives at
# run time anyway. These are the equivalent `fly` commands, idempotent where fly allows.
#
#   FLY_ORG=my-org APP=liveload-agents ./terraform/fly/setup.sh
set -euo pipefail
: "${APP:?set APP to the Fly app name for the liveload agents}"
ORG="${FLY_ORG:-personal}"
TAG="${TAG:-$(git rev-parse --short HEAD 2>/dev/null || echo latest)}"
cd "$(dirname "$0")/../.."

# 1. The app (machines only; liveload creates and destroys them itself).
fly apps list --json | grep -q "\"Name\": *\"$APP\"" || fly apps create "$APP" --org "$ORG"

# 2. Public addresses, for the default public mode: Fly's edge answers on APP.fly.dev and routes
#    each controller connection to one machine by its fly-force-instance-id header. A shared
#    IPv4 and a dedicated IPv6 cost nothing. (Private mode needs neither.)
if ! fly ips list --app "$APP" --json | grep -q '"Address"'; then
  fly ips allocate-v4 --shared --app "$APP"
  fly ips allocate-v6 --app "$APP"
fi

# 3. The agent image, built remotely by Fly's builder and pushed to registry.fly.io/$APP.
fly deploy --app "$APP" --build-only --push --image-label "$TAG" \
  --dockerfile images/agent/Dockerfile

# 4. A deploy token scoped to this app, for FLY_API_TOKEN.
echo "token (keep it secret):"
fly tokens create deploy --app "$APP" --expiry 720h

cat <<TXT

Then, from anywhere (public mode, through $APP.fly.dev):
  export FLY_API_TOKEN=...   # the token above
  liveload run --backend fly --fly-app $APP --fly-image registry.fly.io/$APP:$TAG \\
    --fly-regions iad,fra --fly-size performance-2x --users 500 examples/demo.yaml
Inside the organisation's private network (a Fly machine, or \`fly wireguard\`), add
--fly-mode private: TLS pinned end to end, no public addresses needed.
TXT

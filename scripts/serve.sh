#!/usr/bin/env bash
# Install what is needed and run the service on SQLite (data under ./data/).
# Extra arguments go to `metering serve`, e.g. scripts/serve.sh --port 9000
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh" ""
exec .venv/bin/metering serve "$@"

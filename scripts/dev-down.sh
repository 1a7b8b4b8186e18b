#!/usr/bin/env bash
# Stops the processes scripts/dev-up.sh started (the services keep running).
set -euo pipefail
cd "$(dirname "$0")/.."
for name in agent dispatcher api; do
  pidfile=".ris/$name.pid"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    echo "stopped ris-$name ($pid)"
  fi
  rm -f "$pidfile"
done

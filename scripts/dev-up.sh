#!/usr/bin/env bash
# Sets up and runs a whole RIS system on this machine: the services, then ris-api,
# ris-dispatcher and one local ris-agent; then runs a demo task through it and prints
# the result and how to reach the API. Everything RIS writes goes under .ris/ in the
# checkout (logs, keys, the agent's state). Stop it with scripts/dev-down.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUN="$ROOT/.ris"
mkdir -p "$RUN/logs"
chmod 700 "$RUN"

log() { printf '\033[1;32m[ris]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[ris]\033[0m %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (rustup, Rust >= 1.85) first"
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR=/var/cache/ris-target
  mkdir -p "$CARGO_TARGET_DIR" 2>/dev/null || export CARGO_TARGET_DIR="$HOME/.cache/ris-target"
fi

bash scripts/services.sh
bash scripts/dev-down.sh >/dev/null 2>&1 || true

log "building (debug profile)"
cargo build --workspace --bins --quiet
BIN="$CARGO_TARGET_DIR/debug"

if ! psql -h 127.0.0.1 -U postgres -Atqc "select 1 from pg_database where datname = 'ris'" | grep -q 1; then
  log "creating database ris"
  psql -h 127.0.0.1 -U postgres -qc "create database ris"
fi

[ -s "$RUN/admin-key" ] || (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$RUN/admin-key")
export RIS_BOOTSTRAP_ADMIN_KEY
RIS_BOOTSTRAP_ADMIN_KEY=$(cat "$RUN/admin-key")

# TLS everywhere: the API's certificate from `risctl dev certs` (rcgen) in .ris/certs,
# RabbitMQ's TLS listener (5671) with the CA scripts/services.sh made. Clients (curl,
# risctl, the agent) trust .ris/certs/trust.pem, which holds both CAs.
DEV_CERTS=${RIS_DEV_CERTS:-/etc/ris/dev-certs}
"$BIN/risctl" dev certs --out "$RUN/certs" >/dev/null
cat "$RUN/certs/ca.pem" "$DEV_CERTS/ca.pem" > "$RUN/certs/trust.pem"
export RIS_TLS__CERT="$RUN/certs/server.pem" RIS_TLS__KEY="$RUN/certs/server-key.pem"
export RIS_BROKER__AMQP_URL=amqps://127.0.0.1:5671 RIS_BROKER__CA_FILE="$DEV_CERTS/ca.pem"
export CURL_CA_BUNDLE="$RUN/certs/trust.pem" RIS_CA="$RUN/certs/trust.pem"
API=https://127.0.0.1:8080

start() { # start <name> <command...>
  local name=$1; shift
  nohup "$@" >"$RUN/logs/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
}

log "starting ris-api on $API and ris-dispatcher"
start api "$BIN/ris-api"
start dispatcher "$BIN/ris-dispatcher"
for _ in $(seq 60); do curl -fsS "$API/readyz" >/dev/null 2>&1 && break; sleep 0.5; done
curl -fsS "$API/readyz" >/dev/null || die "API not ready; see $RUN/logs/api.log"

admin() { curl -fsS -H "Authorization: Bearer $RIS_BOOTSTRAP_ADMIN_KEY" -H 'content-type: application/json' "$@"; }
field() { sed -n "s/.*\"$1\": *\"\\([^\"]*\\)\".*/\\1/p"; }

log "creating tenant demo"
admin -X POST "$API/v1/tenants" -d '{"name":"demo"}' >/dev/null
KEY=$(admin -X POST "$API/v1/api-keys" -d '{"name":"dev-up","tenant":"demo"}' | field key)
(umask 077; echo "$KEY" > "$RUN/demo-key")
tenant() { curl -fsS -H "Authorization: Bearer $KEY" -H 'content-type: application/json' "$@"; }

AGENT_DIR="$RUN/agent"
if [ -s "$AGENT_DIR/identity.json" ] && [ -s "$AGENT_DIR/ca.pem" ] && tenant "$API/v1/agents/$(field agent_id < "$AGENT_DIR/identity.json")" >/dev/null 2>&1; then
  log "reusing the enrolled local agent"
else
  log "enrolling a local agent (labels env=dev, site=local)"
  NAME="$(hostname)-local"
  # A stale identity (say, from before TLS) keeps its name in the database: enroll anew
  # under a fresh name rather than fail on the taken one.
  [ -e "$AGENT_DIR/identity.json" ] && NAME="$NAME-$(date +%s)"
  TOKEN=$(tenant -X POST "$API/v1/agents/enrollment-tokens" -d '{"ttl_secs":600}' | field token)
  "$BIN/ris-agent" enroll --api "$API" --ca "$RUN/certs/trust.pem" --token "$TOKEN" --name "$NAME" \
    --label env=dev --label site=local --state-dir "$AGENT_DIR" --force
fi
start agent "$BIN/ris-agent" run --state-dir "$AGENT_DIR"
AGENT_ID=$(field agent_id < "$AGENT_DIR/identity.json")
for _ in $(seq 60); do tenant "$API/v1/agents/$AGENT_ID" | grep -q '"status":"online"' && break; sleep 0.5; done

log "running a demo task: uname -a, on any agent with env=dev"
TASK=$(tenant -X POST "$API/v1/tasks" -d '{"target":{"selector":"env=dev"},"task":{"kind":"shell","argv":["uname","-a"]}}' | field id)
for _ in $(seq 60); do
  STATE=$(tenant "$API/v1/tasks/$TASK" | field state)
  case "$STATE" in completed|failed|timed_out|cancelled) break ;; esac
  sleep 0.5
done
RESULT=$(tenant "$API/v1/tasks/$TASK")
if command -v python3 >/dev/null; then echo "$RESULT" | python3 -m json.tool; else echo "$RESULT"; fi
[ "$STATE" = completed ] || die "demo task ended $STATE; see $RUN/logs/"

log "deploying a demo Docker service: 2 busybox httpd replicas with an HTTP health check"
bash scripts/test-image.sh
tenant -X PUT "$API/v1/services/hello" -d '{
  "target": {"selector": "env=dev"},
  "spec": {"image": "ris-test/busybox:1", "command": ["httpd", "-f", "-p", "80", "-h", "/www"],
           "ports": [{"container": 80}], "replicas": 2,
           "health_check": {"http": {"port": 80, "path": "/health"}}}}' >/dev/null
for _ in $(seq 60); do
  tenant "$API/v1/services/hello" | grep -q '"state":"running"' && break
  sleep 1
done
SERVICE=$(tenant "$API/v1/services/hello")
PORT=$(echo "$SERVICE" | sed -n 's/.*"80\/tcp":\([0-9]*\).*/\1/p' | head -1)
echo "$SERVICE" | grep -q '"state":"running"' || die "demo service did not reach running; see $RUN/logs/agent.log"
log "service hello is running; one replica answers on http://127.0.0.1:$PORT/ :"
curl -fsS "http://127.0.0.1:$PORT/"

cat <<MSG

$(log "RIS is running.")
  API          $API   (health: $API/readyz, metrics: $API/metrics)
  dispatcher   metrics on http://127.0.0.1:9464/metrics
  logs         $RUN/logs/
  admin key    $RUN/admin-key     tenant "demo" key: $RUN/demo-key

  export RIS_KEY=\$(cat $RUN/demo-key) CURL_CA_BUNDLE=$RUN/certs/trust.pem RIS_CA=$RUN/certs/trust.pem
  curl -H "Authorization: Bearer \$RIS_KEY" $API/v1/agents
  curl -H "Authorization: Bearer \$RIS_KEY" -H 'content-type: application/json' \\
       -d '{"target":{"selector":"env=dev"},"task":{"kind":"shell","script":"date; uptime"}}' $API/v1/tasks
  curl -H "Authorization: Bearer \$RIS_KEY" $API/v1/tasks/$TASK/events
  curl -H "Authorization: Bearer \$RIS_KEY" $API/v1/services/hello     # desired vs actual, per agent

  Stop everything with: bash scripts/dev-down.sh
MSG

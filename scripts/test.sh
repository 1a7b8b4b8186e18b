#!/usr/bin/env bash
# The whole test suite, from a fresh clone: services, formatting, lints, build, tests.
# Unit tests, service-level tests (real PostgreSQL, Redis, RabbitMQ) and end-to-end tests
# (real ris-api, ris-dispatcher and ris-agent processes) all run; none is optional.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1;34m[test]\033[0m %s\n' "$*"; }

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install a Rust toolchain (rustup, Rust >= 1.85) first" >&2
  exit 1
fi
# Build cache outside the clone, kept between runs.
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR=/var/cache/ris-target
  mkdir -p "$CARGO_TARGET_DIR" 2>/dev/null || export CARGO_TARGET_DIR="$HOME/.cache/ris-target"
fi

bash scripts/services.sh
# Integration tests run Python clients (pika, schemathesis) in virtualenvs.
if ! python3 -m venv --help >/dev/null 2>&1; then
  log "installing python3-venv"
  if [ "$(id -u)" -eq 0 ]; then apt-get install -y -qq python3-venv >/dev/null; else sudo apt-get install -y -qq python3-venv >/dev/null; fi
fi

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
log "building binaries"
cargo build --workspace --bins --quiet
log "running tests"
cargo test --workspace --no-fail-fast -- --test-threads="${RIS_TEST_THREADS:-4}"
# Fault tests that restart the shared services (RabbitMQ, PostgreSQL, Redis) run last
# and one at a time, so nothing else is running against the services meanwhile. They
# leave the services running.
log "running service-restart fault tests (serially)"
cargo test -p ris-tests --test faults_services -- --ignored --test-threads=1 --nocapture

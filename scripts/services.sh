#!/usr/bin/env bash
# Makes sure the services RIS needs are installed and running on this machine:
# PostgreSQL (127.0.0.1:5432, user postgres), Redis (127.0.0.1:6379) and RabbitMQ
# (127.0.0.1:5672, guest/guest) with its management plugin (127.0.0.1:15672), and a
# Docker engine (/var/run/docker.sock) for agents' services and docker tasks; plus the
# build tools the project expects (mold, the linker named in .cargo/config.toml).
# Idempotent: a service that already runs is left alone. Needs root (or sudo) only to
# install or start what is missing.
set -euo pipefail

log() { printf '\033[1;34m[services]\033[0m %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

wait_for() { # wait_for <what> <seconds> <command...>
  local what=$1 secs=$2; shift 2
  for _ in $(seq "$secs"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  log "$what did not come up within ${secs}s"; return 1
}

install_missing() {
  local pkgs=()
  command -v pg_ctlcluster >/dev/null || pkgs+=(postgresql)
  command -v redis-server >/dev/null || pkgs+=(redis-server)
  command -v rabbitmq-server >/dev/null || pkgs+=(rabbitmq-server)
  command -v curl >/dev/null || pkgs+=(curl)
  command -v psql >/dev/null || pkgs+=(postgresql-client)
  command -v iptables >/dev/null || pkgs+=(iptables)
  command -v mold >/dev/null || pkgs+=(mold)
  command -v dockerd >/dev/null || pkgs+=(docker.io)
  # A static busybox: the root filesystem of the test image (scripts/test-image.sh).
  dpkg -s busybox-static >/dev/null 2>&1 || pkgs+=(busybox-static)
  if [ ${#pkgs[@]} -gt 0 ]; then
    log "installing ${pkgs[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${pkgs[@]}" >/dev/null
  fi
}

pg_ok() { psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' 2>/dev/null | grep -q 1; }

start_postgres() {
  if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    local version
    version=$(ls /etc/postgresql | sort -V | tail -1)
    log "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
    wait_for PostgreSQL 60 pg_isready -h 127.0.0.1 -p 5432 -q
  fi
  if ! pg_ok; then
    # A fresh Debian cluster asks for a password on TCP. For a development machine,
    # trust the postgres user on loopback only.
    local hba
    hba=$(as_root su postgres -c "psql -Atqc 'show hba_file'")
    log "allowing the postgres user on loopback without a password ($hba)"
    as_root sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
    as_root su postgres -c "psql -qc 'select pg_reload_conf()'" >/dev/null
    wait_for "PostgreSQL login" 10 pg_ok
  fi
}

start_redis() {
  if ! redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
    log "starting Redis"
    as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /tmp --logfile /tmp/ris-redis.log
    wait_for Redis 30 sh -c 'redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG'
  fi
}

management_ok() { curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview -o /dev/null; }

start_rabbitmq() {
  if ! as_root rabbitmqctl -q status >/dev/null 2>&1; then
    log "starting RabbitMQ (with a raised open-file limit)"
    as_root bash -c 'ulimit -n 65536 2>/dev/null || true; rabbitmq-server -detached'
    wait_for RabbitMQ 90 as_root rabbitmqctl -q status
  fi
  if ! management_ok; then
    log "enabling rabbitmq_management"
    as_root rabbitmq-plugins enable --quiet rabbitmq_management >/dev/null
    wait_for "RabbitMQ management API" 60 management_ok
  fi
}

docker_ok() { docker info >/dev/null 2>&1; }

start_docker() {
  if ! docker_ok; then
    log "starting dockerd (log: /tmp/ris-dockerd.log)"
    as_root bash -c 'nohup dockerd >/tmp/ris-dockerd.log 2>&1 &'
    wait_for dockerd 60 docker_ok
  fi
}

install_missing
start_postgres
start_redis
start_rabbitmq
start_docker
log "PostgreSQL, Redis, RabbitMQ (with management) and dockerd are up"

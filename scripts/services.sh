#!/usr/bin/env bash
# Makes sure the services RIS needs are installed and running on this machine:
# PostgreSQL (127.0.0.1:5432, user postgres), Redis (127.0.0.1:6379) and RabbitMQ
# (127.0.0.1:5672, guest/guest; AMQPS on 5671 with the development certificates of
# /etc/ris/dev-certs) with its management plugin (127.0.0.1:15672), and a
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
  command -v openssl >/dev/null || pkgs+=(openssl)
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

# Development certificates for the broker's TLS listener (and for anything else on this
# machine that wants them: the TLS tests trust its ca.pem). Made here with openssl,
# since this script runs before anything is built; `risctl dev certs --out DIR` (rcgen)
# makes the same set, and a directory it filled is used as it is.
DEV_CERTS=${RIS_DEV_CERTS:-/etc/ris/dev-certs}

make_dev_certs() {
  if as_root test -s "$DEV_CERTS/ca.pem" && as_root test -s "$DEV_CERTS/server.pem" \
     && as_root test -s "$DEV_CERTS/server-key.pem"; then
    return 0
  fi
  log "making development certificates in $DEV_CERTS"
  as_root mkdir -p "$DEV_CERTS"
  as_root bash -euo pipefail -c '
    cd "$1"; umask 077
    ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    openssl req -x509 -new $ec -keyout ca-key.pem -out ca.pem -days 3650 \
      -subj "/CN=RIS development CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -new $ec -keyout server-key.pem -out server.csr -subj "/CN=localhost" 2>/dev/null
    printf "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n" > server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
      -out server.pem -days 825 -extfile server.ext 2>/dev/null
    rm -f server.csr server.ext ca.srl
    chmod 644 ca.pem server.pem
  ' _ "$DEV_CERTS"
}

# The broker's TLS listener (5671, TLS 1.2 and 1.3 only), and statistics every 30 s
# instead of 5: with thousands of agents (two queues and five channels each) the
# management plugin's collection at 5 s keeps more than a core busy with nothing in
# flight (docs/operations.md, "Large fleets"). RabbitMQ is restarted only when this
# changes its configuration, so a second run leaves a running broker alone.
configure_rabbitmq() {
  make_dev_certs
  # RabbitMQ runs as its own user: let it read the server key.
  if id rabbitmq >/dev/null 2>&1; then
    as_root chgrp rabbitmq "$DEV_CERTS/server-key.pem"
    as_root chmod 640 "$DEV_CERTS/server-key.pem"
    as_root chmod 755 "$DEV_CERTS"
  fi
  local conf=/etc/rabbitmq/rabbitmq.conf wanted
  wanted="listeners.tcp.local = 127.0.0.1:5672
listeners.ssl.default = 5671
ssl_options.cacertfile = $DEV_CERTS/ca.pem
ssl_options.certfile = $DEV_CERTS/server.pem
ssl_options.keyfile = $DEV_CERTS/server-key.pem
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
ssl_options.versions.1 = tlsv1.3
ssl_options.versions.2 = tlsv1.2
collect_statistics_interval = 30000"
  if [ "$(as_root cat "$conf" 2>/dev/null)" != "$wanted" ]; then
    log "configuring RabbitMQ: TLS listener on 5671, statistics every 30 s ($conf)"
    as_root mkdir -p /etc/rabbitmq
    printf '%s\n' "$wanted" | as_root tee "$conf" >/dev/null
    if as_root rabbitmqctl -q status >/dev/null 2>&1; then
      log "restarting RabbitMQ to load it"
      as_root rabbitmqctl -q stop >/dev/null
      for _ in $(seq 60); do as_root rabbitmqctl -q status >/dev/null 2>&1 || break; sleep 1; done
    fi
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
configure_rabbitmq
start_rabbitmq
start_docker
log "PostgreSQL, Redis, RabbitMQ (with management, AMQPS on 5671) and dockerd are up"

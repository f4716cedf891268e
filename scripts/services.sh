#!/usr/bin/env bash
# Makes sure the services tests/integration/ needs are up: PostgreSQL on 127.0.0.1:5432 (user
# `postgres`, trust auth, with a database `test`) and Redis on 127.0.0.1:6379. A service whose port
# answers is left alone; one that does not is started (Debian's packages are installed with apt-get
# only when missing), then waited for. Quick and idempotent when everything already runs.
set -euo pipefail

PG_HOST=127.0.0.1 PG_PORT=5432 PG_USER=postgres PG_DB=test
REDIS_HOST=127.0.0.1 REDIS_PORT=6379
WAIT_S=30

answers() {  # answers HOST PORT: something accepts TCP connections there
  timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    echo "error: need root (or sudo) for: $*" >&2
    return 1
  fi
}

install_missing() {  # install_missing COMMAND PACKAGE...: apt-get install the packages if COMMAND is absent
  local cmd=$1; shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  [ -x "/usr/sbin/$cmd" ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: $cmd is missing and there is no apt-get; install $* with your package manager" >&2
    return 1
  fi
  echo "installing system packages: $*"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() {  # wait_for NAME HOST PORT HINT
  local name=$1 host=$2 port=$3 hint=$4 deadline=$((SECONDS + WAIT_S))
  until answers "$host" "$port"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "error: $name does not answer on $host:$port after ${WAIT_S} s. $hint" >&2
      return 1
    fi
    sleep 0.2
  done
}

start_postgres() {
  install_missing pg_ctlcluster postgresql
  echo "starting PostgreSQL"
  local started=""
  if command -v pg_lsclusters >/dev/null 2>&1; then
    # every cluster that is down (normally just one: <version> main)
    while read -r version cluster _port status _; do
      if [ "$status" = "down" ]; then
        as_root pg_ctlcluster "$version" "$cluster" start && started=1
      elif [ "$status" = "online" ]; then
        started=1
      fi
    done < <(pg_lsclusters --no-header 2>/dev/null || true)
  fi
  if [ -z "$started" ]; then
    as_root service postgresql start || true
  fi
}

start_redis() {
  install_missing redis-server redis-server
  echo "starting Redis"
  as_root service redis-server start >/dev/null 2>&1 \
    || redis-server --daemonize yes --bind "$REDIS_HOST" --port "$REDIS_PORT" >/dev/null
}

if ! answers "$PG_HOST" "$PG_PORT"; then
  start_postgres
  wait_for PostgreSQL "$PG_HOST" "$PG_PORT" \
    "Start it yourself (e.g. 'sudo pg_ctlcluster <version> main start'), see /var/log/postgresql/, or point ONWARD_TEST_POSTGRES_URL at a server you have."
fi

if ! answers "$REDIS_HOST" "$REDIS_PORT"; then
  start_redis
  wait_for Redis "$REDIS_HOST" "$REDIS_PORT" \
    "Start it yourself (e.g. 'redis-server --daemonize yes') and check its log."
fi

# The integration tests connect to the database `test` and create their own databases from there.
install_missing psql postgresql-client
psql_() { PGCONNECT_TIMEOUT=5 psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -w -v ON_ERROR_STOP=1 -qtA "$@"; }
if ! exists=$(psql_ -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'"); then
  echo "error: cannot connect to PostgreSQL as '$PG_USER' on $PG_HOST:$PG_PORT without a password." >&2
  echo "       Allow it (a 'host all all 127.0.0.1/32 trust' line in pg_hba.conf) or point" >&2
  echo "       ONWARD_TEST_POSTGRES_URL at a server and user that can create databases." >&2
  exit 1
fi
if [ "$exists" != "1" ]; then
  echo "creating database $PG_DB"
  psql_ -d postgres -c "CREATE DATABASE $PG_DB"
fi

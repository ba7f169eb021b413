#!/usr/bin/env bash
# Starts a private PostgreSQL for tests and prints its URL on stdout.
#
#   eval "$(bash scripts/postgres.sh start)"   # exports TIDESYNC_TEST_DATABASE_URL, TIDESYNC_PGDATA
#   bash scripts/postgres.sh stop
#
# Installs Debian's `postgresql` with apt only when no server binaries are
# present. The cluster lives in target/pgdata (or a /tmp directory when the
# postgres user cannot reach target/), is owned by `postgres`, listens on
# 127.0.0.1:${TIDESYNC_PG_PORT:-55432} with its unix socket inside the data
# directory, and trusts local connections: it is a throwaway test database.
# Must run as root (as here and in CI). Fails, never skips, when PostgreSQL
# cannot start.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${TIDESYNC_PG_PORT:-55432}
DB=${TIDESYNC_PG_DB:-tidesync_test}

log() { echo "postgres.sh: $*" >&2; }

find_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$d" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; fi
}

ensure_installed() {
  if [ -z "$(find_bin)" ]; then
    log "installing postgresql with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
  fi
  PGBIN=$(find_bin)
  if [ -z "$PGBIN" ]; then
    log "PostgreSQL server binaries not found after install"; exit 1
  fi
  id postgres >/dev/null 2>&1 || { log "no postgres user"; exit 1; }
}

data_dir() {
  if [ -n "${TIDESYNC_PGDATA:-}" ]; then echo "$TIDESYNC_PGDATA"; return; fi
  mkdir -p "$ROOT/target"
  if runuser -u postgres -- test -x "$ROOT/target"; then
    echo "$ROOT/target/pgdata"
  else
    echo "/tmp/tidesync-pgdata-$PORT"
  fi
}

as_pg() { runuser -u postgres -- "$@"; }

launch() {
  local data=$1
  log "starting PostgreSQL ($PGBIN) on 127.0.0.1:$PORT"
  if ! as_pg "$PGBIN/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
      -o "-p $PORT -k $data -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" start >&2; then
    log "PostgreSQL did not start; its log:"; tail -n 50 "$data/server.log" >&2 || true; exit 1
  fi
}

start() {
  ensure_installed
  local data; data=$(data_dir)
  if [ ! -s "$data/PG_VERSION" ]; then
    log "initdb $data"
    rm -rf "$data"; mkdir -p "$data"; chown postgres:postgres "$data"; chmod 700 "$data"
    as_pg "$PGBIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-locale >/dev/null
  fi
  chown -R postgres:postgres "$data"
  # A server left running on this data dir by an earlier run: stop it first.
  if as_pg "$PGBIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_pg "$PGBIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null || true
  fi
  rm -f "$data/postmaster.pid"
  launch "$data"
  as_pg "$PGBIN/psql" -h "$data" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
    -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >&2
  echo "export TIDESYNC_PGDATA='$data'"
  echo "export TIDESYNC_TEST_DATABASE_URL='postgres://postgres@127.0.0.1:$PORT/$DB'"
}

stop() {
  PGBIN=$(find_bin)
  [ -n "$PGBIN" ] || return 0
  local data; data=$(data_dir)
  if [ -s "$data/PG_VERSION" ] && as_pg "$PGBIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_pg "$PGBIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null && log "stopped"
  fi
}

# The chaos run's database faults: `crash` stops the server at once
# (immediate mode: no checkpoint, crash recovery at the next start, every
# connection cut), `resume` starts it again on the same data, database kept.
crash() {
  ensure_installed
  local data; data=$(data_dir)
  as_pg "$PGBIN/pg_ctl" -D "$data" -m immediate -w stop >/dev/null && log "crashed (immediate stop)"
}

resume() {
  ensure_installed
  local data; data=$(data_dir)
  rm -f "$data/postmaster.pid"
  launch "$data"
}

# Commits of the test database wait for their WAL again (the cluster runs
# with synchronous_commit=off for speed, which loses the last commits at a
# crash: acknowledged pushes gone). The chaos run's `crash` needs this.
durable() {
  ensure_installed
  local data; data=$(data_dir)
  as_pg "$PGBIN/psql" -h "$data" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
    -c "ALTER DATABASE $DB SET synchronous_commit = on" >&2
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  crash) crash ;;
  resume) resume ;;
  durable) durable ;;
  *) echo "usage: $0 start|stop|crash|resume|durable" >&2; exit 2 ;;
esac

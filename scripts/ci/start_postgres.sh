#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster on loopback for the collector tests (no systemd).
#
#   eval "$(scripts/ci/start_postgres.sh)"     # exports EDGEPERSONA_TEST_POSTGRES_URL
#
# Idempotent: a second run reuses the cluster (starting it if it stopped) and only
# prints the export line again. Needs the server binaries (Debian: apt-get install -y
# postgresql); as root the cluster runs as the `postgres` user, otherwise as the caller.
# Only the export line goes to stdout; progress and errors go to stderr.
#
# Environment (all optional):
#   EDGEPERSONA_PG_BASE   folder for data, socket, log and password (/tmp/edgepersona-pg)
#   EDGEPERSONA_PG_PORT   TCP port on 127.0.0.1 (55432)
#   PG_BIN                folder holding initdb/pg_ctl/psql (newest /usr/lib/postgresql/*/bin)
#
# The cluster is for tests only: loopback, a generated password, stopped with
#   pg_ctl -D "$EDGEPERSONA_PG_BASE/data" stop   (as the user that runs it).
set -euo pipefail

base="${EDGEPERSONA_PG_BASE:-/tmp/edgepersona-pg}"
port="${EDGEPERSONA_PG_PORT:-55432}"
role="edgepersona"
database="edgepersona_test"
say() { echo "start_postgres: $*" >&2; }

if [[ -z "${PG_BIN:-}" ]]; then
    PG_BIN="$(find /usr/lib/postgresql -maxdepth 2 -type d -name bin 2>/dev/null | sort -V | tail -n 1)"
    if [[ -z "$PG_BIN" ]] && command -v pg_ctl >/dev/null; then
        PG_BIN="$(dirname "$(command -v pg_ctl)")"
    fi
fi
if [[ -z "$PG_BIN" || ! -x "$PG_BIN/pg_ctl" ]]; then
    say "no PostgreSQL server binaries found; install them (Debian: apt-get install -y postgresql)"
    exit 1
fi

if [[ "$(id -u)" == 0 ]]; then
    owner="postgres"
    as_owner() { runuser -u postgres -- "$@"; }
else
    owner="$(id -un)"
    as_owner() { "$@"; }
fi

mkdir -p "$base"
chmod 0755 "$base"
if [[ ! -s "$base/password" ]]; then
    (umask 077; od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$base/password")
fi
password="$(cat "$base/password")"
mkdir -p "$base/run"
chown "$owner" "$base/run"
chmod 0700 "$base/run"

if [[ ! -s "$base/data/PG_VERSION" ]]; then
    say "initdb into $base/data ($PG_BIN)"
    rm -rf "$base/data"
    mkdir -p "$base/data"
    chown "$owner" "$base/data"
    chmod 0700 "$base/data"
    as_owner "$PG_BIN/initdb" -D "$base/data" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 -E UTF8 --no-locale --no-instructions >/dev/null
fi

if ! as_owner "$PG_BIN/pg_ctl" -D "$base/data" status >/dev/null 2>&1; then
    say "starting on 127.0.0.1:$port"
    touch "$base/server.log"
    chown "$owner" "$base/server.log"
    as_owner "$PG_BIN/pg_ctl" -D "$base/data" -l "$base/server.log" -w -t 15 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $base/run" start >/dev/null \
        || { say "the server did not start; its log:"; tail -n 20 "$base/server.log" >&2; exit 1; }
fi

psql_admin() {
    as_owner "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$base/run" -p "$port" -U postgres "$@"
}
psql_admin -d postgres -v role="$role" -v password="$password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" LOGIN PASSWORD :'password';
SQL
psql_admin -d postgres -v role="$role" -v database="$database" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'database', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'database') \gexec
SQL

say "ready: database $database on 127.0.0.1:$port as $role"
echo "export EDGEPERSONA_TEST_POSTGRES_URL=postgresql://$role:$password@127.0.0.1:$port/$database"

#!/usr/bin/env bash
# A shared MLflow tracking server backed by PostgreSQL, on 127.0.0.1: for a small team, a cluster login node, and
# the tests. Runs point at it with `logger=server` (or logger.tracking_uri=http://HOST:PORT).
#
#   scripts/tracking_server.sh install   apt-get install postgresql (root; once)
#   scripts/tracking_server.sh start     create the database on first use, start PostgreSQL and `mlflow server`
#   scripts/tracking_server.sh stop      stop both (the database and artifacts stay in the state dir)
#   scripts/tracking_server.sh status    exit 0 when the server answers /health
#
# Settings (environment): LMLAB_TRACKING_STATE (default /var/tmp/lmlab-tracking: database, artifacts, logs),
# LMLAB_TRACKING_PORT (MLflow, default 5001), LMLAB_PG_PORT (PostgreSQL, default 5433), PYTHON (default .venv/bin/python).
#
# The database password is generated on first start and kept only in $STATE/pgpass (mode 600), which the server reads
# through libpq's PGPASSFILE: it is in no URI, no command line and no run's params. Runs talk to the MLflow server
# over HTTP and never see it.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${LMLAB_TRACKING_STATE:-/var/tmp/lmlab-tracking}
PORT=${LMLAB_TRACKING_PORT:-5001}
PG_PORT=${LMLAB_PG_PORT:-5433}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
DB=mlflow
DB_USER=lmlab

die() { echo "tracking_server.sh: $*" >&2; exit 1; }

pg_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -n "$dir" ] || die "PostgreSQL is not installed: run 'sudo $0 install' (Debian's postgresql package)"
    echo "$dir"
}

# PostgreSQL refuses to run as root: as root, its files belong to and its commands run as the postgres user.
as_db_owner() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cmd_install() {
    [ "$(id -u)" -eq 0 ] || die "install needs root (apt-get)"
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && return
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
}

init_database() {
    local bin=$1
    [ -f "$STATE/pg/PG_VERSION" ] && return
    echo "Creating the PostgreSQL cluster in $STATE/pg"
    mkdir -p "$STATE/pg"
    local password
    password=$("$PYTHON" -c "import secrets; print(secrets.token_urlsafe(24))")
    (umask 077 && printf '127.0.0.1:%s:*:%s:%s\n' "$PG_PORT" "$DB_USER" "$password" >"$STATE/pgpass")
    local pwfile
    pwfile=$(mktemp "$STATE/pw.XXXXXX")
    printf '%s\n' "$password" >"$pwfile"
    if [ "$(id -u)" -eq 0 ]; then chown -R postgres "$STATE/pg" "$pwfile"; fi
    as_db_owner "$bin/initdb" -D "$STATE/pg" -U "$DB_USER" --pwfile="$pwfile" --auth=scram-sha-256 >"$STATE/initdb.log"
    rm -f "$pwfile"
    start_postgres "$bin"
    PGPASSFILE="$STATE/pgpass" "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U "$DB_USER" "$DB"
}

start_postgres() {
    local bin=$1
    as_db_owner "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && return
    as_db_owner "$bin/pg_ctl" -D "$STATE/pg" -l "$STATE/pg/postgres.log" -w \
        -o "-h 127.0.0.1 -p $PG_PORT -k $STATE/pg" start >/dev/null
}

healthy() { "$PYTHON" - "$PORT" <<'EOF'
import sys, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=2)
except Exception:
    sys.exit(1)
EOF
}

cmd_start() {
    [ -x "$PYTHON" ] || die "$PYTHON not found: run 'make install' first, or set PYTHON"
    local bin
    bin=$(pg_bin)
    mkdir -p "$STATE"
    chmod 755 "$STATE"
    init_database "$bin"
    start_postgres "$bin"
    if healthy; then echo "MLflow server already up on http://127.0.0.1:$PORT"; return; fi
    mkdir -p "$STATE/artifacts"
    # Its own process group (setsid), so stop ends the server with its workers. MLflow's background job runner
    # (GenAI evaluation jobs, 7 processes) is not needed to track experiments.
    PGPASSFILE="$STATE/pgpass" MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid nohup "$PYTHON" -m mlflow server \
        --backend-store-uri "postgresql://$DB_USER@127.0.0.1:$PG_PORT/$DB" \
        --artifacts-destination "$STATE/artifacts" \
        --host 127.0.0.1 --port "$PORT" --workers 2 >"$STATE/mlflow.log" 2>&1 &
    echo $! >"$STATE/mlflow.pid"
    for _ in $(seq 240); do
        if healthy; then echo "MLflow server up on http://127.0.0.1:$PORT (PostgreSQL on 127.0.0.1:$PG_PORT)"; return; fi
        kill -0 "$(cat "$STATE/mlflow.pid")" 2>/dev/null || break
        sleep 0.5
    done
    tail -20 "$STATE/mlflow.log" >&2
    die "the MLflow server did not come up (log: $STATE/mlflow.log)"
}

cmd_stop() {
    if [ -f "$STATE/mlflow.pid" ]; then
        local pid
        pid=$(cat "$STATE/mlflow.pid")
        kill -TERM -- "-$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$STATE/mlflow.pid"
    fi
    if [ -f "$STATE/pg/postmaster.pid" ]; then
        as_db_owner "$(pg_bin)/pg_ctl" -D "$STATE/pg" -m fast -w stop >/dev/null
    fi
    echo "Tracking server stopped (data kept in $STATE)"
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) if healthy; then echo "up on http://127.0.0.1:$PORT"; else echo "down"; exit 1; fi ;;
    *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac

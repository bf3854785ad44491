#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests, CI and the cluster, listening on 127.0.0.1 unless told otherwise.
#
#   scripts/postgres.sh start [--dir DIR] [--port PORT] [--listen ADDR --allow CIDR] [--no-install]
#       Installs the server with apt-get if missing (unless --no-install), initialises a cluster in DIR
#       (default: a new folder under $TMPDIR or /tmp), starts it and prints its SQLAlchemy URL on stdout
#       (also written to DIR/url, mode 600). Progress goes to stderr. --listen/--allow: listen on ADDR
#       (default 127.0.0.1) and accept password logins from CIDR (the cluster's hosts: recsys cluster up).
#   scripts/postgres.sh stop --dir DIR      stops that server and removes DIR
#   scripts/postgres.sh install             installs the server binaries with apt-get if missing
#   scripts/postgres.sh bindir              prints the folder of initdb/pg_ctl/postgres; exit 3 if absent
#
# Example (CI):
#   export RECSYS_TEST_POSTGRES_URL="$(scripts/postgres.sh start --dir /tmp/recsys-pg)"
#   ... run the tests ...
#   scripts/postgres.sh stop --dir /tmp/recsys-pg
#
# PostgreSQL refuses to run as root, so as root the server runs as the `postgres` OS user (created if
# missing) and DIR must be reachable by it. The superuser password is random; TCP connections must
# authenticate (scram-sha-256) and the Unix socket lives in DIR/run. Set PG_BINDIR to use other binaries.
set -euo pipefail

MARKER=".recsys-throwaway-postgres"

log() { echo "postgres.sh: $*" >&2; }
die() {
    log "$1"
    exit "${2:-1}"
}

is_root() { [[ $(id -u) -eq 0 ]]; }

has_server() { [[ -x $1/initdb && -x $1/pg_ctl && -x $1/postgres ]]; }

find_bindir() {
    if [[ -n ${PG_BINDIR:-} ]]; then
        has_server "$PG_BINDIR" && echo "$PG_BINDIR"
        return
    fi
    local candidate initdb
    # Debian keeps each major version under /usr/lib/postgresql/N/bin, off PATH; prefer the newest.
    for candidate in $(compgen -G '/usr/lib/postgresql/*/bin' | sort -rV); do
        if has_server "$candidate"; then
            echo "$candidate"
            return 0
        fi
    done
    initdb=$(command -v initdb || true)
    if [[ -n $initdb ]]; then
        candidate=$(dirname "$(readlink -f "$initdb")")
        has_server "$candidate" && echo "$candidate" && return 0
    fi
    return 1
}

install_server() {
    if find_bindir >/dev/null; then
        return 0
    fi
    command -v apt-get >/dev/null || die "PostgreSQL is not installed and apt-get is missing: install the server and set PG_BINDIR"
    local sudo=()
    if ! is_root; then
        command -v sudo >/dev/null || die "installing PostgreSQL needs root (or sudo)"
        sudo=(sudo)
    fi
    log "installing PostgreSQL with apt-get"
    "${sudo[@]}" apt-get update -q >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2
    find_bindir >/dev/null || die "apt-get installed postgresql but initdb/pg_ctl/postgres were not found"
}

# Run a command as the owner of the cluster: `postgres` when we are root, else ourselves.
as_owner() {
    if is_root; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

ensure_os_user() {
    if is_root && ! id postgres >/dev/null 2>&1; then
        log "creating the postgres OS user"
        useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin postgres
    fi
}

free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    else
        echo $((20000 + RANDOM % 40000))
    fi
}

cmd_start() {
    local dir="" port="" install=1 listen="127.0.0.1" allow=""
    while (($#)); do
        case $1 in
            --dir) dir=${2:?--dir needs a value}; shift 2 ;;
            --port) port=${2:?--port needs a value}; shift 2 ;;
            --listen) listen=${2:?--listen needs a value}; shift 2 ;;
            --allow) allow=${2:?--allow needs a value}; shift 2 ;;
            --no-install) install=0; shift ;;
            *) die "start: unknown option $1" 2 ;;
        esac
    done
    ((install)) && install_server
    local bindir
    bindir=$(find_bindir) || die "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: run 'scripts/postgres.sh install' or 'apt-get install -y postgresql', or set PG_BINDIR" 3
    if [[ -z $dir ]]; then
        dir=$(mktemp -d "${TMPDIR:-/tmp}/recsys-pg.XXXXXX")
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    [[ -e $dir/data ]] && die "$dir/data exists: stop that server first (scripts/postgres.sh stop --dir $dir) or pick another --dir"
    [[ -n $port ]] || port=$(free_port)
    touch "$dir/$MARKER"
    mkdir -p "$dir/run"
    local password
    password=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    (umask 077 && printf '%s\n' "$password" >"$dir/pwfile")
    if is_root; then
        ensure_os_user
        chown -R postgres: "$dir"
        chmod 700 "$dir"
        runuser -u postgres -- test -w "$dir" || die "the postgres OS user cannot reach $dir (a parent folder is private): choose a --dir under /tmp"
    fi
    # --no-sync: a throwaway cluster need not survive a crash during initdb; the server itself fsyncs.
    if ! as_owner "$bindir/initdb" -D "$dir/data" -U postgres --pwfile="$dir/pwfile" -E UTF8 --no-locale \
        --auth-local=trust --auth-host=scram-sha-256 --no-sync >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        die "initdb failed"
    fi
    rm -f "$dir/pwfile"
    cat >>"$dir/data/postgresql.conf" <<EOF

# scripts/postgres.sh: a throwaway server for tests, reachable from this machine only
listen_addresses = '$listen'
port = $port
unix_socket_directories = '$dir/run'
max_connections = 50
shared_buffers = 32MB
EOF
    if [[ -n $allow ]]; then
        printf 'host all all %s scram-sha-256\n' "$allow" >>"$dir/data/pg_hba.conf"
    fi
    if ! as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >&2; then
        tail -n 20 "$dir/server.log" >&2 || true
        die "the PostgreSQL server did not start (port $port)"
    fi
    local url="postgresql+psycopg://postgres:${password}@${listen}:${port}/postgres"
    (umask 077 && printf '%s\n' "$url" >"$dir/url")
    log "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') is up on $listen:$port (data in $dir); stop it with: scripts/postgres.sh stop --dir $dir"
    printf '%s\n' "$url"
}

cmd_stop() {
    local dir=""
    while (($#)); do
        case $1 in
            --dir) dir=${2:?--dir needs a value}; shift 2 ;;
            *) die "stop: unknown option $1" 2 ;;
        esac
    done
    [[ -n $dir ]] || die "stop needs --dir DIR" 2
    [[ -d $dir ]] || return 0
    [[ -f $dir/$MARKER ]] || die "$dir was not created by scripts/postgres.sh; refusing to touch it"
    if [[ -f $dir/data/postmaster.pid ]]; then
        local bindir
        bindir=$(find_bindir) || die "cannot stop the server in $dir: PostgreSQL binaries not found" 3
        as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >&2 || die "pg_ctl stop failed; data left in $dir"
    fi
    rm -rf -- "$dir"
}

case ${1:-} in
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    install) install_server ;;
    bindir) find_bindir || exit 3 ;;
    -h | --help | help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "usage: scripts/postgres.sh {start [--dir DIR] [--port PORT] [--listen ADDR --allow CIDR] [--no-install] | stop --dir DIR | install | bindir}" 2 ;;
esac

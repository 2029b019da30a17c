#!/usr/bin/env bash
# tools/quickstart.sh -- from a fresh Debian 12 machine to a running, throwaway
# PostgreSQL 15 server with the workflows extension installed and created.
#
#   sudo bash tools/quickstart.sh        (or, as root: bash tools/quickstart.sh)
#
# What it does:
#   1. installs the Debian packages it needs (apt-get; root or sudo only)
#   2. builds and installs the extension (make && make install)
#   3. creates a demo cluster in /tmp/workflows-demo (wiped first; a server
#      still running there from an earlier run is stopped), owned by the
#      `postgres` user (or by you, when not run as root), listening on
#      127.0.0.1 only, port 5499 (set PGPORT to change it)
#   4. starts it, runs CREATE EXTENSION workflows in database `postgres`,
#      runs examples/quickstart.sql if it exists, and tells you how to
#      connect and how to stop the server.
#
# As an ordinary user: apt-get and `make install` go through sudo when sudo
# exists and are skipped otherwise (the packages and the extension must then
# already be installed); the server runs as you.

set -euo pipefail
# runuser, apt-get and friends live in the sbin directories, which a minimal
# environment (a CI runner, env -i) may leave out of PATH
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

PG_MAJOR=${PG_MAJOR:-15}
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/$PG_MAJOR/bin/pg_config}
PGBIN=$(dirname "$PG_CONFIG")
PORT=${PGPORT:-5499}
DEMO=/tmp/workflows-demo
DATA=$DEMO/data
LOG=$DEMO/server.log
PACKAGES=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-$PG_MAJOR-cron
          postgresql-$PG_MAJOR-pgtap libtap-parser-sourcehandler-pgtap-perl
          libipc-run-perl make gcc
          postgresql-$PG_MAJOR-plproxy postgresql-$PG_MAJOR-auto-failover libcurl4-openssl-dev)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

step() { printf '\n==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die()  { printf '\nquickstart: ERROR: %s\n' "$*" >&2; exit 1; }

[[ $PORT =~ ^[0-9]+$ ]] || die "PGPORT must be a number (got '$PORT')"

if [[ $(id -u) -eq 0 ]]; then
    IS_ROOT=1
    SUDO=()
    CAN_ADMIN=1
    OWNER=postgres
else
    IS_ROOT=0
    OWNER=$(id -un)
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo); CAN_ADMIN=1
    else
        SUDO=(); CAN_ADMIN=0
    fi
fi

# run a command as the given user (no-op wrapper when that is us already)
as_user() {
    local user=$1; shift
    if [[ $user == "$(id -un)" ]]; then
        "$@"
    else
        runuser -u "$user" -- "$@"
    fi
}
as_owner() { as_user "$OWNER" "$@"; }

# --------------------------------------------------------------------------
step "1/6 packages"
is_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
missing=()
for p in "${PACKAGES[@]}"; do is_installed "$p" || missing+=("$p"); done
if (( ${#missing[@]} == 0 )); then
    note "all needed packages are already installed"
elif (( CAN_ADMIN )); then
    note "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}" >/dev/null
    note "done"
else
    note "not root and no sudo: skipping apt-get; missing packages: ${missing[*]}"
fi
for f in "$PG_CONFIG" "$PGBIN/initdb" "$PGBIN/pg_ctl" "$PGBIN/psql"; do
    [[ -x $f ]] || die "$f not found: install the packages (as root): ${PACKAGES[*]}"
done
{ command -v make && command -v gcc; } >/dev/null ||
    die "make and gcc are needed: install the packages (as root): ${PACKAGES[*]}"
if (( IS_ROOT )); then
    id -u postgres >/dev/null 2>&1 || die "the 'postgres' user does not exist (is postgresql-15 installed?)"
fi

# --------------------------------------------------------------------------
step "2/6 build (make)"
# Under `sudo`, build as the invoking user so the checkout stays theirs.
BUILDER=$(id -un)
if (( IS_ROOT )) && [[ -n ${SUDO_USER:-} && ${SUDO_USER} != root ]] &&
   [[ $(stat -c %U "$REPO") == "$SUDO_USER" ]]; then
    BUILDER=$SUDO_USER
fi
as_user "$BUILDER" make -s -C "$REPO" PG_CONFIG="$PG_CONFIG" ||
    die "the build failed (see the compiler output above)"
note "built"

# --------------------------------------------------------------------------
step "3/6 install (make install)"
extdir=$("$PG_CONFIG" --sharedir)/extension
if (( IS_ROOT )); then
    make -s -C "$REPO" PG_CONFIG="$PG_CONFIG" install
    note "installed into $("$PG_CONFIG" --pkglibdir) and $extdir"
elif (( CAN_ADMIN )); then
    sudo make -s -C "$REPO" PG_CONFIG="$PG_CONFIG" install
    note "installed (with sudo) into $("$PG_CONFIG" --pkglibdir) and $extdir"
else
    note "not root and no sudo: skipping make install"
    [[ -f $extdir/workflows.control ]] ||
        die "the extension is not installed ($extdir/workflows.control missing); run this script as root"
fi

# --------------------------------------------------------------------------
step "4/6 demo cluster in $DEMO"
if [[ -f $DATA/postmaster.pid ]]; then
    old_owner=$(stat -c %U "$DATA")
    note "stopping the server left running there by an earlier run"
    as_user "$old_owner" "$PGBIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null 2>&1 ||
        note "(could not stop it cleanly; continuing)"
fi
if [[ -e $DEMO ]]; then
    rm -rf "$DEMO" 2>/dev/null ||
        die "cannot remove $DEMO (it belongs to another user): remove it as root first"
fi
mkdir -p "$DEMO"
(( IS_ROOT )) && chown "$OWNER": "$DEMO"
chmod 755 "$DEMO"
as_owner "$PGBIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
    >"$DEMO/initdb.log" 2>&1 || { cat "$DEMO/initdb.log"; die "initdb failed"; }
as_owner tee -a "$DATA/postgresql.conf" >/dev/null <<EOF

# added by tools/quickstart.sh
shared_preload_libraries = 'workflows,pg_cron'
cron.database_name = 'postgres'
# HTTP steps may call the demo API on loopback (and public hosts)
workflows.http_allowed_hosts = '127.0.0.1, *'
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DEMO'
EOF
note "initialized (owner: $OWNER, superuser: postgres, trust authentication on 127.0.0.1 only)"

# --------------------------------------------------------------------------
step "5/6 start the server on 127.0.0.1:$PORT"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    die "something already listens on 127.0.0.1:$PORT; pick another port: PGPORT=5500 bash tools/quickstart.sh"
fi
if ! as_owner "$PGBIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null; then
    tail -n 30 "$LOG" >&2 || true
    die "the server did not start (log: $LOG)"
fi
note "running (log: $LOG)"

PSQL=("$PGBIN/psql" -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres)
STOP_CMD="$PGBIN/pg_ctl -D $DATA stop"
if (( IS_ROOT )); then
    STOP_CMD="runuser -u postgres -- $STOP_CMD"
    [[ -n ${SUDO_USER:-} && ${SUDO_USER} != root ]] && STOP_CMD="sudo $STOP_CMD"
fi
fail_hint() {
    printf '\n    server log (last 30 lines of %s):\n' "$LOG" >&2
    tail -n 30 "$LOG" >&2 || true
    printf '\n    the server is still running; stop it with:\n      %s\n' "$STOP_CMD" >&2
}

# --------------------------------------------------------------------------
step "6/6 CREATE EXTENSION workflows"
if ! "${PSQL[@]}" -q -c 'CREATE EXTENSION workflows;'; then
    fail_hint
    die "CREATE EXTENSION workflows failed"
fi
note "created in database postgres"

# a stand-in for the API the example calls: the test suite's HTTP server, on
# 127.0.0.1 only, left running with the demo server
if [[ -f $REPO/test/http_server.pl ]]; then
    as_owner nohup perl "$REPO/test/http_server.pl" "$DEMO/api.port" "$DEMO/api.log" \
        >"$DEMO/api.out" 2>&1 &
    for _ in $(seq 1 50); do [[ -s $DEMO/api.port ]] && break; sleep 0.1; done
    [[ -s $DEMO/api.port ]] || die "the demo API did not start (see $DEMO/api.out)"
    API="http://127.0.0.1:$(<"$DEMO/api.port")"
    STOP_CMD="$STOP_CMD; kill \$(cat $DEMO/api.port.pid)"
    "${PSQL[@]}" -q -c 'GRANT workflows_http TO postgres' >/dev/null
    note "demo API on $API (the example's HTTP step calls it)"
fi

if [[ -f $REPO/examples/quickstart.sql ]]; then
    step "example: examples/quickstart.sql"
    if ! "${PSQL[@]}" -v api="${API:-http://127.0.0.1:9}" -f "$REPO/examples/quickstart.sql"; then
        fail_hint
        die "examples/quickstart.sql failed"
    fi
fi

cat <<EOF

==> Ready. The workflows extension is running in a throwaway server.

    connect:  psql -h 127.0.0.1 -p $PORT -U postgres postgres
    stop:     $STOP_CMD
    log:      $LOG
    (everything lives in $DEMO; running this script again starts over)
EOF

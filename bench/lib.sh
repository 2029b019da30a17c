# bench/lib.sh -- helpers for bench/run.sh: the throwaway server, psql and
# pgbench wrappers, and the measurements (clock, WAL position, commits,
# server CPU).  Sourced, not run.
#
# Needs: PGBIN (client programs), PGSBIN (initdb, pg_ctl, postgres; default
# PGBIN), WORK (a fresh directory), and after server_init: DATA, LOG, PORT, DB.

CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

say()  { printf '%s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die()  { printf 'bench: ERROR: %s\n' "$*" >&2; exit 1; }

# ---- who runs the server and the clients ----------------------------------
# As root the server and every client run as the unprivileged "postgres"
# user (initdb refuses root); otherwise as the invoking user.
if [[ $(id -u) -eq 0 ]]; then
    SERVER_USER=postgres
    id -u "$SERVER_USER" >/dev/null 2>&1 || die "running as root needs the 'postgres' user"
    PATH=$PATH:/usr/sbin:/sbin   # runuser, when PATH leaves sbin out
    AS_PG=(runuser -u "$SERVER_USER" --)
else
    SERVER_USER=$(id -un)
    AS_PG=()
fi
as_pg() { "${AS_PG[@]}" "$@"; }

# ---- the server ------------------------------------------------------------
# private_install SRC: build the extension from SRC and install it into a
# private copy of the PostgreSQL installation under $WORK/pg (a tree of
# symlinks, with real copies of postgres, pg_ctl and initdb, which find lib/
# and share/ relative to where they are), so that no other install of the
# extension is touched or used.  Sets PGROOT and PGSBIN.
private_install() {
    local src=$1 d b
    local sys_bin sys_pkglib sys_share
    sys_bin=$("$PGBIN/pg_config" --bindir)
    sys_pkglib=$("$PGBIN/pg_config" --pkglibdir)
    sys_share=$("$PGBIN/pg_config" --sharedir)
    PGROOT=$WORK/pg
    for d in "$(dirname "$sys_bin")" "$sys_pkglib" "$sys_share"; do
        [[ -e $PGROOT$d ]] && continue
        mkdir -p "$(dirname "$PGROOT$d")"
        cp -as "$d" "$PGROOT$d" || die "cannot make the private PostgreSQL tree"
    done
    find "$PGROOT" -name 'workflows*' -prune -exec rm -rf {} +
    for b in postgres pg_ctl initdb; do
        rm -f "$PGROOT$sys_bin/$b"
        cp "$sys_bin/$b" "$PGROOT$sys_bin/$b"
    done
    make -s -j "$(nproc)" -C "$src" PG_CONFIG="$PGBIN/pg_config" >"$WORK/build.log" 2>&1 ||
        { tail -n 30 "$WORK/build.log" >&2; die "the build failed"; }
    make -s -C "$src" PG_CONFIG="$PGBIN/pg_config" install DESTDIR="$PGROOT" >>"$WORK/build.log" 2>&1 ||
        { tail -n 30 "$WORK/build.log" >&2; die "make install (DESTDIR) failed"; }
    PGSBIN=$PGROOT$sys_bin
    [[ $(id -u) -eq 0 ]] && chown -R "$SERVER_USER": "$PGROOT"
    return 0
}

free_port() {
    local p i
    for i in $(seq 1 200); do
        p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 30000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# server_init EXTRA_CONF_LINES...
server_init() {
    DATA=$WORK/data
    LOG=$WORK/server.log
    PORT=$(free_port) || die "no free port on 127.0.0.1"
    as_pg "${PGSBIN:-$PGBIN}/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
        >"$WORK/initdb.log" 2>&1 || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
    {
        echo ""
        echo "# added by bench/run.sh"
        echo "shared_preload_libraries = 'workflows'"
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $PORT"
        echo "unix_socket_directories = '$WORK'"
        echo "fsync = on"
        echo "synchronous_commit = on"
        echo "full_page_writes = on"
        echo "max_connections = 100"
        echo "max_worker_processes = 32"
        echo "shared_buffers = '512MB'"
        echo "max_wal_size = '8GB'"
        echo "checkpoint_timeout = '30min'"
        echo "log_min_messages = warning"
        echo "log_checkpoints = on"
        local l
        for l in "$@"; do echo "$l"; done
    } | as_pg tee -a "$DATA/postgresql.conf" >/dev/null
}

# server_start [-c name=value ...]  (options for this start only)
server_start() {
    as_pg "${PGSBIN:-$PGBIN}/pg_ctl" -D "$DATA" -l "$LOG" -w -t 120 -o "$*" start >/dev/null ||
        { tail -n 40 "$LOG" >&2; die "the server did not start (log: $LOG)"; }
    if [[ -n ${DB_READY:-} ]]; then q_open; fi
}

server_running() {
    [[ -n ${DATA:-} && -f $DATA/postmaster.pid ]] &&
        as_pg "${PGSBIN:-$PGBIN}/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

server_stop() {
    q_close
    if server_running; then
        # keep the CPU count of this server instance (see server_ticks_total)
        SERVER_TICKS_DONE=$(( ${SERVER_TICKS_DONE:-0} + $(server_cpu_ticks) ))
        as_pg "${PGSBIN:-$PGBIN}/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null 2>&1 ||
            as_pg "${PGSBIN:-$PGBIN}/pg_ctl" -D "$DATA" -m immediate -w -t 60 stop >/dev/null 2>&1 || true
    fi
}

postmaster_pid() { head -n 1 "$DATA/postmaster.pid"; }

# ---- clients ---------------------------------------------------------------
psql_() {
    if [[ -n ${BENCH_TRACE:-} ]]; then
        local t0 rc=0
        t0=$(date +%s%N)
        as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres \
            -d "${PSQL_DB:-$DB}" "$@" || rc=$?
        printf 'trace: %6d ms psql %s\n' $(( ($(date +%s%N) - t0) / 1000000 )) "$(echo "$*" | tr -s ' \n' ' ' | cut -c1-90)" >>"$BENCH_TRACE"
        return $rc
    fi
    as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres \
        -d "${PSQL_DB:-$DB}" "$@"
}
# q SQL: run SQL, print the result unaligned, fields separated by |.
# Runs in one persistent psql session (a coprocess): starting psql and a
# backend costs 50-150 ms on a small VM, and the suite runs thousands of
# small queries.  q_open must run in the main shell (not in $(...)) after
# every server start; q_close before every stop.
q_open() {
    q_close
    coproc QP { exec "${AS_PG[@]}" "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=0 \
                    -h 127.0.0.1 -p "$PORT" -U postgres -d "$DB" 2>&1; }
    Q_PID=$QP_PID
    Q_IN=${QP[1]}
    Q_OUT=${QP[0]}
}
q_close() {
    if [[ -n ${Q_PID:-} ]]; then
        { printf '\\q\n' >&"$Q_IN"; } 2>/dev/null || true
        wait "$Q_PID" 2>/dev/null || true
        Q_PID=""
    fi
}
q() {
    local line out=() rc=1
    [[ -n ${Q_PID:-} ]] || die "q: no session (q_open not called)"
    printf '%s\n;\n\\echo __Q_END__ :ERROR\n' "$1" >&"$Q_IN" || die "q: the psql session is gone"
    while IFS= read -r line <&"$Q_OUT"; do
        if [[ $line == __Q_END__\ * ]]; then
            [[ $line == "__Q_END__ false" ]] && rc=0
            break
        fi
        out+=("$line")
    done
    if (( rc )); then
        printf 'bench: query failed: %s\n' "$(echo "$1" | tr -s ' \n' ' ' | cut -c1-200)" >&2
        (( ${#out[@]} )) && printf '  %s\n' "${out[@]}" >&2
        return 1
    fi
    (( ${#out[@]} )) && printf '%s\n' "${out[@]}"
    return 0
}

# wait until N executors of database DB are up
wait_executors() {
    local n=$1 i got=0
    for i in $(seq 1 300); do
        got=$(q "SELECT count(*) FROM pg_stat_activity
                 WHERE backend_type = 'workflows executor' AND datname = current_database()")
        (( got >= n )) && return 0
        sleep 0.1
    done
    die "only $got of $n executors started (log: $LOG)"
}

# ---- measurements ----------------------------------------------------------
# CPU ticks used so far by the whole server: the postmaster (with the time
# of its children that have exited: cutime/cstime) plus every live child.
# Pure bash (no forks): this runs between the measured phases.
server_cpu_ticks() {
    local pm line rest t=0 f
    pm=$(<"$DATA/postmaster.pid"); pm=${pm%%$'\n'*}
    for f in /proc/[0-9]*/stat; do
        { read -r line <"$f"; } 2>/dev/null || continue
        rest=${line##*) }
        # shellcheck disable=SC2086
        set -- $rest
        # $2 = ppid, $12 = utime, $13 = stime, $14 = cutime, $15 = cstime
        if [[ ${line%% *} == "$pm" ]]; then
            t=$(( t + ${12} + ${13} + ${14} + ${15} ))
        elif [[ $2 == "$pm" ]]; then
            t=$(( t + ${12} + ${13} ))
        fi
    done
    echo "$t"
}

# machine-wide CPU ticks from /proc/stat: "cpu BUSY TOTAL" (busy: all but
# idle and iowait), pure bash
machine_ticks() {
    local cpu user nice sys idle iowait irq softirq steal rest
    read -r cpu user nice sys idle iowait irq softirq steal rest </proc/stat
    echo "cpu $(( user + nice + sys + irq + softirq + steal )) $(( user + nice + sys + idle + iowait + irq + softirq + steal ))"
}

# CPU used by other processes of the machine between snapshots A and B (in
# % of the machine's capacity): busy time minus our server's time.  Our
# clients (pgbench) count as "other" too, so only use it for windows in
# which the clients are idle.  other_load A B
other_load() {
    local a=$1 b=$2 ab at ac bb bt bc
    ab=${a}_mbusy; at=${a}_mtotal; ac=${a}_cpu; bb=${b}_mbusy; bt=${b}_mtotal; bc=${b}_cpu
    awk "BEGIN { t = ${!bt} - ${!at}; if (t <= 0) t = 1; v = (${!bb} - ${!ab} - (${!bc} - ${!ac})) / t * 100; if (v < 0) v = 0; printf \"%.1f\\n\", v }"
}

# CPU ticks of every server instance this run started so far
server_ticks_total() { echo $(( ${SERVER_TICKS_DONE:-0} + $(server_cpu_ticks) )); }

# CPU ticks of one process
proc_cpu_ticks() {
    local line rest
    { read -r line <"/proc/$1/stat"; } 2>/dev/null || { echo 0; return 0; }
    rest=${line##*) }
    # shellcheck disable=SC2086
    set -- $rest
    echo $(( ${12} + ${13} ))
}

lsn_to_num() {
    local hi=${1%/*} lo=${1#*/}
    echo $(( (16#$hi << 32) + 16#$lo ))
}

# snap PREFIX [after]: record ${PREFIX}_t (server clock, epoch s), _lsn (WAL
# write position), _lsnnum, _xc (pg_stat_database.xact_commit of DB), _cpu
# (server CPU ticks).  "after": read the CPU before the query, else after.
SNAP_SQL="SELECT extract(epoch FROM clock_timestamp()), pg_current_wal_lsn(), xact_commit
            FROM pg_stat_database WHERE datname = current_database()"
snap() {
    local p=$1 row cpu=""
    [[ ${2:-} == after ]] && cpu=$(server_cpu_ticks)
    row=$(q "$SNAP_SQL")
    snap_row "$p" "$row" "$cpu"
}
# snap_row PREFIX ROW [CPU]: the same, from a row of SNAP_SQL fetched by the caller
snap_row() {
    local p=$1 row=$2 cpu=${3:-} t lsn xc
    IFS='|' read -r t lsn xc <<<"$row"
    [[ -n $cpu ]] || cpu=$(server_cpu_ticks)
    local _c busy tot
    read -r _c busy tot < <(machine_ticks)
    printf -v "${p}_mbusy" '%s' "$busy"
    printf -v "${p}_mtotal" '%s' "$tot"
    printf -v "${p}_t" '%s' "$t"
    printf -v "${p}_lsn" '%s' "$lsn"
    printf -v "${p}_lsnnum" '%s' "$(lsn_to_num "$lsn")"
    printf -v "${p}_xc" '%s' "$xc"
    printf -v "${p}_cpu" '%s' "$cpu"
}

# commit records in the WAL between two LSNs (transactions that wrote)
wal_commits() {
    { as_pg "$PGBIN/pg_waldump" -p "$DATA/pg_wal" -s "$1" -e "$2" --stats=record 2>/dev/null || true; } |
        awk '$1 == "Transaction/COMMIT" { n = $2 } END { print n + 0 }'
}

# arithmetic with floats
calc() { awk "BEGIN { v = $1; printf \"%.6g\n\", v }"; }

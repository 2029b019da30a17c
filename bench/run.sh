#!/usr/bin/env bash
# bench/run.sh -- the benchmark suite of the workflows extension.
#
#   bench/run.sh              full suite (~20 minutes; 3 runs of each workload)
#   bench/run.sh --smoke      tiny sizes, 1 run, a few seconds: keeps the bench
#                             from rotting (exit status non-zero if a workload
#                             did not complete)
#   options: --only W1,W4     run only these workloads (W1..W7)
#            --runs N         runs per workload (default 3; smoke 1)
#            --ref REF        build the extension from git REF (e.g. HEAD)
#                             instead of the work tree
#            --no-install     use the extension installed in the system
#                             instead of building the work tree
#            --profile / --no-profile   perf profile of an executor during W1
#                             (default: on in full mode when perf works)
#            --keep           keep the temporary directory
#
# Starts its own throwaway server (temp dir, free port on 127.0.0.1,
# shared_preload_libraries = 'workflows', fsync = on, synchronous_commit = on),
# stopped and removed on exit.  As root the server and all clients run as
# the "postgres" user; otherwise as the invoking user.  Results: the table on
# stdout, and bench/results/<mode>-latest/{results.md,raw.tsv,...}.
# bench/README.md explains every number.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
# the PostgreSQL to measure: PG_CONFIG names it (default: Debian's PG_MAJOR, 15)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/${PG_MAJOR:-15}/bin/pg_config}
PGBIN=${PGBIN:-$("$PG_CONFIG" --bindir)}
export LANG=C.UTF-8 LC_ALL=C.UTF-8
unset PGHOST PGHOSTADDR PGPORT PGDATABASE PGUSER PGSERVICE PGOPTIONS PGDATA || true
export PGOPTIONS='-c client_min_messages=warning'

MODE=full
ONLY=""
RUNS=""
INSTALL=1
SRC_DESC=""
KEEP=0
PROFILE=auto
REF=""

usage() { sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while (( $# )); do
    case $1 in
        --smoke) MODE=smoke ;;
        --full) MODE=full ;;
        --only) ONLY=$2; shift ;;
        --only=*) ONLY=${1#*=} ;;
        --runs) RUNS=$2; shift ;;
        --runs=*) RUNS=${1#*=} ;;
        --no-install) INSTALL=0 ;;
        --ref) REF=$2; shift ;;
        --ref=*) REF=${1#*=} ;;
        --keep) KEEP=1 ;;
        --profile) PROFILE=1 ;;
        --no-profile) PROFILE=0 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench/run.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/wf-bench.XXXXXX")
chmod 755 "$WORK"
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
[[ $(id -u) -eq 0 ]] && chown "$SERVER_USER": "$WORK"
DB=bench

# ---- sizes ------------------------------------------------------------------
if [[ $MODE == smoke ]]; then
    : "${RUNS:=1}"
    W1_INSTANCES=${W1_INSTANCES:-20};  W1_STEPS=${W1_STEPS:-5}; W1_EXECS=${W1_EXECS:-"1"}
    # pgbench durations: seconds, or t:N for N transactions per client
    CEIL_SECS=${CEIL_SECS:-t:200}; W7_CEIL=${W7_CEIL:-t:10}
    DEFER=${DEFER:-0.25}
    W2_N=${W2_N:-10}
    W3_SECS=${W3_SECS:-t:200}; W3_BATCH=${W3_BATCH:-1000}
    W4_N=${W4_N:-200}; W4_DELAY=${W4_DELAY:-0.6}; W4_SPREAD=${W4_SPREAD:-0.5}
    W4_SMALL_N=${W4_SMALL_N:-0}
    W4_IDLE_N=${W4_IDLE_N:-500}; W4_IDLE_SECS=${W4_IDLE_SECS:-0.5}
    W5_N=${W5_N:-10}; W5_GAP=${W5_GAP:-0.005}
    W6_BASE_N=${W6_BASE_N:-200}; W6_SHORT=${W6_SHORT:-30}; W6_LONG=${W6_LONG:-100}; W6_CAP=${W6_CAP:-30}
    W7_SPEC=${W7_SPEC:-"1:5:3 1024:5:3 65536:3:3 1048576:2:2"}
    TIMEOUT=${TIMEOUT:-60}
    [[ $PROFILE == auto ]] && PROFILE=0
else
    : "${RUNS:=3}"
    W1_INSTANCES=${W1_INSTANCES:-1000}; W1_STEPS=${W1_STEPS:-10}; W1_EXECS=${W1_EXECS:-"1 2 4"}
    CEIL_SECS=${CEIL_SECS:-5}; W7_CEIL=${W7_CEIL:-3}
    DEFER=${DEFER:-1}
    W2_N=${W2_N:-200}
    W3_SECS=${W3_SECS:-10}; W3_BATCH=${W3_BATCH:-100000}
    W4_N=${W4_N:-10000}; W4_DELAY=${W4_DELAY:-15}; W4_SPREAD=${W4_SPREAD:-10}
    W4_SMALL_N=${W4_SMALL_N:-1000}
    W4_IDLE_N=${W4_IDLE_N:-100000}; W4_IDLE_SECS=${W4_IDLE_SECS:-10}
    W5_N=${W5_N:-200}; W5_GAP=${W5_GAP:-0.01}
    W6_BASE_N=${W6_BASE_N:-10000}; W6_SHORT=${W6_SHORT:-1024}; W6_LONG=${W6_LONG:-10000}; W6_CAP=${W6_CAP:-300}
    # size:instances:steps per instance
    W7_SPEC=${W7_SPEC:-"1:100:10 1024:100:10 65536:50:10 1048576:10:10"}
    TIMEOUT=${TIMEOUT:-600}
fi

want() { [[ -z $ONLY ]] || [[ ,$ONLY, == *,$1,* ]]; }

OUT=$BENCH_DIR/results/$MODE-latest
RAW=$WORK/raw.tsv
GOALS=$WORK/goals.tsv
NOTES=$WORK/notes.txt
: >"$RAW"; : >"$GOALS"; : >"$NOTES"
FAILURES=0
FAILED=()

# shellcheck disable=SC2317  # (invoked by the EXIT trap)
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    [[ -n ${PERF_PID:-} ]] && kill -INT "$PERF_PID" 2>/dev/null && wait "$PERF_PID" 2>/dev/null
    server_stop
    if (( KEEP )); then
        say "bench: kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    FAILURES=$((FAILURES + 1))
    FAILED+=("$1")
    say "bench: FAILED: $1" >&2
}
notef() { say "$*" >>"$NOTES"; note "note: $*"; }

RUN=0
# rec WORKLOAD METRIC VALUE [ceiling]
rec() {
    local kind=${4:-value} v=$3
    [[ -z $v ]] && v=NaN
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$kind" "$RUN" "$v" >>"$RAW"
}
# goal WORKLOAD METRIC TEXT OP THRESHOLD
goal() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$GOALS"; }

T_START=$(date +%s)
elapsed() { echo $(( $(date +%s) - T_START )); }
# machine-wide CPU ticks: steal, busy (all but idle and iowait), total
cpu_stat() { awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print $9 + 0, t - $5 - $6, t }' /proc/stat; }
# CPU ticks of this script and its finished children (psql, pgbench, ...)
my_ticks() {
    local c
    c=$(times | tr '\n' ' ')   # "XmY.YYYs XmY.YYYs XmY.YYYs XmY.YYYs" (self, children)
    awk -v c="$c" -v hz="$CLK_TCK" 'BEGIN { n = split(c, f, /[ms ]+/); t = 0
        for (i = 1; i + 1 <= n; i += 2) t += f[i] * 60 + f[i + 1]; print int(t * hz) }'
}

# ---- build and install into a private copy of PostgreSQL -------------------
# Other people may run `make install` of another version of the extension at
# any moment, so the bench does not use the system's installation: it builds
# a snapshot of the sources (the work tree, or --ref) in its temp dir and
# installs it into a private copy of the PostgreSQL installation (a tree of
# symlinks to the system files, with real copies of initdb, pg_ctl and
# postgres, which find their lib and share directories relative to their own
# location).  No root needed.  --no-install uses the system's installation.
GIT=(git -c safe.directory="$REPO")   # the checkout may belong to another user
SYS_PKGLIB=$("$PGBIN/pg_config" --pkglibdir)
PGSBIN=$PGBIN
if (( INSTALL )); then
    SRC=$WORK/src
    mkdir -p "$SRC"
    if [[ -n $REF ]]; then
        "${GIT[@]}" -C "$REPO" archive "$REF" | tar -x -C "$SRC" || die "cannot export git ref '$REF'"
        SRC_DESC="git $REF = $("${GIT[@]}" -C "$REPO" rev-parse --short "$REF")"
    elif "${GIT[@]}" -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
        (cd "$REPO" && "${GIT[@]}" ls-files -z -co --exclude-standard -- . ':!bench/results' |
            tar -c --null -T - --ignore-failed-read 2>/dev/null) | tar -x -C "$SRC" ||
            die "cannot copy the work tree"
        SRC_DESC="the work tree at $("${GIT[@]}" -C "$REPO" rev-parse --short HEAD)$("${GIT[@]}" -C "$REPO" diff --quiet HEAD -- src sql Makefile 2>/dev/null || echo ' + uncommitted changes')"
    else
        tar -C "$REPO" -c --exclude=.git --exclude=bench/results . | tar -x -C "$SRC"
        SRC_DESC="the directory $REPO"
    fi
    private_install "$SRC"
else
    [[ -f $SYS_PKGLIB/workflows.so ]] ||
        die "the extension is not installed in $SYS_PKGLIB (or drop --no-install)"
    SRC_DESC="the system's installation (--no-install)"
fi

# ---- the server ---------------------------------------------------------------
server_init "workflows.max_output_size = '8MB'"
server_start
PSQL_DB=postgres psql_ -c "CREATE DATABASE bench" >/dev/null
cp "$BENCH_DIR"/workloads/*.sql "$WORK"/
[[ $(id -u) -eq 0 ]] && chown "$SERVER_USER": "$WORK"/*.sql
psql_ -f "$WORK/setup.sql" >/dev/null
DB_READY=1
q_open
DEFAULT_EXECS=$(q "SELECT boot_val FROM pg_settings WHERE name = 'workflows.max_workers'")
CUR_EXECS=$DEFAULT_EXECS
wait_executors "$CUR_EXECS"

# ---- the machine --------------------------------------------------------------
PERF_OK=0
if command -v perf >/dev/null 2>&1 &&
   perf record -q -e cpu-clock -o "$WORK/perf.check" -- true >/dev/null 2>&1; then
    PERF_OK=1
fi
[[ $PROFILE == auto ]] && PROFILE=$PERF_OK
(( PROFILE && !PERF_OK )) && { say "bench: perf does not work here: no profile"; PROFILE=0; }
{
    echo "mode: $MODE, runs per workload: $RUNS"
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
    echo "memory: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "kernel: $(uname -r)"
    echo "postgres: $(q 'SELECT version()')"
    echo "extension: $SRC_DESC"
    echo "executors by default: $DEFAULT_EXECS"
    echo "perf: $( ((PERF_OK)) && echo 'cpu-clock sampling works' || echo 'not usable')$(perf stat -e instructions true 2>&1 | grep -q 'not supported' && echo '; hardware counters not supported (VM)')"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$WORK/machine.txt"
say "== machine"
sed 's/^/    /' "$WORK/machine.txt"
read -r STEAL0 BUSY0 TOTAL0 < <(cpu_stat)
OURS0=$(( $(server_ticks_total) + $(my_ticks) ))

# ---- common steps ---------------------------------------------------------------
restart_with() {   # restart_with EXECUTORS
    if [[ $1 != "$CUR_EXECS" ]]; then
        server_stop
        server_start -c "workflows.max_workers=$1"
        CUR_EXECS=$1
    fi
    wait_executors "$1"
}

# Empty the engine's tables.  No CHECKPOINT: the server is configured so
# that none happens during the suite (checkpoint_timeout = 30min,
# max_wal_size = 8GB), so WAL per step is the records' own size, without
# the full-page images that the first change of a page after a checkpoint
# adds (see README).
reset() {
    q "SELECT bench_reset()" >/dev/null
}

# The engine's claim query is a prepared statement whose generic plan is
# kept for the life of an executor; planned against an analyzed-empty table
# it becomes a seq scan + full sort (see README, "findings").  Every
# workload analyzes the instances table right after its creates, as a
# running system's autoanalyze would have.
analyze_instances() { q "ANALYZE workflows.instances" >/dev/null; }

warmup() {
    q "SELECT bench_reset()" >/dev/null
    q "SELECT count(workflows.create('bench_steps', '{\"steps\": 5}')) FROM generate_series(1, 20)" >/dev/null
    [[ $(q "CALL bench_wait_done(NULL, 60)") == t ]] || fail "warmup did not complete"
}

# check that every instance completed; $1: what, for the message
check_complete() {
    local bad
    bad=$(q "SELECT count(*) FILTER (WHERE status <> 'complete') || ' of ' || count(*)
               FROM workflows.instances")
    if [[ $bad != 0\ of\ * ]]; then
        fail "$1: $bad instances did not complete"
        q "SELECT status, count(*), min(error::text) FROM workflows.instances
            WHERE status <> 'complete' GROUP BY 1" >&2 || true
        return 1
    fi
}

# pgbench: pgb CONC SECS SCRIPTFILE -> PGB_TPS PGB_TX PGB_P50 PGB_P95 PGB_P99 PGB_AVG
# (latencies in ms, from the per-transaction log)
pgb() {
    local conc=$1 secs=$2 script=$3 out dur=(-T "$2")
    [[ $secs == t:* ]] && dur=(-t "${secs#t:}")
    rm -f "$WORK"/pgblog.*
    out=$(cd "$WORK" && as_pg "$PGBIN/pgbench" -n -h 127.0.0.1 -p "$PORT" -U postgres \
              -c "$conc" -j "$conc" "${dur[@]}" -M prepared -l --log-prefix="$WORK/pgblog" \
              -f "$script" "$DB" 2>&1) || { say "$out" >&2; return 1; }
    PGB_TPS=$(sed -n 's/^tps = \([0-9.]*\) (without initial.*/\1/p' <<<"$out")
    PGB_TX=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    PGB_AVG=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")
    read -r PGB_P50 PGB_P95 PGB_P99 < <(cat "$WORK"/pgblog.* | awk '{ print $3 }' | sort -n |
        awk 'function at(p,  i) { i = int(NR * p + 0.5); if (i < 1) i = 1; if (i > NR) i = NR; return a[i] / 1000 }
             { a[NR] = $1 }
             END { if (NR == 0) print "NaN NaN NaN"; else printf "%.4f %.4f %.4f\n", at(0.50), at(0.95), at(0.99) }')
}

# the reference: pgbench inserting one row with a jsonb per transaction, at
# concurrency CONC; its numbers go to the "ceiling" column of workload WL
# (WL "-": only set CEIL_TPS, CEIL_P50, CEIL_P99).
# ceiling WL CONC SECS [PAYLOAD_SIZE]
ceiling() {
    local wl=$1 conc=$2 secs=$3 size=${4:-} script
    script=$WORK/ceiling${size:+_$size}.sql
    if [[ -n $size ]]; then
        echo "INSERT INTO public.bench_ceiling (v) SELECT j FROM public.bench_payload WHERE n = $size;" >"$script"
    else
        echo "INSERT INTO public.bench_ceiling (v) VALUES ('{\"k\": 1, \"s\": \"ceiling\"}'::jsonb);" >"$script"
    fi
    [[ $(id -u) -eq 0 ]] && chown "$SERVER_USER": "$script"
    q "TRUNCATE public.bench_ceiling" >/dev/null
    snap C
    pgb "$conc" "$secs" "$script" || { fail "$wl: pgbench ceiling failed"; return 0; }
    sleep 0.2   # let pgbench's backends exit and flush their statistics
    snap D after
    CEIL_TPS=$PGB_TPS; CEIL_P50=$PGB_P50; CEIL_P99=$PGB_P99
    [[ $wl == - ]] && return 0
    rec "$wl" "steps/s" "$PGB_TPS" ceiling
    rec "$wl" "per-step latency p50 (ms)" "$PGB_P50" ceiling
    rec "$wl" "per-step latency p99 (ms)" "$PGB_P99" ceiling
    rec "$wl" "commits/step (xact_commit)" "$(calc "($D_xc - $C_xc) / $PGB_TX")" ceiling
    rec "$wl" "commits/step (WAL records)" "$(calc "$(wal_commits "$C_lsn" "$D_lsn") / $PGB_TX")" ceiling
    rec "$wl" "WAL bytes/step" "$(calc "($D_lsnnum - $C_lsnnum) / $PGB_TX")" ceiling
    rec "$wl" "CPU s/1000 steps" "$(calc "($D_cpu - $C_cpu) / $CLK_TCK / $PGB_TX * 1000")" ceiling
}

# Create instances (SQL: a statement calling workflows.create) with a
# deferred start: in the same transaction their wake_at moves to a common
# instant T0 DEFER seconds ahead (a bench-only UPDATE as superuser), so that
# the create's own cost stays out of the measurement and every executor
# starts at the same known instant.  Then ANALYZE (see analyze_instances)
# and the snapshot A.  Sets T0 (epoch seconds) and A_*.
create_deferred() {
    local out
    out=$(psql_ -At <<SQL
BEGIN;
$1 \g /dev/null
UPDATE workflows.instances SET wake_at = date_trunc('milliseconds', clock_timestamp()) + make_interval(secs => $DEFER);
SELECT extract(epoch FROM max(wake_at)) FROM workflows.instances;
COMMIT;
ANALYZE workflows.instances;
$SNAP_SQL;
SQL
)
    T0=${out%%$'\n'*}
    snap_row A "${out#*$'\n'}"
    awk "BEGIN { exit !($A_t < $T0) }" ||
        notef "run $RUN: the executors may have started before the first snapshot (raise DEFER)"
}

# Run COUNT instances of workflow WF with PARAMS, all created in one
# statement, and record throughput and costs of their execution (from the
# create's commit to the last instance's end) under workload WL.
# exec_batch WL WF PARAMS COUNT
exec_batch() {
    local wl=$1 wf=$2 params=$3 count=$4 row steps secs
    reset
    create_deferred "SELECT count(workflows.create('$wf', '$params'::jsonb)) FROM generate_series(1, $count)"
    if [[ $(q "CALL bench_wait_done(NULL, $TIMEOUT)") != t ]]; then
        fail "$wl: run $RUN did not complete within ${TIMEOUT}s"
        return 1
    fi
    snap B after
    check_complete "$wl" || return 1
    row=$(q "SELECT (SELECT count(*) FROM workflows.steps WHERE type = 'step'),
                    extract(epoch FROM max(ended_at)) - $T0
               FROM workflows.instances")
    IFS='|' read -r steps secs <<<"$row"
    EXEC_STEPS=$steps
    EXEC_SECS=$secs
    EXEC_CPU=$(calc "($B_cpu - $A_cpu) / $CLK_TCK")
    rec "$wl" "steps/s" "$(calc "$steps / $secs")"
    row=$(q "SELECT p50, p99 FROM bench_pct(bench_step_intervals())")
    IFS='|' read -r p50 p99 <<<"$row"
    if [[ -n $p50 ]]; then   # (one-step instances have no interval)
        rec "$wl" "per-step latency p50 (ms)" "$p50"
        rec "$wl" "per-step latency p99 (ms)" "$p99"
    fi
    rec "$wl" "commits/step (xact_commit)" "$(calc "($B_xc - $A_xc) / $steps")"
    rec "$wl" "commits/step (WAL records)" "$(calc "$(wal_commits "$A_lsn" "$B_lsn") / $steps")"
    rec "$wl" "WAL bytes/step" "$(calc "($B_lsnnum - $A_lsnnum) / $steps")"
    rec "$wl" "CPU s/1000 steps" "$(calc "$EXEC_CPU / $steps * 1000")"
    rec "$wl" "noise: other processes' CPU (% of machine)" "$(other_load A B)"
    note "run $RUN: $steps steps in $(calc "$secs") s = $(calc "$steps / $secs") steps/s, server CPU $EXEC_CPU s"
}

# ================================================================ W1 throughput
w1() {
    local execs e label wl spt
    say "== W1 throughput: $W1_INSTANCES instances x $W1_STEPS steps ($(elapsed)s)"
    execs=$W1_EXECS
    [[ " $execs " == *" $DEFAULT_EXECS "* ]] || execs="$execs $DEFAULT_EXECS"
    for e in $execs; do
        restart_with "$e"
        warmup
        for spt in 1 10; do
            [[ $spt == 10 && $e != "$DEFAULT_EXECS" ]] && continue
            label="executors=$e"
            [[ $e == "$DEFAULT_EXECS" ]] && label="$label (default)"
            if [[ $spt == 10 ]]; then
                label="$label, steps_per_transaction=10"
                q "ALTER SYSTEM SET workflows.steps_per_transaction = 10" >/dev/null
                q "SELECT pg_reload_conf()" >/dev/null
                sleep 0.2
            fi
            wl="W1 $label"
            say "-- $wl"
            goal "$wl" "steps/s" ">= 1.0x ceiling" "ratio>=" 1.0
            for RUN in $(seq 1 "$RUNS"); do
                ceiling "$wl" "$e" "$CEIL_SECS"
                exec_batch "$wl" bench_steps "{\"steps\": $W1_STEPS}" "$W1_INSTANCES" || true
            done
            if [[ $spt == 10 ]]; then
                q "ALTER SYSTEM RESET workflows.steps_per_transaction" >/dev/null
                q "SELECT pg_reload_conf()" >/dev/null
                sleep 0.2
            fi
        done
        if (( PROFILE )) && [[ $e == 1 || $e == "$DEFAULT_EXECS" ]]; then
            profile_w1 "$e"
        fi
    done
    restart_with "$DEFAULT_EXECS"
}

# Profile runs of W1 (not measured): perf record -g on the executor, and a
# sample of the executors' wait events.  profile_w1 EXECUTORS
profile_w1() {
    local e=$1 pid t0 c0 c1 t1 prof=$WORK/profile.txt
    say "-- profile (executors=$e): not measured"
    if [[ $e == 1 ]] && (( PERF_OK )); then
        pid=$(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'workflows executor'
                  AND datname = current_database() LIMIT 1")
        q "SELECT bench_reset()" >/dev/null
        perf record -q -F 999 -e cpu-clock -g -p "$pid" -o "$WORK/perf.data" >/dev/null 2>&1 &
        PERF_PID=$!
        sleep 0.3
        c0=$(proc_cpu_ticks "$pid"); t0=$(date +%s.%N)
        q "SELECT count(workflows.create('bench_steps', '{\"steps\": $W1_STEPS}'))
             FROM generate_series(1, $W1_INSTANCES)" >/dev/null
        analyze_instances
        [[ $(q "CALL bench_wait_done(NULL, $TIMEOUT)") == t ]] || fail "profile run did not complete"
        c1=$(proc_cpu_ticks "$pid"); t1=$(date +%s.%N)
        kill -INT "$PERF_PID" 2>/dev/null; wait "$PERF_PID" 2>/dev/null || true
        PERF_PID=""
        set +e +o pipefail   # (grep finding nothing, head closing the pipe)
        {
            echo "== perf record -F 999 -e cpu-clock -g on the executor, W1 with 1 executor ($W1_INSTANCES x $W1_STEPS steps)"
            echo "executor on CPU: $(calc "($c1 - $c0) / $CLK_TCK / ($t1 - $t0) * 100")% of the run's wall time"
            echo "(percentages below are of the executor's on-CPU samples)"
            echo
            echo "== self time by symbol (perf report --no-children)"
            perf report -i "$WORK/perf.data" --no-children --sort dso,symbol -g none --stdio \
                --percent-limit 0.4 2>/dev/null | grep -v '^#' | grep -v '^$' | head -50
            echo
            echo "== inclusive time of the engine's functions (perf report --children, dso workflows.so)"
            perf report -i "$WORK/perf.data" --children --sort dso,symbol -g none --stdio \
                --percent-limit 0.5 2>/dev/null | grep 'workflows\.so' | head -40
            echo
            echo "== inclusive time of PostgreSQL entry points"
            perf report -i "$WORK/perf.data" --children --sort symbol -g none --stdio \
                --percent-limit 1 2>/dev/null | grep -v '^#' | grep -v '^$' |
                grep -E 'Commit|XLog|fdatasync|plpgsql_exec_function|exec_stmt|ExecutorStart|ExecutorRun|ExecutorEnd|PortalRun|pg_plan|raw_parser|parse_analyze|pg_analyze|RevalidateCachedQuery|GetCachedPlan|BeginInternalSub|RollbackAndRelease|ReleaseCurrentSub|StartTransaction|heap_insert|heap_update|ExecInsert|ExecUpdate|ExecInsertIndexTuples|_bt_doinsert|fmgr_security_definer|set_config_option|AtEOXact_GUC|SPI_execute|SPI_connect|SPI_finish|stringToNode|RelationBuild|AcceptInvalidation|Async_Notify|PreCommit_Notify|LockAcquire|ExecInitNode|CopyErrorData|errfinish|jsonb_in|JsonbToCString' |
                head -60
            local sym
            for sym in pg_strtok hash_search_with_hash_value AtEOXact_GUC; do
                echo
                echo "== callers of $sym"
                perf report -i "$WORK/perf.data" --no-children --sort symbol -S "$sym" \
                    -g caller,0.5,callee,function,percent --stdio 2>/dev/null |
                    grep -v '^#' | grep -v '^$' | head -40
            done
        } >>"$prof"
        set -e -o pipefail
        cp "$WORK/perf.data" "$WORK/perf-w1-e1.data" 2>/dev/null || true
    fi
    # wait events of the executors, sampled every 5 ms
    q "SELECT bench_reset()" >/dev/null
    psql_ -c "CALL bench_sample_waits($TIMEOUT)" >/dev/null &
    local sampler=$!
    sleep 0.3
    q "SELECT count(workflows.create('bench_steps', '{\"steps\": $W1_STEPS}'))
         FROM generate_series(1, $W1_INSTANCES)" >/dev/null
    analyze_instances
    [[ $(q "CALL bench_wait_done(NULL, $TIMEOUT)") == t ]] || fail "profile run did not complete"
    wait "$sampler" || true
    # (q must not run in a pipeline: bash closes the coprocess's pipes there)
    q "SELECT w, count(*), round(100.0 * count(*) / sum(count(*)) OVER (), 1)
         FROM bench_waits GROUP BY w ORDER BY 2 DESC" >"$WORK/waits-$e.txt"
    sed -i 's/|/ /g' "$WORK/waits-$e.txt"
    {
        echo
        echo "== wait events of the executors (executors=$e), sampled every 5 ms during a W1 run: event, samples, %"
        sed 's/^/    /' "$WORK/waits-$e.txt"
    } >>"$prof"
    sed 's/^/    /' "$WORK/waits-$e.txt" | head -8
}

# ================================================================ W2 latency
w2() {
    local k wl row
    say "== W2 latency: $W2_N sequential instances, create -> wait ($(elapsed)s)"
    restart_with "$DEFAULT_EXECS"
    warmup
    for RUN in $(seq 1 "$RUNS"); do
        for k in 1 10; do
            wl="W2 $k-step"
            (( RUN == 1 )) && goal "$wl" "per-step (e2e/steps) p50 (ms)" "<= 0.35 ms" "<=" 0.35
            (( RUN == 1 && k == 10 )) && goal "$wl" "per-step (step interval) p50 (ms)" "<= 0.35 ms" "<=" 0.35
            reset
            if ! psql_ -c "CALL bench_latency($W2_N, $k)" >/dev/null; then
                fail "$wl: run $RUN failed"; continue
            fi
            check_complete "$wl" || continue
            row=$(q "SELECT p50, p95, p99 FROM bench_pct((SELECT array_agg(e2e_ms) FROM bench_lat))")
            IFS='|' read -r p50 p95 p99 <<<"$row"
            rec "$wl" "e2e create->complete, client p50 (ms)" "$p50"
            rec "$wl" "e2e create->complete, client p95 (ms)" "$p95"
            rec "$wl" "e2e create->complete, client p99 (ms)" "$p99"
            row=$(q "SELECT p50, p95, p99 FROM bench_pct((SELECT array_agg(extract(epoch FROM ended_at - created_at) * 1000)
                                                 FROM workflows.instances))")
            IFS='|' read -r p50 p95 p99 <<<"$row"
            rec "$wl" "e2e created_at->ended_at p50 (ms)" "$p50"
            rec "$wl" "e2e created_at->ended_at p95 (ms)" "$p95"
            rec "$wl" "e2e created_at->ended_at p99 (ms)" "$p99"
            rec "$wl" "per-step (e2e/steps) p50 (ms)" "$(calc "$p50 / $k")"
            rec "$wl" "per-step (e2e/steps) p99 (ms)" "$(calc "$p99 / $k")"
            if (( k > 1 )); then
                row=$(q "SELECT p50, p95, p99 FROM bench_pct(bench_step_intervals())")
                IFS='|' read -r p50 p95 p99 <<<"$row"
                rec "$wl" "per-step (step interval) p50 (ms)" "$p50"
                rec "$wl" "per-step (step interval) p95 (ms)" "$p95"
                rec "$wl" "per-step (step interval) p99 (ms)" "$p99"
            fi
            row=$(q "SELECT p50 FROM bench_pct((SELECT array_agg(extract(epoch FROM started_at - created_at) * 1000)
                                          FROM workflows.instances))")
            rec "$wl" "pickup created_at->started_at p50 (ms)" "$row"
        done
        # reference: the latency of one pgbench INSERT transaction (1 client)
        ceiling - 1 "$CEIL_SECS"
        rec "W2 10-step" "per-step (e2e/steps) p50 (ms)" "$CEIL_P50" ceiling
        rec "W2 10-step" "per-step (step interval) p50 (ms)" "$CEIL_P50" ceiling
        rec "W2 1-step" "per-step (e2e/steps) p50 (ms)" "$CEIL_P50" ceiling
        rec "W2 1-step" "e2e create->complete, client p50 (ms)" "$CEIL_P50" ceiling
        rec "W2 1-step" "e2e create->complete, client p99 (ms)" "$CEIL_P99" ceiling
    done
}

# ================================================================ W3 create rate
w3() {
    local wl="W3 create, 1 client" script=$WORK/create.sql backlog secs
    say "== W3 create rate: one client, ${W3_SECS}s ($(elapsed)s)"
    restart_with "$DEFAULT_EXECS"
    warmup
    echo "SELECT workflows.create('bench_steps', '{\"steps\": 1}');" >"$script"
    [[ $(id -u) -eq 0 ]] && chown "$SERVER_USER": "$script"
    for RUN in $(seq 1 "$RUNS"); do
        ceiling - 1 "$CEIL_SECS"
        rec "$wl" "instances/s" "$CEIL_TPS" ceiling
        rec "$wl" "create latency p50 (ms)" "$CEIL_P50" ceiling
        rec "$wl" "create latency p99 (ms)" "$CEIL_P99" ceiling
        reset
        snap A
        pgb 1 "$W3_SECS" "$script" || { fail "$wl: pgbench failed"; continue; }
        backlog=$(q "SELECT count(*) FROM workflows.instances WHERE status <> 'complete'")
        rec "$wl" "instances/s" "$PGB_TPS"
        rec "$wl" "create latency p50 (ms)" "$PGB_P50"
        rec "$wl" "create latency p99 (ms)" "$PGB_P99"
        rec "$wl" "backlog at end (not complete)" "$backlog"
        [[ $(q "CALL bench_wait_done(NULL, $TIMEOUT)") == t ]] || fail "$wl: instances did not complete"
        snap B after
        check_complete "$wl" || true
        rec "$wl" "WAL bytes/instance (create + run)" "$(calc "($B_lsnnum - $A_lsnnum) / $PGB_TX")"
        rec "$wl" "server CPU s/1000 instances (create + run)" "$(calc "($B_cpu - $A_cpu) / $CLK_TCK / $PGB_TX * 1000")"

        # create_batch: W3_BATCH instances in one statement (its own
        # transaction: now() is its start), while the executors start on them
        reset
        secs=$(q "SELECT extract(epoch FROM clock_timestamp() - now())
                    FROM (SELECT count(*) FROM workflows.create_batch('bench_steps',
                            (SELECT jsonb_agg('{\"params\": {\"steps\": 1}}'::jsonb)
                               FROM generate_series(1, $W3_BATCH)))) c") ||
            { fail "$wl: create_batch failed"; continue; }
        rec "W3 create_batch" "instances/s ($W3_BATCH in one call)" "$(calc "$W3_BATCH / $secs")"
        [[ $(q "CALL bench_wait_done(NULL, $TIMEOUT)") == t ]] || fail "W3 create_batch: instances did not complete"
    done
}

# ================================================================ W4 wake-ups
# w4_sleepers WL COUNT SPREAD_S: COUNT instances sleep until a target
# W4_DELAY s after creation, spread evenly over SPREAD_S seconds
w4_sleepers() {
    local wl=$1 n=$2 spread=$3 row target parked_at late delay
    # time to the (first) target: W4_DELAY for W4_N instances, less for fewer
    delay=$(calc "$W4_DELAY * ($n < $W4_N ? ($n / $W4_N < 0.2 ? 0.2 : $n / $W4_N) : 1)")
    reset
    target=$(q "SELECT extract(epoch FROM now() + make_interval(secs => $delay))")
    q "SELECT count(workflows.create('bench_sleeper',
               jsonb_build_object('at', to_timestamp($target + (g - 1) * $spread::float8 / $n))))
         FROM generate_series(1, $n) g" >/dev/null
    snap A
    analyze_instances
    [[ $(q "CALL bench_wait_parked(NULL, $TIMEOUT)") == t ]] || { fail "$wl: instances did not reach their sleep"; return 1; }
    parked_at=$(q "SELECT extract(epoch FROM clock_timestamp())")
    if awk "BEGIN { exit !($parked_at > $target) }"; then
        late=$(q "SELECT count(*) FROM workflows.steps WHERE key = 'nap' AND started_at > wake_at")
        notef "$wl run $RUN: all $n instances reached their sleep only $(calc "$parked_at - $target") s after the first target ($late of them after their own target): saturated"
    fi
    rec "$wl" "instances parked/s (before the target)" "$(calc "$n / ($parked_at - $A_t)")"
    [[ $(q "CALL bench_wait_done(NULL, $TIMEOUT)") == t ]] || { fail "$wl: run $RUN did not complete"; return 1; }
    snap B after
    check_complete "$wl" || return 1
    row=$(q "SELECT p50, p99, pmax FROM bench_pct((
               SELECT array_agg(extract(epoch FROM a.started_at - n.wake_at) * 1000)
                 FROM workflows.steps n JOIN workflows.steps a
                      ON a.instance_id = n.instance_id AND a.key = 'after'
                WHERE n.key = 'nap'))")
    IFS='|' read -r p50 p99 pmax <<<"$row"
    rec "$wl" "lateness p50 (ms)" "$p50"
    rec "$wl" "lateness p99 (ms)" "$p99"
    rec "$wl" "lateness max (ms)" "$pmax"
    row=$(q "SELECT count(*) / greatest(extract(epoch FROM max(ended_at)) - $target, 0.001)
               FROM workflows.instances")
    rec "$wl" "wakes/s (count / (last end - first target))" "$row"
    rec "$wl" "CPU s/1000 instances (park + wake)" "$(calc "($B_cpu - $A_cpu) / $CLK_TCK / $n * 1000")"
}

w4_idle() {
    local wl="W4 idle: $W4_IDLE_N sleeping" made=0 chunk c0 c1 e0 e1 t0 t1 pids row payload
    say "-- $wl (1 hour sleep)"
    reset
    t0=$(date +%s.%N)
    while (( made < W4_IDLE_N )); do
        chunk=$(( W4_IDLE_N - made < 50000 ? W4_IDLE_N - made : 50000 ))
        q "SELECT count(workflows.create('bench_sleeper', jsonb_build_object('at', now() + interval '1 hour')))
             FROM generate_series(1, $chunk)" >/dev/null
        (( made == 0 )) && analyze_instances
        made=$(( made + chunk ))
    done
    t1=$(date +%s.%N)
    rec "$wl" "creates/s (50k per statement)" "$(calc "$W4_IDLE_N / ($t1 - $t0)")"
    [[ $(q "CALL bench_wait_parked(NULL, $TIMEOUT, 0.5)") == t ]] || { fail "$wl: instances did not reach their sleep"; return 1; }
    t1=$(date +%s.%N)
    rec "$wl" "parked/s (create -> all sleeping)" "$(calc "$W4_IDLE_N / ($t1 - $t0)")"
    payload=$(q "SELECT avg(pg_column_size(params)) FROM workflows.instances")
    rec "$wl" "payload: params bytes/instance" "$payload"
    row=$(q "SELECT sum(pg_total_relation_size(c.oid)) / $W4_IDLE_N FROM pg_class c
               WHERE c.relnamespace = 'workflows'::regnamespace AND c.relkind = 'r'
                 AND c.relname NOT IN ('workflows', 'versions')")
    rec "$wl" "bytes/sleeping instance - payload (as is)" "$(calc "$row - $payload")"
    # let the background work of the creates finish (autovacuum, dirty
    # buffers), so that what is left is the engine's own idle cost
    q "VACUUM (ANALYZE) workflows.instances" >/dev/null
    q "VACUUM (ANALYZE) workflows.steps" >/dev/null
    q "CHECKPOINT" >/dev/null
    sleep 2
    pids=$(q "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity
               WHERE backend_type IN ('workflows executor', 'workflows launcher')")
    c0=$(server_cpu_ticks); e0=0; for p in $pids; do e0=$(( e0 + $(proc_cpu_ticks "$p") )); done
    t0=$(date +%s.%N)
    sleep "$W4_IDLE_SECS"
    c1=$(server_cpu_ticks); e1=0; for p in $pids; do e1=$(( e1 + $(proc_cpu_ticks "$p") )); done
    t1=$(date +%s.%N)
    rec "$wl" "idle CPU, all server processes (% of a core)" "$(calc "($c1 - $c0) / $CLK_TCK / ($t1 - $t0) * 100")"
    rec "$wl" "idle CPU, executors + launcher (% of a core)" "$(calc "($e1 - $e0) / $CLK_TCK / ($t1 - $t0) * 100")"
    q "VACUUM FULL workflows.instances" >/dev/null
    q "VACUUM FULL workflows.steps" >/dev/null
    row=$(q "SELECT sum(pg_total_relation_size(c.oid)) / $W4_IDLE_N FROM pg_class c
               WHERE c.relnamespace = 'workflows'::regnamespace AND c.relkind = 'r'
                 AND c.relname NOT IN ('workflows', 'versions')")
    rec "$wl" "bytes/sleeping instance - payload (VACUUM FULL)" "$(calc "$row - $payload")"
    local rel
    for rel in instances steps; do
        row=$(q "SELECT pg_table_size('workflows.$rel') / $W4_IDLE_N, pg_indexes_size('workflows.$rel') / $W4_IDLE_N,
                        (SELECT count(*) FROM pg_index WHERE indrelid = 'workflows.$rel'::regclass)")
        IFS='|' read -r heap idx nidx <<<"$row"
        rec "$wl" "  of which $rel: table bytes/instance (VACUUM FULL)" "$heap"
        rec "$wl" "  of which $rel: $nidx indexes, bytes/instance (VACUUM FULL)" "$idx"
    done
    reset
}

w4() {
    local wl
    say "== W4 wake-ups ($(elapsed)s)"
    restart_with "$DEFAULT_EXECS"
    warmup
    for spec in "$W4_N:0:same instant" "$W4_N:$W4_SPREAD:spread over ${W4_SPREAD}s" "$W4_SMALL_N:$W4_SPREAD:spread over ${W4_SPREAD}s"; do
        IFS=: read -r n spread label <<<"$spec"
        (( n > 0 )) || continue
        wl="W4 $n sleepers, $label"
        say "-- $wl"
        if [[ $spread != 0 ]]; then
            goal "$wl" "lateness p99 (ms)" "<= 5 ms when not saturated" "<=" 5
        else
            goal "$wl" "lateness p99 (ms)" "(saturated by design)" "" 0
        fi
        for RUN in $(seq 1 "$RUNS"); do
            w4_sleepers "$wl" "$n" "$spread" || true
        done
    done
    RUN=1
    goal "W4 idle: $W4_IDLE_N sleeping" "idle CPU, executors + launcher (% of a core)" "~0 (<= 1%)" "<=" 1
    goal "W4 idle: $W4_IDLE_N sleeping" "idle CPU, all server processes (% of a core)" "~0 (<= 1%)" "<=" 1
    goal "W4 idle: $W4_IDLE_N sleeping" "bytes/sleeping instance - payload (as is)" "<= 500" "<=" 500
    goal "W4 idle: $W4_IDLE_N sleeping" "bytes/sleeping instance - payload (VACUUM FULL)" "<= 500" "<=" 500
    w4_idle || true
    if (( W4_IDLE_N < 1000000 )); then
        notef "W4 idle: scaled down from 1,000,000 to $W4_IDLE_N sleeping instances to keep the full run under ~20 minutes (every instance must be run once by an executor to reach its sleep; see 'parked/s')."
    fi
}

# ================================================================ W5 events
w5() {
    local wl="W5 events: $W5_N waiters, one event each" row
    say "== $wl ($(elapsed)s)"
    restart_with "$DEFAULT_EXECS"
    warmup
    goal "$wl" "send_event -> next step started p99 (ms)" "<= 5 ms" "<=" 5
    for RUN in $(seq 1 "$RUNS"); do
        reset
        q "SELECT count(workflows.create('bench_waiter')) FROM generate_series(1, $W5_N)" >/dev/null
        analyze_instances
        [[ $(q "CALL bench_wait_parked(NULL, $TIMEOUT)") == t ]] || { fail "$wl: instances did not reach their wait"; continue; }
        snap A
        psql_ -c "CALL bench_send_events($W5_GAP)" >/dev/null || { fail "$wl: sending failed"; continue; }
        [[ $(q "CALL bench_wait_done(NULL, $TIMEOUT)") == t ]] || { fail "$wl: run $RUN did not complete"; continue; }
        snap B after
        check_complete "$wl" || continue
        row=$(q "SELECT p50, p99, pmax FROM bench_pct((
                   SELECT array_agg(extract(epoch FROM a.started_at - e.sent_at) * 1000)
                     FROM workflows.events e JOIN workflows.steps a
                          ON a.instance_id = e.instance_id AND a.key = 'after'))")
        IFS='|' read -r p50 p99 pmax <<<"$row"
        rec "$wl" "send_event -> next step started p50 (ms)" "$p50"
        rec "$wl" "send_event -> next step started p99 (ms)" "$p99"
        rec "$wl" "send_event -> next step started max (ms)" "$pmax"
        row=$(q "SELECT p50, p99 FROM bench_pct((
                   SELECT array_agg(extract(epoch FROM w.ended_at - e.sent_at) * 1000)
                     FROM workflows.events e JOIN workflows.steps w
                          ON w.instance_id = e.instance_id AND w.key = 'ev'))")
        IFS='|' read -r p50 p99 <<<"$row"
        rec "$wl" "send_event -> wait step ended p50 (ms)" "$p50"
        rec "$wl" "send_event -> wait step ended p99 (ms)" "$p99"
        rec "$wl" "server CPU s/1000 events (send + resume)" "$(calc "($B_cpu - $A_cpu) / $CLK_TCK / $W5_N * 1000")"
    done
}

# ================================================================ W6 long instances
w6() {
    local wl base_cpu base_secs base_wl="W6 baseline: $W6_BASE_N x 1-step instances" n id row
    say "== W6 long instances ($(elapsed)s)"
    restart_with "$DEFAULT_EXECS"
    warmup
    say "-- $base_wl"
    local cpus=() walls=()
    for RUN in $(seq 1 "$RUNS"); do
        if exec_batch "$base_wl" bench_steps '{"steps": 1}' "$W6_BASE_N"; then
            rec "$base_wl" "total s" "$EXEC_SECS"
            rec "$base_wl" "server CPU s" "$EXEC_CPU"
            cpus+=("$EXEC_CPU"); walls+=("$EXEC_SECS")
        fi
    done
    (( ${#cpus[@]} )) || { fail "W6: no baseline"; return 0; }
    base_cpu=$(printf '%s\n' "${cpus[@]}" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
    base_secs=$(printf '%s\n' "${walls[@]}" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')

    for n in $W6_SHORT $W6_LONG; do
        wl="W6 one instance of $n steps"
        local runs=$RUNS
        (( n > 2000 )) && runs=1
        say "-- $wl ($runs run(s), cap ${W6_CAP}s)"
        goal "$wl" "server CPU s" "<= 3x reference" "ratio<=" 3
        goal "$wl" "total s" "<= 3x reference" "ratio<=" 3
        for RUN in $(seq 1 "$runs"); do
            reset
            create_deferred "SELECT workflows.create('bench_steps', '{\"steps\": $n}')"
            id=$(q "SELECT id FROM workflows.instances LIMIT 1")
            local done_ok
            done_ok=$(q "CALL bench_wait_done(NULL, $W6_CAP, 0.2)")
            snap B after
            local reached secs cpu
            row=$(q "SELECT count(*), extract(epoch FROM max(ended_at) - min(started_at))
                       FROM workflows.steps WHERE instance_id = '$id'")
            IFS='|' read -r reached secs <<<"$row"
            cpu=$(calc "($B_cpu - $A_cpu) / $CLK_TCK")
            if [[ $done_ok == t ]]; then
                check_complete "$wl" || continue
                secs=$(q "SELECT extract(epoch FROM ended_at) - $T0 FROM workflows.instances WHERE id = '$id'")
            else
                secs=$(calc "$B_t - $T0")
                # stop it: the executor's next claim finds no row
                psql_ -c "SET lock_timeout = '10s'" -c "DELETE FROM workflows.instances WHERE id = '$id'" >/dev/null 2>&1 || true
                notef "$wl: capped at ${W6_CAP}s: reached $reached of $n steps"
            fi
            rec "$wl" "steps reached" "$reached"
            rec "$wl" "total s" "$secs"
            rec "$wl" "server CPU s" "$cpu"
            rec "$wl" "CPU ms/step" "$(calc "$cpu / $reached * 1000")"
            # references: the same number of steps as one-step instances
            rec "$wl" "total s" "$(calc "$base_secs * $n / $W6_BASE_N")" ceiling
            rec "$wl" "server CPU s" "$(calc "$base_cpu * $n / $W6_BASE_N")" ceiling
            rec "$wl" "CPU ms/step" "$(calc "$base_cpu / $W6_BASE_N * 1000")" ceiling
            # per-step time by index (ms between consecutive step starts)
            local lo hi
            local windows=1
            (( reached >= 300 )) && windows="$windows $(( reached / 2 - 49 ))"
            (( reached >= 200 )) && windows="$windows $(( reached - 99 ))"
            for lo in $windows; do
                hi=$(( lo + 99 ))
                row=$(q "SELECT avg(ms) FROM (SELECT seq, extract(epoch FROM started_at - lag(started_at) OVER (ORDER BY seq)) * 1000 AS ms
                                                FROM workflows.steps WHERE instance_id = '$id') s
                          WHERE seq + 1 BETWEEN GREATEST($lo, 2) AND $hi")
                [[ -n $row ]] || continue
                rec "$wl" "ms/step, steps $lo-$hi" "$row"
            done
            if [[ $done_ok != t ]]; then
                # project the full run: ms/step grows linearly with the index
                row=$(q "SELECT regr_intercept(ms, seq), regr_slope(ms, seq) FROM (
                           SELECT seq, extract(epoch FROM started_at - lag(started_at) OVER (ORDER BY seq)) * 1000 AS ms
                             FROM workflows.steps WHERE instance_id = '$id') s WHERE ms IS NOT NULL")
                local a b proj
                IFS='|' read -r a b <<<"$row"
                proj=$(calc "$secs + (($a) * ($n - $reached) + ($b) * ($n * ($n + 1) / 2 - $reached * ($reached + 1) / 2)) / 1000")
                rec "$wl" "projected total s (linear fit of ms/step)" "$proj"
                rec "$wl" "projected total s (linear fit of ms/step)" "$(calc "$base_secs * $n / $W6_BASE_N")" ceiling
            fi
        done
    done
    notef "W6: the reference column of the W6 rows is the same number of steps run as one-step instances ($base_wl, scaled)."
}

# ================================================================ W7 payload
w7() {
    local spec size count steps wl
    say "== W7 payload ($(elapsed)s)"
    restart_with "$DEFAULT_EXECS"
    warmup
    for spec in $W7_SPEC; do
        IFS=: read -r size count steps <<<"$spec"
        wl="W7 output $(numfmt --to=iec-i --suffix=B "$size" 2>/dev/null || echo "$size B")"
        say "-- $wl: $count instances x $steps steps"
        for RUN in $(seq 1 "$RUNS"); do
            ceiling "$wl" "$DEFAULT_EXECS" "$W7_CEIL" "$size"
            exec_batch "$wl" bench_payload_steps "{\"steps\": $steps, \"size\": $size}" "$count" || true
        done
    done
}

# ================================================================ main
want W1 && w1
want W2 && w2
want W3 && w3
want W4 && w4
want W5 && w5
want W6 && w6
want W7 && w7

# errors logged by the server (not counting the shutdowns of restarts)
if grep -E 'PANIC|server process .* was terminated|TRAP:' "$LOG" >/dev/null; then
    fail "the server log shows a crash"
    grep -E 'PANIC|was terminated|TRAP:' "$LOG" | head -5 >&2
fi

read -r STEAL1 BUSY1 TOTAL1 < <(cpu_stat)
OURS1=$(( $(server_ticks_total) + $(my_ticks) ))
{
    echo "CPU steal during the run: $(calc "($STEAL1 - $STEAL0) / ($TOTAL1 - $TOTAL0 + 1) * 100")% of all CPU time"
    echo "CPU used by other processes on the machine during the run: $(calc "($BUSY1 - $BUSY0 - ($OURS1 - $OURS0)) / ($TOTAL1 - $TOTAL0 + 1) * 100")% of capacity (the bench's own server and clients: $(calc "($OURS1 - $OURS0) / ($TOTAL1 - $TOTAL0 + 1) * 100")%); more than a few % means a noisy machine"
    echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "wall time of the suite: $(elapsed) s"
} >>"$WORK/machine.txt"

say ""
say "== results ($MODE mode; median of $RUNS run(s); ceiling = pgbench one-row INSERT of a jsonb per transaction at the same concurrency)"
sed -e "s|@RAW@|$RAW|" -e "s|@GOALS@|$GOALS|" "$WORK/report.sql" >"$WORK/report-run.sql"
psql_ -f "$WORK/report-run.sql" >"$WORK/results.md" ||
    fail "the report failed"
cat "$WORK/results.md"
say ""
tail -n 3 "$WORK/machine.txt"
if [[ -s $NOTES ]]; then
    say ""
    say "notes:"
    sed 's/^/  - /' "$NOTES"
fi

if ! mkdir -p "$OUT" 2>/dev/null || [[ ! -w $OUT ]]; then
    OUT=${TMPDIR:-/tmp}/wf-bench-results-$(id -un)/$MODE-latest
    mkdir -p "$OUT"
fi
cp "$WORK/results.md" "$WORK/raw.tsv" "$WORK/goals.tsv" "$WORK/machine.txt" "$WORK/notes.txt" "$OUT"/ 2>/dev/null || true
[[ -f $WORK/profile.txt ]] && cp "$WORK/profile.txt" "$OUT"/
[[ -f $WORK/perf-w1-e1.data ]] && cp "$WORK/perf-w1-e1.data" "$OUT"/
cp "$LOG" "$OUT/server.log" 2>/dev/null || true
say ""
say "bench: results in ${OUT#"$REPO"/}/"

if (( FAILURES )); then
    say "bench: $FAILURES failure(s):"
    printf '  - %s\n' "${FAILED[@]}"
    exit 1
fi
say "bench: all workloads completed"

#!/usr/bin/env bash
# bench/shard.sh -- W1-like throughput through a PL/Proxy router
# (workflows_router) with 1, 2 and 4 shard servers on this machine, the
# router's overhead per call, and a model of throughput versus shards.
#
#   bench/shard.sh              instances x steps (default 1000 x 5), 4 partitions
#   options: --instances N  --steps K  --secs S (pgbench duration, default 5)
#            --shards "1 2 4"   shard server counts to measure
#            --no-install      use the extension installed for PG_CONFIG
#                              instead of building the work tree
#            --keep            keep the temporary directory
#
# Starts its own servers (temp dir, free ports on 127.0.0.1, fsync = on,
# synchronous_commit = on): one router (workflows_router, plproxy) and up to
# four shard servers (workflows preloaded).  The partitions are fixed (4
# databases wf_p0..wf_p3, one executor each); with S shard servers,
# partition k lives on server k % S, so the work and the executors are the
# same in every configuration and only their placement changes.  Every
# server runs on this machine: the measured totals say what placement and
# the router cost here, not what S machines would give -- the model at the
# end does that, from the per-server rate and the router's cost per call.
# As root, servers and clients run as "postgres".  Results: stdout and
# bench/results/shard-latest/results.md.  bench/README.md ("Sharding")
# explains the numbers.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/${PG_MAJOR:-15}/bin/pg_config}
PGBIN=${PGBIN:-$("$PG_CONFIG" --bindir)}
export LANG=C.UTF-8 LC_ALL=C.UTF-8
unset PGHOST PGHOSTADDR PGPORT PGDATABASE PGUSER PGSERVICE PGOPTIONS PGDATA || true
export PGOPTIONS='-c client_min_messages=warning'

N=1000
K=5
SECS=5
SHARDS="1 2 4"
PARTS=4
INSTALL=1
KEEP=0
usage() { sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while (( $# )); do
    case $1 in
        --instances) N=$2; shift ;;
        --steps) K=$2; shift ;;
        --secs) SECS=$2; shift ;;
        --shards) SHARDS=$2; shift ;;
        --no-install) INSTALL=0 ;;
        --keep) KEEP=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench/shard.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
MAXS=0
for s in $SHARDS; do (( s > MAXS )) && MAXS=$s; done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/wf-shard.XXXXXX")
chmod 755 "$WORK"
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
[[ $(id -u) -eq 0 ]] && chown "$SERVER_USER": "$WORK"

NAMES=()   # servers started: router s0 s1 ...
declare -A SPORT SDATA
cleanup() {
    local rc=$? n
    set +e
    trap - EXIT INT TERM
    for n in "${NAMES[@]}"; do
        as_pg "$PGSBIN/pg_ctl" -D "${SDATA[$n]}" -m immediate -w stop >/dev/null 2>&1
    done
    if (( KEEP )); then say "bench: kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- build and install into a private copy of PostgreSQL (as bench/run.sh) --
PGSBIN=$PGBIN
if (( INSTALL )); then
    SRC=$WORK/src
    mkdir -p "$SRC"
    (cd "$REPO" && git -c safe.directory="$REPO" ls-files -z -co --exclude-standard -- . ':!bench/results' |
        tar -c --null -T - --ignore-failed-read 2>/dev/null) | tar -x -C "$SRC" ||
        die "cannot copy the work tree"
    private_install "$SRC"
fi

# ---- servers -----------------------------------------------------------------
# start_server NAME EXTRA_CONF...
start_server() {
    local name=$1 port; shift
    port=$(free_port) || die "no free port on 127.0.0.1"
    SPORT[$name]=$port
    SDATA[$name]=$WORK/$name
    as_pg "$PGSBIN/initdb" -D "${SDATA[$name]}" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
        >"$WORK/initdb-$name.log" 2>&1 || { cat "$WORK/initdb-$name.log" >&2; die "initdb failed"; }
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$WORK'"
        echo "fsync = on"
        echo "synchronous_commit = on"
        echo "shared_buffers = '128MB'"
        echo "max_worker_processes = 16"
        echo "log_min_messages = warning"
        local l
        for l in "$@"; do echo "$l"; done
    } | as_pg tee -a "${SDATA[$name]}/postgresql.conf" >/dev/null
    as_pg "$PGSBIN/pg_ctl" -D "${SDATA[$name]}" -l "$WORK/$name.log" -w -t 120 start >/dev/null ||
        { tail -n 40 "$WORK/$name.log" >&2; die "server $name did not start"; }
    NAMES+=("$name")
}
# sq NAME DB SQL: run SQL on a server, unaligned output
sq() {
    as_pg "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${SPORT[$1]}" -U postgres -d "$2" -c "$3"
}
# CPU ticks of a server (postmaster, its exited children, live children)
ticks_of() { DATA=${SDATA[$1]} server_cpu_ticks; }

start_server router
for ((s = 0; s < MAXS; s++)); do
    start_server "s$s" "shared_preload_libraries = 'workflows'" "workflows.max_workers = 1"
done
sq router postgres "CREATE EXTENSION workflows_router CASCADE" >/dev/null
sq router postgres "CREATE USER MAPPING FOR PUBLIC SERVER workflows_shards" >/dev/null 2>&1 || true

# place partition k on server k % S
place() {
    local S=$1 k srv opts=""
    for ((s = 0; s < MAXS; s++)); do
        for ((k = 0; k < PARTS; k++)); do
            sq "s$s" postgres "DROP DATABASE IF EXISTS wf_p$k WITH (FORCE)" >/dev/null
        done
    done
    for ((k = 0; k < PARTS; k++)); do
        srv=s$((k % S))
        sq "$srv" postgres "CREATE DATABASE wf_p$k" >/dev/null
        sq "$srv" "wf_p$k" "CREATE EXTENSION workflows" >/dev/null
        sq "$srv" "wf_p$k" "CREATE FUNCTION public.bench_steps(event jsonb) RETURNS jsonb
            LANGUAGE plpgsql AS \$\$
            DECLARE n int := COALESCE((event->'payload'->>'steps')::int, 1); r jsonb;
            BEGIN FOR i IN 1..n LOOP r := workflows.step('s', 'SELECT 1'); END LOOP; RETURN r; END \$\$" >/dev/null
        opts="$opts${opts:+, }p$k 'host=127.0.0.1 port=${SPORT[$srv]} dbname=wf_p$k user=postgres'"
    done
    sq router postgres "DROP SERVER IF EXISTS workflows_shards CASCADE" >/dev/null
    sq router postgres "CREATE SERVER workflows_shards FOREIGN DATA WRAPPER plproxy OPTIONS ($opts)" >/dev/null
    sq router postgres "CREATE USER MAPPING FOR PUBLIC SERVER workflows_shards" >/dev/null
    sq router postgres "SELECT workflows.register('bench_steps', 'public.bench_steps(jsonb)')" >/dev/null
}

# instances not yet ended, over every partition (read on the shards)
unfinished() {
    local S=$1 k t=0 n
    for ((k = 0; k < PARTS; k++)); do
        n=$(sq "s$((k % S))" "wf_p$k" "SELECT count(*) FROM workflows.instances WHERE ended_at IS NULL")
        t=$((t + n))
    done
    echo "$t"
}
last_end() {   # epoch of the last instance end, over every partition
    local S=$1 k m=0 e
    for ((k = 0; k < PARTS; k++)); do
        e=$(sq "s$((k % S))" "wf_p$k" "SELECT COALESCE(extract(epoch FROM max(ended_at)), 0) FROM workflows.instances")
        m=$(awk "BEGIN { printf \"%.6f\", ($e > $m) ? $e : $m }")
    done
    echo "$m"
}

# the instances, created through the router with create_batch (1000 a call)
run_w1() {
    local S=$1 tag=$2 n=$3 i t0 c0 c1 secs
    t0=$(date +%s.%N)
    c0=$(( $(ticks_of router) ))
    for ((i = 0; i < n; i += 1000)); do
        sq router postgres "SELECT count(*) FROM workflows.create_batch('bench_steps',
            (SELECT jsonb_agg(jsonb_build_object('id', '$tag-' || g, 'params', jsonb_build_object('steps', $K)))
               FROM generate_series($i + 1, least($i + 1000, $n)) g))" >/dev/null
    done
    c1=$(( $(ticks_of router) ))
    CREATE_SECS=$(calc "$(date +%s.%N) - $t0")
    ROUTER_CREATE_CPU=$(calc "($c1 - $c0) / $CLK_TCK")
    for i in $(seq 1 1200); do
        [[ $(unfinished "$S") == 0 ]] && break
        sleep 0.2
    done
    [[ $(unfinished "$S") == 0 ]] || die "the instances did not complete (S=$S)"
    secs=$(calc "$(last_end "$S") - $t0")
    W1_RATE=$(calc "$n * $K / $secs")
    W1_SECS=$secs
}

RES=$WORK/results.md
{
    echo "# bench/shard.sh"
    echo ""
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), nproc: $(nproc), cpu: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
    echo "postgres: $(sq router postgres 'SELECT version()')"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "workload: $N instances x $K steps (trivial SQL steps), created through the router by create_batch;"
    echo "$PARTS partitions (databases), one executor each, on S shard servers"
    echo ""
    echo "| shard servers | create_batch through the router (s) | router CPU for it (s) | steps/s (create to last end) |"
    echo "|---|---|---|---|"
} >"$RES"

declare -A RATE
for S in $SHARDS; do
    say "== $S shard server(s)"
    place "$S"
    run_w1 "$S" warm 40
    run_w1 "$S" w1 "$N"
    RATE[$S]=$W1_RATE
    note "$N x $K steps in $W1_SECS s = $W1_RATE steps/s; create_batch took $CREATE_SECS s, router CPU $ROUTER_CREATE_CPU s"
    echo "| $S | $CREATE_SECS | $ROUTER_CREATE_CPU | $W1_RATE |" >>"$RES"
done

# ---- the router's overhead per call --------------------------------------------
# status() of existing instances of partition 0: through the router, and
# directly on the shard database, one client, $SECS seconds each.  The same
# ids and the same lookup on both sides; the difference is the router.
say "== router overhead per call"
S1=${SHARDS%% *}
place "$S1"
sq router postgres "CREATE TABLE IF NOT EXISTS bench_ids (n int PRIMARY KEY, id text)" >/dev/null
sq router postgres "TRUNCATE bench_ids" >/dev/null
sq router postgres "INSERT INTO bench_ids SELECT row_number() OVER (), id FROM (
    SELECT 'o-' || g AS id FROM generate_series(1, 4000) g) x
    WHERE workflows.partition_of(id) = 0 LIMIT 500" >/dev/null
NIDS=$(sq router postgres "SELECT count(*) FROM bench_ids")
sq router postgres "SELECT count(*) FROM workflows.create_batch('bench_steps',
    (SELECT jsonb_agg(jsonb_build_object('id', id, 'params', '{\"steps\": 1}')) FROM bench_ids))" >/dev/null
sq "s0" wf_p0 "CREATE TABLE bench_ids (n int PRIMARY KEY, id text)" >/dev/null
sq router postgres "SELECT n || ',' || id FROM bench_ids" |
    as_pg "$PGBIN/psql" -X -q -h 127.0.0.1 -p "${SPORT[s0]}" -U postgres -d wf_p0 -c "COPY bench_ids FROM STDIN (FORMAT csv)"
for i in $(seq 1 300); do [[ $(unfinished "$S1") == 0 ]] && break; sleep 0.2; done
printf '\\set i random(1, %d)\nSELECT workflows.status((SELECT id FROM bench_ids WHERE n = :i));\n' "$NIDS" >"$WORK/status.sql"
[[ $(id -u) -eq 0 ]] && chown "$SERVER_USER": "$WORK/status.sql"
pgb_lat() {   # pgb_lat NAME DB -> "tps avg_latency_ms"
    local out
    out=$(as_pg "$PGBIN/pgbench" -n -h 127.0.0.1 -p "${SPORT[$1]}" -U postgres -c 1 -T "$SECS" \
              -f "$WORK/status.sql" "$2" 2>&1) || { echo "$out" >&2; die "pgbench failed"; }
    echo "$(echo "$out" | awk '/^tps/ { print $3; exit }') $(echo "$out" | awk '/latency average/ { print $4 }')"
}
c0=$(ticks_of router)
read -r TPS_R LAT_R < <(pgb_lat router postgres)
c1=$(ticks_of router)
read -r TPS_D LAT_D < <(pgb_lat s0 wf_p0)
CALLS_R=$(calc "$TPS_R * $SECS")
CPU_R=$(calc "($c1 - $c0) / $CLK_TCK / $CALLS_R * 1000")
OVER=$(calc "$LAT_R - $LAT_D")
note "status() direct: $LAT_D ms ($TPS_D/s); through the router: $LAT_R ms ($TPS_R/s): +$OVER ms a call, router CPU $CPU_R ms a call"

# ---- model ---------------------------------------------------------------------
# T(S) = min(S * r1, K * C / (calls * c)): S shard machines each as fast as
# this one with every partition (r1 = the 1-server rate), a router with C
# cores spending c CPU seconds per routed call, `calls` router calls per
# instance (a create and a status or wait: 2).
R1=${RATE[1]:-${RATE[$S1]}}
NPROC=$(nproc)
{
    echo ""
    echo "router overhead, status() of an instance, one client, ${SECS} s each:"
    echo ""
    echo "| path | latency (ms) | calls/s |"
    echo "|---|---|---|"
    echo "| direct to the shard database | $LAT_D | $TPS_D |"
    echo "| through the router (PL/Proxy) | $LAT_R | $TPS_R |"
    echo ""
    echo "overhead per call: +$OVER ms latency, $CPU_R ms of router CPU"
    echo ""
    echo "model: T(S) = min(S x r1, K x C / (2 x c)), r1 = $R1 steps/s (one shard server), K = $K steps,"
    echo "c = $CPU_R ms router CPU per call, 2 calls per instance, router with C = $NPROC cores:"
    echo ""
    echo "| shard servers | shard-bound steps/s | router-bound steps/s | model steps/s |"
    echo "|---|---|---|---|"
    for S in 1 2 4 8 16 32; do
        sb=$(calc "$S * $R1")
        rb=$(calc "$K * $NPROC / (2 * $CPU_R / 1000)")
        echo "| $S | $sb | $rb | $(calc "$sb < $rb ? $sb : $rb") |"
    done
} >>"$RES"

OUT=$BENCH_DIR/results/shard-latest
mkdir -p "$OUT"
cp "$RES" "$OUT/results.md"
say ""
cat "$RES"
say ""
say "bench: results in ${OUT#"$REPO"/}/results.md"

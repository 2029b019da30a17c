#!/usr/bin/env bash
# bench/http.sh -- HTTP steps: many calls in flight, and the cost per call.
#
#   bench/http.sh                 1,000 instances, one call each, to a
#                                 loopback server that answers after 1 s;
#                                 then 2,000 calls answered at once
#   options: --instances N  --delay MS   the slow run (default 1000 x 1000 ms)
#            --fast N                    the fast run's instances (default 2000)
#            --smoke                     100 x 200 ms and 200 fast: a check, not a figure
#            --no-install                use the extension installed for PG_CONFIG
#            --keep                      keep the temporary directory
#
# Starts its own server (temp dir, a free port on 127.0.0.1, fsync = on,
# synchronous_commit = on, 2 executors) and test/http_server.pl on
# 127.0.0.1.  Each instance is one workflows.http() step.  Reports, per run:
# the wall time from the first create to the last completion, the calls in
# flight at the peak (workflows.executors), the server's CPU per call, and a
# 5-second pgbench (4 clients, tpcb-like) ceiling of the same server.
# Results: stdout and bench/results/http-latest/results.md; bench/README.md
# ("HTTP steps") explains them.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/${PG_MAJOR:-15}/bin/pg_config}
PGBIN=${PGBIN:-$("$PG_CONFIG" --bindir)}
export LANG=C.UTF-8 LC_ALL=C.UTF-8
unset PGHOST PGHOSTADDR PGPORT PGDATABASE PGUSER PGSERVICE PGOPTIONS PGDATA || true
export PGOPTIONS='-c client_min_messages=warning'

N=1000
DELAY=1000
FAST=2000
INSTALL=1
KEEP=0
usage() { sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while (( $# )); do
    case $1 in
        --instances) N=$2; shift ;;
        --delay) DELAY=$2; shift ;;
        --fast) FAST=$2; shift ;;
        --smoke) N=100; DELAY=200; FAST=200 ;;
        --no-install) INSTALL=0 ;;
        --keep) KEEP=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench/http.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/wf-http.XXXXXX")
chmod 755 "$WORK"
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
[[ $(id -u) -eq 0 ]] && chown "$SERVER_USER": "$WORK"

HTTP_PID=""
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    [[ -n $HTTP_PID ]] && kill "$HTTP_PID" 2>/dev/null
    server_stop
    if (( KEEP )); then say "bench: kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if (( INSTALL )); then
    private_install "$REPO"
fi
server_init "workflows.max_workers = 2" "workflows.http_allowed_hosts = '127.0.0.1'"
DB=postgres
server_start
DB_READY=1
q_open

perl "$REPO/test/http_server.pl" "$WORK/http.port" "$WORK/http.log" >"$WORK/http.out" 2>&1 &
HTTP_PID=$!
for _ in $(seq 1 100); do [[ -s $WORK/http.port ]] && break; sleep 0.1; done
HPORT=$(<"$WORK/http.port")

q "CREATE EXTENSION workflows" >/dev/null
wait_executors 2
q "CREATE FUNCTION one_call(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS \$\$
   BEGIN RETURN workflows.http('call', jsonb_build_object('url', event->'payload'->>'url')); END \$\$" >/dev/null
q "SELECT workflows.register('one_call', 'one_call(jsonb)')" >/dev/null

# run NAME COUNT URL: create COUNT instances at once, wait for all
run() {
    local name=$1 count=$2 url=$3 t0 t1 peak=0 c ticks0 ticks1 left
    ticks0=$(server_ticks_total)
    t0=$(date +%s%N)
    q "SELECT workflows.create_batch('one_call',
         (SELECT jsonb_agg(jsonb_build_object('id', '$name-' || g, 'params', jsonb_build_object('url', '$url')))
            FROM generate_series(1, $count) g))" >/dev/null
    while :; do
        c=$(q "SELECT COALESCE(sum(calls), 0) FROM workflows.executors")
        (( c > peak )) && peak=$c
        left=$(q "SELECT count(*) FROM workflows.instances WHERE id LIKE '$name-%' AND status NOT IN ('complete', 'errored')")
        (( left == 0 )) && break
        sleep 0.05
    done
    t1=$(date +%s%N)
    ticks1=$(server_ticks_total)
    local wall ok cpu
    wall=$(calc "($t1 - $t0) / 1e9")
    ok=$(q "SELECT count(*) FROM workflows.instances WHERE id LIKE '$name-%' AND status = 'complete'")
    cpu=$(calc "($ticks1 - $ticks0) / $CLK_TCK * 1000 / $count")
    out "$(printf '| %s | %d | %s | %.2f s | %d | %s | %.3f ms |' "$name" "$count" "$url" "$wall" "$peak" "$ok" "$cpu")"
}

# the results, on stdout and in results.md (no pipe: q's session must stay ours)
: >"$WORK/results.md"
out() { say "$*"; say "$*" >>"$WORK/results.md"; }
{
    out "# HTTP steps, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores"
    out ""
    out "| run | instances | URL | create to last complete | peak in flight | complete | server CPU per call |"
    out "|---|---|---|---|---|---|---|"
    run slow "$N" "http://127.0.0.1:$HPORT/delay?ms=$DELAY"
    run fast "$FAST" "http://127.0.0.1:$HPORT/echo"
    out ""
    out "Serial, the slow run would take $(calc "$N * $DELAY / 1000") s."
    q_close
    as_pg "$PGBIN/pgbench" -i -q -s 10 -h 127.0.0.1 -p "$PORT" -U postgres postgres >/dev/null 2>&1
    tps=$(as_pg "$PGBIN/pgbench" -c 4 -j 4 -T 5 -h 127.0.0.1 -p "$PORT" -U postgres postgres 2>/dev/null |
          awk '/^tps/ { printf "%.0f", $3 }')
    out "pgbench ceiling of the same server (4 clients, tpcb-like, 5 s): $tps TPS."
}

mkdir -p "$BENCH_DIR/results/http-latest"
cp "$WORK/results.md" "$BENCH_DIR/results/http-latest/results.md"

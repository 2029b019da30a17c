#!/usr/bin/env bash
# bench/memory.sh -- does an executor's memory stay flat?
#
#   bash bench/memory.sh            (as root or as an ordinary user; uses the
#                                    installed extension of PG_CONFIG: run
#                                    `make install` first)
#
# Two workloads on a throwaway server (loopback only, removed on exit),
# sampling every executor's own memory (RssAnon of /proc/<pid>/status: its
# heap, not the shared buffers) once a second:
#
#   A  many steps: MEM_A_INSTANCES instances x MEM_A_STEPS steps (default
#      10,000 x 10 = 100,000 steps), 2 executors.  Reports each executor's
#      private memory at the first sample and at the end.
#   B  big outputs: one instance of MEM_B_STEPS steps (default 300) each
#      returning MEM_B_KB kB (default 100), i.e. 30 MB of outputs, twice:
#      with the default workflows.memo_cache_size (16 MB: outputs beyond it
#      are read back when a replay needs them) and with the cache unbounded
#      (workflows.memo_cache_size = 2047MB: what 0.1 did).  Reports the
#      executor's peak private memory and the instance's wall time.
#
# Why not a 10,000-step instance with 100 kB outputs: replay is quadratic in
# the number of steps (every new step replays the ones before it), so such
# an instance takes hours whatever the cache does; the bound is measured on
# the largest instance that finishes in a minute, and the cost of reading
# outputs back is visible in B's wall time.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/${PG_MAJOR:-15}/bin/pg_config}
PGBIN=$("$PG_CONFIG" --bindir)
export LANG=C.UTF-8 LC_ALL=C.UTF-8
unset PGHOST PGHOSTADDR PGPORT PGDATABASE PGUSER PGSERVICE PGOPTIONS PGDATA || true
export PGOPTIONS='-c client_min_messages=warning'
MEM_A_INSTANCES=${MEM_A_INSTANCES:-10000}
MEM_A_STEPS=${MEM_A_STEPS:-10}
MEM_B_STEPS=${MEM_B_STEPS:-300}
MEM_B_KB=${MEM_B_KB:-100}
DB=postgres

# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

[[ -f $("$PG_CONFIG" --pkglibdir)/workflows.so ]] ||
    die "the extension is not installed for $PG_CONFIG (make install first)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/workflows-memory.XXXXXX")
[[ $(id -u) -eq 0 ]] && chown "$SERVER_USER": "$WORK"
cleanup() { server_stop; rm -rf "$WORK"; }
trap cleanup EXIT

# the process's own memory of every executor (RssAnon: its heap; shared
# buffers are shared memory, which a process touching them alone would
# otherwise see counted as "private"), as "pid kB" lines
executor_memory() {
    local pid
    for pid in $(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'workflows executor'"); do
        [[ -r /proc/$pid/status ]] || continue
        awk -v pid="$pid" '/^RssAnon:/ { print pid, $2 }' "/proc/$pid/status"
    done
}

# sample until SQL condition $1 is true; samples go to file $2
sample_until() {
    local cond=$1 out=$2
    : >"$out"
    while [[ $(q "SELECT (SELECT $cond)::int") != 1 ]]; do
        executor_memory >>"$out"
        sleep 1
    done
    executor_memory >>"$out"
}

server_init "workflows.max_workers = 2"
server_start
q_open
q "CREATE EXTENSION workflows" >/dev/null
q "CREATE FUNCTION mem_steps(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS \$\$
   DECLARE n int := (event->'payload'->>'steps')::int; kb int := (event->'payload'->>'kb')::int;
           total bigint := 0;
   BEGIN
       FOR i IN 1..n LOOP
           total := total + length(workflows.step('s', 'SELECT jsonb_build_object(''i'', \$1::int, ''pad'', repeat(''x'', \$2::int * 1024))',
                                                   jsonb_build_array(i, kb))->>'pad');
       END LOOP;
       RETURN to_jsonb(total);
   END \$\$" >/dev/null
q "SELECT workflows.register('mem', 'mem_steps(jsonb)')" >/dev/null
wait_executors 2

say "== A: $MEM_A_INSTANCES instances x $MEM_A_STEPS steps"
t0=$(date +%s.%N)
q "SELECT count(*) FROM workflows.create_batch('mem',
     (SELECT jsonb_agg(jsonb_build_object('params', jsonb_build_object('steps', $MEM_A_STEPS, 'kb', 0)))
        FROM generate_series(1, $MEM_A_INSTANCES)))" >/dev/null
sample_until "count(*) = $MEM_A_INSTANCES FROM workflows.instances WHERE status = 'complete'" "$WORK/a.txt"
t1=$(date +%s.%N)
say "   $(( MEM_A_INSTANCES * MEM_A_STEPS )) steps in $(calc "$t1 - $t0") s"
# each executor's samples, in order: the first, after 25%, 50% and 75% of
# the run, and the last (flat means: no growth after the caches warmed up)
awk '{ n[$1]++; v[$1, n[$1]] = $2 }
     END { for (p in n) printf "   executor %s: RssAnon (kB) at 0/25/50/75/100%% of the run: %d %d %d %d %d\n", p,
               v[p, 1], v[p, int(n[p] * 0.25) + 1], v[p, int(n[p] * 0.5) + 1], v[p, int(n[p] * 0.75) + 1], v[p, n[p]] }' \
    "$WORK/a.txt"
q "DELETE FROM workflows.instances" >/dev/null

for budget in default 2047MB; do
    if [[ $budget == default ]]; then
        q "ALTER SYSTEM RESET workflows.memo_cache_size" >/dev/null
    else
        q "ALTER SYSTEM SET workflows.memo_cache_size = '$budget'" >/dev/null
    fi
    q "SELECT pg_reload_conf()" >/dev/null
    sleep 1
    say "== B: one instance, $MEM_B_STEPS steps x $MEM_B_KB kB outputs, memo_cache_size $budget ($(q "SHOW workflows.memo_cache_size"))"
    t0=$(date +%s.%N)
    q "SELECT workflows.create('mem', '{\"steps\": $MEM_B_STEPS, \"kb\": $MEM_B_KB}', 'big-$budget')" >/dev/null
    sample_until "status = 'complete' FROM workflows.instances WHERE id = 'big-$budget'" "$WORK/b.txt"
    t1=$(date +%s.%N)
    [[ $(q "SELECT output FROM workflows.instances WHERE id = 'big-$budget'") == $(( MEM_B_STEPS * MEM_B_KB * 1024 )) ]] ||
        die "B: wrong output"
    say "   $(calc "$t1 - $t0") s; peak executor RssAnon $(sort -k2 -n "$WORK/b.txt" | tail -n 1 | cut -d' ' -f2) kB"
done

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
#   B  big outputs: one instance of MEM_B_STEPS steps (default 10,000) each
#      returning MEM_B_KB kB (default 100), i.e. 1 GB of outputs, once per
#      budget in MEM_B_BUDGETS (default: "default 2047MB"): the default
#      workflows.memo_cache_size (16 MB: outputs beyond it are read back
#      when a replay needs them) and the cache unbounded (2047MB: what 0.1
#      did).  The outputs are incompressible (MEM_B_PAD=random, md5 text) so
#      that what is stored is what a replay holds; MEM_B_PAD=repeat pads
#      with one repeated letter, which TOAST compresses ~100:1.  Reports the
#      executor's memory before the instance starts, at its peak and after
#      it completes, and the instance's wall time.  Steps run in place make
#      such an instance linear (one replay per run of steps, not per step),
#      so 10,000 steps take minutes, not hours; the outputs need about
#      MEM_B_STEPS x MEM_B_KB of disk per budget (dropped between budgets).
#
# Memory is reported per executor as RssAnon (/proc/<pid>/status: its
# heap) and private (Private_Clean + Private_Dirty of /proc/<pid>/smaps_rollup:
# pages no other process maps, which includes shared buffers only this
# process touched).

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/${PG_MAJOR:-15}/bin/pg_config}
PGBIN=$("$PG_CONFIG" --bindir)
export LANG=C.UTF-8 LC_ALL=C.UTF-8
unset PGHOST PGHOSTADDR PGPORT PGDATABASE PGUSER PGSERVICE PGOPTIONS PGDATA || true
export PGOPTIONS='-c client_min_messages=warning'
MEM_A_INSTANCES=${MEM_A_INSTANCES:-10000}
MEM_A_STEPS=${MEM_A_STEPS:-10}
MEM_B_STEPS=${MEM_B_STEPS:-10000}
MEM_B_KB=${MEM_B_KB:-100}
MEM_B_PAD=${MEM_B_PAD:-random}
MEM_B_BUDGETS=${MEM_B_BUDGETS:-default 2047MB}
[[ $MEM_B_PAD == random || $MEM_B_PAD == repeat ]] || { echo "MEM_B_PAD must be random or repeat" >&2; exit 2; }
DB=postgres

# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

[[ -f $("$PG_CONFIG" --pkglibdir)/workflows.so ]] ||
    die "the extension is not installed for $PG_CONFIG (make install first)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/workflows-memory.XXXXXX")
[[ $(id -u) -eq 0 ]] && chown "$SERVER_USER": "$WORK"
cleanup() { server_stop; rm -rf "$WORK"; }
trap cleanup EXIT

# the process's own memory of every executor, as "pid RssAnon-kB private-kB"
# lines (RssAnon: its heap; private: pages no other process maps, shared
# buffers it alone touched included)
executor_memory() {
    local pid anon priv
    for pid in $(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'workflows executor'"); do
        [[ -r /proc/$pid/status ]] || continue
        anon=$(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || continue
        priv=$(awk '/^Private_(Clean|Dirty):/ { s += $2 } END { print s + 0 }' \
                   "/proc/$pid/smaps_rollup" 2>/dev/null) || priv=0
        [[ -n $anon ]] && echo "$pid $anon $priv"
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
           random_pad boolean := coalesce((event->'payload'->>'random')::boolean, false);
           total bigint := 0;
   BEGIN
       FOR i IN 1..n LOOP
           IF random_pad AND kb > 0 THEN
               -- md5 text: TOAST cannot compress it, stored size = held size
               total := total + length(workflows.step('s', 'SELECT jsonb_build_object(''i'', \$1::int, ''pad'',
                            (SELECT string_agg(md5(random()::text || g), '''') FROM generate_series(1, \$2::int * 32) g))',
                                                   jsonb_build_array(i, kb))->>'pad');
           ELSE
               total := total + length(workflows.step('s', 'SELECT jsonb_build_object(''i'', \$1::int, ''pad'', repeat(''x'', \$2::int * 1024))',
                                                   jsonb_build_array(i, kb))->>'pad');
           END IF;
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

for budget in $MEM_B_BUDGETS; do
    if [[ $budget == default ]]; then
        q "ALTER SYSTEM RESET workflows.memo_cache_size" >/dev/null
    else
        q "ALTER SYSTEM SET workflows.memo_cache_size = '$budget'" >/dev/null
    fi
    q "SELECT pg_reload_conf()" >/dev/null
    sleep 1
    say "== B: one instance, $MEM_B_STEPS steps x $MEM_B_KB kB outputs ($MEM_B_PAD), memo_cache_size $budget ($(q "SHOW workflows.memo_cache_size"))"
    executor_memory >"$WORK/b0.txt"
    t0=$(date +%s.%N)
    q "SELECT workflows.create('mem', '{\"steps\": $MEM_B_STEPS, \"kb\": $MEM_B_KB, \"random\": $([[ $MEM_B_PAD == random ]] && echo true || echo false)}', 'big-$budget')" >/dev/null
    sample_until "status = 'complete' FROM workflows.instances WHERE id = 'big-$budget'" "$WORK/b.txt"
    t1=$(date +%s.%N)
    sleep 1
    executor_memory >"$WORK/b1.txt"
    [[ $(q "SELECT output FROM workflows.instances WHERE id = 'big-$budget'") == $(( MEM_B_STEPS * MEM_B_KB * 1024 )) ]] ||
        die "B: wrong output"
    say "   $(calc "$t1 - $t0") s; stored outputs $(q "SELECT pg_size_pretty(sum(pg_column_size(output))) FROM workflows.steps WHERE instance_id = 'big-$budget'")"
    # per executor: before the instance, the peak while it ran, after it
    # completed (the executor that ran it is the one whose peak grew)
    awk 'FNR == 1 { f++ }
         f == 1 { a0[$1] = $2; p0[$1] = $3 }
         f == 2 { if ($2 > am[$1]) am[$1] = $2; if ($3 > pm[$1]) pm[$1] = $3 }
         f == 3 { a1[$1] = $2; p1[$1] = $3 }
         END { for (p in am) printf "   executor %s: RssAnon kB before/peak/after %d / %d / %d; private kB %d / %d / %d\n",
                   p, a0[p], am[p], a1[p], p0[p], pm[p], p1[p] }' \
        "$WORK/b0.txt" "$WORK/b.txt" "$WORK/b1.txt"
    q "DELETE FROM workflows.instances WHERE id = 'big-$budget'" >/dev/null
    q "VACUUM workflows.steps" >/dev/null
done

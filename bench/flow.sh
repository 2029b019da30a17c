#!/usr/bin/env bash
# bench/flow.sh -- what flow control costs (issue 14).
#
#   bash bench/flow.sh               (uses the extension installed for
#                                     PG_CONFIG: run `make install` first)
#   FLOW_SCALE=0.01 bash bench/flow.sh   a tiny run that proves the script works
#   FLOW_ONLY=throughput bash bench/flow.sh   F1-F3 only
#   FLOW_REPEAT=5 FLOW_ONLY=throughput bash bench/flow.sh   F1 and F2 five times each
#
# On a throwaway server (loopback only, removed on exit), 4 executors:
#
#   F1 none       N1 instances x 10 steps (default 1,000 x 10), no flow control
#   F2 unbound    the same with {"concurrency": {"limit": 100000}}: the cost of
#                 the bookkeeping alone (issue: within 10% of F1)
#   F3 binding    the same with {"concurrency": {"limit": 2}}: 2 at a time
#   F4 fairness   N4 instances (default 10,000) of key "a" under a per-key
#                 limit of 2, then 10 of key "b": seconds until b's 10 are
#                 complete, and how many of a's were complete by then
#   F5 held back  N5 instances (default 100,000) held back behind one that
#                 never finishes (limit 1): the time to park them, then the
#                 executors' CPU over 30 s (from /proc/<pid>/stat) while they
#                 are held back -- it must be ~0: held-back rows are not
#                 polled -- and the latency from freeing the slot to the next
#                 start
#
# Prints one line per workload; the lead records the figures in
# bench/README.md from a run on an idle machine.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/${PG_MAJOR:-15}/bin/pg_config}
PGBIN=$("$PG_CONFIG" --bindir)
export LANG=C.UTF-8 LC_ALL=C.UTF-8
unset PGHOST PGHOSTADDR PGPORT PGDATABASE PGUSER PGSERVICE PGOPTIONS PGDATA || true
export PGOPTIONS='-c client_min_messages=warning'
SCALE=${FLOW_SCALE:-1}
N1=$(awk -v s="$SCALE" 'BEGIN { n = int(1000 * s); print (n < 10 ? 10 : n) }')
N4=$(awk -v s="$SCALE" 'BEGIN { n = int(10000 * s); print (n < 20 ? 20 : n) }')
N5=$(awk -v s="$SCALE" 'BEGIN { n = int(100000 * s); print (n < 100 ? 100 : n) }')
IDLE_SECS=${FLOW_IDLE_SECS:-$(awk -v s="$SCALE" 'BEGIN { print (s < 1 ? 3 : 30) }')}
DB=postgres

# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

[[ -f $("$PG_CONFIG" --pkglibdir)/workflows.so ]] ||
    die "the extension is not installed for $PG_CONFIG (make install first)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/workflows-flow.XXXXXX")
[[ $(id -u) -eq 0 ]] && chown "$SERVER_USER": "$WORK"
cleanup() { server_stop; rm -rf "$WORK"; }
trap cleanup EXIT

now() { date +%s.%N; }
secs() { calc "$2 - $1"; }
executor_ticks() {
    local pid t=0
    for pid in $(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'workflows executor'"); do
        t=$(( t + $(proc_cpu_ticks "$pid") ))
    done
    echo "$t"
}
wait_sql() {   # wait until SQL condition $1 is true (poll 50 ms)
    while [[ $(q "SELECT ($1)::int") != 1 ]]; do sleep 0.05; done
}

server_init "workflows.max_workers = 4"
server_start
q_open
q "CREATE EXTENSION workflows" >/dev/null
wait_executors 4
q "CREATE TABLE gate (open boolean)" >/dev/null
q "CREATE FUNCTION ten(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS \$\$
   BEGIN
     FOR i IN 1..10 LOOP PERFORM workflows.step('s', 'SELECT 1'); END LOOP;
     RETURN '1';
   END \$\$" >/dev/null
q "CREATE FUNCTION blocker(a jsonb) RETURNS jsonb LANGUAGE plpgsql AS \$\$
   BEGIN
     WHILE NOT EXISTS (SELECT 1 FROM gate WHERE open) LOOP PERFORM pg_sleep(0.05); END LOOP;
     RETURN '1';
   END \$\$" >/dev/null
q "CREATE FUNCTION held(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS \$\$
   BEGIN
     IF event->'payload' ? 'block' THEN
       PERFORM workflows.step('block', 'blocker(jsonb)'::regprocedure, '{}');
     END IF;
     PERFORM workflows.step('s', 'SELECT clock_timestamp()');
     RETURN '1';
   END \$\$" >/dev/null

# F1-F3: N1 x 10 steps, with the given flow control (or none).  Each run
# starts after VACUUM ANALYZE and a CHECKPOINT, so that no run pays for the
# autovacuum or the checkpoint of the one before it; its time is the
# server's own, from the create_batch() transaction to the last instance's
# end (ended_at), not the 50 ms poll that waits for it.
throughput() {
    local name=$1 config=$2 secs
    q "SELECT workflows.register('$name', 'ten(jsonb)')" >/dev/null
    [[ $config == none ]] || q "SELECT workflows.set_flow_control('$name', '$config')" >/dev/null
    q "VACUUM ANALYZE" >/dev/null
    q "CHECKPOINT" >/dev/null
    q "SELECT count(*) FROM workflows.create_batch('$name',
         (SELECT jsonb_agg(jsonb_build_object('params', jsonb_build_object('i', g)))
            FROM generate_series(1, $N1) g))" >/dev/null
    wait_sql "SELECT count(*) = $N1 FROM workflows.instances WHERE workflow = '$name' AND status = 'complete'"
    secs=$(q "SELECT extract(epoch FROM max(ended_at) - min(created_at))
                FROM workflows.instances WHERE workflow = '$name'")
    printf '%-12s %6d x 10 steps  %8.2f s  %8.0f steps/s\n' "${name%%+*}" "$N1" \
        "$secs" "$(calc "$N1 * 10 / $secs")"
}
say "flow control benchmark (scale $SCALE; 4 executors)"
# FLOW_REPEAT=N: F1 and F2 N times each, in alternating order (F1 F2, F2
# F1, ...), then F3 once -- for a median and a spread of the F2/F1 ratio
for ((r = 1; r <= ${FLOW_REPEAT:-1}; r++)); do
    if (( r % 2 )); then
        throughput "f1_none+$r" none
        throughput "f2_unbound+$r" '{"concurrency": {"limit": 100000}}'
    else
        throughput "f2_unbound+$r" '{"concurrency": {"limit": 100000}}'
        throughput "f1_none+$r" none
    fi
done
throughput f3_binding '{"concurrency": {"limit": 2}}'
# FLOW_ONLY=throughput: F1-F3 only (to repeat them without F5's long parking)
[[ ${FLOW_ONLY:-} == throughput ]] && exit 0

# F4: fairness
q "SELECT workflows.register('f4', 'ten(jsonb)')" >/dev/null
q "SELECT workflows.set_flow_control('f4', '{\"concurrency\": {\"limit\": 2, \"key\": \"\$.k\"}}')" >/dev/null
q "SELECT count(*) FROM workflows.create_batch('f4',
     (SELECT jsonb_agg(jsonb_build_object('params', '{\"k\": \"a\"}'::jsonb)) FROM generate_series(1, $N4) g))" >/dev/null
t0=$(now)
q "SELECT count(*) FROM workflows.create_batch('f4',
     (SELECT jsonb_agg(jsonb_build_object('params', '{\"k\": \"b\"}'::jsonb)) FROM generate_series(1, 10) g))" >/dev/null
wait_sql "SELECT count(*) = 10 FROM workflows.instances WHERE workflow = 'f4' AND params->>'k' = 'b' AND status = 'complete'"
t1=$(now)
adone=$(q "SELECT count(*) FROM workflows.instances WHERE workflow = 'f4' AND params->>'k' = 'a' AND status = 'complete'")
printf '%-12s key b (10) done in %.2f s; key a: %d of %d done by then\n' f4_fairness "$(secs "$t0" "$t1")" "$adone" "$N4"
# stop what is left of key a (an instance may finish meanwhile: skip it)
q "DO \$\$ DECLARE r record; BEGIN
     FOR r IN SELECT id FROM workflows.instances
               WHERE workflow = 'f4' AND status NOT IN ('complete', 'terminated', 'errored') LOOP
       BEGIN PERFORM workflows.terminate(r.id); EXCEPTION WHEN OTHERS THEN NULL; END;
     END LOOP; END \$\$" >/dev/null

# F5: held back behind one that blocks
q "SELECT workflows.register('f5', 'held(jsonb)')" >/dev/null
q "SELECT workflows.set_flow_control('f5', '{\"concurrency\": {\"limit\": 1}}')" >/dev/null
q "SELECT workflows.create('f5', '{\"block\": true}', 'f5-blocker')" >/dev/null
wait_sql "SELECT state = 'holds' FROM workflows.flow_members WHERE instance_id = 'f5-blocker'"
t0=$(now)
q "SELECT count(*) FROM workflows.create_batch('f5',
     (SELECT jsonb_agg(jsonb_build_object('id', 'f5-' || g)) FROM generate_series(1, $N5) g))" >/dev/null
wait_sql "SELECT count(*) = $N5 FROM workflows.flow_members WHERE workflow = 'f5' AND state = 'held'"
t1=$(now)
printf '%-12s %d held back in %.2f s (each claimed once, then out of the runnable index)\n' \
    f5_park "$N5" "$(secs "$t0" "$t1")"
c0=$(executor_ticks); sleep "$IDLE_SECS"; c1=$(executor_ticks)
printf '%-12s executors used %.2f s of CPU in %d s with %d held back (the blocker holds one)\n' \
    f5_idle "$(calc "($c1 - $c0) / $CLK_TCK")" "$IDLE_SECS" "$N5"
q "INSERT INTO gate VALUES (true)" >/dev/null
wait_sql "SELECT count(*) >= 1 FROM workflows.steps s WHERE s.instance_id LIKE 'f5-%' AND s.instance_id <> 'f5-blocker' AND s.key = 's'"
lat=$(q "SELECT extract(epoch FROM (SELECT min(s.started_at) FROM workflows.steps s WHERE s.instance_id LIKE 'f5-%' AND s.instance_id <> 'f5-blocker')
               - (SELECT ended_at FROM workflows.instances WHERE id = 'f5-blocker'))")
printf '%-12s the first held-back instance started %.3f s after the blocker ended\n' f5_wake "$lat"

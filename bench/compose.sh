#!/usr/bin/env bash
# bench/compose.sh -- what composition costs (issue 15).
#
#   bash bench/compose.sh              (as root or as an ordinary user; uses
#                                       the installed extension of PG_CONFIG:
#                                       run `make install` first)
#   COMPOSE_N=100 COMPOSE_PARENTS=10 COMPOSE_IDLE_S=2 bash bench/compose.sh
#                                      (a tiny run: proves the script works)
#
# Three measurements on a throwaway server (loopback only, fsync on,
# removed on exit), 2 executors:
#
#   A  fan-out vs independent instances: the wall time of creating and
#      running COMPOSE_N (default 10,000) independent one-step instances
#      (create_batch), then of one parent that maps the same one-step
#      workflow over COMPOSE_N inputs (created, run, awaited, outputs
#      gathered).  Goal: map <= 1.3 x independent.
#   B  parent wake-up latency: COMPOSE_LATENCY (default 200) parents each
#      call() a one-step child, one at a time; the latency of one is the
#      time from the commit that ends the child (its ended_at) to the
#      parent's look at it (the await step's ended_at).  p50, p99, max.
#      Goal: p99 <= 5 ms on an idle machine.
#   C  waiting parents cost nothing: COMPOSE_PARENTS (default 1,000) parents
#      each awaiting COMPOSE_KIDS (default 10) children that sleep an hour;
#      once all wait, the server's processes and the executors' CPU over
#      COMPOSE_IDLE_S (default 30) seconds, from /proc.  Goal: ~0 % CPU, no
#      process per waiting instance.
#
# bench/README.md keeps the figures of a run on an idle machine.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/${PG_MAJOR:-15}/bin/pg_config}
PGBIN=$("$PG_CONFIG" --bindir)
export LANG=C.UTF-8 LC_ALL=C.UTF-8
unset PGHOST PGHOSTADDR PGPORT PGDATABASE PGUSER PGSERVICE PGOPTIONS PGDATA || true
export PGOPTIONS='-c client_min_messages=warning'
COMPOSE_N=${COMPOSE_N:-10000}
COMPOSE_LATENCY=${COMPOSE_LATENCY:-200}
COMPOSE_PARENTS=${COMPOSE_PARENTS:-1000}
COMPOSE_KIDS=${COMPOSE_KIDS:-10}
COMPOSE_IDLE_S=${COMPOSE_IDLE_S:-30}
DB=postgres

# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

[[ -f $("$PG_CONFIG" --pkglibdir)/workflows.so ]] ||
    die "the extension is not installed for $PG_CONFIG (make install first)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/workflows-compose.XXXXXX")
[[ $(id -u) -eq 0 ]] && chown "$SERVER_USER": "$WORK"
cleanup() { server_stop; rm -rf "$WORK"; }
trap cleanup EXIT

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# wait until SQL condition $1 holds (polled every 10 ms)
wait_for() {
    while [[ $(q "SELECT ($1)::int") != 1 ]]; do sleep 0.01; done
}

# CPU ticks of the executors so far (utime + stime of /proc/<pid>/stat)
executor_ticks() {
    local pid t=0 rest line
    for pid in $(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'workflows executor'"); do
        { read -r line <"/proc/$pid/stat"; } 2>/dev/null || continue
        rest=${line##*) }
        # shellcheck disable=SC2086
        set -- $rest
        t=$(( t + ${12} + ${13} ))
    done
    echo "$t"
}

server_init "workflows.max_workers = 2" "workflows.notify = off"
server_start
q_open
q "CREATE EXTENSION workflows" >/dev/null
wait_executors 2
q "CREATE FUNCTION one_step(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS \$\$
   BEGIN
       RETURN workflows.step('work', 'SELECT (\$1::int * 2)::text::jsonb',
                             jsonb_build_array(event->'payload'->>'n'));
   END \$\$;
   SELECT workflows.register('one', 'one_step(jsonb)');
   CREATE FUNCTION fan_out(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS \$\$
   BEGIN
       RETURN jsonb_array_length(workflows.map('all', 'one', event->'payload'->'inputs'));
   END \$\$;
   SELECT workflows.register('fan-out', 'fan_out(jsonb)');
   CREATE FUNCTION call_one(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS \$\$
   BEGIN
       RETURN workflows.call('child', 'one', '{\"n\": 1}');
   END \$\$;
   SELECT workflows.register('call-one', 'call_one(jsonb)');
   CREATE FUNCTION sleeper(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS \$\$
   BEGIN
       PERFORM workflows.sleep('nap', '1 hour');
       RETURN NULL;
   END \$\$;
   SELECT workflows.register('sleeper', 'sleeper(jsonb)');
   CREATE FUNCTION waiting_parent(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS \$\$
   BEGIN
       RETURN workflows.map('kids', 'sleeper',
           (SELECT jsonb_agg('{}'::jsonb) FROM generate_series(1, (event->'payload'->>'kids')::int)));
   END \$\$;
   SELECT workflows.register('waiting-parent', 'waiting_parent(jsonb)');" >/dev/null

say "compose bench: N=$COMPOSE_N, latency samples=$COMPOSE_LATENCY, parents=$COMPOSE_PARENTS x $COMPOSE_KIDS, idle ${COMPOSE_IDLE_S}s"

# ---- A: map vs independent instances ----
t0=$(now_ms)
q "SELECT count(*) FROM workflows.create_batch('one',
       (SELECT jsonb_agg(jsonb_build_object('id', 'ind-' || i, 'params', jsonb_build_object('n', i)))
          FROM generate_series(1, $COMPOSE_N) i))" >/dev/null
wait_for "SELECT count(*) = $COMPOSE_N FROM workflows.instances WHERE id LIKE 'ind-%' AND status = 'complete'"
t_ind=$(( $(now_ms) - t0 ))

t0=$(now_ms)
q "SELECT workflows.create('fan-out',
       jsonb_build_object('inputs', (SELECT jsonb_agg(jsonb_build_object('n', i))
                                       FROM generate_series(1, $COMPOSE_N) i)), 'fan')" >/dev/null
wait_for "SELECT status = 'complete' FROM workflows.instances WHERE id = 'fan'"
t_map=$(( $(now_ms) - t0 ))
[[ $(q "SELECT output FROM workflows.instances WHERE id = 'fan'") == "$COMPOSE_N" ]] ||
    die "the map did not return $COMPOSE_N outputs"
ratio=$(awk -v a="$t_map" -v b="$t_ind" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
say "A  $COMPOSE_N independent one-step instances: ${t_ind} ms; map over $COMPOSE_N inputs: ${t_map} ms; ratio ${ratio} (goal <= 1.3)"

# ---- B: parent wake-up latency after its child ends ----
for i in $(seq 1 "$COMPOSE_LATENCY"); do
    q "SELECT workflows.create('call-one', '{}', 'lat-$i')" >/dev/null
    wait_for "SELECT status = 'complete' FROM workflows.instances WHERE id = 'lat-$i'"
done
say "B  wake-up after the child's end (ms): $(q "
    SELECT format('p50 %s, p99 %s, max %s (goal p99 <= 5)',
                  round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2),
                  round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 2),
                  round(max(ms)::numeric, 2))
      FROM (SELECT extract(epoch FROM s.ended_at - c.ended_at) * 1000 AS ms
              FROM workflows.instances p
              JOIN workflows.steps s ON s.instance_id = p.id AND s.key = 'child/await'
              JOIN workflows.instances c ON c.id = p.id || '/child'
             WHERE p.id LIKE 'lat-%') x")"

# ---- C: idle cost of waiting parents ----
q "SELECT count(*) FROM workflows.create_batch('waiting-parent',
       (SELECT jsonb_agg(jsonb_build_object('id', 'wait-' || i,
                                            'params', jsonb_build_object('kids', $COMPOSE_KIDS)))
          FROM generate_series(1, $COMPOSE_PARENTS) i))" >/dev/null
wait_for "SELECT count(*) = $COMPOSE_PARENTS * ($COMPOSE_KIDS + 1) FROM workflows.instances
           WHERE (id LIKE 'wait-%') AND status = 'waiting'"
sleep 1
procs=$(q "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() OR backend_type LIKE 'workflows%'")
t0=$(executor_ticks)
sleep "$COMPOSE_IDLE_S"
t1=$(executor_ticks)
cpu=$(awk -v d=$(( t1 - t0 )) -v hz="$CLK_TCK" -v s="$COMPOSE_IDLE_S" 'BEGIN { printf "%.2f", 100 * d / hz / s }')
say "C  $COMPOSE_PARENTS parents awaiting $COMPOSE_KIDS sleeping children each: $procs server processes in the database; executors' CPU over ${COMPOSE_IDLE_S}s: ${cpu} % (goal ~0)"

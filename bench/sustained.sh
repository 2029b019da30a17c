#!/usr/bin/env bash
# bench/sustained.sh -- throughput over a long run, with everything kept.
#
#   bash bench/sustained.sh                        30 minutes
#   SUSTAINED_MINUTES=1 bash bench/sustained.sh    a short run that proves the script works
#   SUSTAINED_VACUUM_FULL=0 ...                    skip the footprint after VACUUM FULL
#
# On a throwaway server (loopback only, removed on exit) with the default
# configuration (2 executors; nothing is deleted: the retention is 7 days),
# instances of 10 SQL steps are created in batches so that a backlog of
# about SUSTAINED_BACKLOG (default 20,000) instances is always queued: the
# executors are never idle, and the tables grow all the time.  Prints, for
# every minute, the steps completed in it (the executors' inserts into
# workflows.steps, from the server's statistics) with the WAL bytes, the
# full-page images and the blocks read from outside shared buffers per step
# in that minute (what a growing working set costs), the mean time of a
# WAL sync (what the disk costs: every commit waits for one) and the
# executors' CPU per step (what the engine costs), then the first and the
# last five minutes side by side (flat means a ratio near 1.0), and what
# the kept rows take on disk per completed step (tables and their indexes:
# instances, steps, attempts), as is and after VACUUM FULL.
#
# Needs disk: about 1 kB per completed step (some 20 GB for 30 minutes at
# 12,000 steps/s); the script refuses to start with less than twice its
# estimate free.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/${PG_MAJOR:-15}/bin/pg_config}
PGBIN=$("$PG_CONFIG" --bindir)
export LANG=C.UTF-8 LC_ALL=C.UTF-8
unset PGHOST PGHOSTADDR PGPORT PGDATABASE PGUSER PGSERVICE PGOPTIONS PGDATA || true
export PGOPTIONS='-c client_min_messages=warning'
MINUTES=${SUSTAINED_MINUTES:-30}
BACKLOG=${SUSTAINED_BACKLOG:-20000}
DB=postgres

# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

[[ -f $("$PG_CONFIG" --pkglibdir)/workflows.so ]] ||
    die "the extension is not installed for $PG_CONFIG (make install first)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/workflows-sustained.XXXXXX")
[[ $(id -u) -eq 0 ]] && chown "$SERVER_USER": "$WORK"
cleanup() { server_stop; rm -rf "$WORK"; }
trap cleanup EXIT

need_kb=$(( MINUTES * 60 * 15000 * 2 ))   # 15,000 steps/s at 1 kB, twice over
free_kb=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
(( free_kb > need_kb )) ||
    die "$(( free_kb / 1048576 )) GB free in $WORK; a $MINUTES-minute run may need $(( need_kb / 1048576 )) GB"

steps_inserted() {
    q "SELECT n_tup_ins FROM pg_stat_user_tables WHERE schemaname = 'workflows' AND relname = 'steps'"
}
# WAL bytes, full-page images, blocks read from outside shared buffers, WAL
# syncs and the time they took (ms) so far, and the executors' CPU (clock ticks)
io_counters() {
    local pids ticks=0 p
    read -r -a pids <<<"$(q "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity
                              WHERE application_name = 'workflows executor'")"
    for p in "${pids[@]}"; do
        [[ -r /proc/$p/stat ]] || continue
        ticks=$(( ticks + $(awk '{ print $14 + $15 }' "/proc/$p/stat") ))
    done
    echo "$(q "SELECT w.wal_bytes::bigint || ' ' || w.wal_fpi || ' ' || d.blks_read || ' ' ||
                      w.wal_sync || ' ' || w.wal_sync_time::bigint
                 FROM pg_stat_wal w, pg_stat_database d WHERE d.datname = current_database()") $ticks"
}

# the time of each WAL sync, per minute: the disk's share of a slow minute
server_init "track_wal_io_timing = on"
server_start
q_open
q "CREATE EXTENSION workflows" >/dev/null
wait_executors 2
q "CREATE FUNCTION ten(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS \$\$
   BEGIN
     FOR i IN 1..10 LOOP PERFORM workflows.step('s' || i, 'SELECT \$1::int', jsonb_build_array(i)); END LOOP;
     RETURN '1';
   END \$\$" >/dev/null
q "SELECT workflows.register('ten', 'ten(jsonb)')" >/dev/null

say "sustained run: $MINUTES minute(s), a backlog of about $BACKLOG instances x 10 steps, 2 executors"
start=$(date +%s)
minute_end=$(( start + 60 ))
last=$(steps_inserted)
read -r last_wal last_fpi last_read last_syncs last_sync_ms last_ticks <<<"$(io_counters)"
per_minute=()
while (( ${#per_minute[@]} < MINUTES )); do
    queued=$(q "SELECT count(*) FROM workflows.instances WHERE status = 'queued'")
    if (( queued < BACKLOG )); then
        n=$(( BACKLOG - queued )); (( n > 5000 )) && n=5000
        q "SELECT count(*) FROM workflows.create_batch('ten',
             (SELECT jsonb_agg(jsonb_build_object('params', jsonb_build_object('i', g)))
                FROM generate_series(1, $n) g))" >/dev/null
    fi
    if (( $(date +%s) >= minute_end )); then
        now_steps=$(steps_inserted)
        read -r wal fpi rd syncs sync_ms ticks <<<"$(io_counters)"
        d=$(( now_steps - last )); (( d > 0 )) || d=1
        ds=$(( syncs - last_syncs )); (( ds > 0 )) || ds=1
        per_minute+=( $(( now_steps - last )) )
        printf 'minute %3d  %9d steps  %6.0f steps/s  WAL %5.0f B/step  %5.3f FPI/step  %5.3f reads/step  %5.3f ms/WAL sync  %5.3f executor CPU ms/step\n' \
            "${#per_minute[@]}" $(( now_steps - last )) "$(calc "($now_steps - $last) / 60")" \
            "$(calc "($wal - $last_wal) / $d")" "$(calc "($fpi - $last_fpi) / $d")" "$(calc "($rd - $last_read) / $d")" \
            "$(calc "($sync_ms - $last_sync_ms) / $ds")" "$(calc "($ticks - $last_ticks) * 1000 / $CLK_TCK / $d")"
        last=$now_steps; last_wal=$wal; last_fpi=$fpi; last_read=$rd
        last_syncs=$syncs; last_sync_ms=$sync_ms; last_ticks=$ticks
        minute_end=$(( minute_end + 60 ))
    fi
    sleep 1
done

k=$(( MINUTES < 10 ? (MINUTES + 1) / 2 : 5 ))
first=0; lastk=0
for ((i = 0; i < k; i++)); do
    first=$(( first + per_minute[i] ))
    lastk=$(( lastk + per_minute[MINUTES - 1 - i] ))
done
say "first $k minute(s): $(calc "$first / ($k * 60)") steps/s; last $k: $(calc "$lastk / ($k * 60)") steps/s; last/first = $(calc "$lastk / $first")"

# what the kept rows take, per completed step: once the backlog is worked off
while [[ $(q "SELECT count(*) FROM workflows.instances WHERE status IN ('queued', 'running')") != 0 ]]; do
    sleep 1
done
done_steps=$(q "SELECT count(*) FROM workflows.steps WHERE status = 'complete'")
kept=$(q "SELECT count(*) FROM workflows.instances")
bytes() {
    q "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c
        WHERE c.oid IN ('workflows.instances'::regclass, 'workflows.steps'::regclass,
                        COALESCE(to_regclass('workflows.attempt_log'), 'workflows.attempts'::regclass))"
}
as_is=$(bytes)
say "kept: $kept instances, $done_steps completed steps"
say "bytes per completed step (instances, steps, attempts with their indexes): $(calc "$as_is / $done_steps") as is"
[[ ${SUSTAINED_VACUUM_FULL:-1} == 0 ]] && exit 0
q "VACUUM FULL workflows.instances" >/dev/null 2>&1 || true
q "VACUUM FULL workflows.steps" >/dev/null 2>&1 || true
q "VACUUM FULL workflows.attempt_log" >/dev/null 2>&1 || q "VACUUM FULL workflows.attempts" >/dev/null 2>&1 || true
done_steps=$(q "SELECT count(*) FROM workflows.steps WHERE status = 'complete'")
say "bytes per completed step after VACUUM FULL: $(calc "$(bytes) / $done_steps")"

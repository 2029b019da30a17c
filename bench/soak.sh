#!/usr/bin/env bash
# bench/soak.sh -- the long form of the chaos soak (the short form is
# test/t/017_chaos_soak.pl).
#
#   bench/soak.sh                 1,000 instances, 40 faults, 3-9 s apart,
#                                 then 60 s of tail work (~6-8 minutes)
#   bench/soak.sh --keep          keep the temporary directory (server log)
#   environment: SOAK_SEED, SOAK_INSTANCES, SOAK_FAULTS, SOAK_GAP_MIN,
#                SOAK_GAP_MAX, SOAK_TAIL (see bench/soak.pl), PG_CONFIG
#
# Builds the work tree into a private copy of the PostgreSQL installation
# (as bench/run.sh does: the system's copy of the extension is left alone),
# then runs bench/soak.pl with PostgreSQL's TAP modules: a throwaway
# cluster (Unix socket only) as user postgres when started as root, the
# workload of bench/workloads/soak.sql, random faults from a seed, the
# invariants of the short form, and the executors' memory
# (/proc/<pid>/status RssAnon of every executor process, sampled about
# twice a second, each listed).  Also checks that the pg_cancel_backend
# faults cancelled steps (attempts failed with 57014).  Prints a table,
# also written to bench/results/soak-latest/results.md; exits non-zero if
# an invariant failed.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/${PG_MAJOR:-15}/bin/pg_config}
PGBIN=${PGBIN:-$("$PG_CONFIG" --bindir)}
export LANG=C.UTF-8 LC_ALL=C.UTF-8
unset PGHOST PGHOSTADDR PGPORT PGDATABASE PGUSER PGSERVICE PGOPTIONS PGDATA || true

KEEP=0
while (( $# )); do
    case $1 in
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench/soak.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/wf-soak.XXXXXX")
chmod 755 "$WORK"
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
[[ $(id -u) -eq 0 ]] && chown "$SERVER_USER": "$WORK"

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    # the TAP modules stop their node at exit; a node left behind by a kill
    for d in "$WORK"/tmp_check/t_*_data/pgdata; do
        [[ -f $d/postmaster.pid ]] && as_pg "${PGSBIN:-$PGBIN}/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1
    done
    if (( KEEP )); then say "soak: kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- build and install into a private copy of PostgreSQL (as bench/run.sh) --
GIT=(git -c safe.directory="$REPO")
PGXS_DIR=$(dirname "$(dirname "$(dirname "$("$PGBIN/pg_config" --pgxs)")")")
SRC=$WORK/src
mkdir -p "$SRC"
if "${GIT[@]}" -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$REPO" && "${GIT[@]}" ls-files -z -co --exclude-standard -- . ':!bench/results' |
        tar -c --null -T - --ignore-failed-read 2>/dev/null) | tar -x -C "$SRC" ||
        die "cannot copy the work tree"
    SRC_DESC="the work tree at $("${GIT[@]}" -C "$REPO" rev-parse --short HEAD)$("${GIT[@]}" -C "$REPO" diff --quiet HEAD -- src sql Makefile 2>/dev/null || echo ' + uncommitted changes')"
else
    tar -C "$REPO" -c --exclude=.git --exclude=bench/results . | tar -x -C "$SRC"
    SRC_DESC="the directory $REPO"
fi
private_install "$SRC"
[[ $(id -u) -eq 0 ]] && chown -R "$SERVER_USER": "$SRC"

say "== soak: $SRC_DESC; $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
T0=$(date +%s)
rc=0
as_pg env PATH="$PGSBIN:$PATH" TESTDIR="$WORK" PG_REGRESS="$PGXS_DIR/src/test/regress/pg_regress" \
    SOAK_RESULTS="$WORK/results.md" \
    ${SOAK_SEED:+SOAK_SEED=$SOAK_SEED} ${SOAK_INSTANCES:+SOAK_INSTANCES=$SOAK_INSTANCES} \
    ${SOAK_FAULTS:+SOAK_FAULTS=$SOAK_FAULTS} ${SOAK_GAP_MIN:+SOAK_GAP_MIN=$SOAK_GAP_MIN} \
    ${SOAK_GAP_MAX:+SOAK_GAP_MAX=$SOAK_GAP_MAX} ${SOAK_TAIL:+SOAK_TAIL=$SOAK_TAIL} \
    perl -I "$PGXS_DIR/src/test/perl" -I "$SRC/test/t" "$SRC/bench/soak.pl" 2>&1 |
    tee "$WORK/soak.log" | grep -v '^ok ' || rc=$?
# perl's status through the pipe
grep -q '^not ok' "$WORK/soak.log" && rc=1
grep -q '^1\.\.' "$WORK/soak.log" || rc=1

OUT=$BENCH_DIR/results/soak-latest
if ! mkdir -p "$OUT" 2>/dev/null || [[ ! -w $OUT ]]; then
    OUT=${TMPDIR:-/tmp}/wf-bench-results-$(id -un)/soak-latest
    mkdir -p "$OUT"
fi
cp "$WORK/soak.log" "$OUT"/ 2>/dev/null || true
if [[ -f $WORK/results.md ]]; then
    cp "$WORK/results.md" "$OUT"/
    say ""
    cat "$WORK/results.md"
    say ""
fi
cp "$WORK"/tmp_check/log/*soak*.log "$OUT/server.log" 2>/dev/null || true
say "soak: $(( $(date +%s) - T0 )) s; results in ${OUT#"$REPO"/}/"
if (( rc )); then
    say "soak: FAILED (see $OUT/soak.log)"
    exit 1
fi
say "soak: every invariant held"

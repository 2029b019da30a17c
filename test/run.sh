#!/usr/bin/env bash
# test/run.sh -- build, install and run the WHOLE test suite of the extension.
#
#   sudo bash test/run.sh      (or, as root: bash test/run.sh)
#   bash test/run.sh           (as an ordinary user: packages must already be
#                               installed; `make install` goes through sudo
#                               when the PostgreSQL directories aren't writable)
#
# Phases: packages (root only, only what is missing) -> build -> install ->
#   (a) temporary server  (b) pg_regress  (c) pgTAP (pg_prove)
#   (d) isolation specs   (e) stop server (f) TAP tests (test/t/*.pl)
#   (g) the benchmark suite's smoke mode (bench/run.sh --smoke)
#
# Nothing in the checkout is written except build products: the test inputs
# are copied into a fresh temporary directory; when run as root, that
# directory belongs to `postgres` and every phase runs as `postgres`.
#
# The last line is always `test/run.sh: N passed, N failed`; the exit status
# is non-zero if anything failed.  One pg_regress test, one pgTAP file, one
# isolation spec, one TAP file each count as one; so do a failed build, a
# crash seen in the temporary server's log, and an aborted run.
#
# Environment knobs:
#   KEEP_TMP=1      keep the temporary directory (its path is printed)
#   TAP_JOBS=N      TAP files run in parallel, N at a time (default: min(nproc,4))
#   TEST_TIMEOUT=S  time limit in seconds for each test command (default 1200)

set -euo pipefail
# runuser, apt-get and friends live in the sbin directories, which a minimal
# environment (a CI runner, env -i) may leave out of PATH
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

# The PostgreSQL to build and test against: PG_CONFIG names it (default: the
# Debian packages of PG_MAJOR, 15).  Every other path is asked of it, so the
# same suite runs against 16 or 17, or against a private copy of a server.
PG_MAJOR=${PG_MAJOR:-15}
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/$PG_MAJOR/bin/pg_config}
PGBIN=$(dirname "$PG_CONFIG")
pg_paths() {   # (again once the packages are installed)
    PGBIN=$("$PG_CONFIG" --bindir)
    PGXS_DIR=$(dirname "$(dirname "$(dirname "$("$PG_CONFIG" --pgxs)")")")
    PG_REGRESS=$PGXS_DIR/src/test/regress/pg_regress
    PG_ISOLATION_REGRESS=$PGXS_DIR/src/test/isolation/pg_isolation_regress
    PG_PERL_LIB=$PGXS_DIR/src/test/perl
}
[[ -x $PG_CONFIG ]] && pg_paths
PACKAGES=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-$PG_MAJOR-cron
          postgresql-$PG_MAJOR-pgtap libtap-parser-sourcehandler-pgtap-perl
          libipc-run-perl make gcc
          postgresql-$PG_MAJOR-plproxy postgresql-$PG_MAJOR-auto-failover libcurl4-openssl-dev)

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TEST_TIMEOUT=${TEST_TIMEOUT:-1200}
NPROC=$(nproc 2>/dev/null || echo 2)
TAP_JOBS=${TAP_JOBS:-$(( NPROC < 4 ? NPROC : 4 ))}
(( TAP_JOBS >= 1 )) || TAP_JOBS=1

export LANG=C.UTF-8 LC_ALL=C.UTF-8
unset LANGUAGE PGHOST PGHOSTADDR PGPORT PGDATABASE PGUSER PGSERVICE PGOPTIONS PGDATA || true

IS_ROOT=0
[[ $(id -u) -eq 0 ]] && IS_ROOT=1

PASSED=0
FAILED=0
FAILED_NAMES=()
SERVER_TROUBLE=0     # print the server log tail at the end?
INTERRUPTED=0
WORK=""
FAILURES=""   # why each failed test failed, printed again at the end
DATA=""
SERVER_LOG=""
PORT=""

say()    { printf '%s\n' "$*"; }
header() { printf '\n======== %s ========\n' "$*"; }
pass()   { PASSED=$((PASSED + 1)); }
fail()   { FAILED=$((FAILED + 1)); FAILED_NAMES+=("$1"); }
# why NAME < text: keep (up to 80 lines of) the reason a test failed, for the
# summary at the end
why() {
    local n=0 line
    if [[ -z $FAILURES ]]; then cat >/dev/null; return 0; fi
    printf '\n--- %s\n' "$1" >>"$FAILURES"
    # reads all of its input (no SIGPIPE for the writer)
    while IFS= read -r line; do
        (( n++ < 80 )) && printf '%s\n' "$line" >>"$FAILURES"
    done
    return 0
}

# Run a command as the (unprivileged) server owner.  AS_PG is set once the
# temporary directory exists.
AS_PG=()
as_pg() { "${AS_PG[@]}" "$@"; }

server_running() {
    [[ -n $DATA && -f $DATA/postmaster.pid ]] &&
        as_pg "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

stop_server() {
    if server_running; then
        as_pg "$PGBIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null 2>&1 ||
            as_pg "$PGBIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
}

# shellcheck disable=SC2317  # (invoked by the EXIT trap)
on_exit() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    # TAP files still running (only on interruption): stop their commands,
    # then any cluster they left behind (by its own postmaster.pid)
    local j d
    if [[ -n $WORK && -d $WORK/tap ]]; then
        for j in "$WORK"/tap/*.pid; do
            [[ -f $j && ! -f ${j%.pid}.rc ]] && kill -TERM "$(cat "$j")" 2>/dev/null
        done
    fi
    for j in $(jobs -p); do kill -TERM "$j" 2>/dev/null; done
    wait 2>/dev/null
    if [[ -n $WORK && -d $WORK/tmp_check ]]; then
        for d in "$WORK"/tmp_check/t_*_data/pgdata; do
            [[ -f $d/postmaster.pid ]] &&
                as_pg "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1
        done
    fi
    stop_server
    if (( SERVER_TROUBLE )) && [[ -n $SERVER_LOG && -f $SERVER_LOG ]]; then
        header "server log (last 200 lines of $SERVER_LOG)"
        tail -n 200 "$SERVER_LOG"
    fi
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ ${KEEP_TMP:-0} == 1 ]]; then
            say "test/run.sh: kept temporary directory $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    if (( INTERRUPTED )); then
        fail "interrupted"
    elif (( rc != 0 && FAILED == 0 )); then
        # aborted before any test could report: count the harness itself
        say "test/run.sh: aborted (exit status $rc) before the tests finished"
        fail "harness"
    fi
    if (( FAILED > 0 )); then
        # repeated at the very end, where a CI log that keeps only its tail
        # still shows why
        if [[ -n $FAILURES && -s $FAILURES ]]; then
            header "why they failed"
            cat "$FAILURES"
        fi
        say ""
        say "failed: ${FAILED_NAMES[*]}"
    fi
    [[ -n $FAILURES ]] && rm -f "$FAILURES"
    say ""
    say "test/run.sh: $PASSED passed, $FAILED failed"
    if (( FAILED > 0 )); then exit 1; fi
    exit 0
}
trap on_exit EXIT
trap 'say "test/run.sh: interrupted"; INTERRUPTED=1; exit 130' INT TERM

die() { say "test/run.sh: ERROR: $*" >&2; exit 2; }

# ---------------------------------------------------------------------------
# Temporary directory (needed early: logs of apt and the build go there)
# ---------------------------------------------------------------------------
if (( IS_ROOT )); then
    WORK=$(mktemp -d /tmp/workflows-test.XXXXXX)
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/workflows-test.XXXXXX")
fi
DATA=$WORK/data
SERVER_LOG=$WORK/server.log
FAILURES=$(mktemp "${TMPDIR:-/tmp}/workflows-failures.XXXXXX")
if (( IS_ROOT )); then
    AS_PG=(runuser -u postgres -- env HOME="$WORK" TMPDIR="$WORK/tmp"
           PATH="$PGBIN:$PATH" LANG="$LANG" LC_ALL="$LC_ALL")
else
    AS_PG=(env TMPDIR="$WORK/tmp" PATH="$PGBIN:$PATH")
fi

# ---------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------
if (( IS_ROOT )); then
    missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    if (( ${#missing[@]} )); then
        header "installing packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        if ! { apt-get update -qq &&
               apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 \
                   "${missing[@]}"; } >"$WORK/apt.log" 2>&1; then
            tail -n 50 "$WORK/apt.log"
            die "package installation failed"
        fi
        say "installed."
    fi
    id -u postgres >/dev/null 2>&1 || die "user 'postgres' does not exist (is postgresql-$PG_MAJOR installed?)"
    [[ -x $PG_CONFIG ]] || die "$PG_CONFIG not found"
    pg_paths
else
    [[ -x $PG_CONFIG ]] || die "$PG_CONFIG not found; install the packages (as root: bash test/run.sh does it): ${PACKAGES[*]}"
    pg_paths
    need=("$PG_CONFIG" "$PGBIN/initdb" "$PGBIN/pg_ctl" "$PGBIN/psql" "$PG_REGRESS"
          "$PG_ISOLATION_REGRESS" "$PG_PERL_LIB/PostgreSQL/Test/Cluster.pm")
    for f in "${need[@]}"; do
        [[ -e $f ]] || die "$f is missing; install the packages (as root: bash test/run.sh does it): ${PACKAGES[*]}"
    done
    for c in make gcc pg_prove prove; do
        command -v "$c" >/dev/null || die "'$c' is missing; install: ${PACKAGES[*]}"
    done
    perl -MIPC::Run -e1 2>/dev/null || die "perl module IPC::Run is missing; install libipc-run-perl"
fi

# ---------------------------------------------------------------------------
# What to build and run (read from the Makefile)
# ---------------------------------------------------------------------------
cat >"$WORK/vars.mk" <<'EOF'
print-var-%:
	@:$(info $($*))
EOF
mkvar() {
    make -s --no-print-directory -C "$REPO" -f Makefile -f "$WORK/vars.mk" \
        PG_CONFIG="$PG_CONFIG" "print-var-$1" | tail -n 1
}
EXT=$(mkvar EXTENSION) || die "cannot read the Makefile (make print-var-EXTENSION failed)"
EXT=${EXT%% *}
[[ -n $EXT ]] || die "the Makefile defines no EXTENSION"
LIB=$(mkvar MODULE_big)
[[ -n $LIB ]] || { LIB=$(mkvar MODULES); LIB=${LIB%% *}; }
[[ -n $LIB ]] || LIB=$EXT
read -ra REGRESS_TESTS <<<"$(mkvar REGRESS)"
REGRESS_OPTS=()
for o in $(mkvar REGRESS_OPTS); do
    case $o in
        --dbname=*|--inputdir=*|--outputdir=*|--host=*|--port=*|--bindir=*|--use-existing) ;;
        *) REGRESS_OPTS+=("$o") ;;
    esac
done
ISOLATION_OPTS=()
for o in $(mkvar ISOLATION_OPTS); do
    case $o in
        --dbname=*|--inputdir=*|--outputdir=*|--host=*|--port=*|--bindir=*|--use-existing) ;;
        *) ISOLATION_OPTS+=("$o") ;;
    esac
done

# ---------------------------------------------------------------------------
# Build and install
# ---------------------------------------------------------------------------
header "build"
set +e
make -C "$REPO" -j"$NPROC" PG_CONFIG="$PG_CONFIG" COPT='-Wall -Wextra' 2>&1 | tee "$WORK/build.log"
build_rc=${PIPESTATUS[0]}
set -e
nwarn=$(grep -c 'warning:' "$WORK/build.log" || true)
if (( build_rc != 0 )); then
    fail "build"
    exit 1
fi
if (( nwarn > 0 )); then
    say "build: OK with $nwarn compiler warning(s) -- see above"
else
    say "build: OK, no compiler warnings"
fi

header "install"
pkglibdir=$("$PG_CONFIG" --pkglibdir)
extdir=$("$PG_CONFIG" --sharedir)/extension
installed_up_to_date() {   # are the built files already installed, byte for byte?
    local f
    cmp -s "$REPO/$LIB.so" "$pkglibdir/$LIB.so" || return 1
    cmp -s "$REPO/$EXT.control" "$extdir/$EXT.control" || return 1
    for f in $(mkvar DATA) $(mkvar DATA_built); do
        cmp -s "$REPO/$f" "$extdir/${f##*/}" || return 1
    done
}
# test/plugin: a step plugin built against the installed header, as a third
# party builds one (loaded by test/t/021_http_steps.pl)
if (( IS_ROOT )) || { [[ -w $pkglibdir && -w $extdir ]]; }; then
    make -s -C "$REPO" PG_CONFIG="$PG_CONFIG" install
    make -s -C "$REPO/test/plugin" PG_CONFIG="$PG_CONFIG" install
    say "installed into $pkglibdir and $extdir"
elif installed_up_to_date && cmp -s "$REPO/test/plugin/wf_test_kinds.so" "$pkglibdir/wf_test_kinds.so"; then
    say "already installed and up to date in $pkglibdir and $extdir"
elif command -v sudo >/dev/null; then
    say "(using sudo for make install)"
    sudo make -s -C "$REPO" PG_CONFIG="$PG_CONFIG" install
    make -s -C "$REPO/test/plugin" PG_CONFIG="$PG_CONFIG"
    sudo make -s -C "$REPO/test/plugin" PG_CONFIG="$PG_CONFIG" install
    say "installed into $pkglibdir and $extdir"
else
    die "cannot write $pkglibdir or $extdir and sudo is not available: run as root"
fi

shopt -s nullglob
PGTAP_FILES=()
for f in "$REPO"/test/pgtap/*.sql; do PGTAP_FILES+=("test/pgtap/${f##*/}"); done
ISO_SPECS=()
for f in "$REPO"/test/isolation/specs/*.spec; do s=${f##*/}; ISO_SPECS+=("${s%.spec}"); done
TAP_FILES=()
for f in "$REPO"/test/t/*.pl; do TAP_FILES+=("test/t/${f##*/}"); done
shopt -u nullglob

say ""
say "extension: $EXT (preloaded library: $LIB)"
say "pg_regress: ${#REGRESS_TESTS[@]} test(s); pgTAP: ${#PGTAP_FILES[@]} file(s);" \
    "isolation: ${#ISO_SPECS[@]} spec(s); TAP: ${#TAP_FILES[@]} file(s)"

# ---------------------------------------------------------------------------
# Copy the test inputs (the whole tree minus .git and build products)
# ---------------------------------------------------------------------------
tar -C "$REPO" --exclude=./.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
    --exclude=./results --exclude=./tmp_check --exclude=./log --exclude=./output_iso \
    -cf - . | tar -C "$WORK" -xf - --no-same-owner
mkdir -p "$WORK/tmp" "$WORK/regress" "$WORK/isolation" "$WORK/pgtap" "$WORK/tap" "$WORK/tmp_check"
# A test listed in REGRESS without its sql/ file would make pg_regress abort
# the whole run: count it as failed and leave it out.
MISSING_SQL=()
if (( ${#REGRESS_TESTS[@]} )); then
    present=()
    for t in "${REGRESS_TESTS[@]}"; do
        if [[ -f $WORK/sql/$t.sql ]]; then present+=("$t"); else MISSING_SQL+=("$t"); fi
    done
    REGRESS_TESTS=("${present[@]}")
    for t in "${MISSING_SQL[@]}"; do
        say "regress/$t: FAILED -- listed in REGRESS but sql/$t.sql does not exist"
        fail "regress/$t"
    done
fi
# A test without an expected file would make pg_regress abort the whole run
# too; give it an empty one in the copy, so it fails alone and its output is
# shown in the diff.
mkdir -p "$WORK/expected" "$WORK/test/isolation/expected"
for t in "${REGRESS_TESTS[@]}"; do
    [[ -f $WORK/expected/$t.out ]] || { : >"$WORK/expected/$t.out.missing"; : >"$WORK/expected/$t.out"; }
done
for t in "${ISO_SPECS[@]}"; do
    [[ -f $WORK/test/isolation/expected/$t.out ]] ||
        { : >"$WORK/test/isolation/expected/$t.out.missing"; : >"$WORK/test/isolation/expected/$t.out"; }
done
if (( IS_ROOT )); then
    chown -R postgres: "$WORK"
fi
cd "$WORK"

# Point out tests whose expected file does not exist yet.
show_missing_expected() {   # $1 = dir with expected/, $2 = outputdir, rest = names
    local indir=$1 outdir=$2 t; shift 2
    for t in "$@"; do
        if [[ -f $indir/expected/$t.out.missing ]]; then
            say "NOTE: $t has no expected/$t.out in the repository: the diff above shows its" \
                "whole output; to keep it, run with KEEP_TMP=1 and copy ${outdir#"$WORK"/}/results/$t.out" \
                "from the kept directory"
        fi
    done
}

# Count pg_regress/pg_isolation_regress results: each listed test that did
# not report "ok" counts as failed.
count_regress() {   # $1 = log, $2 = label, rest = names
    local log=$1 label=$2 t; shift 2
    for t in "$@"; do
        if grep -Eq "^(test |     )?[[:space:]]*${t}[[:space:]]+\.\.\. ok( |$)" "$log"; then
            pass
        else
            fail "$label/$t"
        fi
    done
}

psql_pg() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PORT" "$@"; }

port_free() {
    perl -MIO::Socket::INET -e \
        'exit(IO::Socket::INET->new(LocalAddr=>"127.0.0.1", LocalPort=>$ARGV[0],
              Proto=>"tcp", ReuseAddr=>1, Listen=>1) ? 0 : 1)' "$1"
}

SERVER_UP=0
if (( ${#REGRESS_TESTS[@]} + ${#PGTAP_FILES[@]} + ${#ISO_SPECS[@]} > 0 )); then
    # -----------------------------------------------------------------------
    header "(a) temporary server"
    as_pg "$PGBIN/initdb" -D "$DATA" -A trust --no-sync --locale=C -E UTF8 >"$WORK/initdb.log" 2>&1 ||
        { cat "$WORK/initdb.log"; die "initdb failed"; }
    as_pg cp "$DATA/postgresql.conf" "$WORK/postgresql.conf.orig"
    for _ in 1 2 3 4 5; do
        PORT=""
        for ((p = 54320; p < 54520; p++)); do
            if port_free "$p"; then PORT=$p; break; fi
        done
        [[ -n $PORT ]] || die "no free TCP port in 54320..54519"
        as_pg cp "$WORK/postgresql.conf.orig" "$DATA/postgresql.conf"
        as_pg tee -a "$DATA/postgresql.conf" >/dev/null <<EOF

# added by test/run.sh
shared_preload_libraries = '$LIB,pg_cron'
cron.database_name = 'contrib_regression'
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$WORK'
max_worker_processes = 32
workflows.max_workers = 2
log_min_messages = info
log_line_prefix = '%m [%p] %q%a '
fsync = off
EOF
        if as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$SERVER_LOG" -w -t 120 start >"$WORK/pg_ctl.log" 2>&1; then
            SERVER_UP=1
            break
        fi
        if grep -q 'could not bind\|Address already in use' "$SERVER_LOG" 2>/dev/null; then
            say "port $PORT was taken meanwhile; trying another"
            continue
        fi
        break
    done
    if (( SERVER_UP )); then
        say "server running: port $PORT, socket dir $WORK, log $SERVER_LOG"
    else
        cat "$WORK/pg_ctl.log"
        say "server failed to start; the pg_regress, pgTAP and isolation phases are all counted as failed"
        SERVER_TROUBLE=1
        for t in "${REGRESS_TESTS[@]}"; do fail "regress/$t"; done
        for t in "${PGTAP_FILES[@]}"; do fail "$t"; done
        for t in "${ISO_SPECS[@]}"; do fail "isolation/$t"; done
    fi
fi

if (( SERVER_UP )); then
    # -----------------------------------------------------------------------
    header "(b) pg_regress: ${REGRESS_TESTS[*]:-(none)}"
    if (( ${#REGRESS_TESTS[@]} )); then
        rc=0
        as_pg timeout -k 10 "$TEST_TIMEOUT" "$PG_REGRESS" --bindir="$PGBIN" \
            "${REGRESS_OPTS[@]}" --inputdir="$WORK" --outputdir="$WORK/regress" \
            --host="$WORK" --port="$PORT" --dbname=contrib_regression \
            "${REGRESS_TESTS[@]}" 2>&1 | tee "$WORK/regress.log" || rc=$?
        before=$FAILED
        count_regress "$WORK/regress.log" regress "${REGRESS_TESTS[@]}"
        if (( FAILED > before || rc != 0 )); then
            (( FAILED > before )) || fail "regress(pg_regress exit $rc)"
            SERVER_TROUBLE=1
            if [[ -s $WORK/regress/regression.diffs ]]; then
                why "pg_regress: regression.diffs" <"$WORK/regress/regression.diffs"
                header "regression.diffs"
                head -n 3000 "$WORK/regress/regression.diffs"
            fi
            show_missing_expected "$WORK" "$WORK/regress" "${REGRESS_TESTS[@]}"
        fi
    fi

    # -----------------------------------------------------------------------
    header "(c) pgTAP: ${PGTAP_FILES[*]:-(none)}"
    i=0
    for f in "${PGTAP_FILES[@]}"; do
        i=$((i + 1))
        db=pgtap_$i
        ok=1
        if ! psql_pg -d postgres -c "CREATE DATABASE $db" >"$WORK/pgtap/$i.setup" 2>&1 ||
           ! psql_pg -d "$db" -c "CREATE EXTENSION $EXT; CREATE EXTENSION pgtap;" >>"$WORK/pgtap/$i.setup" 2>&1; then
            say "$f: could not set up database $db:"
            cat "$WORK/pgtap/$i.setup"
            ok=0
        elif ! as_pg timeout -k 10 "$TEST_TIMEOUT" pg_prove --psql-bin "$PGBIN/psql" \
                  -h "$WORK" -p "$PORT" -d "$db" "$f" >"$WORK/pgtap/$i.out" 2>&1; then
            ok=0
        fi
        [[ -f $WORK/pgtap/$i.out ]] && cat "$WORK/pgtap/$i.out"
        if (( ok )); then
            pass
        else
            fail "$f"; SERVER_TROUBLE=1
            grep -E -A3 '^\s*(not ok|# )|ERROR|Failed' "$WORK/pgtap/$i.out" 2>/dev/null | why "$f" || true
        fi
        psql_pg -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 ||
            say "(note: could not drop database $db)"
    done

    # -----------------------------------------------------------------------
    header "(d) isolation: ${ISO_SPECS[*]:-(none)}"
    if (( ${#ISO_SPECS[@]} )); then
        rc=0
        as_pg timeout -k 10 "$TEST_TIMEOUT" "$PG_ISOLATION_REGRESS" --bindir="$PGBIN" \
            --load-extension="$EXT" "${ISOLATION_OPTS[@]}" \
            --inputdir="$WORK/test/isolation" --outputdir="$WORK/isolation" \
            --host="$WORK" --port="$PORT" --dbname=isolation_regression \
            "${ISO_SPECS[@]}" 2>&1 | tee "$WORK/isolation.log" || rc=$?
        before=$FAILED
        count_regress "$WORK/isolation.log" isolation "${ISO_SPECS[@]}"
        if (( FAILED > before || rc != 0 )); then
            (( FAILED > before )) || fail "isolation(pg_isolation_regress exit $rc)"
            SERVER_TROUBLE=1
            if [[ -s $WORK/isolation/regression.diffs ]]; then
                why "isolation: regression.diffs" <"$WORK/isolation/regression.diffs"
                header "isolation regression.diffs"
                head -n 3000 "$WORK/isolation/regression.diffs"
            fi
            show_missing_expected "$WORK/test/isolation" "$WORK/isolation" "${ISO_SPECS[@]}"
        fi
    fi

    # -----------------------------------------------------------------------
    header "(e) stop the temporary server"
    stop_server
    if grep -Eq 'PANIC|TRAP:|was terminated by signal (4|6|7|8|11)|was terminated by exception' "$SERVER_LOG"; then
        say "FAILED: the server log shows a crash (PANIC, failed assertion or a process" \
            "killed by a signal such as SIGSEGV); see its tail below"
        SERVER_TROUBLE=1
        fail "server-crash"
    fi
    say "stopped."
fi

# ---------------------------------------------------------------------------
header "(f) TAP: ${TAP_FILES[*]:-(none)}"
if (( ${#TAP_FILES[@]} )); then
    say "running ${#TAP_FILES[@]} file(s), up to $TAP_JOBS at a time ..."
    run_tap() {   # $1 = file, $2 = log
        local rc=0 pid
        # WORKFLOWS_REPO: the checkout with the history (the copy in $WORK has
        # no .git); 011_upgrade builds the released 0.1 from it
        "${AS_PG[@]}" env TESTDIR="$WORK" PGPORT=65432 PG_REGRESS="$PG_REGRESS" \
            WORKFLOWS_REPO="$REPO" \
            timeout -k 10 "$TEST_TIMEOUT" prove -I "$PG_PERL_LIB" -I "$WORK" -I "$WORK/test/t" \
            "$1" >"$2" 2>&1 &
        pid=$!
        echo "$pid" >"$2.pid"
        wait "$pid" || rc=$?
        echo "$rc" >"$2.rc"
    }
    for f in "${TAP_FILES[@]}"; do
        while (( $(jobs -rp | wc -l) >= TAP_JOBS )); do wait -n || true; done
        run_tap "$f" "$WORK/tap/${f##*/}.log" &
    done
    wait
    for f in "${TAP_FILES[@]}"; do
        log=$WORK/tap/${f##*/}.log
        cat "$log"
        rc=$(cat "$log.rc" 2>/dev/null || echo 255)
        if [[ $rc == 0 ]]; then
            pass
        else
            fail "$f"
            grep -E '^\s*(not ok|#)|Dubious|Bailout|died|at .* line [0-9]+' "$log" | why "$f (exit $rc)" || true
            name=${f##*/}; name=${name%.pl}
            for l in "$WORK"/tmp_check/log/regress_log_"$name" "$WORK"/tmp_check/log/"$name"_*.log; do
                [[ -f $l ]] || continue
                header "$f: last 100 lines of ${l#"$WORK"/}"
                tail -n 100 "$l"
                if [[ $l == */regress_log_* ]]; then
                    tail -n 25 "$l" | why "$f: end of ${l##*/}"
                fi
            done
        fi
    done
fi

# ---------------------------------------------------------------------------
# The benchmark suite's smoke mode (tiny sizes, its own private server), so
# that the bench never rots; it fails if a workload does not complete.
header "(g) bench/run.sh --smoke"
if [[ -f $REPO/bench/run.sh ]]; then
    if timeout -k 10 600 bash "$REPO/bench/run.sh" --smoke 2>&1 | tee "$WORK/bench.log"; (( PIPESTATUS[0] == 0 )); then
        pass
    else
        fail "bench/run.sh --smoke"
        tail -n 40 "$WORK/bench.log" | why "bench/run.sh --smoke"
    fi
fi

exit 0

/*-------------------------------------------------------------------------
 *
 * executor.c
 *	  The per-database executor: claim an instance, replay it, do what it
 *	  asked for, record the result, commit; sleep until the next wake time.
 *
 * An instance advances in short transactions ("ticks").  Each tick locks
 * the instance row (FOR NO KEY UPDATE SKIP LOCKED, so executors never wait
 * for each other and never run one instance twice, while the foreign-key
 * checks of send_event() and the control commands, which take KEY SHARE,
 * never wait for a running step), replays the workflow
 * function against the memo cache (replay.c), and does the one thing the
 * run stopped at:
 *
 *	- a step: its callback runs in its own subtransaction, as the instance's
 *	  owner, under the step's timeout.  Its output, its attempt and the
 *	  instance's new state are written in the same transaction as the
 *	  callback's own writes, so for work inside the database a step happens
 *	  exactly once: a crash before the commit leaves no trace, and after the
 *	  commit the memo answers every replay.
 *	- a sleep, an event wait or a retry delay: the instance's wake time is
 *	  stored and the executor moves on.  Nothing waits in memory.
 *
 * After a step the tick replays once more before it commits, so that an
 * instance's completion, or the sleep or event wait that follows a step,
 * commits with that step.  That replay may run the steps that follow in
 * place (inline_step(); replay.c, "Inline steps"), so that an instance of
 * N steps costs one replay per run instead of one per step; a run that
 * stops anywhere but at its end is rolled back with them, and the tick
 * goes on one step per replay: when that replay finds the next step, the
 * tick commits and keeps the step for the next tick, which runs it without
 * replaying again (the memos it was found from are unchanged unless the
 * instance's revision moved).  With workflows.steps_per_transaction > 1 a
 * tick may run several steps that way before it commits; the guarantee is
 * the same, the steps just become visible together.
 *
 * Errors of the step and of the workflow function are the instance's own
 * (owner.c catches them); an error of the engine itself while it advances
 * an instance is contained by safe_tick(), so that one instance cannot
 * crash-loop an executor.
 *
 * Idle executors sleep on their latch until the earliest wake time of any
 * instance (or workflows.poll_interval).  Backends set the latch when a
 * transaction that created an instance or sent an event commits
 * (wakeup.c), so new work starts at once.
 *
 * Events: send_event() only inserts a row and, at commit, bumps a shared
 * counter.  An executor that sees the counter move "sweeps": it makes every
 * instance waiting for an event type that now has an undelivered event
 * runnable.  An executor reads the counter before it looks for an event
 * and looks at it again after its commit, so an event committed while the
 * instance was locked is never missed.
 *
 * IDENTIFICATION
 *	  src/executor.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include "catalog/pg_type.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "commands/async.h"
#include "commands/prepare.h"
#include "commands/sequence.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include <signal.h>

#include "storage/ipc.h"
#include "storage/lock.h"
#include "storage/lmgr.h"
#include "storage/lwlock.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/regproc.h"
#include "utils/syscache.h"
#include "catalog/pg_proc.h"
#include "access/detoast.h"
#include "access/htup_details.h"
#include "utils/json.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "parser/parser.h"
#include "nodes/parsenodes.h"

/* ---- statements on the extension's tables ---- */

#define INSTANCE_COLUMNS \
	"SELECT i.id, i.owner::oid, i.status, i.params, i.created_at, i.revision, v.fn::oid, " \
	"  r.command, r.from_step, v.fn_hash, v.code, v.version_id, f.state, " \
	"  i.parent IS NOT NULL, i.workflow, w.flow_control, f.throttled_at IS NOT NULL, i.run " \
	"FROM workflows.instances i JOIN workflows.versions v ON v.version_id = i.version_id " \
	"LEFT JOIN workflows.requests r ON r.instance_id = i.id " \
	"LEFT JOIN workflows.flow_members f ON f.instance_id = i.id " \
	"LEFT JOIN workflows.workflows w ON f.instance_id IS NOT NULL AND w.name = i.workflow "

static WfQuery q_claim_any = {
	INSTANCE_COLUMNS
	"WHERE i.wake_at <= $1 ORDER BY i.wake_at LIMIT 1 FOR NO KEY UPDATE OF i SKIP LOCKED",
	1, {TIMESTAMPTZOID}, NULL
};

/* the same, for a batch that goes on: several at once (see "Claiming ahead") */
#define WF_CLAIM_AHEAD		8
static WfQuery q_claim_some = {
	INSTANCE_COLUMNS
	"WHERE i.wake_at <= $1 ORDER BY i.wake_at LIMIT " CppAsString2(WF_CLAIM_AHEAD) " "
	"FOR NO KEY UPDATE OF i SKIP LOCKED",
	1, {TIMESTAMPTZOID}, NULL
};

static WfQuery q_claim_one = {
	INSTANCE_COLUMNS
	"WHERE i.id = $2 AND i.wake_at <= $1 FOR NO KEY UPDATE OF i SKIP LOCKED",
	2, {TIMESTAMPTZOID, TEXTOID}, NULL
};

static WfQuery q_memos = {
	"SELECT key, type, status, "
	"  CASE WHEN sum(pg_column_size(output)) OVER (ORDER BY seq) <= $2 THEN output END, "
	"  error, hash, wake_at, attempts, seq, started_at, interrupted, output IS NOT NULL "
	"FROM workflows.steps WHERE instance_id = $1",
	2, {TEXTOID, INT8OID}, NULL
};

static WfQuery q_step_upsert = {
	"INSERT INTO workflows.steps AS s (instance_id, key, seq, name, type, status, output, "
	"  error, config, hash, attempts, started_at, ended_at, wake_at, request, interrupted, "
	"  attempt_run) "
	"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) "
	"ON CONFLICT (instance_id, key) DO UPDATE SET status = EXCLUDED.status, "
	"  output = EXCLUDED.output, error = EXCLUDED.error, config = EXCLUDED.config, "
	"  attempts = EXCLUDED.attempts, ended_at = EXCLUDED.ended_at, wake_at = EXCLUDED.wake_at, "
	"  seq = EXCLUDED.seq, request = EXCLUDED.request, "
	"  interrupted = GREATEST(s.interrupted, EXCLUDED.interrupted), "
	"  attempt_run = EXCLUDED.attempt_run",
	17, {TEXTOID, TEXTOID, INT4OID, TEXTOID, TEXTOID, TEXTOID, JSONBOID, JSONBOID,
		JSONBOID, INT8OID, INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID, JSONBOID,
	INT4OID, INT4OID}, NULL
};

/* $8: the instance's run, from the tick's claim (tick_run) */
static WfQuery q_attempt = {
	"INSERT INTO workflows.attempt_log (instance_id, step_key, attempt, started_at, "
	"  ended_at, success, error, run) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
	8, {TEXTOID, TEXTOID, INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID, BOOLOID, JSONBOID,
	INT4OID}, NULL
};

static WfQuery q_finish_sleep = {
	"UPDATE workflows.steps SET status = 'complete', ended_at = wake_at "
	"WHERE instance_id = $1 AND key = $2 AND status = 'waiting'",
	2, {TEXTOID, TEXTOID}, NULL
};

static WfQuery q_take_event = {
	"UPDATE workflows.events SET consumed_by = $3, consumed_at = $4 "
	"WHERE instance_id = $1 AND seq = (SELECT seq FROM workflows.events "
	"  WHERE instance_id = $1 AND type = $2 AND consumed_by IS NULL "
	"  ORDER BY seq LIMIT 1 FOR UPDATE) "
	"RETURNING jsonb_build_object('type', type, 'payload', payload, 'timestamp', sent_at)",
	4, {TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID}, NULL
};

static WfQuery q_instance_update = {
	"UPDATE workflows.instances SET status = $2, "
	"  wake_at = CASE WHEN $2 = 'running' AND $3 IS NULL THEN wake_at ELSE $3 END, "
	"  waiting_for = $4, output = $5, error = $6, ended_at = $7, "
	"  started_at = COALESCE(started_at, $8), revision = revision + 1 "
	"WHERE id = $1 RETURNING revision",
	8, {TEXTOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, JSONBOID, JSONBOID,
		TIMESTAMPTZOID, TIMESTAMPTZOID}, NULL
};

/*
 * The sweeps below make due the instances that an event, a command or the
 * end of their children left waiting.  They lock with SKIP LOCKED (an
 * executor never waits for another's instance), so each returns how many
 * of the instances it found it could not take: a row locked only for a
 * moment by another transaction (a claim that re-checked it and let it go
 * keeps its lock until it ends) would otherwise be missed until the next
 * signal, or the wait's timeout.  The caller sweeps again soon
 * (maybe_sweep()).
 */
static WfQuery q_sweep = {
	"WITH found AS MATERIALIZED ("
	"  SELECT i.id FROM workflows.instances i "
	"  WHERE i.id IN (SELECT e.instance_id FROM workflows.events e WHERE e.consumed_by IS NULL) "
	"    AND i.status = 'waiting' AND i.waiting_for IS NOT NULL AND i.wake_at > $1 "
	"    AND EXISTS (SELECT 1 FROM workflows.events e WHERE e.instance_id = i.id "
	"                AND e.type = i.waiting_for AND e.consumed_by IS NULL)), "
	"u AS (UPDATE workflows.instances SET wake_at = $1 WHERE id IN ("
	"  SELECT i.id FROM workflows.instances i "
	"  WHERE i.id IN (SELECT f.id FROM found f) AND i.status = 'waiting' AND i.wake_at > $1 "
	"  FOR NO KEY UPDATE OF i SKIP LOCKED) RETURNING 1) "
	"SELECT (SELECT count(*) FROM found) - (SELECT count(*) FROM u)",
	1, {TIMESTAMPTZOID}, NULL
};

static WfQuery q_request = {
	"SELECT command, from_step FROM workflows.requests WHERE instance_id = $1",
	1, {TEXTOID}, NULL
};

static WfQuery q_requested_by = {
	"SELECT requested_by::oid FROM workflows.requests WHERE instance_id = $1",
	1, {TEXTOID}, NULL
};

static WfQuery q_apply = {
	"SELECT workflows._apply($1, $2, $3, false)",
	3, {TEXTOID, TEXTOID, TEXTOID}, NULL
};

static WfQuery q_park = {
	"UPDATE workflows.instances SET wake_at = NULL, revision = revision + 1 WHERE id = $1",
	1, {TEXTOID}, NULL
};

static WfQuery q_sweep_requests = {
	"WITH found AS MATERIALIZED ("
	"  SELECT i.id FROM workflows.instances i "
	"  WHERE i.id IN (SELECT r.instance_id FROM workflows.requests r) "
	"    AND (i.wake_at IS NULL OR i.wake_at > $1)), "
	"u AS (UPDATE workflows.instances SET wake_at = $1 WHERE id IN ("
	"  SELECT i.id FROM workflows.instances i "
	"  WHERE i.id IN (SELECT f.id FROM found f) AND (i.wake_at IS NULL OR i.wake_at > $1) "
	"  FOR NO KEY UPDATE OF i SKIP LOCKED) RETURNING 1) "
	"SELECT (SELECT count(*) FROM found) - (SELECT count(*) FROM u)",
	1, {TIMESTAMPTZOID}, NULL
};

/* per-workflow retention and the audit trail's: see workflows._purge() */
static WfQuery q_purge = {
	"SELECT workflows._purge($1, 500)",
	1, {TIMESTAMPTZOID}, NULL
};

static WfQuery q_pinned = {
	"SELECT to_regprocedure('workflows_code.' || quote_ident('v_' || $1) || '(jsonb)')::oid",
	1, {TEXTOID}, NULL
};

static WfQuery q_deferred_constraints = {
	"SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint WHERE condeferred)",
	0, {InvalidOid}, NULL
};

static WfQuery q_next_wake = {
	"SELECT min(wake_at) FROM workflows.instances WHERE wake_at > $1",
	1, {TIMESTAMPTZOID}, NULL
};

/* ---- executor state ---- */

/* the instance this executor is on, kept between its ticks */
typedef struct WfInstance
{
	bool		valid;
	char		id[WF_MAX_ID_LEN + 1];
	int64		revision;		/* as of our last commit */
	bool		pending_step;	/* wf_replay_action() is its next step */
	int			classic_until;	/* no steps in place before this many memos */
} WfInstance;

/* how a tick leaves the instance */
typedef struct WfOutcome
{
	const char *status;			/* running, waiting, complete, errored */
	TimestampTz wake_at;
	const char *waiting_for;
	Jsonb	   *output;
	Jsonb	   *error;
} WfOutcome;

static WfWorkerSlot *my_slot;
static uint32 my_generation;	/* of my_slot, as the launcher assigned it */
static WfInstance cur;
/* the current tick wrote something of its instance already (crash.c) */
static bool tick_wrote = false;
/* flow control: the instance whose next tick takes the exact path (flow.c) */
static char flow_exact[WF_MAX_ID_LEN + 1];
/* the instance the current tick claimed ("" between ticks), for safe_tick() */
static char ticking[WF_MAX_ID_LEN + 1];
/* the time of the last claim that found nothing due (next_wake()) */
static TimestampTz claimed_none_at = 0;
/* the run of the instance the current tick claimed (instances.run) */
static int	tick_run = 1;
static void pin_session_settings(GucAction action);

/* what inline_step() needs of the tick that runs the replay */
static struct
{
	const char *id;
	Oid			owner;
	uint64		generation;		/* of signals, when the tick began */
	bool		ready;			/* the tick ran a step after a yield */
	Oid			userid;			/* the executor's identity */
	int			sec_context;
	bool		for_command;	/* the run stopped for a command */
}			inline_tick;
static TimeoutId step_timeout_id;
static volatile sig_atomic_t step_timed_out = false;
static uint64 seen_signal_generation = 0;
static uint64 seen_child_generation = 0;	/* (compose.c) */

/*
 * Every statement an executor starts is shown to replay.c, which tells the
 * statements of workflow code itself apart (a run that ran steps in place
 * is kept only if workflow code wrote nothing: see replay.c).
 */
static ExecutorStart_hook_type prev_executor_start = NULL;

static void
watch_executor_start(QueryDesc *queryDesc, int eflags)
{
	PlannedStmt *ps = queryDesc->plannedstmt;

	wf_replay_watch_write(queryDesc->operation != CMD_SELECT ||
						  ps->hasModifyingCTE || ps->rowMarks != NIL);
	if (prev_executor_start)
		prev_executor_start(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

static void
step_timeout_handler(void)
{
	step_timed_out = true;
	QueryCancelPending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
}

/*
 * Stops.  SIGTERM (a fast or smart shutdown, pg_terminate_backend(), the
 * extension's own stop requests) and the postmaster's SIGQUIT (immediate
 * shutdown, or another process crashed) end the executor in an orderly way:
 * an attempt they cut short is the executor's misfortune, not the step's
 * fault, and crash.c records it so.  A SIGTERM the step sends to its own
 * backend (pg_terminate_backend(pg_backend_pid())) is the step's doing and
 * counts as a crash, like SIGKILL or a segmentation fault.
 */
static volatile sig_atomic_t stop_requested = false;

#ifndef WIN32
static void
executor_sigterm(int signo, siginfo_t *info, void *context)
{
	if (info == NULL || info->si_pid != MyProcPid)
		stop_requested = true;
	die(signo);
}
#endif

static void
executor_sigquit(SIGNAL_ARGS)
{
	wf_crash_orderly_stop();
	SignalHandlerForCrashExit(postgres_signal_arg);
}

static void
install_signal_handlers(void)
{
#ifndef WIN32
	struct sigaction act;

	memset(&act, 0, sizeof(act));
	act.sa_sigaction = executor_sigterm;
	sigemptyset(&act.sa_mask);
	act.sa_flags = SA_SIGINFO | SA_RESTART;
	if (sigaction(SIGTERM, &act, NULL) < 0)
		elog(ERROR, "could not set the SIGTERM handler: %m");
#else
	pqsignal(SIGTERM, die);
#endif
	pqsignal(SIGQUIT, executor_sigquit);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
}

/* on the way out after SIGTERM: mark the attempt as cut short by a stop */
static void
executor_stopping(int code, Datum arg)
{
	if (stop_requested)
		wf_crash_orderly_stop();
}

/*
 * At exit: leave the slot, unless a new launcher has given it to another
 * executor meanwhile (the generation moved on): an orphan must not clear
 * its successor's pid and latch.
 */
static void
executor_detach(int code, Datum arg)
{
	SpinLockAcquire(&my_slot->mutex);
	if (my_slot->generation == my_generation && my_slot->pid == MyProcPid)
	{
		my_slot->pid = 0;
		my_slot->proc = NULL;
		my_slot->instance[0] = '\0';
		my_slot->step[0] = '\0';
	}
	SpinLockRelease(&my_slot->mutex);
}

/*
 * What this executor is doing, for the executors view.  Called at every
 * step: takes only this slot's spinlock (the copies are short and bounded).
 */
static void
report(const char *instance, Oid owner, const char *step)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&my_slot->mutex);
	if (my_slot->generation == my_generation)
	{
		my_slot->owner = owner;
		strlcpy(my_slot->instance, instance ? instance : "", sizeof(my_slot->instance));
		strlcpy(my_slot->step, step ? step : "", sizeof(my_slot->step));
		my_slot->since = now;
	}
	SpinLockRelease(&my_slot->mutex);
}

static void
begin_tx(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
}

static void
end_tx(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/*
 * Wait up to timeout_ms for the calls in flight (async.c), record those
 * that ended, and publish how many are left.
 */
static void
service_calls(long timeout_ms)
{
	int			n;

	if (wf_calls_in_flight() == 0)
		return;
	(void) wf_calls_service(timeout_ms);
	n = wf_calls_in_flight();
	SpinLockAcquire(&my_slot->mutex);
	if (my_slot->generation == my_generation)
		my_slot->calls = n;
	SpinLockRelease(&my_slot->mutex);
}

/*
 * The extension was dropped (or never created): say so and exit; the
 * launcher will not restart us.
 */
static void
pg_attribute_noreturn()
exit_absent(void)
{
	SpinLockAcquire(&my_slot->mutex);
	if (my_slot->generation == my_generation)
		my_slot->extension_absent = true;
	SpinLockRelease(&my_slot->mutex);
	ereport(DEBUG1, (errmsg("workflows executor exits: extension not present in this database")));
	proc_exit(0);
}

/*
 * Is the extension there, at the library's version?  Exits when it was
 * dropped.  Returns false while its SQL objects are of another version (the
 * library was replaced and ALTER EXTENSION UPDATE has not run yet): the
 * executor then touches nothing, and says so once a minute.
 */
static bool
check_extension(void)
{
	static TimestampTz last_said = 0;
	char	   *version = wf_installed_version();

	if (version == NULL)
	{
		end_tx();
		exit_absent();
	}
	if (strcmp(version, WF_EXTVERSION) == 0)
		return true;
	if (TimestampDifferenceExceeds(last_said, GetCurrentTimestamp(), 60 * 1000))
	{
		last_said = GetCurrentTimestamp();
		ereport(LOG,
				(errmsg("workflows: database \"%s\" has version %s of the extension, the library is version %s; no instance runs until ALTER EXTENSION workflows UPDATE",
						get_database_name(MyDatabaseId), version, WF_EXTVERSION)));
	}
	return false;
}

static char
memo_type(const char *t)
{
	return t[0] == 's' ? (t[1] == 'l' ? 'z' : 's') : t[0] == 'a' ? 'a' : 'e';
}

/* load the memos of an instance into the replay cache */
static void
load_memos(const char *id)
{
	Datum		values[2];
	MemoryContext old;
	int			n,
				i;

	wf_replay_reset(id);
	values[0] = CStringGetTextDatum(id);
	/* outputs beyond the cache's budget are not even read (see replay.c) */
	values[1] = Int64GetDatum((int64) wf_memo_cache_kb * 1024);
	n = wf_query(&q_memos, values, NULL, 0);
	for (i = 0; i < n; i++)
	{
		char	   *key = wf_get_text(i, 1);
		char	   *type = wf_get_text(i, 2);
		char	   *status = wf_get_text(i, 3);
		WfMemo	   *memo = wf_replay_memo(key, true);
		bool		isnull;
		Datum		d;

		memo->type = memo_type(type);
		memo->status = status[0] == 'r' ? 'r' : status[0] == 'w' ? 'w' :
			strcmp(status, "complete") == 0 ? 'c' : strcmp(status, "calling") == 0 ? 'o' : 'f';
		d = wf_get_datum(i, 4, &isnull);
		memo->output = NULL;
		/* by its detoasted size: the query's budget counts stored sizes */
		if (!isnull && wf_replay_output_fits(toast_raw_datum_size(d)))
		{
			Jsonb	   *output = DatumGetJsonbP(d);

			memo->output = wf_replay_keep_output(output);
			if ((Pointer) output != DatumGetPointer(d))
				pfree(output);
		}
		memo->stored_output = DatumGetBool(wf_get_datum(i, 12, &isnull));
		old = MemoryContextSwitchTo(wf_replay_cxt());
		memo->error = wf_get_jsonb(i, 5);
		MemoryContextSwitchTo(old);
		d = wf_get_datum(i, 6, &isnull);
		memo->hash = isnull ? 0 : DatumGetInt64(d);
		d = wf_get_datum(i, 7, &isnull);
		memo->wake_at = isnull ? 0 : DatumGetTimestampTz(d);
		memo->attempts = DatumGetInt32(wf_get_datum(i, 8, &isnull));
		memo->seq = DatumGetInt32(wf_get_datum(i, 9, &isnull));
		if (memo->seq < 0)
			wf_replay_note_stray();
		memo->started = DatumGetTimestampTz(wf_get_datum(i, 10, &isnull));
		memo->interrupted = DatumGetInt32(wf_get_datum(i, 11, &isnull));
	}
}

/* write a step row (insert or update); NULL pointers and 0 times are NULL */
static void
save_step_run(const char *id, WfAction *a, const char *type, const char *status,
			  Jsonb *output, Jsonb *error, Jsonb *config, int attempts,
			  TimestampTz ended, TimestampTz wake, int attempt_run)
{
	Datum		v[17];
	char		n[17];

	tick_wrote = true;
	memset(n, ' ', sizeof(n));
	v[0] = CStringGetTextDatum(id);
	v[1] = CStringGetTextDatum(a->key);
	v[2] = Int32GetDatum(a->seq);
	v[3] = CStringGetTextDatum(a->name);
	v[4] = CStringGetTextDatum(type);
	v[5] = CStringGetTextDatum(status);
	v[6] = JsonbPGetDatum(output);
	n[6] = output ? ' ' : 'n';
	v[7] = JsonbPGetDatum(error);
	n[7] = error ? ' ' : 'n';
	v[8] = JsonbPGetDatum(config);
	n[8] = config ? ' ' : 'n';
	v[9] = Int64GetDatum(a->hash);
	v[10] = Int32GetDatum(attempts);
	v[11] = TimestampTzGetDatum(a->started);
	v[12] = TimestampTzGetDatum(ended);
	n[12] = ended ? ' ' : 'n';
	v[13] = TimestampTzGetDatum(wake);
	n[13] = wake ? ' ' : 'n';
	/* what an out-of-transaction step asked for (secrets only by name) */
	v[14] = JsonbPGetDatum(a->args);
	n[14] = (a->kind == WF_ACT_STEP && a->step_kind != NULL && a->step_kind->run == NULL &&
			 a->args != NULL) ? ' ' : 'n';
	v[15] = Int32GetDatum(a->interrupted);
	/* a first attempt that succeeded, kept in the step's row (attempts view) */
	v[16] = Int32GetDatum(attempt_run);
	n[16] = attempt_run > 0 ? ' ' : 'n';
	wf_query(&q_step_upsert, v, n, 0);
	if (strcmp(status, "complete") == 0 || strcmp(status, "failed") == 0)
		wf_compose_notify_step(id, a->key, a->seq, status);
}

/* the step's new state, its attempts (if any) being in workflows.attempt_log */
static void
save_step(const char *id, WfAction *a, const char *type, const char *status,
		  Jsonb *output, Jsonb *error, Jsonb *config, int attempts,
		  TimestampTz ended, TimestampTz wake)
{
	save_step_run(id, a, type, status, output, error, config, attempts, ended, wake, 0);
}

/* remember a step's new state in the replay cache */
static void
memo_step(WfAction *a, char type, char status, Jsonb *output, Jsonb *error,
		  int attempts, TimestampTz wake)
{
	WfMemo	   *memo = wf_replay_memo(a->key, true);
	MemoryContext old = MemoryContextSwitchTo(wf_replay_cxt());

	memo->type = type;
	memo->status = status;
	memo->hash = a->hash;
	memo->attempts = attempts;
	memo->seq = a->seq;
	memo->started = a->started;
	memo->wake_at = wake;
	memo->output = wf_replay_keep_output(output);
	memo->stored_output = (output != NULL);
	memo->error = error ? DatumGetJsonbPCopy(JsonbPGetDatum(error)) : NULL;
	MemoryContextSwitchTo(old);
}

/*
 * Attempts cut short by an orderly shutdown (crash.c) are not the step's
 * doing: they count neither toward its retry limit nor its backoff.
 */
static int
charged_attempts(WfAction *a)
{
	return a->attempt - a->interrupted;
}

/*
 * Errors that no retry can mend: the same step would fail the same way, so
 * it fails at once instead of waiting through its backoff.  Documented in
 * the README ("Errors").
 */
static bool
is_permanent_error(int sqlerrcode)
{
	switch (sqlerrcode)
	{
		case ERRCODE_WF_NON_RETRYABLE:	/* workflows.fail() */
		case ERRCODE_WF_LIMIT_EXCEEDED: /* output too large */
		case ERRCODE_WF_DEPTH_EXCEEDED: /* spawn too deep (compose.c) */
		case ERRCODE_WF_NOT_IN_WORKFLOW:	/* step functions inside a step */
		case ERRCODE_INVALID_TRANSACTION_TERMINATION:	/* COMMIT in a step */
		case ERRCODE_FEATURE_NOT_SUPPORTED: /* e.g. LISTEN in a step */
		case ERRCODE_SYNTAX_ERROR:
		case ERRCODE_UNDEFINED_PARAMETER:	/* $n without an argument */
			return true;
		default:
			return false;
	}
}


/*
 * Failed attempts of steps run in place whose run was then rolled back
 * (replay.c, "Inline steps"): the tick runs that stretch again one step per
 * replay, and an attempt that failed is recorded from here rather than run
 * twice -- once it ran, it was a failed attempt (its writes rolled back as
 * any failed attempt's are), and running it again would double what it
 * did outside the database and lose its error from the history.
 * run_failures: of the current run; known_failures: of interrupted runs of
 * the current instance, until their step runs again.
 */
typedef struct WfFailure
{
	char	   *key;
	int			attempt;
	TimestampTz start;
	TimestampTz end;
	Jsonb	   *error;
	int			sqlerrcode;
	char	   *message;
} WfFailure;

static MemoryContext failures_cxt = NULL;
static List *run_failures = NIL;
static List *known_failures = NIL;

static void
note_failure(WfAction *a, TimestampTz start, TimestampTz end, Jsonb *error,
			 int sqlerrcode, const char *message)
{
	MemoryContext old;
	WfFailure  *f;

	if (failures_cxt == NULL)
		failures_cxt = AllocSetContextCreate(TopMemoryContext, "workflows failures",
											 ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(failures_cxt);
	f = palloc(sizeof(WfFailure));
	f->key = pstrdup(a->key);
	f->attempt = a->attempt;
	f->start = start;
	f->end = end;
	f->error = DatumGetJsonbPCopy(JsonbPGetDatum(error));
	f->sqlerrcode = sqlerrcode;
	f->message = pstrdup(message ? message : "");
	run_failures = lappend(run_failures, f);
	MemoryContextSwitchTo(old);
}

/* the run was kept (forget) or rolled back (keep its failures for later) */
static void
end_run_failures(bool interrupted)
{
	MemoryContext old;

	if (failures_cxt == NULL)
		return;
	old = MemoryContextSwitchTo(failures_cxt);
	if (interrupted)
		known_failures = list_concat(known_failures, run_failures);
	list_free(run_failures);
	run_failures = NIL;
	MemoryContextSwitchTo(old);
}

/* the executor moves to another instance */
static void
forget_failures(void)
{
	if (failures_cxt != NULL)
		MemoryContextReset(failures_cxt);
	run_failures = NIL;
	known_failures = NIL;
}

static WfFailure *
known_failure(WfAction *a)
{
	ListCell   *lc;

	foreach(lc, known_failures)
	{
		WfFailure  *f = (WfFailure *) lfirst(lc);

		if (f->attempt == a->attempt && strcmp(f->key, a->key) == 0)
		{
			known_failures = foreach_delete_current(known_failures, lc);
			return f;
		}
	}
	return NULL;
}

/*
 * Does the database have initially deferred constraints?  After a step,
 * owner.c fires its deferred trigger events with SET CONSTRAINTS ALL
 * IMMEDIATE, which stays in force until the transaction ends: a replay or a
 * step after it in the same transaction would see such constraints checked
 * at each statement instead of at its end.  So with them present, a
 * transaction ends after each step.  The answer is kept until pg_constraint
 * changes (a syscache invalidation), so that asking costs nothing per step.
 */
static int	deferred_constraints = -1;	/* -1: not known */

static void
constraints_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	deferred_constraints = -1;
}

static bool
has_deferred_constraints(void)
{
	bool		isnull;

	if (deferred_constraints < 0)
	{
		wf_query(&q_deferred_constraints, NULL, NULL, 1);
		deferred_constraints = DatumGetBool(wf_get_datum(0, 1, &isnull)) ? 1 : 0;
	}
	return deferred_constraints == 1;
}

/* a step callback, run by wf_run_as() as the instance's owner */
typedef struct StepRun
{
	const char *id;
	Oid			owner;
	WfAction   *action;
	Jsonb	   *output;
} StepRun;

static void
run_callback(void *arg)
{
	StepRun    *run = (StepRun *) arg;
	WfAction   *a = run->action;
	WfStepCall	call;
	Jsonb	   *output;

	memset(&call, 0, sizeof(call));
	call.instance_id = run->id;
	call.step_key = a->key;
	call.owner = run->owner;
	call.attempt = a->attempt;
	call.timeout_ms = a->config.timeout_ms;
	call.request = a->args;
	call.cxt = CurrentMemoryContext;
	call.sql = a->sql;
	call.fn = a->fn;

	(void) wf_in_step(true);
	output = a->step_kind->run(&call);
	(void) wf_in_step(false);

	if (output != NULL && VARSIZE(output) > (Size) wf_max_output_size)
		ereport(ERROR,
				(errcode(ERRCODE_WF_LIMIT_EXCEEDED),
				 errmsg("step output is %u bytes, more than workflows.max_output_size (%d)",
						(unsigned int) VARSIZE(output), wf_max_output_size)));
	run->output = output;
}

/*
 * Record how an attempt of a step ended: its attempt row, the step's new
 * state and memo.  Returns true if the step is now final (complete, or
 * failed for good), false if a retry was scheduled at *retry_at.
 */
static bool
record_attempt(const char *id, WfAction *a, Jsonb *config, TimestampTz start,
			   TimestampTz end, Jsonb *output, Jsonb *error, int sqlerrcode,
			   const char *message, TimestampTz *retry_at)
{
	Datum		v[8];
	char		n[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};

	if (error == NULL && a->attempt == 1 && a->interrupted == 0 && a->is_new)
	{
		/*
		 * The first attempt succeeded: the step's row is the attempt's
		 * record too (the workflows.attempts view), with the attempt's
		 * start as the step's.
		 */
		a->started = start;
		save_step_run(id, a, "step", "complete", output, NULL, config, 1, end, 0, tick_run);
		memo_step(a, 's', 'c', output, NULL, 1, 0);
		return true;
	}

	v[0] = CStringGetTextDatum(id);
	v[1] = CStringGetTextDatum(a->key);
	v[2] = Int32GetDatum(a->attempt);
	v[3] = TimestampTzGetDatum(start);
	v[4] = TimestampTzGetDatum(end);
	v[7] = Int32GetDatum(tick_run);
	if (error == NULL)
	{
		save_step(id, a, "step", "complete", output, NULL, config, a->attempt, end, 0);
		v[5] = BoolGetDatum(true);
		n[6] = 'n';
		wf_query(&q_attempt, v, n, 0);
		memo_step(a, 's', 'c', output, NULL, a->attempt, 0);
		return true;
	}

	v[5] = BoolGetDatum(false);
	v[6] = JsonbPGetDatum(error);
	if (is_permanent_error(sqlerrcode) || charged_attempts(a) > a->config.retries_limit)
	{
		save_step(id, a, "step", "failed", NULL, error, config, a->attempt, end, 0);
		wf_query(&q_attempt, v, n, 0);
		memo_step(a, 's', 'f', NULL, error, a->attempt, 0);
		ereport(wf_log_level >= WF_LOG_FAILURES ? LOG : DEBUG1,
				(errmsg("workflows: step \"%s\" of instance \"%s\" failed for good after %d attempt%s: %s",
						a->key, id, a->attempt, a->attempt == 1 ? "" : "s",
						wf_log_step_details ? message : unpack_sql_state(sqlerrcode))));
		return true;
	}
	*retry_at = TimestampTzPlusMilliseconds(end, wf_retry_delay_ms(&a->config, charged_attempts(a)));
	save_step(id, a, "step", "retrying", NULL, error, config, a->attempt, 0, *retry_at);
	wf_query(&q_attempt, v, n, 0);
	memo_step(a, 's', 'r', NULL, error, a->attempt, *retry_at);
	return false;
}

/*
 * Run one attempt of a step and record it.  Returns true if the step is now
 * final (complete, or failed for good), false if a retry was scheduled at
 * *retry_at.  Runs in the tick's transaction; the callback gets a
 * subtransaction of its own, released on success and rolled back on error.
 * mode: WF_AS_STEP after a yield, WF_AS_INLINE_STEP from inside a replay.
 */
static bool
run_step(const char *id, Oid owner, WfAction *a, TimestampTz *retry_at, WfRunAs mode)
{
	StepRun		call;
	TimestampTz start;
	TimestampTz end;
	Jsonb	   *output = NULL;
	ErrorData  *edata = NULL;
	Jsonb	   *error = NULL;
	int			sqlerrcode = 0;
	const char *message = NULL;
	Jsonb	   *config = wf_step_config_jsonb(&a->config);
	WfFailure  *known = (mode == WF_AS_STEP) ? known_failure(a) : NULL;

	if (known != NULL)
	{
		/*
		 * This very attempt already ran, in place, and failed; its run was
		 * rolled back (see the tick).  Record that failure instead of
		 * running the attempt a second time.
		 */
		start = known->start;
		end = known->end;
		if (a->is_new)
			a->started = start;
		error = known->error;
		sqlerrcode = known->sqlerrcode;
		message = known->message;
	}
	else
	{
		start = GetCurrentTimestamp();
		report(id, owner, a->key);
		if (wf_log_step_details && a->step_kind == &wf_sql_kind)
			pgstat_report_activity(STATE_RUNNING, a->sql);
		else
			pgstat_report_activity(STATE_RUNNING, psprintf("workflows: step \"%s\"", a->key));
		wf_crash_note_attempt(id, a, config, !tick_wrote);

		step_timed_out = false;
		if (a->config.timeout_ms > 0)
			enable_timeout_after(step_timeout_id, (int) Min(a->config.timeout_ms, INT_MAX));
		call.id = id;
		call.owner = owner;
		call.action = a;
		call.output = NULL;
		edata = wf_run_as(owner, mode, run_callback, &call);
		if (a->config.timeout_ms > 0)
			disable_timeout(step_timeout_id, false);
		(void) wf_in_step(false);
		output = call.output;
		if (edata == NULL && step_timed_out)
		{
			/* the step finished just as its timeout fired: keep its result */
			QueryCancelPending = false;
		}
		else if (edata != NULL && step_timed_out && edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
		{
			edata->sqlerrcode = ERRCODE_WF_STEP_TIMEOUT;
			edata->message = psprintf("step \"%s\" timed out after " INT64_FORMAT " ms",
									  a->key, a->config.timeout_ms);
		}
		step_timed_out = false;

		wf_clean_session();
		end = GetCurrentTimestamp();
		if (edata != NULL)
		{
			error = wf_error_jsonb(edata);
			sqlerrcode = edata->sqlerrcode;
			message = edata->message;
			if (mode == WF_AS_INLINE_STEP)
				note_failure(a, start, end, error, sqlerrcode, message);
		}
	}

	return record_attempt(id, a, config, start, end, output, error, sqlerrcode,
						  message, retry_at);
}

/*
 * Start an attempt of an out-of-transaction step (async.c): let its kind
 * prepare it, record the step as "calling" with a lease on the instance
 * (*wake: its deadline plus WF_CALL_LEASE_MS, the instance's wake time
 * meanwhile, so that no executor claims it), and queue the call; it is
 * sent once this transaction commits.  Returns true if the step is final
 * already (its attempt failed before anything was sent, for good): the
 * replay goes on.  An attempt found in flight (its executor stopped or
 * crashed before recording it) is recorded first as interrupted (WF008):
 * not charged to the retry limit, but workflows.max_step_crashes of them
 * fail the step.
 */
static bool
start_call(const char *id, Oid owner, WfAction *a, TimestampTz *wake)
{
	TimestampTz now = GetCurrentTimestamp();
	WfStepCall *call;
	ErrorData  *edata = NULL;
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner resowner = CurrentResourceOwner;
	Jsonb	   *config;

	if (a->resumed_call)
	{
		int64		timeout = a->config.timeout_ms;
		TimestampTz began = a->until - (timeout + WF_CALL_LEASE_MS) * 1000;
		Datum		v[8];
		ErrorData	lost;

		memset(&lost, 0, sizeof(lost));
		lost.sqlerrcode = ERRCODE_WF_STEP_CRASHED;
		lost.message = psprintf("attempt %d of step \"%s\" was interrupted: its executor stopped during the call",
								a->attempt - 1, a->key);
		v[0] = CStringGetTextDatum(id);
		v[1] = CStringGetTextDatum(a->key);
		v[2] = Int32GetDatum(a->attempt - 1);
		v[3] = TimestampTzGetDatum(Min(began, now));
		v[4] = TimestampTzGetDatum(now);
		v[5] = BoolGetDatum(false);
		v[6] = JsonbPGetDatum(wf_error_jsonb(&lost));
		v[7] = Int32GetDatum(tick_run);
		wf_query(&q_attempt, v, NULL, 0);
		a->interrupted++;
		if (a->interrupted >= wf_max_step_crashes)
		{
			Jsonb	   *error;

			lost.message = psprintf("step \"%s\" was interrupted %d times (workflows.max_step_crashes)",
									a->key, a->interrupted);
			error = wf_error_jsonb(&lost);
			config = wf_step_config_jsonb(&a->config);
			save_step(id, a, "step", "failed", NULL, error, config, a->attempt - 1, now, 0);
			memo_step(a, 's', 'f', NULL, error, a->attempt - 1, 0);
			return true;
		}
	}

	/*
	 * This executor drives enough calls: the step waits until one of them
	 * ends (async.c wakes it), or a second (another executor may take it).
	 */
	if (wf_calls_in_flight() >= wf_max_calls)
	{
		wf_calls_defer(id);
		*wake = TimestampTzPlusMilliseconds(now, 1000);
		return false;
	}

	call = wf_call_new(id, a->key, owner, a->attempt, a->args,
					   a->config.timeout_set ? a->config.timeout_ms : 0);
	if (a->step_kind->prepare != NULL)
	{
		/* as the executor; its errors fail the attempt, not the tick */
		BeginInternalSubTransaction(NULL);
		PG_TRY();
		{
			a->step_kind->prepare(call);
			ReleaseCurrentSubTransaction();
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
		}
		PG_END_TRY();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = resowner;
	}
	if (call->timeout_ms <= 0)
		call->timeout_ms = 10 * 60 * 1000;
	/* the stored config shows the timeout the call runs with */
	a->config.timeout_ms = call->timeout_ms;
	config = wf_step_config_jsonb(&a->config);
	if (edata != NULL)
	{
		TimestampTz retry_at = 0;
		bool		final;

		wf_call_discard(call);
		/* a refused or malformed request fails the same way every time */
		if (edata->sqlerrcode == ERRCODE_INSUFFICIENT_PRIVILEGE ||
			edata->sqlerrcode == ERRCODE_INVALID_PARAMETER_VALUE)
			a->config.retries_limit = 0;
		final = record_attempt(id, a, config, now, GetCurrentTimestamp(), NULL,
							   wf_error_jsonb(edata), edata->sqlerrcode, edata->message,
							   &retry_at);
		*wake = retry_at;
		return final;
	}

	*wake = TimestampTzPlusMilliseconds(now, call->timeout_ms + WF_CALL_LEASE_MS);
	save_step(id, a, "step", "calling", NULL, NULL, config, a->attempt, 0, *wake);
	memo_step(a, 's', 'o', NULL, NULL, a->attempt, *wake);
	wf_call_queue(call, a->step_kind, &a->config, a->interrupted, a->seq, now);
	return false;
}

/*
 * Run a step from inside a replay (replay.c, "Inline steps"): the same
 * attempt and record as run_step() after a yield, without replaying the
 * instance again for the step after it.  Declines (the replay yields and
 * the tick goes on one step per replay) when a command or an event arrived
 * since the tick began (it must apply at a step boundary, which only a
 * commit makes), when the database has initially deferred constraints
 * (see has_deferred_constraints()), and within a stretch of the instance
 * where a run in place was interrupted before (cur.classic_until).  Also
 * for the first step of a tick (run after a yield, nothing of the run is
 * lost if it fails) and for retries (a failed attempt in place interrupts
 * the run: the retry would run twice).
 */
static bool
inline_step(WfAction *a)
{
	MemoryContext cxt;
	MemoryContext old;
	TimestampTz retry_at;
	Oid			save_userid;
	int			save_sec;
	int			nest;
	bool		ok = true;

	if (!wf_inline_steps || !inline_tick.ready || a->attempt > 1 ||
		!a->config.inline_ok || wf_replay_memo_count() < cur.classic_until)
		return false;

	/*
	 * The executor's own identity and settings for its bookkeeping, as
	 * outside the replay: workflow code's SET LOCAL does not reach it, and
	 * the owner may not write the extension's tables.  (The step itself
	 * runs as the owner again: run_step() -> wf_run_as().)  The replay's
	 * subtransaction restores both if this fails.
	 */
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(inline_tick.userid, inline_tick.sec_context);
	nest = NewGUCNestLevel();
	pin_session_settings(GUC_ACTION_SAVE);

	cxt = AllocSetContextCreate(CurrentMemoryContext, "workflows inline step",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/*
	 * A signal since the tick began: a command for this instance must apply
	 * at a step boundary, which only a commit makes; an event (or anything
	 * for another instance) need not stop the run.
	 */
	if (pg_atomic_read_u64(&wf_shared->signal_generation) != inline_tick.generation)
	{
		Datum		idv = CStringGetTextDatum(inline_tick.id);

		inline_tick.generation = pg_atomic_read_u64(&wf_shared->signal_generation);
		pg_memory_barrier();
		if (wf_query(&q_request, &idv, NULL, 1) > 0)
		{
			ok = false;
			inline_tick.for_command = true;
		}
	}
	if (ok && has_deferred_constraints())
		ok = false;
	if (ok)
		(void) run_step(inline_tick.id, inline_tick.owner, a, &retry_at, WF_AS_INLINE_STEP);

	SPI_finish();
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	AtEOXact_GUC(true, nest);
	SetUserIdAndSecContext(save_userid, save_sec);
	return ok;
}

/*
 * Take the oldest undelivered event of the awaited type, or time out, or
 * wait.  Returns true if the step is now final.
 */
static bool
take_event(const char *id, WfAction *a, TimestampTz now)
{
	Datum		v[4];

	v[0] = CStringGetTextDatum(id);
	v[1] = CStringGetTextDatum(a->event_type);
	v[2] = CStringGetTextDatum(a->key);
	v[3] = TimestampTzGetDatum(now);
	if (wf_query(&q_take_event, v, NULL, 0) == 1)
	{
		Jsonb	   *event = wf_get_jsonb(0, 1);

		save_step(id, a, "event", "complete", event, NULL, NULL, 0, now, a->until);
		memo_step(a, 'e', 'c', event, NULL, 0, a->until);
		return true;
	}
	if (!a->is_new && a->until <= now)
	{
		StringInfoData buf;
		Jsonb	   *error;

		initStringInfo(&buf);
		appendStringInfoString(&buf, "timed out waiting for event ");
		escape_json(&buf, a->event_type);
		{
			StringInfoData j;

			initStringInfo(&j);
			appendStringInfoString(&j, "{\"message\": ");
			escape_json(&j, buf.data);
			appendStringInfoString(&j, ", \"sqlstate\": \"WF002\"}");
			error = wf_cstring_jsonb(j.data);
		}
		save_step(id, a, "event", "failed", NULL, error, NULL, 0, now, a->until);
		memo_step(a, 'e', 'f', NULL, error, 0, a->until);
		return true;
	}
	save_step(id, a, "event", "waiting", NULL, NULL, NULL, 0, 0, a->until);
	memo_step(a, 'e', 'w', NULL, NULL, 0, a->until);
	return false;
}

/*
 * Look at the instances an await step waits for (compose.c) and record
 * what it found.  Returns true if the step is now final; else *wake is
 * when to look again unless a child event wakes the instance first.
 */
static bool
await_instances(const char *id, Oid owner, WfAction *a, TimestampTz now,
				TimestampTz *wake, const char **waiting_for)
{
	Jsonb	   *output = NULL;
	Jsonb	   *error = NULL;
	char		r = wf_compose_await(id, owner, a, now, &output, &error, wake,
									 waiting_for);

	if (r == 'w')
	{
		save_step(id, a, "await", "waiting", NULL, NULL, NULL, 0, 0, a->until);
		memo_step(a, 'a', 'w', NULL, NULL, 0, a->until);
		return false;
	}
	save_step(id, a, "await", r == 'c' ? "complete" : "failed", output, error,
			  NULL, 0, now, a->until);
	memo_step(a, 'a', r, output, error, 0, a->until);
	return true;
}

/*
 * Run (an attempt of) the next compensation of the instance (compose.c,
 * "rollback handlers"): 0 when none is left, 1 when one ended (complete
 * or failed for good: the caller replays and comes back for the next), 2
 * when one waits for its next attempt at *retry_at.  Compensation steps
 * have no place in the replay's order, so the memo cache is reloaded
 * after one ran (load_memos() counts them apart).
 */
static int
rollback_next(const char *id, Oid owner, TimestampTz *retry_at)
{
	WfAction	ra;
	bool		final;

	if (!wf_compose_next_rollback(id, &ra))
		return 0;
	if (!ra.is_new && ra.until > GetCurrentTimestamp())
	{
		*retry_at = ra.until;
		return 2;
	}
	final = run_step(id, owner, &ra, retry_at, WF_AS_STEP);
	load_memos(id);
	return final ? 1 : 2;
}

/* mark the sleeps that replay found over as complete */
static void
finish_sleeps(const char *id)
{
	ListCell   *lc;

	foreach(lc, wf_replay_finished_sleeps())
	{
		Datum		v[2];

		tick_wrote = true;
		v[0] = CStringGetTextDatum(id);
		v[1] = CStringGetTextDatum((char *) lfirst(lc));
		wf_query(&q_finish_sleep, v, NULL, 0);
	}
}

/* the error document of an instance the engine could not advance (WF009) */
static Jsonb *
engine_error(const char *message, const char *hint)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"message\": ");
	escape_json(&buf, message);
	appendStringInfoString(&buf, ", \"hint\": ");
	escape_json(&buf, hint);
	appendStringInfoString(&buf, ", \"sqlstate\": \"WF009\"}");
	return wf_cstring_jsonb(buf.data);
}

static Jsonb *
make_event(const char *id, Jsonb *params, TimestampTz created)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"instanceId\": ");
	escape_json(&buf, id);
	appendStringInfoString(&buf, ", \"payload\": ");
	(void) JsonbToCString(&buf, &params->root, VARSIZE(params));
	appendStringInfoString(&buf, ", \"timestamp\": ");
	escape_json(&buf, timestamptz_to_str(created));
	appendStringInfoChar(&buf, '}');
	return wf_cstring_jsonb(buf.data);
}

/*
 * Create the pinned copy from the stored definition, as the original
 * function's owner (run by wf_run_as()).  The definition was printed by
 * pg_get_functiondef() under register()'s search_path, so it is read back
 * under the same one.
 */
static void
create_pinned_copy(void *arg)
{
	const char *code = (const char *) arg;

	(void) set_config_option("search_path", "pg_catalog, workflows, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute(code, false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not run the stored definition");
	SPI_finish();
}

/*
 * Is the stored definition exactly one CREATE FUNCTION of
 * workflows_code."v_<version>"?  register() wrote it so; this makes sure
 * nothing else can ever be run from it.
 */
static void
check_pinned_definition(const char *code, const char *version)
{
	List	   *raw = raw_parser(code, RAW_PARSE_DEFAULT);
	CreateFunctionStmt *stmt;
	char	   *expected = psprintf("v_%s", version);

	if (list_length(raw) != 1 ||
		!IsA(linitial_node(RawStmt, raw)->stmt, CreateFunctionStmt))
		goto bad;
	stmt = (CreateFunctionStmt *) linitial_node(RawStmt, raw)->stmt;
	if (list_length(stmt->funcname) != 2 ||
		strcmp(strVal(linitial(stmt->funcname)), "workflows_code") != 0 ||
		strcmp(strVal(lsecond(stmt->funcname)), expected) != 0)
		goto bad;
	return;
bad:
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("the stored definition of workflow version %s is not a single definition of its pinned copy",
					version)));
}

/*
 * The workflow function of a version whose function was replaced (CREATE OR
 * REPLACE) after the version was registered: the registered definition,
 * recreated once as workflows_code."v_<version>" and made a member of the
 * extension, so that instances keep running the code they started with.
 *
 * The copy is created by the original function's owner, not by the
 * executor: the stored text is that role's code, and creating a function
 * runs its language's validator.  That role may not create objects in
 * workflows_code otherwise, so it gets CREATE there for the moment of the
 * creation only, inside this subtransaction (no other session ever sees
 * the grant).  Runs in a subtransaction of its own: a definition that no
 * longer compiles errors the instance, not the executor.
 */
static Oid
pinned_function(const char *version, const char *code, Oid original, ErrorData **error)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner resowner = CurrentResourceOwner;
	volatile Oid copy = InvalidOid;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		Datum		v[1];
		bool		isnull;
		Datum		d;

		/*
		 * One pinning at a time in the database, until our commit: two
		 * executors running instances of a replaced function would both
		 * create the copy and both change the schema's ACL (GRANT and
		 * REVOKE below), and one would fail with "tuple concurrently
		 * updated".  The second looks again once the first committed.
		 */
		LockDatabaseObject(NamespaceRelationId,
						   get_namespace_oid("workflows_code", false), 0, ExclusiveLock);
		v[0] = CStringGetTextDatum(version);
		wf_query(&q_pinned, v, NULL, 1);
		d = wf_get_datum(0, 1, &isnull);
		if (isnull)
		{
			HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(original));
			Oid			owner;
			const char *rolename;
			ErrorData  *err;

			if (!HeapTupleIsValid(tup))
				elog(ERROR, "cache lookup failed for function %u", original);
			owner = ((Form_pg_proc) GETSTRUCT(tup))->proowner;
			ReleaseSysCache(tup);
			rolename = quote_identifier(GetUserNameFromId(owner, false));

			check_pinned_definition(code, version);
			if (SPI_execute(psprintf("GRANT CREATE ON SCHEMA workflows_code TO %s",
									 rolename), false, 0) != SPI_OK_UTILITY)
				elog(ERROR, "could not grant CREATE on workflows_code");
			err = wf_run_as(owner, WF_AS_STEP, create_pinned_copy, (void *) code);
			if (err != NULL)
				ReThrowError(err);
			if (SPI_execute(psprintf("REVOKE CREATE ON SCHEMA workflows_code FROM %s",
									 rolename), false, 0) != SPI_OK_UTILITY)
				elog(ERROR, "could not revoke CREATE on workflows_code");

			wf_query(&q_pinned, v, NULL, 1);
			d = wf_get_datum(0, 1, &isnull);
			if (isnull)
				elog(ERROR, "could not find the recreated function of version %s", version);
			if (SPI_execute(psprintf("ALTER EXTENSION workflows ADD FUNCTION %s",
									 format_procedure_qualified(DatumGetObjectId(d))),
							false, 0) != SPI_OK_UTILITY)
				elog(ERROR, "could not adopt the recreated function of version %s", version);
			ereport(LOG,
					(errmsg("workflows: %s was replaced after version %s was registered; instances of that version run the registered definition as %s",
							format_procedure(original), version,
							format_procedure_qualified(DatumGetObjectId(d)))));
		}
		copy = DatumGetObjectId(d);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = resowner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		*error = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = resowner;
	}
	PG_END_TRY();
	return copy;
}

/*
 * Tell listeners on channel "workflows" that an instance ended; delivered
 * at commit.  Only the id and the status: never data.
 */
static void
notify_final(const char *id, const char *status)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"id\": ");
	escape_json(&buf, id);
	appendStringInfoString(&buf, ", \"status\": ");
	escape_json(&buf, status);
	appendStringInfoChar(&buf, '}');
	if (buf.len < NAMEDATALEN * 100)
		Async_Notify("workflows", buf.data);
}

/*
 * Apply a control command left for the executor holding an instance (see
 * workflows._apply()).  Returns the instance's new status.
 */
static char *
apply_request(const char *id, char *command, char *from_step)
{
	Datum		v[3];
	char		n[3] = {' ', ' ', ' '};
	Oid			requester = InvalidOid;
	bool		isnull;

	v[0] = CStringGetTextDatum(id);
	/* the role that asked: the children the command cascades to record it */
	if (wf_query(&q_requested_by, v, NULL, 1) == 1)
		requester = DatumGetObjectId(wf_get_datum(0, 1, &isnull));
	v[1] = CStringGetTextDatum(command);
	v[2] = from_step ? CStringGetTextDatum(from_step) : (Datum) 0;
	n[2] = from_step ? ' ' : 'n';
	wf_query_acting(&q_apply, v, n, 1, requester);
	ereport(DEBUG1,
			(errmsg("workflows: applied %s to instance \"%s\"", command, id)));
	return wf_get_text(0, 1);
}

static bool
is_runnable_status(const char *status)
{
	return strcmp(status, "queued") == 0 || strcmp(status, "running") == 0 ||
		strcmp(status, "waiting") == 0;
}

/*
 * Several instances per transaction.  When an executor finds instance after
 * instance due (a burst of wake-ups, a backlog of short instances), the
 * commit -- a WAL flush, a fifth of the work of a one-step instance and
 * most of its wall time -- is shared: after an instance that is done for
 * now, the transaction stays open and the next tick claims the next due
 * instance in it, up to WF_BATCH_INSTANCES of them or WF_BATCH_MS.  An
 * executor that was idle commits its first instance alone, so that a lone
 * instance's latency does not wait for a claim that finds nothing.  What a
 * commit makes happen (waking wait() callers and the other executors) is
 * kept until the batch commits.  An error in any instance rolls back the
 * batch (safe_tick()); the others simply run again.
 */
#define WF_BATCH_INSTANCES	32
#define WF_BATCH_MS			10

static struct
{
	bool		open;			/* a transaction is open across ticks */
	int			instances;		/* advanced in it */
	TimestampTz started;
	uint64		generation;		/* of signals, when it began */
	int			streak;			/* ticks in a row that claimed */
	uint32		waiters[WF_BATCH_INSTANCES];	/* instances that became final */
	int			nwaiters;
	bool		wake_database;	/* an instance got a wake time */
	/* instances with flow control that stopped running: release after commit */
	struct
	{
		char		id[WF_MAX_ID_LEN + 1];
		int64		revision;
	}			releases[WF_BATCH_INSTANCES + 1];
	int			nreleases;
	/* instances with flow control that took their slots and ended: done at commit */
	char		done[WF_BATCH_INSTANCES + 1][WF_MAX_ID_LEN + 1];
	int			ndone;
	/* instances its last claim locked beyond the one it ran: next, in order */
	char		ahead[WF_CLAIM_AHEAD][WF_MAX_ID_LEN + 1];
	int			nahead;
	int			next_ahead;
}			batch;

/* commit the batch, and do what its commit makes happen */
static void
end_batch(void)
{
	if (!batch.open)
		return;
	/* flow control: the members that took their slots and ended (flow.c) */
	if (batch.ndone > 0)
		wf_flow_settle_done(batch.done, batch.ndone);
	batch.ndone = 0;
	batch.nahead = batch.next_ahead = 0;
	end_tx();
	batch.open = false;
	ticking[0] = '\0';
	wf_crash_clear();
	/* the calls it recorded as started go out now */
	wf_calls_committed();
	/* flow control: hand on the slots the commit freed (flow.c) */
	for (int i = 0; i < batch.nreleases; i++)
		wf_flow_release_after(batch.releases[i].id, batch.releases[i].revision,
							  begin_tx, end_tx);
	batch.nreleases = 0;
	for (int i = 0; i < batch.nwaiters; i++)
		wf_wake_waiters(batch.waiters[i]);
	/* a wake time other executors may not know about: let them re-plan */
	if (batch.wake_database)
		wf_wake_database(MyDatabaseId);
	/* an event may have been committed while we held an instance */
	if (pg_atomic_read_u64(&wf_shared->signal_generation) != batch.generation)
		SetLatch(MyLatch);
	batch.nwaiters = 0;
	batch.wake_database = false;
}

/* forget the batch: its transaction was rolled back */
static void
abandon_batch(void)
{
	wf_calls_abandon();
	batch.open = false;
	batch.nwaiters = 0;
	batch.nreleases = 0;
	batch.ndone = 0;
	batch.nahead = batch.next_ahead = 0;
	batch.wake_database = false;
	batch.streak = 0;
}

/*
 * Claiming ahead.  In a batch that goes on (a burst of wake-ups, a backlog),
 * the claim takes up to WF_CLAIM_AHEAD due instances at once and the next
 * ticks run them in order, each found again by its id.  Looking for the
 * first due instance walks the wake-time index from its start, past the
 * entries of every instance the batch has moved on (their old versions stay
 * until it commits) and those other executors hold: once per claim, that
 * walk grew with the batch and was a fifth of an executor's work in a burst.
 * The instances claimed ahead are locked until the batch commits, as the
 * ones it ran are: another executor takes the next ones.  An executor that
 * was idle claims one (its first instance commits alone), and the batch
 * claims ahead only while it has room for all of them.
 */
static int
claim(Datum *v)
{
	int			n;

	while (batch.next_ahead < batch.nahead)
	{
		v[1] = CStringGetTextDatum(batch.ahead[batch.next_ahead++]);
		if (wf_query_indexed(&q_claim_one, v, NULL, 1) == 1)
			return 1;
	}
	batch.nahead = batch.next_ahead = 0;
	/* idle until the claim finds something (shmem.c, wf_wake_idle()) */
	wf_executor_looking(my_slot);
	if (batch.streak > 0 && batch.instances + WF_CLAIM_AHEAD <= WF_BATCH_INSTANCES)
	{
		n = wf_query_indexed(&q_claim_some, v, NULL, 0);
		for (int i = 1; i < n; i++)
			strlcpy(batch.ahead[batch.nahead++], wf_get_text(i, 1), WF_MAX_ID_LEN + 1);
	}
	else
		n = wf_query_indexed(&q_claim_any, v, NULL, 1);
	/* woken for a new instance, but busy now: wake somebody else for it */
	if (n > 0 && wf_executor_found_work(my_slot))
		wf_wake_idle(MyDatabaseId, 1);
	return n;
}

/*
 * An instance is done for now: commit, or keep the transaction open for
 * the next due instance.  Returns true if the caller should tick again at
 * once (the batch goes on).
 */
static bool
instance_done(const char *id, bool final, bool wake_at)
{
	if (final)
		batch.waiters[batch.nwaiters++] = wf_id_hash(id);
	if (wake_at)
		batch.wake_database = true;
	batch.instances++;
	if (batch.streak > 1 && batch.instances < WF_BATCH_INSTANCES &&
		!TimestampDifferenceExceeds(batch.started, GetCurrentTimestamp(), WF_BATCH_MS) &&
		pg_atomic_read_u64(&wf_shared->signal_generation) == batch.generation)
	{
		ticking[0] = '\0';
		return true;
	}
	end_batch();
	return false;
}

/*
 * One tick: claim the current instance (or any runnable one), advance it as
 * far as one transaction may, commit (or leave the transaction open for the
 * next instance: see "Several instances per transaction").  Returns true if
 * the executor should tick again right away; sets *claimed if any instance
 * was claimed.
 */
static bool
tick(bool *claimed)
{
	MemoryContext tickcxt = CurrentMemoryContext;
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz tick_start = now;	/* no step of the tick starts earlier */
	Datum		v[8];
	char		n[8];
	char	   *id;
	Oid			owner,
				fn;
	int64		revision;
	Jsonb	   *event;
	int			steps = 0;
	WfOutcome	out;
	bool		again = false;
	uint64		generation;
	bool		isnull;
	char	   *status;
	char	   *command;
	char	   *from_step;
	char	   *code;
	char	   *version;
	int64		fn_hash;
	bool		terminated;
	bool		final;
	bool		use_pending;
	char	   *flow;			/* flow control: its member state, or NULL */
	bool		child;			/* it has a parent (composition) */
	char	   *flow_workflow = NULL;	/* flow control: its workflow, */
	Jsonb	   *flow_config = NULL; /* the workflow's config, */
	bool		flow_throttled = false; /* and a throttle granted its start */
	Datum		flow_keys = (Datum) 0;	/* the keys of slots taken on the fast path */
	Jsonb	   *params;
	bool		flow_commit = false;	/* a step of a shared resource: commit at once */
	WfFastSlot	fast = WF_FAST_NO;

	*claimed = false;
	inline_tick.ready = false;
	generation = pg_atomic_read_u64(&wf_shared->signal_generation);
	pg_memory_barrier();

	if (!batch.open)
	{
		begin_tx();
		if (!check_extension())
		{
			end_tx();
			return false;
		}
		batch.open = true;
		batch.instances = 0;
		batch.started = now;
		batch.generation = generation;
	}

	v[0] = TimestampTzGetDatum(now);
	if (cur.valid)
	{
		/*
		 * Go on with our instance; if another executor took it between our
		 * commit and now (it was due), take any other: going to sleep here
		 * would leave this executor idle while instances wait.
		 */
		v[1] = CStringGetTextDatum(cur.id);
		if (wf_query_indexed(&q_claim_one, v, NULL, 1) == 0)
			cur.valid = false;
	}
	if (!cur.valid && claim(v) == 0)
	{
		claimed_none_at = now;
		end_batch();
		batch.streak = 0;
		return false;
	}
	*claimed = true;
	batch.streak++;
	tick_wrote = false;

	/* in the tick's context: used after the commit, when SPI's memory is gone */
	id = MemoryContextStrdup(tickcxt, wf_get_text(0, 1));
	strlcpy(ticking, id, sizeof(ticking));
	owner = DatumGetObjectId(wf_get_datum(0, 2, &isnull));
	status = wf_get_text(0, 3);
	revision = DatumGetInt64(wf_get_datum(0, 6, &isnull));
	fn = DatumGetObjectId(wf_get_datum(0, 7, &isnull));
	command = wf_get_text(0, 8);
	from_step = wf_get_text(0, 9);
	fn_hash = DatumGetInt64(wf_get_datum(0, 10, &isnull));
	code = wf_get_text(0, 11);
	version = wf_get_text(0, 12);
	flow = wf_get_text(0, 13);
	child = DatumGetBool(wf_get_datum(0, 14, &isnull));
	tick_run = DatumGetInt32(wf_get_datum(0, 18, &isnull));
	if (flow != NULL)
	{
		/* for the fast path of flow control (flow.c) */
		flow_workflow = wf_get_text(0, 15);
		flow_config = wf_get_jsonb(0, 16);
		flow_throttled = DatumGetBool(wf_get_datum(0, 17, &isnull));
	}
	params = wf_get_jsonb(0, 4);
	event = make_event(id, params,
					   DatumGetTimestampTz(wf_get_datum(0, 5, &isnull)));

	/* a command left while another executor held the instance */
	if (command != NULL)
	{
		tick_wrote = true;
		status = apply_request(id, command, from_step);
		cur.valid = false;		/* a restart changed the memos */
		revision = -1;
	}
	if (!is_runnable_status(status))
	{
		/* paused or finished meanwhile: nothing to run */
		if (command == NULL)
		{
			Datum		idv = CStringGetTextDatum(id);

			wf_query(&q_park, &idv, NULL, 0);
		}
		terminated = (strcmp(status, "terminated") == 0);
		cur.valid = false;
		return instance_done(id, terminated, false);
	}

	/*
	 * Flow control (flow.c): an instance that holds no slot takes its slots
	 * first, or is delayed or held back; committed at once, so that the
	 * workflow's bookkeeping lock is held only that long.
	 */
	if (flow != NULL && strcmp(flow, "holds") != 0 &&
		(strcmp(flow_exact, id) == 0 || command != NULL ||
		 (fast = wf_flow_acquire_fast(flow_workflow, flow_config, flow_throttled,
									  params, &flow_keys)) != WF_FAST_TOOK_LATER))
	{
		bool		may_run;

		/*
		 * The exact path takes the workflow's lock exclusively, in a
		 * transaction that commits without waiting for its flush (flow.c):
		 * commit the work of the batch first (and any shared hold of the
		 * lock), as usual, and claim again, straight to the exact path.
		 */
		if (batch.instances > 0 || fast == WF_FAST_NO_LOCKED)
		{
			strlcpy(flow_exact, id, sizeof(flow_exact));
			cur.valid = false;
			end_batch();
			return true;
		}
		flow_exact[0] = '\0';
		may_run = wf_flow_acquire(id);
		cur.valid = false;
		if (instance_done(id, false, !may_run))
			end_batch();
		return true;
	}

	if (strcmp(status, "queued") == 0)
		ereport(wf_log_level >= WF_LOG_ALL ? LOG : DEBUG1,
				(errmsg("workflows: instance \"%s\" starts", id)));
	if (!cur.valid || strcmp(cur.id, id) != 0 || cur.revision != revision)
	{
		if (!cur.valid || strcmp(cur.id, id) != 0)
		{
			cur.classic_until = 0;
			forget_failures();
		}
		/*
		 * Memos are written by executors' ticks, crash recovery and
		 * restart, each of which moves the revision: a queued instance
		 * still at revision 0 has none.
		 */
		if (strcmp(status, "queued") == 0 && revision == 0)
			wf_replay_reset(id);
		else
			load_memos(id);
		strlcpy(cur.id, id, sizeof(cur.id));
		cur.valid = true;
		cur.pending_step = false;
	}
	use_pending = cur.pending_step;
	cur.pending_step = false;
	report(id, owner, NULL);

	memset(&out, 0, sizeof(out));

	/* the workflow's function was dropped: say so, not "cache lookup failed" */
	if (!SearchSysCacheExists1(PROCOID, ObjectIdGetDatum(fn)))
	{
		out.status = "errored";
		out.error = engine_error(psprintf("the function of workflow version %s (OID %u) was dropped",
										  version, fn),
								 "Register a new version of the workflow and create the instance again.");
	}
	/* a version whose function was replaced since: run what was registered */
	else if (code != NULL && wf_function_hash(fn) != fn_hash)
	{
		ErrorData  *error = NULL;

		fn = pinned_function(version, code, fn, &error);
		if (error != NULL)
		{
			out.status = "errored";
			out.error = wf_error_jsonb(error);
		}
	}
	/* its owner was dropped from another database (see roles.c) */
	if (out.status == NULL && (out.error = wf_missing_owner_error(owner)) != NULL)
		out.status = "errored";

	while (out.status == NULL)
	{
		Jsonb	   *output;
		ErrorData  *error;
		WfRunResult r;
		WfAction   *a;
		TimestampTz retry_at;

		CHECK_FOR_INTERRUPTS();
		if (use_pending)
		{
			/* the last transaction's final replay found this step */
			use_pending = false;
			r = WF_RUN_YIELD;
		}
		else
		{
			bool		wrote_before = tick_wrote;
			int			memos_before = wf_replay_memo_count();

			inline_tick.id = id;
			inline_tick.owner = owner;
			inline_tick.generation = generation;
			GetUserIdAndSecContext(&inline_tick.userid, &inline_tick.sec_context);
			inline_tick.for_command = false;
			r = wf_replay_run(fn, owner, event, inline_step, &output, &error);
			wf_clean_session();
			end_run_failures(r == WF_RUN_INTERRUPTED);
			if (r == WF_RUN_INTERRUPTED)
			{
				/*
				 * The run was rolled back with the steps it ran in place:
				 * forget them, and run this stretch one step per replay up
				 * to where the run stopped -- for good on this instance if
				 * workflow code wrote (every run in place would be lost).
				 * A command stopped it: this tick goes on one step per
				 * replay and commits at the next step boundary, where the
				 * command applies; later runs in place are not held back.
				 * Failed attempts of the run are recorded when the stretch
				 * reaches them (known_failure()).
				 */
				if (wf_replay_wrote())
					cur.classic_until = INT_MAX;
				else if (!inline_tick.for_command)
					cur.classic_until = memos_before + wf_replay_inline_count() + 1;
				else
					inline_tick.ready = false;	/* commit at the next boundary */
				tick_wrote = wrote_before;
				wf_crash_clear();
				load_memos(id);
				continue;
			}
			finish_sleeps(id);
		}

		if (r == WF_RUN_COMPLETE)
		{
			out.status = "complete";
			out.output = output;
			break;
		}
		if (r == WF_RUN_ERRORED)
		{
			/* first the rollbacks of its completed steps, one by one */
			int			rb = rollback_next(id, owner, &retry_at);

			if (rb == 1)
				continue;
			if (rb == 2)
			{
				out.status = "waiting";
				out.wake_at = retry_at;
				break;
			}
			out.status = "errored";
			out.error = wf_error_jsonb(error);
			ereport(wf_log_level >= WF_LOG_FAILURES ? LOG : DEBUG1,
					(errmsg("workflows: instance \"%s\" errored: %s", id,
							wf_log_step_details ? error->message : unpack_sql_state(error->sqlerrcode))));
			break;
		}

		a = wf_replay_action();
		now = GetCurrentTimestamp();
		if (a->kind == WF_ACT_STEP)
		{
			/*
			 * The transaction has run its steps: commit, and keep this step
			 * for the next transaction, which runs it without replaying
			 * (the memos it was found from stay valid while nobody else
			 * touches the instance: the revision tells).  Checked before a
			 * step rather than after it, so that the replay after the last
			 * step also settles a completion, a sleep or an event wait in
			 * the same commit.  Not inside a stretch whose run in place was
			 * just rolled back: it would have been one transaction, and
			 * its failed attempts are known only to this executor
			 * (known_failure()), which another could claim the instance
			 * from between two commits.
			 */
			if (steps >= wf_steps_per_transaction &&
				!(cur.classic_until != INT_MAX && wf_replay_memo_count() < cur.classic_until))
			{
				out.status = "running";
				again = true;
				cur.pending_step = true;
				break;
			}
			/* a step of a shared resource: its slot or throttle first (flow.c) */
			if (a->config.conc_limit > 0 || a->config.thr_limit > 0)
			{
				TimestampTz until;
				WfStepGate	gate = wf_flow_step_enter(id, a, &until);

				if (gate == WF_STEP_WAIT)
				{
					/* waits without an executor: woken by the step that frees a slot */
					out.status = "waiting";
					out.wake_at = until;
					flow_commit = true;
					break;
				}
				if (gate == WF_STEP_COMMIT_FIRST)
				{
					out.status = "running";
					again = true;
					cur.pending_step = true;
					break;
				}
			}
			if (a->step_kind->run == NULL)
			{
				/*
				 * Out of transaction: sent after this commit (async.c).  Its
				 * slot of a shared resource is its "calling" row, freed when
				 * the call is recorded (async.c): commit at once, so that
				 * others count it.
				 */
				WfMemo	   *memo;

				if (a->config.conc_limit > 0 || a->config.thr_limit > 0)
					flow_commit = true;
				if (start_call(id, owner, a, &retry_at))
					continue;
				memo = wf_replay_memo(a->key, false);
				out.status = (memo != NULL && memo->status == 'r') ? "waiting" : "running";
				out.wake_at = retry_at;
				break;
			}
			if (a->config.conc_limit > 0 || a->config.thr_limit > 0)
			{
				bool		ran;

				ran = run_step(id, owner, a, &retry_at, WF_AS_STEP);
				wf_flow_step_exit(id, a);
				/* commit now: that frees the slot, and wakes the next waiter */
				flow_commit = true;
				if (!ran)
				{
					out.status = "waiting";
					out.wake_at = retry_at;
					break;
				}
				out.status = "running";
				again = true;
				break;
			}
			if (!run_step(id, owner, a, &retry_at, WF_AS_STEP))
			{
				out.status = "waiting";
				out.wake_at = retry_at;
				break;
			}
			steps++;
			inline_tick.ready = true;

			/*
			 * Commit at this step boundary, without the replay after it,
			 * when a command (or an event) was left meanwhile: it applies
			 * here, before anything else of the instance happens; and when
			 * the database has initially deferred constraints, whose state
			 * the step changed for the rest of the transaction (owner.c):
			 * a replay must see them as a fresh transaction does.
			 */
			if (pg_atomic_read_u64(&wf_shared->signal_generation) != generation ||
				has_deferred_constraints())
			{
				out.status = "running";
				again = true;
				break;
			}
		}
		else if (a->kind == WF_ACT_SLEEP)
		{
			if (a->until <= now)
			{
				save_step(id, a, "sleep", "complete", NULL, NULL, NULL, 0, a->until, a->until);
				memo_step(a, 'z', 'c', NULL, NULL, 0, a->until);
				continue;
			}
			save_step(id, a, "sleep", "waiting", NULL, NULL, NULL, 0, 0, a->until);
			memo_step(a, 'z', 'w', NULL, NULL, 0, a->until);
			out.status = "waiting";
			out.wake_at = a->until;
			break;
		}
		else if (a->kind == WF_ACT_EVENT)
		{
			if (take_event(id, a, now))
				continue;
			out.status = "waiting";
			out.wake_at = a->until;
			out.waiting_for = a->event_type;
			break;
		}
		else if (a->kind == WF_ACT_AWAIT)
		{
			if (await_instances(id, owner, a, now, &out.wake_at, &out.waiting_for))
				continue;
			out.status = "waiting";
			break;
		}
		else if (a->kind == WF_ACT_ROLLBACK)
		{
			int			rb = rollback_next(id, owner, &retry_at);
			Jsonb	   *summary;

			if (rb == 1)
				continue;
			if (rb == 2)
			{
				out.status = "waiting";
				out.wake_at = retry_at;
				break;
			}
			summary = wf_compose_rollback_summary(id);
			save_step(id, a, "step", "complete", summary, NULL, NULL, 1, now, 0);
			memo_step(a, 's', 'c', summary, NULL, 1, 0);
			continue;
		}
		else if (a->kind == WF_ACT_WAIT)
		{
			out.status = "waiting";
			out.wake_at = a->until;
			break;
		}
		else
			elog(ERROR, "workflow yielded without an action");
	}

	memset(n, ' ', sizeof(n));
	v[0] = CStringGetTextDatum(id);
	v[1] = CStringGetTextDatum(out.status);
	v[2] = TimestampTzGetDatum(out.wake_at);
	n[2] = out.wake_at ? ' ' : 'n';
	v[3] = out.waiting_for ? CStringGetTextDatum(out.waiting_for) : (Datum) 0;
	n[3] = out.waiting_for ? ' ' : 'n';
	v[4] = JsonbPGetDatum(out.output);
	n[4] = out.output ? ' ' : 'n';
	v[5] = JsonbPGetDatum(out.error);
	n[5] = out.error ? ' ' : 'n';
	v[6] = TimestampTzGetDatum(GetCurrentTimestamp());
	n[6] = (out.output || out.error || strcmp(out.status, "complete") == 0) ? ' ' : 'n';
	v[7] = TimestampTzGetDatum(tick_start);
	wf_query(&q_instance_update, v, n, 1);
	cur.revision = DatumGetInt64(wf_get_datum(0, 1, &isnull));

	/* a command that arrived during the tick applies at its end */
	if (pg_atomic_read_u64(&wf_shared->signal_generation) != generation &&
		wf_query(&q_request, v, NULL, 1) == 1)
	{
		char	   *final = apply_request(id, wf_get_text(0, 1), wf_get_text(0, 2));

		out.status = final;
		again = is_runnable_status(final);
		cur.valid = false;
	}

	/* (terminations notify in workflows._apply()) */
	if (strcmp(out.status, "complete") == 0 || strcmp(out.status, "errored") == 0)
	{
		/* a child tells its parent (a parent is set at creation, for good) */
		if (child)
			wf_compose_finished(id);
		if (wf_notify)
			notify_final(id, out.status);
		ereport(wf_log_level >= WF_LOG_ALL ? LOG : DEBUG1,
				(errmsg("workflows: instance \"%s\" is %s", id, out.status)));
	}
	final = !is_runnable_status(out.status);
	/*
	 * Flow control (flow.c): slots taken on the fast path in this tick are
	 * written down once: now if it goes on running (held) or sleeps or
	 * waits (never held), just before the batch commits if it ended.  An
	 * instance that held them before and is not running any more stops
	 * holding them: here, if nobody is held back for them; otherwise they
	 * go to the next in a transaction of their own after this commits.
	 */
	if (fast == WF_FAST_TOOK_LATER &&
		(strcmp(out.status, "complete") == 0 || strcmp(out.status, "errored") == 0 ||
		 strcmp(out.status, "terminated") == 0))
	{
		/* done, with the others of the batch, in one statement before it commits */
		if (batch.ndone == WF_BATCH_INSTANCES + 1)
		{
			wf_flow_settle_done(batch.done, batch.ndone);
			batch.ndone = 0;
		}
		strlcpy(batch.done[batch.ndone++], id, WF_MAX_ID_LEN + 1);
	}
	else if (fast == WF_FAST_TOOK_LATER)
		wf_flow_settle(id, out.status, flow_keys);
	else if (flow != NULL && strcmp(out.status, "running") != 0 &&
			 !wf_flow_release_now(id, out.status) &&
			 batch.nreleases < WF_BATCH_INSTANCES + 1)
	{
		strlcpy(batch.releases[batch.nreleases].id, id, WF_MAX_ID_LEN + 1);
		batch.releases[batch.nreleases].revision = cur.revision;
		batch.nreleases++;
	}
	MemoryContextSwitchTo(tickcxt);
	if (flow_commit && !again)
	{
		cur.valid = false;
		if (instance_done(id, final, out.wake_at != 0))
			end_batch();
		return true;
	}
	if (again)
	{
		/* more of this instance: its next step commits on its own */
		if (final)
			batch.waiters[batch.nwaiters++] = wf_id_hash(id);
		if (out.wake_at != 0)
			batch.wake_database = true;
		end_batch();
		return true;
	}
	cur.valid = false;
	return instance_done(id, final, out.wake_at != 0);
}

/*
 * A failed tick: the instance is put back a second later, and its failure
 * counted in workflows.tick_failures ($2: false for a cancel, which is not
 * counted).  The count is per instance, whichever executor ran the tick,
 * and counts failures in a row: it starts again when the instance's
 * revision moved on since the last failure (the instance advanced, an
 * event or command arrived, it was restarted).
 */
static WfQuery q_tick_failed = {
	"WITH i AS (UPDATE workflows.instances SET wake_at = now() + interval '1 second', "
	"  revision = revision + 1 WHERE id = $1 AND wake_at IS NOT NULL RETURNING id, revision) "
	"INSERT INTO workflows.tick_failures AS f (instance_id, failures, revision, failed_at) "
	"SELECT id, CASE WHEN $2 THEN 1 ELSE 0 END, revision, now() FROM i "
	"ON CONFLICT (instance_id) DO UPDATE SET "
	"  failures = CASE WHEN f.revision = EXCLUDED.revision - 1 THEN f.failures ELSE 0 END "
	"             + EXCLUDED.failures, "
	"  revision = EXCLUDED.revision, failed_at = EXCLUDED.failed_at "
	"RETURNING failures",
	2, {TEXTOID, BOOLOID}, NULL
};

static WfQuery q_park_failed = {
	"UPDATE workflows.instances SET status = 'errored', wake_at = NULL, waiting_for = NULL, "
	"  error = $2, ended_at = now(), revision = revision + 1 "
	"WHERE id = $1 AND status IN ('queued', 'running', 'waiting')",
	2, {TEXTOID, JSONBOID}, NULL
};

/* how many failed ticks in a row an instance is allowed before it is parked */
#define WF_MAX_TICK_FAILURES	3

/*
 * tick(), with the errors that escape it contained.  Errors of the step and
 * of the workflow function are the instance's own and never get here
 * (wf_run_as() catches them); what does get here is the engine failing
 * around them -- its bookkeeping, the catalog, an instance it cannot read.
 * Left alone, such an error would end the executor, and its successor
 * would claim the same instance first again, forever.  Instead the
 * transaction is rolled back, the instance is put back a second later (so
 * the others run first), and after WF_MAX_TICK_FAILURES failures in a row
 * -- counted per instance in workflows.tick_failures, so across every
 * executor of the database and across their restarts -- it is parked as
 * errored with WF009 and the error, for workflows.restart() once the cause
 * is fixed.  A cancel (pg_cancel_backend) is not the instance's fault and
 * is only retried.
 */
static bool
safe_tick(bool *claimed)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool again = false;

	ticking[0] = '\0';
	PG_TRY();
	{
		again = tick(claimed);
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		char		id[WF_MAX_ID_LEN + 1];
		int			failures = 0;
		bool		isnull;
		Datum		v[2];

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		disable_timeout(step_timeout_id, false);
		(void) wf_in_step(false);
		AbortCurrentTransaction();
		abandon_batch();
		MemoryContextSwitchTo(cxt);
		wf_crash_clear();
		cur.valid = false;
		strlcpy(id, ticking, sizeof(id));
		ticking[0] = '\0';
		if (id[0] == '\0')
			ReThrowError(edata);	/* nothing claimed: not an instance's problem */

		ereport(LOG,
				(errmsg("workflows: could not advance instance \"%s\": %s", id, edata->message)));

		begin_tx();
		v[0] = CStringGetTextDatum(id);
		v[1] = BoolGetDatum(edata->sqlerrcode != ERRCODE_QUERY_CANCELED);
		if (wf_query(&q_tick_failed, v, NULL, 1) == 1)
			failures = DatumGetInt32(wf_get_datum(0, 1, &isnull));
		if (failures >= WF_MAX_TICK_FAILURES)
		{
			v[1] = JsonbPGetDatum(engine_error(psprintf("the instance could not be advanced %d times: %s",
														failures, edata->message),
											   "Fix the cause, then run workflows.restart() on the instance."));
			wf_query(&q_park_failed, v, NULL, 0);
			/* flow control: an errored instance frees its slots (flow.c) */
			(void) wf_flow_release(id, "errored");
			wf_compose_finished(id);
			if (wf_notify)
				notify_final(id, "errored");
		}
		end_tx();
		if (failures >= WF_MAX_TICK_FAILURES)
		{
			ereport(LOG,
					(errmsg("workflows: instance \"%s\" is parked as errored (WF009)", id)));
			wf_wake_waiters(wf_id_hash(id));
		}
		*claimed = true;
		again = false;
	}
	PG_END_TRY();
	return again;
}

/*
 * Make runnable now the instances whose awaited event has arrived, and
 * those with a command left for an executor that has since let them go.
 */
static bool
sweep_events(void)
{
	Datum		v[1];
	bool		isnull;
	int64		skipped = 0;

	begin_tx();
	if (check_extension())
	{
		v[0] = TimestampTzGetDatum(GetCurrentTimestamp());
		wf_query(&q_sweep, v, NULL, 1);
		skipped += DatumGetInt64(wf_get_datum(0, 1, &isnull));
		wf_query(&q_sweep_requests, v, NULL, 1);
		skipped += DatumGetInt64(wf_get_datum(0, 1, &isnull));
		skipped += wf_compose_sweep(DatumGetTimestampTz(v[0]));
	}
	end_tx();
	return skipped > 0;
}

/*
 * Earliest wake time of any instance after the last claim that found
 * nothing, or 0.  After that claim, not after now: an instance that became
 * due between the two was not there for the claim, and would be missed
 * until something else woke the executor (in a burst of sleepers, one in a
 * few hundred was a second late).  One that another executor holds is
 * looked past by the next empty claim, so this never spins.
 */
static TimestampTz
next_wake(void)
{
	Datum		v[1];
	bool		isnull;
	TimestampTz t = 0;

	begin_tx();
	if (!check_extension())
	{
		/* look again soon: ALTER EXTENSION UPDATE may come at any time */
		end_tx();
		return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
	}
	v[0] = TimestampTzGetDatum(claimed_none_at != 0 ? claimed_none_at : GetCurrentTimestamp());
	if (wf_query(&q_next_wake, v, NULL, 1) == 1)
	{
		Datum		d = wf_get_datum(0, 1, &isnull);

		if (!isnull)
			t = DatumGetTimestampTz(d);
	}
	end_tx();
	return t;
}

/*
 * Delete finished instances older than workflows.retention, with their
 * steps, attempts and events, 500 at a time in transactions of their own,
 * so that running instances are never blocked for long.  Executor 0 of each
 * database does it, at most once a minute (workflows.purge() does the same
 * on demand).
 */
static void
purge_finished(void)
{
	static TimestampTz last = 0;
	TimestampTz now = GetCurrentTimestamp();
	int			deleted;
	bool		isnull;

	if (my_slot->index != 0 ||
		!TimestampDifferenceExceeds(last, now, Min(60, wf_retention_s > 0 ? wf_retention_s : 60) * 1000))
		return;
	last = now;
	do
	{
		Datum		v[1];

		CHECK_FOR_INTERRUPTS();
		begin_tx();
		if (!check_extension())
		{
			end_tx();
			return;
		}
		v[0] = TimestampTzGetDatum(now - (TimestampTz) wf_retention_s * USECS_PER_SEC);
		wf_query(&q_purge, v, wf_retention_s > 0 ? NULL : "n", 1);
		deleted = (int) DatumGetInt64(wf_get_datum(0, 1, &isnull));
		end_tx();
		if (deleted > 0)
			ereport(DEBUG1, (errmsg("workflows: deleted %d finished instances", deleted)));
	} while (deleted == 500);
}

/* record the attempts of executors that stopped while we ran (crash.c) */
static void
recover_others(Oid dboid, int index)
{
	begin_tx();
	if (check_extension())
		wf_crash_recover(dboid, index);
	end_tx();
	wf_crash_clear_recovered(dboid);
}

/*
 * Sweep when an event, a command or a child's end was committed since the
 * last sweep, or when the last sweep could not take every instance it
 * found (locked by another transaction for a moment): then again after 10
 * ms, doubling up to a second while they stay locked.
 */
static TimestampTz sweep_again_at = 0;

static void
maybe_sweep(void)
{
	static int	again_ms = 0;
	uint64		g = pg_atomic_read_u64(&wf_shared->signal_generation);
	uint64		c = pg_atomic_read_u64(&wf_shared->child_generation);
	TimestampTz now = GetCurrentTimestamp();

	if (g != seen_signal_generation || c != seen_child_generation ||
		(sweep_again_at != 0 && now >= sweep_again_at))
	{
		seen_signal_generation = g;
		seen_child_generation = c;
		if (sweep_events())
		{
			again_ms = again_ms == 0 ? 10 : Min(again_ms * 2, 1000);
			sweep_again_at = TimestampTzPlusMilliseconds(now, again_ms);
		}
		else
		{
			again_ms = 0;
			sweep_again_at = 0;
		}
	}
}

/*
 * The executor's own statements run as the bootstrap superuser, so nothing
 * that an ordinary role can set may change how they are resolved or run.
 * The owner of a database can attach settings to it (ALTER DATABASE ...
 * SET), which every connection to it applies: a search_path naming a
 * schema of theirs before pg_catalog would let an operator of theirs be
 * picked by the executor's own queries.  These session-level settings
 * override the database's; the settings that user code makes are undone
 * after each run and step (see owner.c).
 */
static void
pin_session_settings(GucAction action)
{
	static const char *const pins[][2] = {
		{"search_path", "pg_catalog, pg_temp"},
		{"default_transaction_isolation", "read committed"},
		{"default_transaction_read_only", "off"},
		{"default_transaction_deferrable", "off"},
		{"statement_timeout", "0"},
		{"lock_timeout", "0"},
		{"idle_in_transaction_session_timeout", "0"},
		{"session_replication_role", "origin"},
	};

	for (size_t i = 0; i < lengthof(pins); i++)
		(void) set_config_option(pins[i][0], pins[i][1], PGC_SUSET, PGC_S_SESSION,
								 action, true, 0, false);
}

void
wf_executor_main(Datum arg)
{
	int			slotno = DatumGetInt32(arg);
	Oid			dboid;
	int			index;
	MemoryContext loopcxt;
	PGPROC	   *launcher;
	bool		flow_repaired = false;

	my_slot = &wf_slots[slotno];

	install_signal_handlers();
	BackgroundWorkerUnblockSignals();

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	memcpy(&index, MyBgworkerEntry->bgw_extra + sizeof(Oid), sizeof(int));
	memcpy(&my_generation, MyBgworkerEntry->bgw_extra + sizeof(Oid) + sizeof(int),
		   sizeof(uint32));

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("workflows executor");

	/*
	 * Take the slot only if it is still the one the launcher assigned us: a
	 * launcher restarted meanwhile may have given it to another executor.
	 * Refuse loudly rather than share it.
	 */
	SpinLockAcquire(&my_slot->mutex);
	if (my_slot->generation != my_generation || my_slot->dboid != dboid ||
		my_slot->index != index)
	{
		SpinLockRelease(&my_slot->mutex);
		ereport(LOG,
				(errmsg("workflows executor %d of database %u exits: its slot was given to another executor",
						index, dboid)));
		proc_exit(1);
	}
	my_slot->pid = MyProcPid;
	my_slot->proc = MyProc;
	SpinLockRelease(&my_slot->mutex);
	before_shmem_exit(executor_detach, 0);
	before_shmem_exit(executor_stopping, 0);

	step_timeout_id = RegisterTimeout(USER_TIMEOUT, step_timeout_handler);
	CacheRegisterSyscacheCallback(CONSTROID, constraints_changed, (Datum) 0);
	prev_executor_start = ExecutorStart_hook;
	ExecutorStart_hook = watch_executor_start;

	pin_session_settings(GUC_ACTION_SET);

	/* nothing is touched until the SQL objects are of the library's version */
	for (;;)
	{
		bool		ready;

		begin_tx();
		ready = check_extension();
		if (ready)
		{
			wf_crash_init(dboid, index, my_generation);
			wf_crash_recover(dboid, index);
		}
		end_tx();
		if (ready)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	wf_crash_clear_recovered(dboid);

	SpinLockAcquire(&my_slot->mutex);
	if (my_slot->generation == my_generation)
		my_slot->ready = true;
	SpinLockRelease(&my_slot->mutex);
	LWLockAcquire(wf_shared->lock, LW_SHARED);
	launcher = wf_shared->launcher_proc;
	LWLockRelease(wf_shared->lock);
	if (launcher != NULL)
		SetLatch(&launcher->procLatch);

	loopcxt = AllocSetContextCreate(TopMemoryContext, "workflows executor loop",
									ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		TimestampTz next;
		long		timeout;
		long		stats_ms;
		bool		claimed = false;

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		/* a cancel aimed at an idle executor has nothing to cancel */
		QueryCancelPending = false;

		MemoryContextSwitchTo(loopcxt);
		/* flow control: after a crash, slots nobody handed on (flow.c) */
		if (index == 0 && !flow_repaired)
		{
			begin_tx();
			if (check_extension())
				wf_flow_repair();
			end_tx();
			flow_repaired = true;
		}
		for (;;)
		{
			/* a reload applies between batches, even under load */
			if (ConfigReloadPending && !batch.open && !IsTransactionState())
			{
				ConfigReloadPending = false;
				ProcessConfigFile(PGC_SIGHUP);
			}
			if (wf_crash_pending(dboid, index))
				recover_others(dboid, index);
			maybe_sweep();
			MemoryContextReset(loopcxt);
			while (safe_tick(&claimed))
			{
				CHECK_FOR_INTERRUPTS();
				MemoryContextReset(loopcxt);
				/* calls in flight progress between instances too */
				if (!batch.open)
					service_calls(0);
				/* statistics, for autovacuum too (rate-limited inside) */
				if (!batch.open)
					pgstat_report_stat(false);
			}
			service_calls(0);
			pgstat_report_stat(false);
			if (!claimed)
				break;
			CHECK_FOR_INTERRUPTS();
		}
		report(NULL, InvalidOid, NULL);
		pgstat_report_activity(STATE_IDLE, NULL);
		purge_finished();
		/* flushed at most once a second; what is left, when it is due */
		stats_ms = pgstat_report_stat(false);

		/* work arrived while we looked around: no need to plan a sleep */
		if (MyLatch->is_set)
			continue;

		next = next_wake();
		MemoryContextReset(loopcxt);
		if (next == 0)
			timeout = wf_poll_interval_ms;
		else
			timeout = Min(wf_poll_interval_ms,
						  Max(0, TimestampDifferenceMilliseconds(GetCurrentTimestamp(), next)));
		/* executor 0 looks for expired instances once a minute */
		if (my_slot->index == 0)
			timeout = Min(timeout, Min(60, wf_retention_s > 0 ? wf_retention_s : 60) * 1000);
		if (stats_ms > 0)
			timeout = Min(timeout, stats_ms);
		if (sweep_again_at != 0)
			timeout = Min(timeout,
						  Max(0, TimestampDifferenceMilliseconds(GetCurrentTimestamp(), sweep_again_at)));
		if (wf_calls_in_flight() > 0)
			service_calls(timeout);		/* the latch, and the calls' sockets */
		else if (timeout > 0)
			(void) WaitLatch(MyLatch,
							 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 timeout, PG_WAIT_EXTENSION);
	}
}

/*-------------------------------------------------------------------------
 *
 * workflows.h
 *	  Declarations shared between the extension's source files.
 *
 * The extension is split by concern: GUCs (guc.c), shared memory (shmem.c),
 * the launcher (launcher.c), the per-database executors (executor.c), the
 * replay protocol used by step calls (replay.c), step callbacks (step.c),
 * step configuration and backoff (retry.c), wake-at-commit (wakeup.c), the
 * SPI wrapper (query.c) and the SQL-callable API (api.c).  src/README.md
 * describes the state machines these files implement together.
 *
 * IDENTIFICATION
 *	  src/workflows.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef WF_WORKFLOWS_H
#define WF_WORKFLOWS_H

#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/spin.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "errors.h"
#include "workflows_step_kind.h"

/* the version of the SQL objects this library serves (from the Makefile) */
#ifndef WF_EXTVERSION
#error "WF_EXTVERSION must be defined (see the Makefile)"
#endif

/* longest instance id and step name, in bytes */
#define WF_MAX_ID_LEN		200
#define WF_MAX_NAME_LEN		200
/* a step key is the name plus "#" and an occurrence number */
#define WF_MAX_KEY_LEN		(WF_MAX_NAME_LEN + 16)

/* upper bound of workflows.max_workers (executors per database) */
#define WF_MAX_WORKERS_LIMIT	64

/* ---- guc.c ---- */
extern int	wf_max_workers;
extern int	wf_max_databases;
extern int	wf_poll_interval_ms;
extern int	wf_steps_per_transaction;
extern bool wf_inline_steps;
extern int	wf_max_payload_size;
extern int	wf_max_output_size;
extern int	wf_max_steps;
extern int	wf_max_step_crashes;
extern char *wf_step_search_path;
extern int	wf_retention_s;
extern int	wf_memo_cache_kb;
extern int	wf_audit_retention_s;
extern int	wf_log_level;
extern bool wf_log_step_details;
extern bool wf_notify;
extern char *wf_http_allowed_hosts;
extern int	wf_max_calls;
extern bool wf_notify_steps;

/* workflows.log_level */
#define WF_LOG_OFF			0
#define WF_LOG_FAILURES		1
#define WF_LOG_ALL			2

extern void wf_define_gucs(void);

/* ---- shmem.c ---- */

/*
 * One executor slot.  Slots are indexed by database: database entry d owns
 * slots d * workflows.max_workers .. (d + 1) * workflows.max_workers - 1,
 * executor k of that database uses the k-th.  The launcher assigns a slot
 * (dboid, index, a new generation) before it registers the worker; the
 * executor fills in pid and proc while it runs, but only while the slot
 * still carries the generation it was started with, so an orphan of an
 * earlier launcher can never clear or overwrite its successor's slot.
 * Everything is protected by the slot's own spinlock: the executor's
 * progress reports and the wake-ups of committing backends touch one slot
 * each and contend with nobody else.
 */
typedef struct WfWorkerSlot
{
	slock_t		mutex;			/* protects the fields below */
	uint32		generation;		/* bumped at every assignment */
	Oid			dboid;			/* InvalidOid: slot free */
	int			index;			/* executor number within its database */
	pid_t		pid;			/* 0 while not running */
	PGPROC	   *proc;			/* for its latch */
	bool		ready;			/* confirmed the extension exists */
	bool		extension_absent;	/* exited because the database has no
									 * extension */
	/* what it is doing, for the executors view */
	Oid			owner;			/* of the instance */
	char		instance[WF_MAX_ID_LEN + 1];
	char		step[WF_MAX_KEY_LEN + 1];
	TimestampTz since;
	int			calls;			/* out-of-transaction steps in flight */
	/* who to wake for new instances (wf_wake_idle()) */
	bool		idle;			/* looking for work: its claim may find none */
	bool		woken;			/* woken for new work since it began to look */
} WfWorkerSlot;

/* backends that may pause one database's executors at the same time */
#define WF_MAX_PAUSERS		4
/* length of a database's "problem" text (executor_status()) */
#define WF_PROBLEM_LEN		160

/*
 * A database served by the launcher: one that has the extension.  Only the
 * launcher assigns and frees entries (dboid), under wf_shared->lock in
 * exclusive mode; committing backends read dboid without the lock to find
 * the slots to wake (a stale read costs one spurious or one missed latch,
 * and an executor that starts sweeps anyway).  The other fields are under
 * wf_shared->lock.
 */
typedef struct WfDatabase
{
	Oid			dboid;			/* InvalidOid: entry free */
	/* backends running ALTER/CREATE DATABASE on it: executors must stay away */
	pid_t		paused_by[WF_MAX_PAUSERS];
	bool		stopped;		/* paused, and no executor of it runs */
	/* published by the launcher, for workflows.executor_status() */
	int			running;		/* executors with a live process */
	int64		failed_starts;	/* workers that could not be registered */
	char		problem[WF_PROBLEM_LEN];	/* why fewer run than configured */
} WfDatabase;

/* a database the launcher asked a probe worker to look at */
#define WF_MAX_PROBES		2
typedef struct WfProbe
{
	slock_t		mutex;
	Oid			dboid;
	int			result;			/* WF_PROBE_* */
} WfProbe;

#define WF_PROBE_PENDING	0
#define WF_PROBE_ABSENT		1
#define WF_PROBE_PRESENT	2

/* a backend blocked in workflows.wait() */
#define WF_MAX_WAITERS		128
typedef struct WfWaiter
{
	PGPROC	   *proc;			/* NULL: free */
	uint32		idhash;			/* hash of the awaited instance id */
} WfWaiter;

/* launch requests the launcher has not taken yet; more set launch_overflow */
#define WF_MAX_LAUNCH		64
/* databases with the extension but no entry, as published by the launcher */
#define WF_MAX_STRANDED		16

typedef struct WfShared
{
	/*
	 * The database table, the launcher's identity and the stranded list.
	 * Neither the slots (their own spinlocks) nor the waiters (waiters_lock)
	 * nor the launch queue (launch_mutex) are under it: nothing a committing
	 * backend or an executor's tick does takes it.
	 */
	LWLock	   *lock;
	LWLock	   *waiters_lock;
	pid_t		launcher_pid;
	PGPROC	   *launcher_proc;
	/* bumped after every commit that sent an event or left a request */
	pg_atomic_uint64 signal_generation;
	/*
	 * bumped after every commit that ended a child instance (compose.c):
	 * executors sweep for the parents it woke between their batches, but
	 * unlike signal_generation it does not end a batch early
	 */
	pg_atomic_uint64 child_generation;
	/* databases to (re)probe: extension created, database created */
	slock_t		launch_mutex;
	int			nlaunch;
	bool		launch_overflow;	/* requests were lost: rescan everything */
	Oid			launch[WF_MAX_LAUNCH];
	/*
	 * Databases without an entry that should have one: 'f' the table is full
	 * (workflows.max_databases), 'w' no worker process for the probe.
	 */
	int			nstranded;
	Oid			stranded[WF_MAX_STRANDED];
	char		stranded_why[WF_MAX_STRANDED];
	int64		stranded_failed[WF_MAX_STRANDED];
	WfProbe		probes[WF_MAX_PROBES];
	/* backends in workflows.wait(); executors wake them at final states */
	WfWaiter	waiters[WF_MAX_WAITERS];
	int			ndatabases;		/* workflows.max_databases */
	int			nslots;			/* ndatabases * workflows.max_workers */
} WfShared;

extern WfShared *wf_shared;
extern WfDatabase *wf_databases;
extern WfWorkerSlot *wf_slots;

extern void wf_shmem_init(void);
extern int	wf_find_database(Oid dboid);
extern void wf_wake_database(Oid dboid);
extern void wf_wake_idle(Oid dboid, int n);
extern void wf_executor_looking(WfWorkerSlot *slot);
extern bool wf_executor_found_work(WfWorkerSlot *slot);
extern void wf_request_launch(Oid dboid);
extern void wf_read_slot(int n, WfWorkerSlot *copy);
extern bool wf_executor_running(Oid dboid, int index, uint32 generation);
extern void wf_pause_database(Oid dboid);
extern void wf_resume_database(Oid dboid);
extern int	wf_free_worker_processes(void);
extern uint32 wf_id_hash(const char *id);
extern int	wf_add_waiter(uint32 idhash);
extern void wf_remove_waiter(int n);
extern void wf_wake_waiters(uint32 idhash);

/* ---- wakeup.c ---- */
extern void wf_wake_at_commit(void);
extern void wf_wake_new_at_commit(int64 n);
extern void wf_signal_at_commit(void);
extern void wf_child_signal_at_commit(void);
extern void wf_waiters_at_commit(void);
extern void wf_launch_at_commit(void);
extern void wf_probe_at_commit(Oid dboid);
extern void wf_resume_at_end(Oid dboid);

/* ---- utility.c ---- */
extern void wf_install_utility_hook(void);

/* ---- api.c: run as the extension's owner, connected to SPI ---- */
typedef struct WfAsOwner
{
	Oid			save_userid;
	int			save_sec;
} WfAsOwner;

extern void wf_as_owner_begin(WfAsOwner *s);
extern void wf_as_owner_end(WfAsOwner *s);
extern bool wf_erase_instance(const char *id, Oid caller, Jsonb *details);

/* ---- roles.c ---- */
extern void wf_roles_utility(Node *parsetree, bool after);
extern Jsonb *wf_missing_owner_error(Oid owner);

/* ---- launcher.c / executor.c ---- */
extern PGDLLEXPORT void wf_launcher_main(Datum arg);
extern PGDLLEXPORT void wf_executor_main(Datum arg);
extern PGDLLEXPORT void wf_probe_main(Datum arg);
extern void wf_register_launcher(void);
extern void wf_check_launch(void);

/* ---- retry.c ---- */
typedef enum WfBackoff
{
	WF_BACKOFF_CONSTANT,
	WF_BACKOFF_LINEAR,
	WF_BACKOFF_EXPONENTIAL
} WfBackoff;

/* the longest key of a step's "concurrency" or "throttle" */
#define WF_MAX_FLOW_KEY_LEN		200

typedef struct WfStepConfig
{
	int			retries_limit;	/* retries after the first attempt */
	int64		delay_ms;		/* base delay between attempts */
	WfBackoff	backoff;
	int64		timeout_ms;		/* per attempt; 0 = none */
	bool		inline_ok;		/* may run in place (replay.c); false for a
								 * step that acts outside the database */
	bool		timeout_set;	/* "timeout" was given */
	/* flow control of a shared resource (flow.c): 0 limit = none */
	int			conc_limit;
	char		conc_key[WF_MAX_FLOW_KEY_LEN + 1];
	int			thr_limit;
	int64		thr_period_ms;
	char		thr_key[WF_MAX_FLOW_KEY_LEN + 1];
	char	   *rollback;		/* compensation: SQL text or a function's
								 * signature, or NULL (compose.c) */
} WfStepConfig;

extern void wf_parse_step_config(Jsonb *config, WfStepConfig *cfg);
extern Jsonb *wf_step_config_jsonb(const WfStepConfig *cfg);
extern int64 wf_retry_delay_ms(const WfStepConfig *cfg, int failed_attempt);
extern int64 wf_interval_ms(Interval *iv);
extern const char *wf_duration_ms(JsonbValue *v, int64 *ms);

/* ---- query.c ---- */
typedef struct WfQuery
{
	const char *sql;
	int			nargs;
	Oid			argtypes[20];
	SPIPlanPtr	plan;			/* prepared on first use, kept */
} WfQuery;

extern int	wf_query(WfQuery *q, Datum *values, const char *nulls, long count);
extern int	wf_query_indexed(WfQuery *q, Datum *values, const char *nulls, long count);
/* api.c: the role a control command acts for (see run_command()) */
extern Oid	wf_acting_role(void);
extern Oid	wf_set_acting_role(Oid role);
extern int	wf_query_acting(WfQuery *q, Datum *values, const char *nulls, long count,
							Oid role);
extern Oid	wf_extension_owner(void);
extern char *wf_installed_version(void);
extern void wf_check_installed_version(void);
extern Datum wf_get_datum(int row, int col, bool *isnull);
extern char *wf_get_text(int row, int col);
extern Jsonb *wf_get_jsonb(int row, int col);
extern bool wf_can_see(Oid owner, Oid role);
extern Jsonb *wf_error_jsonb(ErrorData *edata);
extern Jsonb *wf_cstring_jsonb(const char *json);
extern int64 wf_function_hash(Oid fn);

/* ---- flow.c: flow control's hooks (sql/install/45_flow_control.sql) ---- */
extern char *wf_flow_admit(const char *id, Jsonb *options, Oid caller);
extern bool wf_flow_acquire(const char *id);
extern int	wf_flow_release(const char *id, const char *status);
typedef enum WfFastSlot
{
	WF_FAST_TOOK_LATER,			/* took its slots: run it, then wf_flow_settle() */
	WF_FAST_NO,					/* take the exact path */
	WF_FAST_NO_LOCKED			/* commit first, then the exact path */
} WfFastSlot;
extern WfFastSlot wf_flow_acquire_fast(const char *workflow, Jsonb *config, bool throttled,
									   Jsonb *params, Datum *taken);
extern bool wf_flow_admit_all(const char *workflow, Datum ids);
extern void wf_flow_settle(const char *id, const char *status, Datum taken);
extern void wf_flow_settle_done(char ids[][WF_MAX_ID_LEN + 1], int count);
extern bool wf_flow_release_now(const char *id, const char *status);
extern void wf_flow_release_after(const char *id, int64 rev, void (*begin) (void), void (*end) (void));
extern void wf_flow_repair(void);
struct WfAction;
typedef enum WfStepGate
{
	WF_STEP_GO,					/* run the step now */
	WF_STEP_WAIT,				/* wait: *until, or 0 for a free slot */
	WF_STEP_COMMIT_FIRST		/* commit, then come back */
} WfStepGate;
extern WfStepGate wf_flow_step_enter(const char *id, struct WfAction *a, TimestampTz *until);
extern void wf_flow_step_exit(const char *id, struct WfAction *a);

/* ---- step.c ---- */
extern Jsonb *wf_datum_to_jsonb(Datum value, Oid typid, bool isnull);
extern Jsonb *wf_run_sql_callback(const char *sql, Jsonb *args);
extern Jsonb *wf_run_fn_callback(Oid fn, Jsonb *input);
extern void wf_check_step_fn(Oid fn);

/* ---- kinds.c, http.c, secrets.c ---- */
extern const WfStepKind wf_sql_kind;
extern const WfStepKind wf_fn_kind;
extern const WfStepKind wf_http_kind;
extern void wf_register_builtin_kinds(void);
extern const WfStepKind *wf_step_kind(const char *name);
extern void wf_check_kind_privilege(const WfStepKind *kind, Oid owner);
extern bool wf_http_header_value_valid(const char *s);
extern bool wf_secret_name_valid(const char *name);
extern char *wf_secret_value(Oid owner, const char *name);

/* ---- ids.c ---- */
extern char *wf_new_instance_id(void);

/* ---- async.c ---- */
/* how long after its deadline nobody else takes an instance whose call is in flight */
#define WF_CALL_LEASE_MS	5000
extern int	wf_calls_in_flight(void);
extern WfStepCall *wf_call_new(const char *id, const char *key, Oid owner, int attempt,
							   Jsonb *request, int64 timeout_ms);
extern void wf_call_discard(WfStepCall *call);
extern void wf_calls_defer(const char *id);
extern void wf_call_queue(WfStepCall *call, const WfStepKind *kind,
						  const WfStepConfig *cfg, int interrupted, int seq,
						  TimestampTz start);
extern void wf_calls_committed(void);
extern void wf_calls_abandon(void);
extern bool wf_calls_service(long timeout_ms);

/* ---- crash.c ---- */
struct WfAction;
extern void wf_crash_init(Oid dboid, int index, uint32 generation);
extern void wf_crash_note_attempt(const char *id, struct WfAction *a, Jsonb *config,
								  bool first);
extern void wf_crash_clear(void);
extern void wf_crash_recover(Oid dboid, int myindex);
extern void wf_crash_clear_recovered(Oid dboid);
extern void wf_crash_orderly_stop(void);
extern bool wf_crash_pending(Oid dboid, int myindex);

/* ---- owner.c ---- */
/* how wf_run_as() runs user code */
typedef enum WfRunAs
{
	WF_AS_STEP,					/* a step: writes kept, what it queued settled */
	WF_AS_INLINE_STEP,			/* a step run from inside a replay */
	WF_AS_REPLAY				/* a replay: security-restricted; kept only when
								 * wf_replay_keep() says so */
} WfRunAs;

extern ErrorData *wf_run_as(Oid role, WfRunAs mode, void (*fn) (void *arg), void *arg);
extern void wf_clean_session(void);

/* ---- replay.c ---- */

/* what a workflow run asked for when it stopped */
typedef enum WfActionKind
{
	WF_ACT_NONE,
	WF_ACT_STEP,				/* run a step callback */
	WF_ACT_SLEEP,				/* wait until a time */
	WF_ACT_EVENT,				/* take an event, or wait for one */
	WF_ACT_WAIT,				/* woken early: wait on until "until" */
	WF_ACT_AWAIT,				/* wait for instances to end (compose.c) */
	WF_ACT_ROLLBACK				/* run the rollbacks of completed steps */
} WfActionKind;

typedef struct WfAction
{
	WfActionKind kind;
	char	   *key;
	char	   *name;
	int64		hash;
	bool		is_new;			/* no step row exists yet */
	int			seq;			/* position of the step in the instance */
	/* WF_ACT_STEP */
	const WfStepKind *step_kind;	/* kinds.c */
	char	   *sql;			/* the SQL kind's text */
	Oid			fn;				/* the function kind's function */
	Jsonb	   *args;			/* args, input, or a plugin kind's request */
	bool		resumed_call;	/* an out-of-transaction attempt was in flight */
	WfStepConfig config;
	int			attempt;		/* number of the attempt to run */
	int			interrupted;	/* earlier attempts cut short by a shutdown */
	/* WF_ACT_SLEEP: until; WF_ACT_EVENT: deadline */
	TimestampTz until;
	TimestampTz started;		/* first encounter of the step */
	char	   *event_type;
} WfAction;

typedef enum WfRunResult
{
	WF_RUN_YIELD,				/* stopped at an action */
	WF_RUN_COMPLETE,			/* returned */
	WF_RUN_ERRORED,				/* raised */
	WF_RUN_INTERRUPTED			/* stopped after steps it ran inline: they
								 * were rolled back with it */
} WfRunResult;

/* runs a step from inside a replay; false: not now (the replay yields) */
typedef bool (*WfInlineStepFn) (WfAction *a);

/* memoized state of one step, as loaded from workflows.steps */
typedef struct WfMemo
{
	char		key[WF_MAX_KEY_LEN + 1];	/* hash key: must be first */
	char		type;			/* 's' step, 'z' sleep, 'e' event, 'a' await */
	char		status;			/* 'r'etrying, 'w'aiting, 'c'omplete, 'f'ailed,
								 * 'o': calling (out of transaction) */
	int64		hash;
	int			attempts;
	int			interrupted;	/* of those, cut short by a shutdown */
	int			seq;
	TimestampTz wake_at;
	TimestampTz started;
	Jsonb	   *output;			/* NULL: none, or not kept (stored_output) */
	bool		stored_output;	/* workflows.steps has an output */
	uint32		visited_run;	/* last run that reached this step */
	Jsonb	   *error;
} WfMemo;

extern void wf_replay_reset(const char *instance_id);
extern WfMemo *wf_replay_memo(const char *key, bool create);
extern int	wf_replay_memo_count(void);
extern void wf_replay_note_stray(void);
extern MemoryContext wf_replay_cxt(void);
extern Jsonb *wf_replay_keep_output(Jsonb *output);
extern bool wf_replay_output_fits(Size size);
extern WfRunResult wf_replay_run(Oid fn, Oid owner, Jsonb *event,
								 WfInlineStepFn inline_step,
								 Jsonb **output, ErrorData **error);
extern int	wf_replay_inline_count(void);
extern bool wf_replay_wrote(void);
extern bool wf_replay_keep(void);
extern void wf_replay_watch_write(bool writes);
extern WfAction *wf_replay_action(void);
extern List *wf_replay_finished_sleeps(void);
extern bool wf_in_step(bool enter);
extern WfMemo *wf_replay_begin(const char *fname, const char *name, char type,
							   int64 hash, char **key);
extern WfAction *wf_replay_new_action(WfActionKind kind, WfMemo *memo,
									  const char *key, const char *name,
									  int64 hash);
extern void wf_replay_yield(const char *key) pg_attribute_noreturn();
extern void wf_replay_reraise(WfMemo *memo) pg_attribute_noreturn();
extern Datum wf_replay_output(FunctionCallInfo fcinfo, WfMemo *memo);
extern Datum wf_replay_sql_step(FunctionCallInfo fcinfo, const char *fname,
								char *name, char *sql, Jsonb *args,
								Jsonb *config);
extern char *wf_replay_peek_key(const char *name);
extern const char *wf_replay_instance(void);
extern TimestampTz wf_replay_now(void);
extern MemoryContext wf_replay_runcxt(void);
extern int64 wf_replay_hash(char kind, const char *text, Jsonb *args);

/* ---- compose.c ---- */
/* the event type that tells a parent one of its children ended */
#define WF_CHILD_EVENT		"workflows.child"
extern int	wf_max_depth;
/* waiting_for of an instance awaiting all the children of one spawn step */
#define WF_GROUP_WAIT		"workflows.group:"
extern char wf_compose_await(const char *id, Oid owner, WfAction *a,
							 TimestampTz now, Jsonb **output, Jsonb **error,
							 TimestampTz *wake, const char **waiting_for);
extern int64 wf_compose_sweep(TimestampTz now);
extern void wf_compose_finished(const char *id);
extern bool wf_compose_next_rollback(const char *id, WfAction *a);
extern Jsonb *wf_compose_rollback_summary(const char *id);
extern void wf_compose_notify_step(const char *id, const char *key, int seq,
								   const char *status);

#endif							/* WF_WORKFLOWS_H */

/*-------------------------------------------------------------------------
 *
 * replay.c
 *	  The memo cache and the yield protocol used by step calls.
 *
 * An executor runs a workflow function from the top every time the
 * instance advances ("replay").  Each step call -- step(), sleep(),
 * sleep_until(), wait_for_event() -- computes its key (name, plus "#n" for
 * the n-th call of that name in this run) and looks it up in the memo cache
 * that the executor loaded from workflows.steps:
 *
 *	- a completed step returns its memoized output at once;
 *	- a step that failed for good raises its memoized error again, so that
 *	  workflow code can catch it at the same place every time;
 *	- anything else records what must happen next (the "action") and raises
 *	  the internal yield error, which unwinds the workflow function.  The
 *	  executor rolls back the workflow's subtransaction and does the action
 *	  outside the workflow's stack.
 *
 * Whether a run yielded is decided by our own flag, not by the error that
 * reached the executor: workflow code that swallows the yield with
 * EXCEPTION WHEN OTHERS cannot make the engine lose it, and every later
 * step call in the same run yields again at once.
 *
 * Inline steps.  Replaying from the top for every new step costs O(N) per
 * step, O(N^2) for an instance of N steps.  So a run may instead run a new
 * step in place: step() hands it to the executor (the inline_step callback
 * of wf_replay_run()), which runs and records it exactly as it would after
 * a yield -- its own subtransaction as the owner, its memo and attempt in
 * the same transaction -- and step() returns its output to the workflow
 * code, which goes on.  The run's subtransaction then holds those steps, so
 * it can only be kept if the run ends by returning: a run that yields or
 * raises after running steps in place is rolled back with them, and the
 * executor runs the same stretch again one step per replay
 * (WF_RUN_INTERRUPTED).  A run that returns is kept only if workflow code
 * itself wrote nothing (the executor reports its statements through
 * wf_replay_watch_write()): its writes between steps must not persist,
 * whatever the mode (the rules of workflows).  The executor decides per
 * step whether it may run in place (nothing waiting to be applied to the
 * instance, no deferred constraints, not a stretch that was interrupted).
 *
 * IDENTIFICATION
 *	  src/replay.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

PG_FUNCTION_INFO_V1(wf_step_sql);
PG_FUNCTION_INFO_V1(wf_step_fn);
PG_FUNCTION_INFO_V1(wf_sleep);
PG_FUNCTION_INFO_V1(wf_sleep_until);
PG_FUNCTION_INFO_V1(wf_wait_for_event);
PG_FUNCTION_INFO_V1(wf_http);
PG_FUNCTION_INFO_V1(wf_plugin_step);

/* occurrences of a step name in the current run */
typedef struct WfCount
{
	char		name[WF_MAX_NAME_LEN + 1];
	uint32		run;			/* run this count belongs to */
	int			count;
} WfCount;

typedef struct WfReplayState
{
	bool		active;			/* a workflow function is running */
	bool		yielded;		/* ... and a step call asked it to stop */
	bool		in_step;		/* a step callback is running */
	MemoryContext cxt;			/* memo cache of the current instance */
	MemoryContext runcxt;		/* the current run's action */
	HTAB	   *memos;
	HTAB	   *counts;
	int			nmemos;
	int			nstray;			/* memos without a place yet (seq < 0) */
	int			visited;		/* memos the current run has reached */
	char		instance[WF_MAX_ID_LEN + 1];	/* whose memos these are */
	Size		output_bytes;	/* of the outputs kept in the cache */
	uint32		run;
	TimestampTz now;			/* the run's clock */
	WfAction	action;
	List	   *finished_sleeps;	/* keys of sleeps found over in this run */
	/* steps run in place (see "Inline steps" above) */
	WfInlineStepFn inline_step; /* the executor's, or NULL: yield instead */
	int			inline_count;	/* steps this run ran (or began) in place */
	bool		in_engine;		/* the executor records one of them */
	bool		wrote;			/* workflow code itself wrote something */
} WfReplayState;

static WfReplayState R;

/*
 * Forget the cached memos: the executor moves to another instance, or found
 * that another executor advanced this one.
 */
void
wf_replay_reset(const char *instance_id)
{
	HASHCTL		ctl;

	if (R.cxt == NULL)
	{
		R.cxt = AllocSetContextCreate(TopMemoryContext, "workflows memo cache",
									  ALLOCSET_DEFAULT_SIZES);
		R.runcxt = AllocSetContextCreate(TopMemoryContext, "workflows run",
										 ALLOCSET_DEFAULT_SIZES);
	}
	MemoryContextReset(R.cxt);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = WF_MAX_KEY_LEN + 1;
	ctl.entrysize = sizeof(WfMemo);
	ctl.hcxt = R.cxt;
	R.memos = hash_create("workflows memos", 64, &ctl,
						  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = WF_MAX_NAME_LEN + 1;
	ctl.entrysize = sizeof(WfCount);
	ctl.hcxt = R.cxt;
	R.counts = hash_create("workflows step counts", 64, &ctl,
						   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	R.nmemos = 0;
	R.nstray = 0;
	R.output_bytes = 0;
	strlcpy(R.instance, instance_id, sizeof(R.instance));
}

/*
 * A copy of a step's output for the cache, or NULL when the cache already
 * holds workflows.memo_cache_size of outputs: then the memo only notes
 * that an output exists, and a replay that reaches the step reads it from
 * workflows.steps (fetch_output()).  Keeps an executor's memory bounded
 * whatever the instance's steps return.  "output" must be detoasted; the
 * copy lives in the cache's context.
 */
Jsonb *
wf_replay_keep_output(Jsonb *output)
{
	Jsonb	   *copy;

	if (output == NULL ||
		R.output_bytes + VARSIZE(output) > (Size) wf_memo_cache_kb * 1024)
		return NULL;
	R.output_bytes += VARSIZE(output);
	copy = MemoryContextAlloc(R.cxt, VARSIZE(output));
	memcpy(copy, output, VARSIZE(output));
	return copy;
}

/*
 * Would an output of "size" bytes (detoasted, header included) still fit
 * in the cache?  Asked before detoasting one: a compressed output can be
 * many times its stored size.
 */
bool
wf_replay_output_fits(Size size)
{
	return R.output_bytes + size <= (Size) wf_memo_cache_kb * 1024;
}

/*
 * Find (or, with create, add) the memo of a step.  Outputs and errors the
 * caller stores in a memo must be allocated in wf_replay_cxt(), which lives
 * as long as the cache.
 */
WfMemo *
wf_replay_memo(const char *key, bool create)
{
	bool		found;
	WfMemo	   *memo;

	memo = hash_search(R.memos, key, create ? HASH_ENTER : HASH_FIND, &found);
	if (create && !found)
	{
		char		keep[WF_MAX_KEY_LEN + 1];

		strlcpy(keep, memo->key, sizeof(keep));
		memset(memo, 0, sizeof(WfMemo));
		strlcpy(memo->key, keep, sizeof(memo->key));
		R.nmemos++;
	}
	return memo;
}

/* after load: a memo with seq < 0 is a stray (crash.c) */
void
wf_replay_note_stray(void)
{
	R.nstray++;
}

int
wf_replay_memo_count(void)
{
	return R.nmemos;
}

MemoryContext
wf_replay_cxt(void)
{
	return R.cxt;
}

WfAction *
wf_replay_action(void)
{
	return &R.action;
}

List *
wf_replay_finished_sleeps(void)
{
	return R.finished_sleeps;
}

/* mark a step callback as running (or not); returns the previous state */
bool
wf_in_step(bool enter)
{
	bool		was = R.in_step;

	R.in_step = enter;
	return was;
}

static void
check_active(const char *fname)
{
	if (R.in_step)
		ereport(ERROR,
				(errcode(ERRCODE_WF_NOT_IN_WORKFLOW),
				 errmsg("%s cannot be called inside a step", fname),
				 errhint("Call steps from the workflow function, not from a step's callback.")));
	if (!R.active)
		ereport(ERROR,
				(errcode(ERRCODE_WF_NOT_IN_WORKFLOW),
				 errmsg("%s can only be called by a workflow function run by an executor", fname),
				 errhint("Register the function with workflows.register() and start it with workflows.create().")));
}

static void
pg_attribute_noreturn()
yield(const char *key)
{
	R.yielded = true;
	ereport(ERROR,
			(errcode(ERRCODE_WF_YIELD),
			 errmsg("workflow stopped at step \"%s\"", key),
			 errdetail("This is how a workflow waits for its executor; workflow code must let it pass.")));
}

static char *
text_arg(FunctionCallInfo fcinfo, int n, const char *what)
{
	char	   *s;

	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
	s = text_to_cstring(PG_GETARG_TEXT_PP(n));
	return s;
}

/*
 * The key of the next call of step "name" in this run.  The n-th call of a
 * name (n > 1) gets "name#n".
 */
static char *
next_key(const char *name)
{
	WfCount    *c;
	bool		found;

	if (name[0] == '\0' || strlen(name) > WF_MAX_NAME_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("step name must be 1 to %d bytes long", WF_MAX_NAME_LEN)));
	c = hash_search(R.counts, name, HASH_ENTER, &found);
	if (!found || c->run != R.run)
	{
		c->run = R.run;
		c->count = 0;
	}
	c->count++;
	if (c->count == 1)
		return pstrdup(name);
	return psprintf("%s#%d", name, c->count);
}

static const char *
type_name(char type)
{
	switch (type)
	{
		case 's':
			return "step";
		case 'z':
			return "sleep";
		default:
			return "wait_for_event";
	}
}

/*
 * Common start of every step call: checks, the yield-again rule, the key,
 * and the memo (NULL if the step is new).  A memo of another type or with
 * another hash means the workflow's code changed under a running instance:
 * returning the stale output would be wrong, so it is an error.
 */
static WfMemo *
begin_call(const char *fname, const char *name, char type, int64 hash,
		   char **key)
{
	WfMemo	   *memo;

	if (R.yielded)
		yield(name);
	*key = next_key(name);
	memo = wf_replay_memo(*key, false);
	if (memo != NULL && memo->visited_run != R.run)
	{
		memo->visited_run = R.run;
		R.visited++;
	}
	/* a stray (crash.c) takes the place where the replay finds it */
	if (memo != NULL && memo->seq < 0)
	{
		memo->seq = R.nmemos - R.nstray;
		R.nstray--;
	}
	if (memo != NULL && (memo->type != type || memo->hash != hash))
		ereport(ERROR,
				(errcode(ERRCODE_WF_STEP_MISMATCH),
				 errmsg("step \"%s\" does not match what this instance ran before", *key),
				 errdetail("The instance ran a %s there; the workflow now asks for a different %s.",
						   type_name(memo->type), type_name(type)),
				 errhint("Changing a workflow function under running instances must keep the steps they already ran; register the new code under a new version instead.")));
	return memo;
}

/*
 * The memo, lowest in the instance's order, that the current run has not
 * reached, or NULL.
 */
static WfMemo *
first_unreached_memo(void)
{
	HASH_SEQ_STATUS status;
	WfMemo	   *memo;
	WfMemo	   *first = NULL;

	hash_seq_init(&status, R.memos);
	while ((memo = hash_seq_search(&status)) != NULL)
		if (memo->visited_run != R.run && memo->seq >= 0 &&
			(first == NULL || memo->seq < first->seq))
			first = memo;
	return first;
}

/* claim the action of the run */
static WfAction *
claim_action(WfActionKind kind, const char *key, const char *name, int64 hash)
{
	MemoryContext old;

	if (R.nmemos >= wf_max_steps)
		ereport(ERROR,
				(errcode(ERRCODE_WF_LIMIT_EXCEEDED),
				 errmsg("instance has reached workflows.max_steps (%d)", wf_max_steps)));
	old = MemoryContextSwitchTo(R.runcxt);
	memset(&R.action, 0, sizeof(R.action));
	R.action.kind = kind;
	R.action.key = pstrdup(key);
	R.action.name = pstrdup(name);
	R.action.hash = hash;
	R.action.is_new = true;
	R.action.seq = R.nmemos - R.nstray;
	R.action.started = R.now;
	MemoryContextSwitchTo(old);
	return &R.action;
}

/*
 * A new step.  A replay is deterministic, so it reaches every step the
 * instance ran before it asks for a new one; a step that ran before but was
 * not reached means the run took another path (its code, or data it
 * decided on outside a step, changed): running the new step would build on
 * results of a path the instance did not take, so it is an error.
 */
static WfAction *
new_action(WfActionKind kind, const char *key, const char *name, int64 hash)
{
	if (R.visited < R.nmemos - R.nstray)
	{
		WfMemo	   *missed = first_unreached_memo();

		ereport(ERROR,
				(errcode(ERRCODE_WF_STEP_MISMATCH),
				 errmsg("the workflow took another path than this instance ran before"),
				 errdetail("It asks for the new step \"%s\" without reaching step \"%s\", which the instance ran before.",
						   key, missed ? missed->key : "?"),
				 errhint("Steps must be reached in the same order on every replay: decide from step outputs and the event, not from data read outside steps; register changed code as a new version.")));
	}
	return claim_action(kind, key, name, hash);
}

/* the memo exists but is not final: continue it */
static WfAction *
continue_action(WfActionKind kind, WfMemo *memo, const char *name)
{
	WfAction   *a;

	a = claim_action(kind, memo->key, name, memo->hash);
	a->is_new = false;
	a->seq = memo->seq;
	a->started = memo->started;
	a->until = memo->wake_at;
	a->attempt = memo->attempts + 1;
	a->interrupted = memo->interrupted;
	return a;
}

static char *
json_field(Jsonb *j, const char *key)
{
	JsonbValue *v;

	if (j == NULL)
		return NULL;
	v = getKeyJsonValueFromContainer(&j->root, key, strlen(key), NULL);
	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* raise a memoized error again, with its original SQLSTATE */
static void
pg_attribute_noreturn()
reraise(WfMemo *memo)
{
	char	   *message = json_field(memo->error, "message");
	char	   *sqlstate = json_field(memo->error, "sqlstate");
	char	   *detail = json_field(memo->error, "detail");
	char	   *hint = json_field(memo->error, "hint");
	int			code = ERRCODE_INTERNAL_ERROR;

	if (sqlstate != NULL && strlen(sqlstate) == 5)
		code = MAKE_SQLSTATE(sqlstate[0], sqlstate[1], sqlstate[2],
							 sqlstate[3], sqlstate[4]);
	ereport(ERROR,
			(errcode(code),
			 errmsg_internal("%s", message ? message : "step failed"),
			 detail ? errdetail_internal("%s", detail) : 0,
			 hint ? errhint("%s", hint) : 0,
			 errcontext("step \"%s\" failed for good", memo->key)));
}

static WfQuery q_output = {
	"SELECT output FROM workflows.steps WHERE instance_id = $1 AND key = $2",
	2, {TEXTOID, TEXTOID}, NULL
};

/*
 * A memoized output the cache did not keep, read from workflows.steps (as
 * the owner, whose instance it is) into the caller's memory, which the
 * caller frees: a long replay does not accumulate them.
 */
static Jsonb *
fetch_output(const char *key)
{
	MemoryContext callcxt = CurrentMemoryContext;
	Datum		v[2];
	bool		isnull;
	Jsonb	   *out = NULL;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	v[0] = CStringGetTextDatum(R.instance);
	v[1] = CStringGetTextDatum(key);
	if (wf_query(&q_output, v, NULL, 1) == 1)
	{
		Datum		d = wf_get_datum(0, 1, &isnull);

		if (!isnull)
		{
			MemoryContext old = MemoryContextSwitchTo(callcxt);

			out = DatumGetJsonbPCopy(d);
			MemoryContextSwitchTo(old);
		}
	}
	SPI_finish();
	return out;
}

/*
 * A memoized output, returned without copying when the cache holds it:
 * returned datums are read-only, and the cache outlives the run.
 */
static Datum
memo_output(FunctionCallInfo fcinfo, WfMemo *memo)
{
	Jsonb	   *out = memo->output;

	if (out == NULL && memo->stored_output)
		out = fetch_output(memo->key);
	if (out == NULL)
		PG_RETURN_NULL();
	PG_RETURN_JSONB_P(out);
}

static int64
hash_step(char kind, const char *text, Size textlen, Jsonb *args)
{
	uint64		h = hash_bytes_extended((const unsigned char *) text, textlen, kind);

	if (args != NULL)
		h = hash_bytes_extended((const unsigned char *) VARDATA(args),
								VARSIZE(args) - VARHDRSZ, h);
	return (int64) h;
}

/*
 * Hand a step to the executor to run in place.  Returns false if the
 * executor declines (the run yields as usual); true once the attempt ran
 * and its memo says how it ended.
 */
static bool
run_inline(WfAction *a)
{
	bool		is_new = a->is_new;
	bool		ran;

	if (R.inline_step == NULL)
		return false;

	/* counted before: an error of the engine in it interrupts the run too */
	R.inline_count++;
	if (is_new)
		a->started = GetCurrentTimestamp();
	R.in_engine = true;
	ran = R.inline_step(a);
	R.in_engine = false;
	if (!ran)
	{
		R.inline_count--;
		return false;
	}
	if (is_new)
	{
		WfMemo	   *memo = wf_replay_memo(a->key, false);

		if (memo != NULL && memo->visited_run != R.run)
		{
			memo->visited_run = R.run;
			R.visited++;
		}
	}
	/* the run's clock moves with the steps it runs */
	R.now = GetCurrentTimestamp();
	return true;
}

/*
 * Shared body of the two step() forms: return the memo, re-raise its
 * error, or run an attempt (in place, or by yielding to the executor).
 */
static Datum
step_call(FunctionCallInfo fcinfo, const char *fname, char *name,
		  const WfStepKind *kind, char *sql, Oid fn, Jsonb *args, Jsonb *config,
		  int64 hash)
{
	WfMemo	   *memo;
	WfAction   *a;
	char	   *key;
	WfStepConfig cfg;

	memo = begin_call(fname, name, 's', hash, &key);
	if (memo != NULL && memo->status == 'c')
		return memo_output(fcinfo, memo);
	if (memo != NULL && memo->status == 'f')
		reraise(memo);

	/* a step to run: now the config and the callback must be valid */
	wf_parse_step_config(config, &cfg);
	if (kind == &wf_fn_kind)
		wf_check_step_fn(fn);
	if (kind->run == NULL)
	{
		/* out of transaction (async.c): never in place */
		wf_check_kind_privilege(kind, GetUserId());
		cfg.inline_ok = false;
	}
	if (kind->validate != NULL)
		kind->validate(args);

	if (memo != NULL && memo->wake_at > R.now)
	{
		/* woken before its retry is due, or while its call is in flight */
		continue_action(WF_ACT_WAIT, memo, name);
		yield(key);
	}
	a = memo ? continue_action(WF_ACT_STEP, memo, name)
		: new_action(WF_ACT_STEP, key, name, hash);
	if (memo == NULL)
		a->attempt = 1;
	a->resumed_call = (memo != NULL && memo->status == 'o');
	a->config = cfg;
	a->step_kind = kind;
	if (cfg.rollback != NULL)
		a->config.rollback = MemoryContextStrdup(R.runcxt, cfg.rollback);
	a->fn = fn;
	{
		MemoryContext old = MemoryContextSwitchTo(R.runcxt);

		a->sql = sql ? pstrdup(sql) : NULL;
		a->args = args ? DatumGetJsonbPCopy(JsonbPGetDatum(args)) : NULL;
		MemoryContextSwitchTo(old);
	}
	if (run_inline(a))
	{
		memo = wf_replay_memo(key, false);
		if (memo != NULL && memo->status == 'c')
			return memo_output(fcinfo, memo);
		if (memo != NULL && memo->status == 'f')
			reraise(memo);
		/* a retry is due later: the run stops here (and is interrupted) */
	}
	yield(key);
}

/*
 * workflows.step(name text, sql text, args jsonb, config jsonb) returns jsonb
 */
Datum
wf_step_sql(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *sql;
	Jsonb	   *args;
	Jsonb	   *config;

	check_active("workflows.step()");
	name = text_arg(fcinfo, 0, "step name");
	sql = text_arg(fcinfo, 1, "step SQL");
	args = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	config = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);

	return step_call(fcinfo, "workflows.step()", name, &wf_sql_kind, sql, InvalidOid,
					 args, config, hash_step('q', sql, strlen(sql), args));
}

/*
 * workflows.step(name text, fn regprocedure, input jsonb, config jsonb)
 * returns jsonb
 */
Datum
wf_step_fn(PG_FUNCTION_ARGS)
{
	char	   *name;
	Oid			fn;
	Jsonb	   *input;
	Jsonb	   *config;

	check_active("workflows.step()");
	name = text_arg(fcinfo, 0, "step name");
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("step function must not be null")));
	fn = PG_GETARG_OID(1);
	input = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	config = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);

	return step_call(fcinfo, "workflows.step()", name, &wf_fn_kind, NULL, fn, input,
					 config, hash_step('f', (const char *) &fn, sizeof(fn), input));
}

/* the common body of the calls of plugin kinds: http() and plugin_step() */
static Datum
kind_call(FunctionCallInfo fcinfo, const char *fname, char *name,
		  const WfStepKind *kind, Jsonb *request, Jsonb *config)
{
	int64		hash;

	if (kind->hash != NULL)
		hash = kind->hash(request);
	else
		hash = hash_step('p', kind->name, strlen(kind->name), request);
	return step_call(fcinfo, fname, name, kind, NULL, InvalidOid, request, config, hash);
}

/*
 * workflows.http(name text, request jsonb, config jsonb) returns jsonb
 */
Datum
wf_http(PG_FUNCTION_ARGS)
{
	char	   *name;

	check_active("workflows.http()");
	name = text_arg(fcinfo, 0, "step name");
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("HTTP request must not be null")));
	return kind_call(fcinfo, "workflows.http()", name, &wf_http_kind,
					 PG_GETARG_JSONB_P(1), PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2));
}

/*
 * workflows.plugin_step(name text, kind text, request jsonb, config jsonb)
 * returns jsonb
 */
Datum
wf_plugin_step(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *kind;

	check_active("workflows.plugin_step()");
	name = text_arg(fcinfo, 0, "step name");
	kind = text_arg(fcinfo, 1, "step kind");
	return kind_call(fcinfo, "workflows.plugin_step()", name, wf_step_kind(kind),
					 PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2),
					 PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3));
}

/* the common body of sleep() and sleep_until() */
static void
sleep_call(const char *fname, char *name, TimestampTz until)
{
	WfMemo	   *memo;
	WfAction   *a;
	char	   *key;

	memo = begin_call(fname, name, 'z', 0, &key);
	if (memo != NULL && memo->status == 'c')
		return;
	if (memo != NULL)
	{
		if (memo->wake_at <= R.now)
		{
			MemoryContext old = MemoryContextSwitchTo(R.runcxt);

			memo->status = 'c';
			R.finished_sleeps = lappend(R.finished_sleeps, pstrdup(key));
			MemoryContextSwitchTo(old);
			return;
		}
		continue_action(WF_ACT_WAIT, memo, name);
		yield(key);
	}
	a = new_action(WF_ACT_SLEEP, key, name, 0);
	a->until = until;
	yield(key);
}

/*
 * workflows.sleep(name text, duration interval)
 */
Datum
wf_sleep(PG_FUNCTION_ARGS)
{
	char	   *name;
	Interval   *iv;
	int64		ms;

	check_active("workflows.sleep()");
	name = text_arg(fcinfo, 0, "step name");
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("sleep duration must not be null")));
	iv = PG_GETARG_INTERVAL_P(1);
	ms = wf_interval_ms(iv);
	if (ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sleep duration must not be negative")));
	sleep_call("workflows.sleep()", name,
			   TimestampTzPlusMilliseconds(R.now, ms));
	PG_RETURN_VOID();
}

/*
 * workflows.sleep_until(name text, at timestamptz)
 */
Datum
wf_sleep_until(PG_FUNCTION_ARGS)
{
	char	   *name;

	check_active("workflows.sleep_until()");
	name = text_arg(fcinfo, 0, "step name");
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("sleep time must not be null")));
	sleep_call("workflows.sleep_until()", name, PG_GETARG_TIMESTAMPTZ(1));
	PG_RETURN_VOID();
}

/*
 * workflows.wait_for_event(name text, type text, timeout interval)
 * returns jsonb
 */
Datum
wf_wait_for_event(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *type;
	int64		ms;
	WfMemo	   *memo;
	WfAction   *a;
	char	   *key;

	check_active("workflows.wait_for_event()");
	name = text_arg(fcinfo, 0, "step name");
	type = text_arg(fcinfo, 1, "event type");
	if (type[0] == '\0' || strlen(type) > WF_MAX_NAME_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event type must be 1 to %d bytes long", WF_MAX_NAME_LEN)));
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event timeout must not be null")));
	ms = wf_interval_ms(PG_GETARG_INTERVAL_P(2));
	if (ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event timeout must not be negative")));

	memo = begin_call("workflows.wait_for_event()", name, 'e',
					  hash_step('e', type, strlen(type), NULL), &key);
	if (memo != NULL && memo->status == 'c')
		return memo_output(fcinfo, memo);
	if (memo != NULL && memo->status == 'f')
		reraise(memo);
	if (memo != NULL)
		a = continue_action(WF_ACT_EVENT, memo, name);
	else
	{
		a = new_action(WF_ACT_EVENT, key, name, hash_step('e', type, strlen(type), NULL));
		a->until = TimestampTzPlusMilliseconds(R.now, ms);
	}
	a->event_type = MemoryContextStrdup(R.runcxt, type);
	yield(key);
}

/* the workflow function's call, run by wf_run_as() as the owner */
typedef struct WfReplayCall
{
	Oid			fn;
	Oid			owner;
	Jsonb	   *event;
	Jsonb	   *output;
} WfReplayCall;

static void
replay_callback(void *arg)
{
	WfReplayCall *call = (WfReplayCall *) arg;
	FmgrInfo	flinfo;
	AclResult	aclresult;
	Datum		d;
	Jsonb	   *out;

	LOCAL_FCINFO(fcinfo, 1);

	aclresult = wf_proc_aclcheck(call->fn, call->owner, ACL_EXECUTE);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_FUNCTION, get_func_name(call->fn));

	fmgr_info(call->fn, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = JsonbPGetDatum(call->event);
	fcinfo->args[0].isnull = false;

	R.active = true;
	d = FunctionCallInvoke(fcinfo);
	R.active = false;

	if (R.yielded)
		return;
	out = wf_datum_to_jsonb(d, get_func_rettype(call->fn), fcinfo->isnull);
	if (out != NULL && VARSIZE(out) > (Size) wf_max_output_size)
		ereport(ERROR,
				(errcode(ERRCODE_WF_LIMIT_EXCEEDED),
				 errmsg("workflow output is %u bytes, more than workflows.max_output_size (%d)",
						(unsigned int) VARSIZE(out), wf_max_output_size)));
	call->output = out;
}

/* steps run in place by the current (or last) run */
int
wf_replay_inline_count(void)
{
	return R.inline_count;
}

/* did workflow code of the current (or last) run write anything itself? */
bool
wf_replay_wrote(void)
{
	return R.wrote;
}

/*
 * Called by the executor for each statement it starts while a run may run
 * steps in place ("writes": the statement modifies or locks rows, or is a
 * utility command).  Statements of workflow code itself are the ones that
 * come neither from a step callback nor from the executor's recording of a
 * step run in place.
 */
void
wf_replay_watch_write(bool writes)
{
	if (writes && R.active && R.inline_step != NULL && !R.in_step && !R.in_engine)
		R.wrote = true;
}

/*
 * May the run's subtransaction be kept (wf_run_as(), after the function
 * returned)?  Only if it holds steps run in place, and nothing else.
 */
bool
wf_replay_keep(void)
{
	return R.inline_count > 0 && !R.wrote && !R.yielded;
}

/*
 * Run the workflow function once, as "owner", in a subtransaction that is
 * rolled back (wf_run_as(), WF_AS_REPLAY): writes made by workflow code
 * between steps never persist, so a replay sees the same database a first
 * run did.  With inline_step, new steps may run in place (see the file
 * header); a run that returns after running some is kept with them.
 *
 * Returns what happened.  On WF_RUN_COMPLETE *output is the result (NULL
 * for SQL NULL); on WF_RUN_ERRORED *error is the error; on WF_RUN_YIELD the
 * action is in wf_replay_action(); WF_RUN_INTERRUPTED: the run yielded,
 * raised or wrote after running steps in place, and was rolled back with
 * them (the memo cache still has them: the caller reloads it).  Output and
 * error are allocated in the caller's memory context.  Must be called in a
 * transaction, with the memos of the instance loaded.
 */
WfRunResult
wf_replay_run(Oid fn, Oid owner, Jsonb *event, WfInlineStepFn inline_step,
			  Jsonb **output, ErrorData **error)
{
	WfReplayCall call;
	ErrorData  *edata;

	MemoryContextReset(R.runcxt);
	memset(&R.action, 0, sizeof(R.action));
	R.yielded = false;
	R.run++;
	R.visited = 0;
	R.now = GetCurrentTimestamp();
	R.finished_sleeps = NIL;
	R.inline_step = inline_step;
	R.inline_count = 0;
	R.in_engine = false;
	R.wrote = false;
	*output = NULL;
	*error = NULL;

	call.fn = fn;
	call.owner = owner;
	call.event = event;
	call.output = NULL;
	edata = wf_run_as(owner, WF_AS_REPLAY, replay_callback, &call);
	R.active = false;
	R.inline_step = NULL;
	R.in_engine = false;

	if (R.inline_count > 0 && (R.yielded || edata != NULL || R.wrote))
		return WF_RUN_INTERRUPTED;
	/* our own flag decides: workflow code may have swallowed the yield */
	if (R.yielded)
		return WF_RUN_YIELD;
	if (edata != NULL)
	{
		*error = edata;
		return WF_RUN_ERRORED;
	}
	*output = call.output;
	return WF_RUN_COMPLETE;
}

/*
 * ---- for other kinds of step calls (compose.c) ----
 *
 * The pieces of the yield protocol above, for step functions defined in
 * other files: they behave exactly as step(), sleep() and wait_for_event()
 * do with the memo cache, the keys and the yield.
 */

/* checks, the yield-again rule, the key, and the memo (NULL if new) */
WfMemo *
wf_replay_begin(const char *fname, const char *name, char type, int64 hash,
				char **key)
{
	check_active(fname);
	return begin_call(fname, name, type, hash, key);
}

/* the action of a new step, or of one whose memo is not final yet */
WfAction *
wf_replay_new_action(WfActionKind kind, WfMemo *memo, const char *key,
					 const char *name, int64 hash)
{
	if (memo != NULL)
		return continue_action(kind, memo, name);
	return new_action(kind, key, name, hash);
}

void
wf_replay_yield(const char *key)
{
	yield(key);
}

void
wf_replay_reraise(WfMemo *memo)
{
	reraise(memo);
}

Datum
wf_replay_output(FunctionCallInfo fcinfo, WfMemo *memo)
{
	return memo_output(fcinfo, memo);
}

/* a step() with an SQL callback, as called by workflow code */
Datum
wf_replay_sql_step(FunctionCallInfo fcinfo, const char *fname, char *name,
				   char *sql, Jsonb *args, Jsonb *config)
{
	check_active(fname);
	return step_call(fcinfo, fname, name, &wf_sql_kind, sql, InvalidOid, args, config,
					 hash_step('q', sql, strlen(sql), args));
}

/* the key the next call of step "name" will get, without taking it */
char *
wf_replay_peek_key(const char *name)
{
	WfCount    *c = R.counts ? hash_search(R.counts, name, HASH_FIND, NULL) : NULL;
	int			n = (c == NULL || c->run != R.run) ? 1 : c->count + 1;

	if (n == 1)
		return pstrdup(name);
	return psprintf("%s#%d", name, n);
}

/* the instance whose memos are loaded, while a workflow or its step runs */
const char *
wf_replay_instance(void)
{
	return (R.active || R.in_step) ? R.instance : NULL;
}

TimestampTz
wf_replay_now(void)
{
	return R.now;
}

MemoryContext
wf_replay_runcxt(void)
{
	return R.runcxt;
}

int64
wf_replay_hash(char kind, const char *text, Jsonb *args)
{
	return hash_step(kind, text, strlen(text), args);
}

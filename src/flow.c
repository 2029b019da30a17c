/*-------------------------------------------------------------------------
 *
 * flow.c
 *	  Flow control: the claim policy's hooks (DESIGN.md section 8).
 *
 * The bookkeeping -- concurrency slots per key, throttles, priority,
 * debounce, singleton -- is SQL in sql/install/45_flow_control.sql, run at
 * four well-defined points, each of them here:
 *
 *	- create() / create_batch(): wf_flow_admit() applies the create options
 *	  and the workflow's debounce and singleton (only for a workflow with
 *	  flow control or a create with options: nothing otherwise);
 *	- an executor claims an instance with flow control that holds no slot:
 *	  wf_flow_acquire() takes its slots (or delays or holds it back), and
 *	  the executor commits at once;
 *	- a tick leaves such an instance sleeping, waiting, paused or final:
 *	  wf_flow_release_now() marks it in the tick's transaction when nobody
 *	  is held back for its slots; otherwise wf_flow_release_after() hands
 *	  them on in a transaction of its own after the tick's commit (and
 *	  wf_flow_release(), for a command, in the command's transaction);
 *	- workflows.set_flow_control(), the SQL-callable entry point, checks the
 *	  caller and runs _flow_set() as the extension's owner.
 *
 * Instances of workflows without flow control have no row in
 * workflows.flow_members: the executor's claim finds none in its join and
 * calls nothing here.
 *
 * IDENTIFICATION
 *	  src/flow.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include "catalog/pg_collation.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/jsonb.h"

/* slots one executor may hold uncommitted: executor.c's WF_BATCH_INSTANCES (32), plus one */
#define WF_FLOW_SLACK_PER_EXECUTOR	33

PG_FUNCTION_INFO_V1(wf_set_flow_control);
PG_FUNCTION_INFO_V1(wf_flow_wake_at_commit);

static WfQuery q_flow_admit = {
	"SELECT workflows._flow_admit($1, $2, $3)",
	3, {TEXTOID, JSONBOID, OIDOID}, NULL
};

static WfQuery q_flow_admit_all = {
	"SELECT workflows._flow_admit_all($1, $2)",
	2, {TEXTOID, TEXTARRAYOID}, NULL
};

static WfQuery q_flow_acquire = {
	"SELECT workflows._flow_acquire($1)",
	1, {TEXTOID}, NULL
};

static WfQuery q_flow_release = {
	"SELECT workflows._flow_release($1, $2)",
	2, {TEXTOID, TEXTOID}, NULL
};

static WfQuery q_flow_release_after = {
	"SELECT workflows._flow_release_after($1, $2, $3)",
	3, {TEXTOID, INT8OID, BOOLOID}, NULL
};

static WfQuery q_settle_holds = {
	"UPDATE workflows.flow_members "
	"   SET state = 'holds', keys = $2, held_on = NULL, held_key = NULL, held_since = NULL, "
	"       debouncing = false "
	" WHERE instance_id = $1",
	2, {TEXTOID, TEXTARRAYOID}, NULL
};

static WfQuery q_flow_release_now = {
	"SELECT workflows._flow_release_now($1, $2)",
	2, {TEXTOID, TEXTOID}, NULL
};

/* the fast path's statements (wf_flow_acquire_fast()) */
static WfQuery q_fast_key = {
	"SELECT workflows._flow_key($1, $2)",
	2, {JSONBOID, TEXTOID}, NULL
};

/*
 * Is entry 1 (2) of the workflow ($1) too close to its limit ($4) for the
 * slack ($3), or is anyone held back for the key ($2), or has the config
 * changed since the claim read it ($5)?  The holders are counted up to the
 * first that is too many, through the entry's own index (hence one
 * statement per entry: the index is on keys[1], keys[2]).
 */
#define WF_FAST_BUSY(N) \
	"SELECT count(*) + $3 >= $4 OR EXISTS (" \
	"         SELECT 1 FROM workflows.flow_members f " \
	"          WHERE f.workflow = $1 AND f.state = 'held' AND f.held_on = " #N \
	"            AND f.held_key = $2) " \
	"       OR (SELECT w.flow_control FROM workflows.workflows w WHERE w.name = $1) " \
	"          IS DISTINCT FROM $5 " \
	"FROM (SELECT 1 FROM workflows.flow_members f " \
	"       WHERE f.workflow = $1 AND f.state = 'holds' AND f.keys[" #N "] = $2 " \
	"       LIMIT $4 - $3) h"

static WfQuery q_fast_busy[2] = {
	{WF_FAST_BUSY(1), 5, {TEXTOID, TEXTOID, INT8OID, INT8OID, JSONBOID}, NULL},
	{WF_FAST_BUSY(2), 5, {TEXTOID, TEXTOID, INT8OID, INT8OID, JSONBOID}, NULL}
};

/* the same for a config without concurrency entries: has it changed? */
static WfQuery q_fast_config = {
	"SELECT (SELECT w.flow_control FROM workflows.workflows w WHERE w.name = $1) "
	"       IS DISTINCT FROM $2",
	2, {TEXTOID, JSONBOID}, NULL
};

/* a debounced instance that took its slots and sleeps or waits: it started */
static WfQuery q_settle_started = {
	"UPDATE workflows.flow_members SET debouncing = false "
	" WHERE instance_id = $1 AND debouncing",
	1, {TEXTOID}, NULL
};

static WfQuery q_flow_repair = {
	"SELECT workflows._flow_repair() WHERE EXISTS (SELECT 1 FROM workflows.flow_members)",
	0, {InvalidOid}, NULL
};

/*
 * The transactions that only take or hand on slots commit without waiting
 * for their WAL flush: if a crash loses one, the instance simply takes its
 * slot again (or _flow_repair() hands it on), and the commit of the step
 * that runs after it flushes it anyway.  Holding the workflow's bookkeeping
 * lock through a flush would serialize every start of the workflow on the
 * disk.
 */
static void
async_commit(void)
{
	(void) set_config_option("synchronous_commit", "off", PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
}

static WfQuery q_flow_workflow = {
	"SELECT owner::oid FROM workflows.workflows WHERE name = $1 FOR UPDATE",
	1, {TEXTOID}, NULL
};

/*
 * The audit row of set_flow_control(): the config as set (NULL: cleared).
 * A config is limits, periods and jsonpaths written by the workflow's
 * owner, never values of params, so it is recorded as it is.
 */
static WfQuery q_flow_audit = {
	"INSERT INTO workflows.audit (acting_role, action, workflow, owner, details) "
	"VALUES ($3, 'set_flow_control', $1, $4::oid::regrole, "
	"        jsonb_build_object('config', CASE WHEN jsonb_typeof($2) = 'null' THEN NULL ELSE $2 END))",
	4, {TEXTOID, JSONBOID, TEXTOID, OIDOID}, NULL
};

static WfQuery q_flow_set = {
	"SELECT workflows._flow_set($1, $2)",
	2, {TEXTOID, JSONBOID}, NULL
};

/*
 * create()'s hook, right after it inserted instance id (as the extension's
 * owner, connected to SPI).  Returns the id create() returns, palloc'd in
 * the current memory context (SPI's: the caller copies it out).
 */
char *
wf_flow_admit(const char *id, Jsonb *options, Oid caller)
{
	Datum		v[3];
	char		n[3] = {' ', ' ', ' '};

	v[0] = CStringGetTextDatum(id);
	v[1] = options ? JsonbPGetDatum(options) : (Datum) 0;
	n[1] = options ? ' ' : 'n';
	v[2] = ObjectIdGetDatum(caller);
	/* a singleton "cancel" terminates the other instance for the caller */
	wf_query_acting(&q_flow_admit, v, n, 1, caller);
	return wf_get_text(0, 1);
}

/*
 * create_batch()'s hook for a batch without options: when the workflow
 * has neither debounce nor singleton, the instances just inserted (ids, a
 * text[]) all become members in one statement.  Returns false if it did
 * nothing: the caller then calls wf_flow_admit() for each.
 */
bool
wf_flow_admit_all(const char *workflow, Datum ids)
{
	Datum		v[2];
	bool		isnull;

	v[0] = CStringGetTextDatum(workflow);
	v[1] = ids;
	wf_query(&q_flow_admit_all, v, NULL, 1);
	return DatumGetBool(wf_get_datum(0, 1, &isnull));
}

/*
 * The executor's hook for a claimed instance that has flow control and
 * holds no slot, in the tick's transaction, with the instance's row locked.
 * Returns true if it holds its slots now and may run; false if it was
 * delayed by a throttle (wake_at in the future) or held back (wake_at
 * NULL).  The caller commits right after: the workflow's bookkeeping lock
 * is held until then.
 */
bool
wf_flow_acquire(const char *id)
{
	Datum		v[1];
	bool		isnull;

	v[0] = CStringGetTextDatum(id);
	wf_query(&q_flow_acquire, v, NULL, 1);
	async_commit();
	return DatumGetBool(wf_get_datum(0, 1, &isnull));
}

/* a number of a flow-control config as an int64 (validated: an integer) */
static int64
config_int(JsonbValue *v)
{
	if (v == NULL || v->type != jbvNumeric)
		return -1;
	return DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(v->val.numeric)));
}

/*
 * The fast path of taking a slot, in the tick's transaction, without a
 * commit of its own, for a claimed member that holds no slot: when every
 * concurrency entry of the instance's keys is far enough from its limit
 * that even the slots other executors may have taken in transactions not
 * yet committed (the slack: one batch of instances each) cannot reach it,
 * and nobody of the key is held back, the slot is taken under the shared
 * side of the workflow's lock and the instance runs at once.  What it needs
 * of the member, its workflow and its params came with the claim
 * (executor.c); a config changed since is seen under the lock.
 *
 * WF_FAST_TOOK_LATER: it took them (*taken: the keys, a text[]); the tick
 * ends with wf_flow_settle() or wf_flow_settle_done(), which write the member's row once (until this
 * transaction commits, the slot is part of the slack every count allows
 * for, and the shared lock keeps every exact count waiting; the member's
 * row is the instance's, whose row the executor holds).  Otherwise the
 * caller takes the exact path, wf_flow_acquire(): at once if WF_FAST_NO,
 * after a commit if WF_FAST_NO_LOCKED (the shared lock is held).
 *
 * Holders are counted under the lock, so that what an exclusive holder
 * committed before is counted; what the config tells (a throttle, a limit
 * within the slack) is told before taking it.  The same bookkeeping as
 * _flow_take() (sql/install/45_flow_control.sql), in C and in one
 * statement per entry: it runs once per instance of a workflow with flow
 * control.
 */
WfFastSlot
wf_flow_acquire_fast(const char *workflow, Jsonb *config, bool throttled, Jsonb *params,
					 Datum *taken)
{
	int64		slack = (int64) wf_max_workers * WF_FLOW_SLACK_PER_EXECUTOR;
	Datum		v[5];
	bool		isnull;
	JsonbValue *conc;
	JsonbValue	entries[2];
	int			nentries = 0;
	char	   *keys[2];
	int64		limits[2];

	if (config == NULL ||
		(getKeyJsonValueFromContainer(&config->root, "throttle", 8, NULL) != NULL && !throttled))
		return WF_FAST_NO;

	/* the concurrency entries: one object, or an array of up to two */
	conc = getKeyJsonValueFromContainer(&config->root, "concurrency", 11, NULL);
	if (conc != NULL && conc->type == jbvBinary && JsonContainerIsArray(conc->val.binary.data))
	{
		JsonbContainer *a = conc->val.binary.data;
		int			size = JsonContainerSize(a);

		if (size > 2)
			return WF_FAST_NO;
		for (int i = 0; i < size; i++)
			entries[nentries++] = *getIthJsonbValueFromContainer(a, i);
	}
	else if (conc != NULL && conc->type == jbvBinary)
		entries[nentries++] = *conc;
	else if (conc != NULL)
		return WF_FAST_NO;

	for (int i = 0; i < nentries; i++)
	{
		JsonbValue *key;

		if (entries[i].type != jbvBinary || !JsonContainerIsObject(entries[i].val.binary.data))
			return WF_FAST_NO;
		limits[i] = config_int(getKeyJsonValueFromContainer(entries[i].val.binary.data,
															 "limit", 5, NULL));
		if (limits[i] <= slack)
			return WF_FAST_NO;
		key = getKeyJsonValueFromContainer(entries[i].val.binary.data, "key", 3, NULL);
		if (key == NULL || key->type == jbvNull)
			keys[i] = "";
		else if (key->type == jbvString)
		{
			Datum		kv[2];

			kv[0] = JsonbPGetDatum(params);
			kv[1] = PointerGetDatum(cstring_to_text_with_len(key->val.string.val,
															 key->val.string.len));
			wf_query(&q_fast_key, kv, NULL, 1);
			keys[i] = wf_get_text(0, 1);
		}
		else
			return WF_FAST_NO;
	}

	/* _flow_lock_shared(workflow) */
	(void) DirectFunctionCall2(pg_advisory_xact_lock_shared_int4,
							   Int32GetDatum(1464232014),
							   DirectFunctionCall1Coll(hashtext, DEFAULT_COLLATION_OID,
													   CStringGetTextDatum(workflow)));
	v[0] = CStringGetTextDatum(workflow);
	if (nentries == 0)
	{
		v[1] = JsonbPGetDatum(config);
		wf_query(&q_fast_config, v, NULL, 1);
		if (DatumGetBool(wf_get_datum(0, 1, &isnull)))
			return WF_FAST_NO_LOCKED;
	}
	for (int i = 0; i < nentries; i++)
	{
		v[1] = CStringGetTextDatum(keys[i]);
		v[2] = Int64GetDatum(slack);
		v[3] = Int64GetDatum(limits[i]);
		v[4] = JsonbPGetDatum(config);
		wf_query_indexed(&q_fast_busy[i], v, NULL, 1);
		if (DatumGetBool(wf_get_datum(0, 1, &isnull)))
			return WF_FAST_NO_LOCKED;
	}
	/* the keys the slots count under, for wf_flow_settle() */
	for (int i = 0; i < nentries; i++)
		v[i] = CStringGetTextDatum(keys[i]);
	*taken = PointerGetDatum(construct_array(v, nentries, TEXTOID, -1, false, TYPALIGN_INT));
	return WF_FAST_TOOK_LATER;
}

/*
 * The executor's release, in transactions of its own right after the
 * commit that left the instance not running at revision rev: under the
 * shared lock when nobody of the workflow is held back, otherwise (a
 * second transaction) exclusively, handing the slots on.
 */
void
wf_flow_release_after(const char *id, int64 rev, void (*begin) (void), void (*end) (void))
{
	Datum		v[3];
	bool		isnull;
	int			r;

	v[0] = CStringGetTextDatum(id);
	v[1] = Int64GetDatum(rev);
	v[2] = BoolGetDatum(false);
	begin();
	async_commit();
	wf_query(&q_flow_release_after, v, NULL, 1);
	r = DatumGetInt32(wf_get_datum(0, 1, &isnull));
	end();
	if (r >= 0)
		return;
	v[0] = CStringGetTextDatum(id);
	v[2] = BoolGetDatum(true);
	begin();
	async_commit();
	wf_query(&q_flow_release_after, v, NULL, 1);
	end();
}

/*
 * The end of a tick whose instance took its slots on the fast path and did
 * not end (wf_flow_settle_done() is for those), in its transaction: its
 * member's row is written once -- it holds its slots, under the keys the
 * fast path counted them (taken), if it goes on running; if it sleeps,
 * waits or is paused it held them only inside this transaction, which
 * nobody else saw, and stays ready (a debounced instance is no longer
 * debouncing: it started).
 */
void
wf_flow_settle(const char *id, const char *status, Datum taken)
{
	Datum		v[2];

	v[0] = CStringGetTextDatum(id);
	v[1] = taken;
	if (strcmp(status, "running") == 0)
		wf_query(&q_settle_holds, v, NULL, 0);
	else
		wf_query(&q_settle_started, v, NULL, 0);
}

/*
 * The same for the instances of a batch that took their slots on the fast
 * path and ended (final), in one statement before the batch commits.
 */
static WfQuery q_settle_done = {
	"UPDATE workflows.flow_members SET state = 'done', debouncing = false "
	" WHERE instance_id = ANY ($1)",
	1, {TEXTARRAYOID}, NULL
};

void
wf_flow_settle_done(char ids[][WF_MAX_ID_LEN + 1], int count)
{
	Datum	   *d = palloc(sizeof(Datum) * count);
	Datum		v[1];

	for (int i = 0; i < count; i++)
		d[i] = CStringGetTextDatum(ids[i]);
	v[0] = PointerGetDatum(construct_array(d, count, TEXTOID, -1, false, TYPALIGN_INT));
	wf_query_indexed(&q_settle_done, v, NULL, 0);
}

/*
 * The release in the tick's own transaction, when nobody of the workflow
 * is held back (see _flow_release_now(); it never waits): no transaction
 * of its own.  Returns false if the caller must release after the commit
 * (wf_flow_release_after()).
 */
bool
wf_flow_release_now(const char *id, const char *status)
{
	Datum		v[2];
	bool		isnull;

	v[0] = CStringGetTextDatum(id);
	v[1] = CStringGetTextDatum(status);
	wf_query(&q_flow_release_now, v, NULL, 1);
	return DatumGetBool(wf_get_datum(0, 1, &isnull));
}

/* after a crash: hand on the slots nobody handed on (the first executor, at start) */
void
wf_flow_repair(void)
{
	wf_query(&q_flow_repair, NULL, NULL, 0);
}

/*
 * The executor's hook for an instance with flow control that its tick left
 * in a status other than running: frees its slots and promotes the next
 * instances held back for them.  Returns how many were promoted.  The
 * caller commits right after.
 */
int
wf_flow_release(const char *id, const char *status)
{
	Datum		v[2];
	bool		isnull;

	v[0] = CStringGetTextDatum(id);
	v[1] = CStringGetTextDatum(status);
	wf_query(&q_flow_release, v, NULL, 1);
	return DatumGetInt32(wf_get_datum(0, 1, &isnull));
}

/*
 * workflows.set_flow_control(workflow text, config jsonb) returns void
 *
 * For the workflow's owner or a member of workflows_admin; the config is
 * validated by _flow_set() (errors name the offending key, SQLSTATE 22023)
 * before anything changes.
 */
Datum
wf_set_flow_control(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	Oid			owner;
	char	   *workflow;
	WfAsOwner	s;
	Datum		v[4];
	char		n[4] = {' ', ' ', ' ', ' '};
	bool		isnull;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("workflow name must not be null")));
	workflow = text_to_cstring(PG_GETARG_TEXT_PP(0));

	wf_as_owner_begin(&s);
	v[0] = CStringGetTextDatum(workflow);
	if (wf_query(&q_flow_workflow, v, NULL, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("workflow \"%s\" does not exist", workflow),
				 errhint("Register it with workflows.register().")));
	if (!wf_can_see(DatumGetObjectId(wf_get_datum(0, 1, &isnull)), caller))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for workflow \"%s\"", workflow),
				 errdetail("Only its owner and members of workflows_admin may set its flow control.")));
	owner = DatumGetObjectId(wf_get_datum(0, 1, &isnull));
	v[1] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	n[1] = PG_ARGISNULL(1) ? 'n' : ' ';
	wf_query(&q_flow_set, v, n, 0);
	v[2] = CStringGetTextDatum(GetUserNameFromId(caller, false));
	v[3] = ObjectIdGetDatum(owner);
	wf_query(&q_flow_audit, v, n, 0);
	wf_as_owner_end(&s);
	PG_RETURN_VOID();
}

/* workflows._wake_at_commit(): the executors, when the caller commits */
Datum
wf_flow_wake_at_commit(PG_FUNCTION_ARGS)
{
	wf_wake_at_commit();
	PG_RETURN_VOID();
}

/* ---- steps that share a resource: "concurrency" and "throttle" in a step's config ---- */

static WfQuery q_flow_step_enter = {
	"SELECT workflows._flow_step_enter($1, $2, $3, $4, $5, $6, $7, $8)",
	8, {TEXTOID, TEXTOID, TEXTOID, INT4OID, TEXTOID, INT4OID, INT8OID, BOOLOID}, NULL
};

static WfQuery q_flow_step_exit = {
	"SELECT workflows._flow_step_exit($1, $2, $3)",
	3, {TEXTOID, TEXTOID, TEXTOID}, NULL
};

/*
 * Before a step with a "concurrency" or "throttle" key runs, in the tick's
 * transaction: take one of the key's slots (a row of flow_step_slots locked
 * until the step's transaction ends) and its throttle's start.
 * WF_STEP_WAIT: the instance waits without an executor, until *until, or
 * (*until = 0) until the step that frees a slot wakes it.
 * WF_STEP_COMMIT_FIRST: a start was granted now (the throttle's row lock
 * must not be held while the step runs), or the key's slot rows were made
 * (others must see them committed): commit, then come back.
 */
WfStepGate
wf_flow_step_enter(const char *id, WfAction *a, TimestampTz *until)
{
	Datum		v[8];
	char		n[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	Datum		d;

	v[0] = CStringGetTextDatum(id);
	v[1] = CStringGetTextDatum(a->key);
	v[2] = a->config.conc_limit > 0 ? CStringGetTextDatum(a->config.conc_key) : (Datum) 0;
	n[2] = a->config.conc_limit > 0 ? ' ' : 'n';
	v[3] = Int32GetDatum(a->config.conc_limit);
	v[4] = a->config.thr_limit > 0 ? CStringGetTextDatum(a->config.thr_key) : (Datum) 0;
	n[4] = a->config.thr_limit > 0 ? ' ' : 'n';
	v[5] = Int32GetDatum(a->config.thr_limit);
	v[6] = Int64GetDatum(a->config.thr_period_ms);
	/* an out-of-transaction step (HTTP) holds its place while it calls */
	v[7] = BoolGetDatum(a->step_kind != NULL && a->step_kind->run == NULL);
	wf_query(&q_flow_step_enter, v, n, 1);
	d = wf_get_datum(0, 1, &isnull);
	*until = 0;
	if (isnull)
		return WF_STEP_GO;
	if (TIMESTAMP_IS_NOBEGIN(DatumGetTimestampTz(d)))
		return WF_STEP_COMMIT_FIRST;
	if (!TIMESTAMP_IS_NOEND(DatumGetTimestampTz(d)))
		*until = DatumGetTimestampTz(d);
	return WF_STEP_WAIT;
}

/*
 * After such a step ran (whatever its outcome), in its transaction: wake
 * the next instance waiting for the key's slot, at commit.  The caller
 * commits right after, which frees the slot.
 */
void
wf_flow_step_exit(const char *id, WfAction *a)
{
	Datum		v[3];
	char		n[3] = {' ', ' ', ' '};

	v[0] = CStringGetTextDatum(id);
	v[1] = CStringGetTextDatum(a->key);
	v[2] = a->config.conc_limit > 0 ? CStringGetTextDatum(a->config.conc_key) : (Datum) 0;
	n[2] = a->config.conc_limit > 0 ? ' ' : 'n';
	wf_query(&q_flow_step_exit, v, n, 0);
}

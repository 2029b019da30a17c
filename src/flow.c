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
 *	  wf_flow_release() frees its slots and hands them to the instances
 *	  held back for them, in the same transaction (the executor commits at
 *	  once and wakes the others at commit);
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

#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

PG_FUNCTION_INFO_V1(wf_set_flow_control);
PG_FUNCTION_INFO_V1(wf_flow_wake_at_commit);

static WfQuery q_flow_admit = {
	"SELECT workflows._flow_admit($1, $2, $3)",
	3, {TEXTOID, JSONBOID, OIDOID}, NULL
};

static WfQuery q_flow_acquire = {
	"SELECT workflows._flow_acquire($1)",
	1, {TEXTOID}, NULL
};

static WfQuery q_flow_release = {
	"SELECT workflows._flow_release($1, $2)",
	2, {TEXTOID, TEXTOID}, NULL
};

static WfQuery q_flow_workflow = {
	"SELECT owner::oid FROM workflows.workflows WHERE name = $1 FOR UPDATE",
	1, {TEXTOID}, NULL
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
	wf_query(&q_flow_admit, v, n, 1);
	return wf_get_text(0, 1);
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
	return DatumGetBool(wf_get_datum(0, 1, &isnull));
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
	char	   *workflow;
	WfAsOwner	s;
	Datum		v[2];
	char		n[2] = {' ', ' '};
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
	v[1] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	n[1] = PG_ARGISNULL(1) ? 'n' : ' ';
	wf_query(&q_flow_set, v, n, 0);
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

/*-------------------------------------------------------------------------
 *
 * api.c
 *	  SQL-callable functions for applications: register, create,
 *	  send_event, fail.
 *
 * Each checks its arguments and the caller's rights, then writes the
 * extension's tables as the extension's owner: ordinary roles cannot write
 * those tables directly, so nobody can forge an instance owned by another
 * role.  The caller is GetUserId() at entry (the functions are not
 * SECURITY DEFINER), and that role becomes the owner of what it creates.
 *
 * Every control action records one row in workflows.audit, in the
 * action's transaction and, where the action is one statement, in that
 * statement (a data-modifying WITH): who (session and current role), what,
 * on which instance or workflow, and non-payload arguments only (sizes and
 * hashes stand for params and payloads).
 *
 * The step functions used inside workflows live in replay.c.
 *
 * IDENTIFICATION
 *	  src/api.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/timestamp.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/array.h"
#include "funcapi.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(wf_register);
PG_FUNCTION_INFO_V1(wf_create);
PG_FUNCTION_INFO_V1(wf_send_event);
PG_FUNCTION_INFO_V1(wf_fail);
PG_FUNCTION_INFO_V1(wf_launch);
PG_FUNCTION_INFO_V1(wf_wait);
PG_FUNCTION_INFO_V1(wf_erase);
PG_FUNCTION_INFO_V1(wf_set_version);
PG_FUNCTION_INFO_V1(wf_set_retention);
PG_FUNCTION_INFO_V1(wf_audit_schedule);

static WfQuery q_workflow = {
	"SELECT owner::oid FROM workflows.workflows WHERE name = $1 FOR UPDATE",
	1, {TEXTOID}, NULL
};

static WfQuery q_add_workflow = {
	"INSERT INTO workflows.workflows (name, owner) VALUES ($1, $2::oid::regrole) "
	"ON CONFLICT (name) DO NOTHING",
	2, {TEXTOID, OIDOID}, NULL
};

static WfQuery q_newest_version = {
	"SELECT version_id, fn::oid, fn_hash, "
	"  (SELECT w.flow_control IS NOT NULL FROM workflows.workflows w WHERE w.name = $1) "
	"FROM workflows.versions "
	"WHERE workflow = $1 ORDER BY created_at DESC LIMIT 1",
	1, {TEXTOID}, NULL
};

/*
 * The pinned copy's definition is the function's own pg_get_functiondef(),
 * with exactly its known header (name and arguments, as that function
 * prints them) replaced; anything else, or a C function, gets no copy.
 * Nothing but that header is ever cut, so no name can smuggle SQL in.
 */
static WfQuery q_add_version = {
	"INSERT INTO workflows.versions (version_id, workflow, fn, fn_hash, created_by, code) "
	"SELECT v.id, $1, $2::oid::regprocedure, $3, $4::oid::regrole, "
	"       CASE WHEN l.lanname IN ('c', 'internal') OR NOT starts_with(d.def, h.head) THEN NULL "
	"       ELSE 'CREATE OR REPLACE FUNCTION workflows_code.' || quote_ident('v_' || v.id) "
	"            || '(' || pg_get_function_arguments($2) || E')\\n' "
	"            || substr(d.def, length(h.head) + 1) END "
	"FROM (SELECT gen_random_uuid()::text AS id) v, pg_proc p "
	"JOIN pg_language l ON l.oid = p.prolang "
	"JOIN pg_namespace n ON n.oid = p.pronamespace, "
	"LATERAL (SELECT pg_get_functiondef($2) AS def) d, "
	"LATERAL (SELECT 'CREATE OR REPLACE FUNCTION ' || quote_ident(n.nspname) || '.' "
	"                || quote_ident(p.proname) || '(' || pg_get_function_arguments($2) "
	"                || E')\\n' AS head) h "
	"WHERE p.oid = $2 "
	"RETURNING version_id",
	4, {TEXTOID, OIDOID, INT8OID, OIDOID}, NULL
};

/* the instance and its audit row, in one statement */
static WfQuery q_add_instance = {
	"WITH i AS ("
	"  INSERT INTO workflows.instances (id, workflow, version_id, owner, params, trigger, wake_at) "
	"  VALUES ($1, $2, $3, $4::oid::regrole, $5, "
	"          COALESCE($6, '{\"source\": \"api\"}'), now()) "
	"  ON CONFLICT (id) DO NOTHING RETURNING id), "
	"a AS ("
	"  INSERT INTO workflows.audit (acting_role, action, instance_id, workflow, owner, details) "
	"  SELECT $7, 'create', i.id, $2, $4::oid::regrole, "
	"         jsonb_build_object('source', COALESCE($6->>'source', 'api'), "
	"                            'params_bytes', octet_length(p.t), 'params_md5', md5(p.t)) "
	"  FROM i, (SELECT $5::text AS t) p) "
	"SELECT id FROM i",
	7, {TEXTOID, TEXTOID, TEXTOID, OIDOID, JSONBOID, JSONBOID, TEXTOID}, NULL
};

static WfQuery q_instance_owner = {
	"SELECT owner::oid, status, workflow FROM workflows.instances WHERE id = $1",
	1, {TEXTOID}, NULL
};

/* the event and its audit row: the payload's size and hash, not the payload */
static WfQuery q_add_event = {
	"WITH e AS (INSERT INTO workflows.events (instance_id, type, payload) VALUES ($1, $2, $3)) "
	"INSERT INTO workflows.audit (acting_role, action, instance_id, workflow, owner, details) "
	"SELECT $4, 'send_event', $1, $5, $6::oid::regrole, "
	"       jsonb_build_object('type', $2, 'payload_bytes', octet_length(p.t), 'payload_md5', md5(p.t)) "
	"FROM (SELECT $3::text AS t) p",
	6, {TEXTOID, TEXTOID, JSONBOID, TEXTOID, TEXTOID, OIDOID}, NULL
};

static WfQuery q_audit = {
	"INSERT INTO workflows.audit (acting_role, action, instance_id, workflow, owner, details) "
	"VALUES ($1, $2, $3, $4, $5::oid::regrole, $6)",
	6, {TEXTOID, TEXTOID, TEXTOID, TEXTOID, OIDOID, JSONBOID}, NULL
};

/*
 * Record an action in workflows.audit; connected to SPI, as the extension's
 * owner.  instance, workflow and details may be NULL, owner InvalidOid.
 */
static void
audit(Oid caller, const char *action, const char *instance, const char *workflow,
	  Oid owner, Jsonb *details)
{
	Datum		v[6];
	char		n[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	v[0] = CStringGetTextDatum(GetUserNameFromId(caller, false));
	v[1] = CStringGetTextDatum(action);
	v[2] = instance ? CStringGetTextDatum(instance) : (Datum) 0;
	n[2] = instance ? ' ' : 'n';
	v[3] = workflow ? CStringGetTextDatum(workflow) : (Datum) 0;
	n[3] = workflow ? ' ' : 'n';
	v[4] = ObjectIdGetDatum(owner);
	n[4] = OidIsValid(owner) ? ' ' : 'n';
	v[5] = details ? JsonbPGetDatum(details) : (Datum) 0;
	n[5] = details ? ' ' : 'n';
	wf_query(&q_audit, v, n, 0);
}

/*
 * The role a control command acts for.  A command can run inside another
 * API function that already switched to the extension's owner (singleton
 * "cancel" terminates the older instance inside create()), and a command
 * cascades to children in SQL (_cascade()); both must record, and check
 * the rights of, the role that called, not the extension's owner.  Set
 * around such calls only (always restored, on error too), and honoured
 * only while the current user is the extension's owner (inside our own
 * bracket) or the executor, where no user code runs.
 */
static Oid	acting_role = InvalidOid;

Oid
wf_acting_role(void)
{
	if (OidIsValid(acting_role) &&
		(GetUserId() == wf_extension_owner() || superuser()))
		return acting_role;
	return GetUserId();
}

Oid
wf_set_acting_role(Oid role)
{
	Oid			old = acting_role;

	acting_role = role;
	return old;
}

/*
 * Run one query (wf_query()'s arguments) with the acting role set to role,
 * restored afterwards whatever happens.
 */
int
wf_query_acting(WfQuery *q, Datum *values, const char *nulls, long count, Oid role)
{
	Oid			saved = wf_set_acting_role(role);
	volatile int result = 0;

	PG_TRY();
	{
		result = wf_query(q, values, nulls, count);
	}
	PG_FINALLY();
	{
		(void) wf_set_acting_role(saved);
	}
	PG_END_TRY();
	return result;
}

/* workflows._acting_role() returns oid: for _cascade()'s audit rows */
PG_FUNCTION_INFO_V1(wf_acting_role_sql);
Datum
wf_acting_role_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_OID(wf_acting_role());
}

/*
 * A version's function must still exist to start or move instances on it:
 * a clear error instead of one about an OID.
 */
static void
check_version_fn(Oid fn, const char *workflow)
{
	if (!SearchSysCacheExists1(PROCOID, ObjectIdGetDatum(fn)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("the function of workflow \"%s\" was dropped", workflow),
				 errhint("Register a new version with workflows.register().")));
}

/* a JSON string for building details; quotes and escapes s */
static char *
json_str(const char *s)
{
	StringInfoData buf;

	initStringInfo(&buf);
	escape_json(&buf, s);
	return buf.data;
}

/*
 * An instance the caller looked up is not there for it: 42501 if it exists
 * but belongs to a role the caller may not act for (instance ids are one
 * namespace per database and not secret), 42704 if it does not exist.
 */
static void
instance_unusable(const char *id, bool exists)
{
	if (exists)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for workflow instance \"%s\"", id),
				 errdetail("Only its owner and members of workflows_admin may use it.")));
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("workflow instance \"%s\" does not exist", id)));
}

/*
 * Look up an instance for a caller, as the extension's owner: an error if
 * it does not exist or the caller may not act on it; else its row (owner,
 * status, workflow) is row 0 of SPI_tuptable.
 */
static void
find_instance(const char *id, Oid caller)
{
	Datum		v[1];
	bool		isnull;

	v[0] = CStringGetTextDatum(id);
	if (wf_query(&q_instance_owner, v, NULL, 1) == 0)
		instance_unusable(id, false);
	if (!wf_can_see(DatumGetObjectId(wf_get_datum(0, 1, &isnull)), caller))
		instance_unusable(id, true);
}

/*
 * Run the body of an API function as the extension's owner, connected to
 * SPI.  The caller's identity must have been captured before.  Also used
 * by roles.c.
 */
void
wf_as_owner_begin(WfAsOwner *s)
{
	/* the tables are those of the library's version (not before UPDATE) */
	wf_check_installed_version();
	GetUserIdAndSecContext(&s->save_userid, &s->save_sec);
	SetUserIdAndSecContext(wf_extension_owner(),
						   s->save_sec | SECURITY_LOCAL_USERID_CHANGE);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

void
wf_as_owner_end(WfAsOwner *s)
{
	SPI_finish();
	SetUserIdAndSecContext(s->save_userid, s->save_sec);
}

/* a copy that survives SPI_finish(), in the caller's memory context */
static char *
spi_strdup(const char *str)
{
	Size		len = strlen(str) + 1;
	char	   *copy = SPI_palloc(len);

	memcpy(copy, str, len);
	return copy;
}

static char *
required_text(FunctionCallInfo fcinfo, int n, const char *what)
{
	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
	return text_to_cstring(PG_GETARG_TEXT_PP(n));
}

static void
check_payload(Jsonb *j, const char *what)
{
	if (j != NULL && VARSIZE(j) > (Size) wf_max_payload_size)
		ereport(ERROR,
				(errcode(ERRCODE_WF_LIMIT_EXCEEDED),
				 errmsg("%s is %u bytes, more than workflows.max_payload_size (%d)",
						what, (unsigned int) VARSIZE(j), wf_max_payload_size)));
}


/*
 * Can fn be a workflow?  It takes one jsonb argument and returns one value
 * of a type we can turn into jsonb.
 */
static void
check_workflow_fn(Oid fn)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	Form_pg_proc proc;
	char		typtype;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function with OID %u does not exist", fn)));
	proc = (Form_pg_proc) GETSTRUCT(tup);
	if (proc->prokind != PROKIND_FUNCTION)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("%s is not a function", format_procedure(fn)),
				 errhint("A workflow is a function taking jsonb, such as CREATE FUNCTION w(event jsonb) RETURNS jsonb.")));
	if (proc->pronargs != 1 || proc->proargtypes.values[0] != JSONBOID)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("workflow function %s must take exactly one argument of type jsonb",
						format_procedure(fn)),
				 errhint("A workflow is a function taking jsonb, such as CREATE FUNCTION w(event jsonb) RETURNS jsonb.")));
	typtype = get_typtype(proc->prorettype);
	if (proc->proretset ||
		(typtype == TYPTYPE_PSEUDO && proc->prorettype != VOIDOID))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("workflow function %s must return a single value, such as jsonb",
						format_procedure(fn))));
	ReleaseSysCache(tup);
}

/*
 * workflows.register(name text, fn regprocedure) returns text
 *
 * Makes fn the newest version of workflow "name" and returns the version
 * id.  Registering the same, unchanged function again returns the existing
 * version.  Only the role that first registered a name (or a member of it)
 * may register new versions under it.
 */
Datum
wf_register(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	char	   *name = required_text(fcinfo, 0, "workflow name");
	Oid			fn;
	int64		hash;
	AclResult	aclresult;
	WfAsOwner	s;
	Datum		v[4];
	char	   *version = NULL;
	bool		isnull;
	bool		new_version = false;
	Oid			owner;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("workflow function must not be null")));
	fn = PG_GETARG_OID(1);
	if (name[0] == '\0' || strlen(name) > WF_MAX_NAME_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("workflow name must be 1 to %d bytes long", WF_MAX_NAME_LEN)));
	check_workflow_fn(fn);
	aclresult = wf_proc_aclcheck(fn, caller, ACL_EXECUTE);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_FUNCTION, get_func_name(fn));
	hash = wf_function_hash(fn);

	wf_as_owner_begin(&s);
	v[0] = CStringGetTextDatum(name);
	v[1] = ObjectIdGetDatum(caller);
	wf_query(&q_add_workflow, v, NULL, 0);
	wf_query(&q_workflow, v, NULL, 1);
	owner = DatumGetObjectId(wf_get_datum(0, 1, &isnull));
	if (!has_privs_of_role(caller, owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("workflow \"%s\" belongs to role %s", name,
						GetUserNameFromId(owner, false)),
				 errdetail("Only its owner can register new versions of it.")));

	if (wf_query(&q_newest_version, v, NULL, 1) == 1 &&
		DatumGetObjectId(wf_get_datum(0, 2, &isnull)) == fn &&
		DatumGetInt64(wf_get_datum(0, 3, &isnull)) == hash)
		version = wf_get_text(0, 1);
	else
	{
		v[1] = ObjectIdGetDatum(fn);
		v[2] = Int64GetDatum(hash);
		v[3] = ObjectIdGetDatum(caller);
		wf_query(&q_add_version, v, NULL, 0);
		version = wf_get_text(0, 1);
		new_version = true;
	}
	version = spi_strdup(version);
	audit(caller, "register", NULL, name, owner,
		  wf_cstring_jsonb(psprintf("{\"function\": %s, \"version_id\": %s, \"new_version\": %s}",
									json_str(format_procedure(fn)), json_str(version),
									new_version ? "true" : "false")));
	wf_as_owner_end(&s);
	PG_RETURN_TEXT_P(cstring_to_text(version));
}

/*
 * workflows.create(workflow text, params jsonb, id text, trigger jsonb)
 * returns text
 *
 * Queues an instance of the newest version of a workflow, owned by the
 * caller, who must be allowed to execute the workflow's function.  It
 * becomes visible to the executors, and wakes them, when the caller's
 * transaction commits.  An id that exists already is an error.
 */
Datum
wf_create(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	char	   *workflow = required_text(fcinfo, 0, "workflow name");
	Jsonb	   *params;
	char	   *id = NULL;
	WfAsOwner	s;
	Datum		v[7];
	char		n[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	Oid			fn;
	AclResult	aclresult;
	char	   *result;
	Jsonb	   *trigger = NULL;
	Jsonb	   *options = (PG_NARGS() > 4 && !PG_ARGISNULL(4)) ? PG_GETARG_JSONB_P(4) : NULL;
	bool		flow;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("instance params must not be null"),
				 errhint("Pass '{}' for no params.")));
	params = PG_GETARG_JSONB_P(1);
	check_payload(params, "instance params");
	if (!PG_ARGISNULL(2))
	{
		id = text_to_cstring(PG_GETARG_TEXT_PP(2));
		if (id[0] == '\0' || strlen(id) > WF_MAX_ID_LEN)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("instance id must be 1 to %d bytes long", WF_MAX_ID_LEN)));
	}

	if (!PG_ARGISNULL(3))
	{
		JsonbValue *source = NULL;

		trigger = PG_GETARG_JSONB_P(3);
		if (JB_ROOT_IS_OBJECT(trigger))
			source = getKeyJsonValueFromContainer(&trigger->root, "source", 6, NULL);
		if (source == NULL || source->type != jbvString)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("trigger must be a JSON object with a \"source\" string"),
					 errhint("For example {\"source\": \"api\"}.")));
		if (VARSIZE(trigger) > 4096)
			ereport(ERROR,
					(errcode(ERRCODE_WF_LIMIT_EXCEEDED),
					 errmsg("trigger is %u bytes, more than 4096", (unsigned int) VARSIZE(trigger))));
	}

	wf_as_owner_begin(&s);
	v[0] = CStringGetTextDatum(workflow);
	if (wf_query(&q_newest_version, v, NULL, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("workflow \"%s\" does not exist", workflow),
				 errhint("Register it with workflows.register().")));
	v[2] = PointerGetDatum(cstring_to_text(wf_get_text(0, 1)));
	fn = DatumGetObjectId(wf_get_datum(0, 2, &isnull));
	flow = DatumGetBool(wf_get_datum(0, 4, &isnull));
	check_version_fn(fn, workflow);

	aclresult = wf_proc_aclcheck(fn, caller, ACL_EXECUTE);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_FUNCTION, get_func_name(fn));

	if (id == NULL)
		id = wf_new_instance_id();
	v[0] = CStringGetTextDatum(id);
	v[1] = CStringGetTextDatum(workflow);
	v[3] = ObjectIdGetDatum(caller);
	v[4] = JsonbPGetDatum(params);
	v[5] = JsonbPGetDatum(trigger);
	n[5] = trigger ? ' ' : 'n';
	v[6] = CStringGetTextDatum(GetUserNameFromId(caller, false));
	if (wf_query(&q_add_instance, v, n, 0) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("workflow instance \"%s\" already exists", id),
				 errhint("Instance ids are unique; choose another id or pass NULL for a generated one.")));
	result = wf_get_text(0, 1);
	/* flow control (flow.c): options, debounce, singleton */
	if (flow || options != NULL)
		result = wf_flow_admit(result, options, caller);
	result = spi_strdup(result);
	wf_as_owner_end(&s);

	wf_wake_new_at_commit(1);
	PG_RETURN_TEXT_P(cstring_to_text(result));
}

/*
 * workflows.send_event(instance text, type text, payload jsonb)
 *
 * Stores an event for an instance the caller may control.  It is delivered
 * (in arrival order per type) to the instance's next wait_for_event() of
 * that type, whether the instance waits already or gets there later.  The
 * instance is woken at commit; nothing is delivered if the caller rolls
 * back.
 */
Datum
wf_send_event(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	char	   *instance = required_text(fcinfo, 0, "instance id");
	char	   *type = required_text(fcinfo, 1, "event type");
	Jsonb	   *payload = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	WfAsOwner	s;
	Datum		v[6];
	char		n[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	char	   *status;
	Oid			owner;
	char	   *workflow;

	if (type[0] == '\0' || strlen(type) > WF_MAX_NAME_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event type must be 1 to %d bytes long", WF_MAX_NAME_LEN)));
	check_payload(payload, "event payload");

	wf_as_owner_begin(&s);
	find_instance(instance, caller);
	owner = DatumGetObjectId(wf_get_datum(0, 1, &isnull));
	status = wf_get_text(0, 2);
	workflow = wf_get_text(0, 3);
	if (strcmp(status, "complete") == 0 || strcmp(status, "errored") == 0 ||
		strcmp(status, "terminated") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_WF_INVALID_STATUS),
				 errmsg("cannot send an event to workflow instance \"%s\": it is %s",
						instance, status)));
	v[0] = CStringGetTextDatum(instance);
	v[1] = CStringGetTextDatum(type);
	v[2] = JsonbPGetDatum(payload);
	n[2] = payload ? ' ' : 'n';
	v[3] = CStringGetTextDatum(GetUserNameFromId(caller, false));
	v[4] = CStringGetTextDatum(workflow);
	v[5] = ObjectIdGetDatum(owner);
	wf_query(&q_add_event, v, n, 0);
	wf_as_owner_end(&s);

	wf_signal_at_commit();
	PG_RETURN_VOID();
}

/*
 * workflows.fail(message text, detail text)
 *
 * Raise the non-retryable error: a step that raises it fails at once,
 * without further attempts.
 */
Datum
wf_fail(PG_FUNCTION_ARGS)
{
	char	   *message = PG_ARGISNULL(0) ? "step failed" : text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *detail = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));

	ereport(ERROR,
			(errcode(ERRCODE_WF_NON_RETRYABLE),
			 errmsg_internal("%s", message),
			 detail ? errdetail_internal("%s", detail) : 0));
	PG_RETURN_VOID();
}

/*
 * workflows._launch(): called by the extension's install script, so that
 * the launcher starts this database's executors when CREATE EXTENSION
 * commits.
 */
Datum
wf_launch(PG_FUNCTION_ARGS)
{
	wf_launch_at_commit();
	PG_RETURN_VOID();
}

static WfQuery q_status = {
	"SELECT status, xmin FROM workflows.instances WHERE id = $1",
	1, {TEXTOID}, NULL
};

static WfQuery q_unusable = {
	"SELECT workflows._instance_unusable($1)",
	1, {TEXTOID}, NULL
};

/* the status, then the document (its status as text, for is_final()) */
static WfQuery q_status_doc_and_status = {
	"SELECT d->>'status', d FROM workflows.status($1) d",
	1, {TEXTOID}, NULL
};

static bool
is_final(const char *status)
{
	return strcmp(status, "complete") == 0 || strcmp(status, "errored") == 0 ||
		strcmp(status, "terminated") == 0;
}

static int	wait_slot = -1;

static void
wait_cleanup(int code, Datum arg)
{
	wf_remove_waiter(wait_slot);
	wait_slot = -1;
}

/*
 * workflows.wait(id text, timeout interval) returns jsonb
 *
 * Block until the instance is complete, errored or terminated, then return
 * its status document; after the timeout, return the document as it is.
 * Executors set this backend's latch when an instance it waits for reaches
 * a final state, so there is no polling (except a slow fallback when more
 * than WF_MAX_WAITERS backends wait at once).  Each look at the instance
 * takes a new snapshot, so it must not run in a REPEATABLE READ or
 * SERIALIZABLE transaction.
 */
Datum
wf_wait(PG_FUNCTION_ARGS)
{
	char	   *id = required_text(fcinfo, 0, "instance id");
	TimestampTz deadline;
	Datum		v[1];
	Datum		result;
	bool		isnull;
	bool		doc_read = false;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("wait timeout must not be null")));
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("workflows.wait() cannot run in a REPEATABLE READ or SERIALIZABLE transaction"),
				 errhint("It must see other transactions commit; use READ COMMITTED.")));
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
										   Max(0, wf_interval_ms(PG_GETARG_INTERVAL_P(1))));
	v[0] = CStringGetTextDatum(id);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PG_ENSURE_ERROR_CLEANUP(wait_cleanup, (Datum) 0);
	{
		wait_slot = wf_add_waiter(wf_id_hash(id));

		/* a new snapshot for each look; RLS hides others' instances */
		if (wf_query(&q_status, v, NULL, 1) == 0)
			wf_query(&q_unusable, v, NULL, 0);	/* raises */

		/*
		 * Created (or restarted) by this very transaction: no executor can
		 * see it before the commit, so waiting could only time out.
		 * Drivers that turn autocommit off make this easy to do.
		 */
		if (!is_final(wf_get_text(0, 1)) &&
			TransactionIdIsCurrentTransactionId(DatumGetTransactionId(wf_get_datum(0, 2, &isnull))))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
					 errmsg("workflow instance \"%s\" was created or changed by this transaction, which has not committed yet", id),
					 errdetail("Executors only see committed instances, so it cannot make progress before this transaction ends."),
					 errhint("Commit first, then call workflows.wait().")));

		/*
		 * Then the whole document at each look: once woken, the instance is
		 * most likely final, and the document is what is returned (one
		 * statement per look instead of two at the end).
		 */
		while (!is_final(wf_get_text(0, 1)))
		{
			long		ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);

			if (ms <= 0)
				break;
			if (wait_slot < 0)
				ms = Min(ms, 100);
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
			wf_query(&q_status_doc_and_status, v, NULL, 1);
			doc_read = true;
		}
	}
	PG_END_ENSURE_ERROR_CLEANUP(wait_cleanup, (Datum) 0);
	wait_cleanup(0, (Datum) 0);

	if (!doc_read)
		wf_query(&q_status_doc_and_status, v, NULL, 1);
	result = wf_get_datum(0, 2, &isnull);
	result = SPI_datumTransfer(result, false, -1);
	SPI_finish();
	PG_RETURN_DATUM(result);
}

/* ---- control commands ---- */

static WfQuery q_lock_instance = {
	"SELECT 1 FROM workflows.instances WHERE id = $1 FOR NO KEY UPDATE SKIP LOCKED",
	1, {TEXTOID}, NULL
};

static WfQuery q_step_exists = {
	"SELECT 1 FROM workflows.steps WHERE instance_id = $1 AND key = $2",
	2, {TEXTOID, TEXTOID}, NULL
};

static WfQuery q_apply_strict = {
	"SELECT workflows._apply($1, $2, $3, true)",
	3, {TEXTOID, TEXTOID, TEXTOID}, NULL
};

static WfQuery q_add_request = {
	"INSERT INTO workflows.requests (instance_id, command, from_step, requested_by) "
	"VALUES ($1, $2, $3, $4::oid::regrole) "
	"ON CONFLICT (instance_id) DO UPDATE SET command = EXCLUDED.command, "
	"  from_step = EXCLUDED.from_step, requested_by = EXCLUDED.requested_by, "
	"  requested_at = EXCLUDED.requested_at",
	4, {TEXTOID, TEXTOID, TEXTOID, OIDOID}, NULL
};

/*
 * Run a control command.  When no executor holds the instance, the command
 * applies at once, in the caller's transaction.  When one does (the
 * instance is running a step), the command is left as a request and the
 * executor applies it at the step boundary: a command never waits for a
 * step to finish.  Returns the new status, or what is pending.
 */
static text *
run_command(const char *id, const char *command, const char *from_step)
{
	Oid			caller = wf_acting_role();
	WfAsOwner	s;
	Datum		v[4];
	char		n[4] = {' ', ' ', ' ', ' '};
	bool		isnull;
	char	   *result;
	bool		locked = false;
	int			tries;
	Oid			owner;
	char	   *workflow;

	wf_as_owner_begin(&s);
	find_instance(id, caller);
	owner = DatumGetObjectId(wf_get_datum(0, 1, &isnull));
	workflow = wf_get_text(0, 3);
	v[0] = CStringGetTextDatum(id);
	if (from_step != NULL && strcmp(command, "restart") == 0)
	{
		v[1] = CStringGetTextDatum(from_step);
		if (wf_query(&q_step_exists, v, NULL, 1) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("workflow instance \"%s\" has no step \"%s\"", id, from_step),
					 errhint("Steps are named by their key: the name for its first call, the name plus \"#2\" for the second, \"#3\" for the third and so on.")));
	}
	v[1] = CStringGetTextDatum(command);
	v[2] = from_step ? CStringGetTextDatum(from_step) : (Datum) 0;
	n[2] = from_step ? ' ' : 'n';

	/*
	 * An executor that only looked at the row (its claim found the instance
	 * not due) holds the lock for a moment: try for a few milliseconds
	 * before concluding that a step is running.
	 */
	for (tries = 0; tries < 20; tries++)
	{
		locked = (wf_query(&q_lock_instance, v, NULL, 1) == 1);
		if (locked)
			break;
		pg_usleep(1000);
		CHECK_FOR_INTERRUPTS();
	}

	if (locked)
	{
		/* (the children it cascades to record the caller too) */
		wf_query_acting(&q_apply_strict, v, n, 1, caller);
		result = wf_get_text(0, 1);
		if (strcmp(result, "terminated") == 0)
			wf_waiters_at_commit();
		else
			wf_wake_at_commit();
	}
	else
	{
		/* an executor is running a step of it */
		if (strcmp(command, "resume") == 0)
			ereport(ERROR,
					(errcode(ERRCODE_WF_INVALID_STATUS),
					 errmsg("cannot resume workflow instance \"%s\": it is running", id)));
		v[3] = ObjectIdGetDatum(caller);
		wf_query(&q_add_request, v, n, 0);
		result = strcmp(command, "pause") == 0 ? "waitingForPause" :
			strcmp(command, "terminate") == 0 ? "terminating" : "restarting";
		wf_signal_at_commit();
	}
	result = spi_strdup(result);
	audit(caller, command, id, workflow, owner,
		  wf_cstring_jsonb(from_step && strcmp(command, "terminate") == 0 ?
						   psprintf("{\"result\": %s, \"cascade\": false}", json_str(result)) :
						   from_step ?
						   psprintf("{\"result\": %s, \"from_step\": %s}",
									json_str(result), json_str(from_step)) :
						   psprintf("{\"result\": %s}", json_str(result))));
	wf_as_owner_end(&s);
	return cstring_to_text(result);
}

PG_FUNCTION_INFO_V1(wf_pause);
PG_FUNCTION_INFO_V1(wf_resume);
PG_FUNCTION_INFO_V1(wf_terminate);
PG_FUNCTION_INFO_V1(wf_restart);
PG_FUNCTION_INFO_V1(wf_create_batch);

/* workflows.pause(id text) returns text */
Datum
wf_pause(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(run_command(text_to_cstring(PG_GETARG_TEXT_PP(0)), "pause", NULL));
}

/* workflows.resume(id text) returns text */
Datum
wf_resume(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(run_command(text_to_cstring(PG_GETARG_TEXT_PP(0)), "resume", NULL));
}

/*
 * workflows.terminate(id text, cascade boolean) returns text
 *
 * Without cascade, the command carries from_step '' (workflows._apply()
 * leaves the instance's children alone).
 */
Datum
wf_terminate(PG_FUNCTION_ARGS)
{
	bool		cascade = PG_NARGS() < 2 || PG_GETARG_BOOL(1);

	PG_RETURN_TEXT_P(run_command(text_to_cstring(PG_GETARG_TEXT_PP(0)), "terminate",
								 cascade ? NULL : ""));
}

/* workflows.restart(id text, from_step text) returns text */
Datum
wf_restart(PG_FUNCTION_ARGS)
{
	char	   *id = required_text(fcinfo, 0, "instance id");

	PG_RETURN_TEXT_P(run_command(id, "restart",
								 PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1))));
}

/* ---- batches ---- */

/* the instances and one audit row for each created, in one statement */
static WfQuery q_add_instances = {
	"WITH i AS ("
	"  INSERT INTO workflows.instances (id, workflow, version_id, owner, params, wake_at) "
	"  SELECT x.id, $1, $2, $3::oid::regrole, x.params, now() "
	"  FROM unnest($4::text[], $5::jsonb[]) AS x(id, params) "
	"  ON CONFLICT (id) DO NOTHING RETURNING id, params), "
	"a AS ("
	"  INSERT INTO workflows.audit (acting_role, action, instance_id, workflow, owner, details) "
	"  SELECT $6, 'create', i.id, $1, $3::oid::regrole, "
	"         jsonb_build_object('source', 'api', 'batch', true, "
	"                            'params_bytes', octet_length(p.t), 'params_md5', md5(p.t)) "
	"  FROM i, LATERAL (SELECT i.params::text AS t) p) "
	"SELECT id FROM i",
	6, {TEXTOID, TEXTOID, OIDOID, TEXTARRAYOID, JSONBARRAYOID, TEXTOID}, NULL
};

static WfQuery q_existing = {
	"SELECT id, owner::oid FROM workflows.instances WHERE id = ANY ($1)",
	1, {TEXTARRAYOID}, NULL
};

static void
batch_error(int i, const char *problem)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid instance %d in batch: %s", i + 1, problem),
			 errhint("A batch is a JSON array of objects such as {\"id\": \"order-1\", \"params\": {}}; id is optional.")));
}

/*
 * workflows.create_batch(workflow text, instances jsonb, if_not_exists
 * boolean) returns setof text
 *
 * Creates every instance of the array in one statement: all or none.  An
 * id given twice, or an id that exists already, is an error, unless
 * if_not_exists asks for idempotent creation (for retried client
 * requests): then existing ids are returned as if created.  Returns the ids
 * in the order given.
 */
Datum
wf_create_batch(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	char	   *workflow = required_text(fcinfo, 0, "workflow name");
	Jsonb	   *batch;
	bool		if_not_exists = !PG_ARGISNULL(2) && PG_GETARG_BOOL(2);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			count,
				i = 0,
				inserted;
	Datum	   *ids;
	Datum	   *params;
	HTAB	   *seen;
	HASHCTL		ctl;
	WfAsOwner	s;
	Datum		qv[6];
	bool		isnull;
	Oid			fn;
	AclResult	aclresult;
	MemoryContext callcxt = CurrentMemoryContext;
	Jsonb	  **opts;
	bool		any_options = false;
	bool		flow;
	HTAB	   *fresh = NULL;
	Datum		all_fresh = (Datum) 0;	/* the ids inserted, for _flow_admit_all() */

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("instances must not be null")));
	batch = PG_GETARG_JSONB_P(1);
	if (!JB_ROOT_IS_ARRAY(batch) || JB_ROOT_IS_SCALAR(batch))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("instances must be a JSON array")));
	count = JB_ROOT_COUNT(batch);
	ids = palloc(sizeof(Datum) * Max(count, 1));
	params = palloc(sizeof(Datum) * Max(count, 1));
	opts = palloc(sizeof(Jsonb *) * Max(count, 1));

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = WF_MAX_ID_LEN + 1;
	ctl.entrysize = WF_MAX_ID_LEN + 1;
	ctl.hcxt = CurrentMemoryContext;
	seen = hash_create("workflows batch ids", Max(count, 16), &ctl,
					   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	/* check every element before writing anything */
	it = JsonbIteratorInit(&batch->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		JsonbValue *idv;
		JsonbValue *pv;
		JsonbValue *ov;
		char	   *id;
		bool		found;
		Jsonb	   *p;

		if (tok != WJB_ELEM)
			continue;
		if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
			batch_error(i, "not a JSON object");
		idv = getKeyJsonValueFromContainer(v.val.binary.data, "id", 2, NULL);
		pv = getKeyJsonValueFromContainer(v.val.binary.data, "params", 6, NULL);
		ov = getKeyJsonValueFromContainer(v.val.binary.data, "options", 7, NULL);
		if ((int) JsonContainerSize(v.val.binary.data) != (idv ? 1 : 0) + (pv ? 1 : 0) + (ov ? 1 : 0))
			batch_error(i, "only the keys \"id\", \"params\" and \"options\" are allowed");
		if (ov != NULL && ov->type != jbvNull)
		{
			opts[i] = JsonbValueToJsonb(ov);
			any_options = true;
		}
		else
			opts[i] = NULL;

		if (idv == NULL || idv->type == jbvNull)
			id = wf_new_instance_id();
		else if (idv->type != jbvString || idv->val.string.len == 0 ||
				 idv->val.string.len > WF_MAX_ID_LEN)
			batch_error(i, "\"id\" must be a string of 1 to 200 bytes");
		else
			id = pnstrdup(idv->val.string.val, idv->val.string.len);

		(void) hash_search(seen, id, HASH_ENTER, &found);
		if (found && !if_not_exists)
			ereport(ERROR,
					(errcode(ERRCODE_UNIQUE_VIOLATION),
					 errmsg("instance id \"%s\" appears twice in the batch", id)));

		p = (pv == NULL || pv->type == jbvNull) ? wf_cstring_jsonb("{}") : JsonbValueToJsonb(pv);
		check_payload(p, "instance params");
		ids[i] = CStringGetTextDatum(id);
		params[i] = JsonbPGetDatum(p);
		i++;
	}

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	wf_as_owner_begin(&s);
	qv[0] = CStringGetTextDatum(workflow);
	if (wf_query(&q_newest_version, qv, NULL, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("workflow \"%s\" does not exist", workflow),
				 errhint("Register it with workflows.register().")));
	qv[1] = PointerGetDatum(cstring_to_text(wf_get_text(0, 1)));
	fn = DatumGetObjectId(wf_get_datum(0, 2, &isnull));
	flow = DatumGetBool(wf_get_datum(0, 4, &isnull));
	check_version_fn(fn, workflow);
	aclresult = wf_proc_aclcheck(fn, caller, ACL_EXECUTE);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_FUNCTION, get_func_name(fn));

	qv[2] = ObjectIdGetDatum(caller);
	qv[3] = PointerGetDatum(construct_array(ids, count, TEXTOID, -1, false, TYPALIGN_INT));
	qv[4] = PointerGetDatum(construct_array(params, count, JSONBOID, -1, false, TYPALIGN_INT));
	qv[5] = CStringGetTextDatum(GetUserNameFromId(caller, false));
	inserted = wf_query(&q_add_instances, qv, NULL, 0);
	if (flow || any_options)
	{
		/* the ids inserted now, for flow control's hook below */
		fresh = hash_create("workflows batch ids fresh", Max(inserted, 16), &ctl,
							HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		for (int k = 0; k < inserted; k++)
			(void) hash_search(fresh, wf_get_text(k, 1), HASH_ENTER, NULL);
		/* and as an array, for a batch without options (_flow_admit_all()) */
		if (!any_options && inserted > 0)
		{
			Datum	   *fresh_ids = palloc(sizeof(Datum) * inserted);

			for (int k = 0; k < inserted; k++)
				fresh_ids[k] = SPI_getbinval(SPI_tuptable->vals[k], SPI_tuptable->tupdesc, 1,
											 &isnull);
			all_fresh = PointerGetDatum(construct_array(fresh_ids, inserted, TEXTOID,
														-1, false, TYPALIGN_INT));
		}
	}

	if ((long) inserted < hash_get_num_entries(seen))
	{
		/* the ids not inserted existed before: which, and whose? */
		Datum	   *missing = palloc(sizeof(Datum) * count);
		int			nmissing = 0;
		int			nexisting;

		for (int k = 0; k < inserted; k++)
			(void) hash_search(seen, wf_get_text(k, 1), HASH_REMOVE, NULL);
		for (int k = 0; k < count; k++)
			if (hash_search(seen, TextDatumGetCString(ids[k]), HASH_REMOVE, NULL))
				missing[nmissing++] = ids[k];
		qv[0] = PointerGetDatum(construct_array(missing, nmissing, TEXTOID, -1, false, TYPALIGN_INT));
		nexisting = wf_query(&q_existing, qv, NULL, 0);
		for (int k = 0; k < nexisting; k++)
		{
			char	   *id = wf_get_text(k, 1);

			if (!if_not_exists)
				ereport(ERROR,
						(errcode(ERRCODE_UNIQUE_VIOLATION),
						 errmsg("workflow instance \"%s\" already exists", id),
						 errdetail("No instance of the batch was created."),
						 errhint("Pass if_not_exists => true to create only the missing ones.")));
			if (!wf_can_see(DatumGetObjectId(wf_get_datum(k, 2, &isnull)), caller))
				ereport(ERROR,
						(errcode(ERRCODE_UNIQUE_VIOLATION),
						 errmsg("workflow instance \"%s\" already exists and belongs to another role", id)));
		}
	}
	/*
	 * flow control (flow.c): without options and without debounce or
	 * singleton, every instance just becomes a member, in one statement;
	 * otherwise options, debounce, singleton, per element
	 */
	if (all_fresh != (Datum) 0 && wf_flow_admit_all(workflow, all_fresh))
		fresh = NULL;
	if (fresh != NULL)
	{
		for (int k = 0; k < count; k++)
		{
			char	   *id = TextDatumGetCString(ids[k]);

			if (hash_search(fresh, id, HASH_REMOVE, NULL) == NULL)
				continue;
			id = wf_flow_admit(id, opts[k], caller);
			ids[k] = PointerGetDatum(SPI_palloc(VARHDRSZ + strlen(id)));
			SET_VARSIZE(DatumGetPointer(ids[k]), VARHDRSZ + strlen(id));
			memcpy(VARDATA(DatumGetPointer(ids[k])), id, strlen(id));
		}
	}
	wf_as_owner_end(&s);

	MemoryContextSwitchTo(callcxt);
	seen = hash_create("workflows batch ids out", Max(count, 16), &ctl,
					   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	for (int k = 0; k < count; k++)
	{
		bool		found;
		bool		nulls[1] = {false};
		Datum		values[1];
		char	   *id = TextDatumGetCString(ids[k]);

		(void) hash_search(seen, id, HASH_ENTER, &found);
		if (found)
			continue;
		values[0] = ids[k];
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	if (inserted > 0)
		wf_wake_new_at_commit(inserted);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(wf_executors);

/*
 * workflows._executors(): the executors of this server, like
 * pg_stat_activity: process id, database, executor number, and the instance
 * and step it runs since when (instance and step only for callers who may
 * see that instance).
 */
Datum
wf_executors(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			caller = GetUserId();
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	for (i = 0; i < wf_shared->nslots; i++)
	{
		WfWorkerSlot slot;
		Datum		values[7];
		bool		nulls[7] = {false, false, false, false, false, false, false};

		wf_read_slot(i, &slot);
		if (slot.dboid == InvalidOid || slot.pid == 0)
			continue;

		values[0] = Int32GetDatum(slot.pid);
		values[1] = ObjectIdGetDatum(slot.dboid);
		values[2] = Int32GetDatum(slot.index);
		if (slot.instance[0] != '\0' && OidIsValid(slot.owner) && wf_can_see(slot.owner, caller))
		{
			values[3] = CStringGetTextDatum(slot.instance);
			values[4] = CStringGetTextDatum(slot.step);
			nulls[4] = (slot.step[0] == '\0');
		}
		else
			nulls[3] = nulls[4] = true;
		values[5] = TimestampTzGetDatum(slot.since);
		nulls[5] = (slot.since == 0);
		values[6] = Int32GetDatum(slot.calls);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}


/* ---- erasure, retention, schedules ---- */

static WfQuery q_lock_finished = {
	"SELECT status FROM workflows.instances WHERE id = $1 FOR UPDATE",
	1, {TEXTOID}, NULL
};

/*
 * Delete the instance (steps and attempts go with it by the trigger
 * instances_deleted, events and requests by cascade) and every audit row
 * about it, and leave one row saying that it was erased, when and by whom:
 * nothing else of it remains.
 */
static WfQuery q_erase = {
	"WITH old AS (DELETE FROM workflows.audit WHERE instance_id = $1), "
	"i AS (DELETE FROM workflows.instances WHERE id = $1 RETURNING workflow, owner, status) "
	"INSERT INTO workflows.audit (acting_role, action, instance_id, workflow, owner, details) "
	"SELECT $2, 'erase', $1, i.workflow, i.owner, "
	"       jsonb_build_object('status', i.status) || COALESCE($3, '{}') FROM i",
	3, {TEXTOID, TEXTOID, JSONBOID}, NULL
};

/*
 * Erase one instance; connected to SPI as the extension's owner.  Used by
 * erase() after its checks, and by DROP OWNED (roles.c), which erases the
 * instances of a role whatever their status.  Returns false if the
 * instance was gone.
 */
static WfQuery q_erase_refs = {
	"SELECT workflows._erase_refs($1)",
	1, {TEXTOID}, NULL
};

bool
wf_erase_instance(const char *id, Oid caller, Jsonb *details)
{
	Datum		v[3];
	char		n[3] = {' ', ' ', ' '};

	v[0] = CStringGetTextDatum(id);
	/* what other rows hold of it: flow-control keys, collapsed creates... */
	wf_query(&q_erase_refs, v, NULL, 0);
	v[1] = CStringGetTextDatum(GetUserNameFromId(caller, false));
	v[2] = details ? JsonbPGetDatum(details) : (Datum) 0;
	n[2] = details ? ' ' : 'n';
	return wf_query(&q_erase, v, n, 0) == 1;
}

/*
 * workflows.erase(id text) returns void
 *
 * For the owner of a finished (complete, errored) or terminated instance,
 * or a member of workflows_admin: delete it with everything it has, in the
 * caller's transaction.  A live instance is an error (55000) and nothing
 * changes: terminate it first.  The status is read before taking the row
 * lock, so that erasing a running instance fails at once instead of
 * waiting for its step; it is read again under the lock, in case a restart
 * made it live meanwhile.
 */
static void
check_erasable(const char *id, const char *status)
{
	if (!is_final(status))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot erase workflow instance \"%s\": it is %s", id, status),
				 errdetail("Only complete, errored and terminated instances can be erased."),
				 errhint("Terminate it first with workflows.terminate().")));
}

/*
 * The descendants of an instance (children, theirs, ...), deepest first.
 * Children are created by their parent's steps, as its owner, with params
 * it passed on: erasing an instance erases them too.
 */
static WfQuery q_descendants = {
	"WITH RECURSIVE d(id, depth) AS ("
	"  SELECT id, 1 FROM workflows.instances WHERE parent = $1 "
	"  UNION ALL "
	"  SELECT i.id, d.depth + 1 FROM workflows.instances i JOIN d ON i.parent = d.id) "
	"SELECT id FROM d ORDER BY depth DESC, id",
	1, {TEXTOID}, NULL
};

static void
check_descendant_erasable(const char *id, const char *descendant, const char *status)
{
	if (!is_final(status))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot erase workflow instance \"%s\": its descendant \"%s\" is %s",
						id, descendant, status),
				 errdetail("Erasing an instance erases its descendants, and only complete, errored and terminated instances can be erased."),
				 errhint("Terminate the descendant first with workflows.terminate('%s'), then erase \"%s\" again.",
						 descendant, id)));
}

Datum
wf_erase(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	char	   *id = required_text(fcinfo, 0, "instance id");
	WfAsOwner	s;
	Datum		v[1];
	int			nd;
	List	   *descendants = NIL;
	ListCell   *lc;
	Jsonb	   *with;

	wf_as_owner_begin(&s);
	find_instance(id, caller);
	check_erasable(id, wf_get_text(0, 2));
	v[0] = CStringGetTextDatum(id);
	if (wf_query(&q_lock_finished, v, NULL, 1) == 0)
		instance_unusable(id, false);
	check_erasable(id, wf_get_text(0, 1));

	/* every descendant final (under its row lock), or nothing is erased */
	nd = wf_query(&q_descendants, v, NULL, 0);
	for (int k = 0; k < nd; k++)
		descendants = lappend(descendants, wf_get_text(k, 1));
	foreach(lc, descendants)
	{
		v[0] = CStringGetTextDatum(lfirst(lc));
		if (wf_query(&q_lock_finished, v, NULL, 1) == 1)
			check_descendant_erasable(id, lfirst(lc), wf_get_text(0, 1));
	}
	with = wf_cstring_jsonb(psprintf("{\"erasedWith\": %s}", json_str(id)));
	foreach(lc, descendants)
		(void) wf_erase_instance(lfirst(lc), caller, with);
	(void) wf_erase_instance(id, caller, NULL);
	wf_as_owner_end(&s);
	PG_RETURN_VOID();
}

static WfQuery q_set_retention = {
	"WITH w AS (UPDATE workflows.workflows SET retention = $2 WHERE name = $1 RETURNING name) "
	"INSERT INTO workflows.audit (acting_role, action, workflow, owner, details) "
	"SELECT $3, 'set_retention', $1, $4::oid::regrole, "
	"       jsonb_build_object('retention', $2::text) FROM w",
	4, {TEXTOID, INTERVALOID, TEXTOID, OIDOID}, NULL
};

/*
 * workflows.set_retention(workflow text, retention interval) returns void
 *
 * How long finished instances of one workflow are kept, instead of
 * workflows.retention; NULL goes back to it, 0 keeps them forever.  For the
 * workflow's owner or a member of workflows_admin.
 */
Datum
wf_set_retention(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	char	   *workflow = required_text(fcinfo, 0, "workflow name");
	Interval   *retention = PG_ARGISNULL(1) ? NULL : PG_GETARG_INTERVAL_P(1);
	WfAsOwner	s;
	Datum		v[4];
	char		n[4] = {' ', ' ', ' ', ' '};
	bool		isnull;
	Oid			owner;

	if (retention != NULL && wf_interval_ms(retention) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("retention must not be negative"),
				 errhint("Use 0 to keep the instances forever, NULL for workflows.retention.")));

	wf_as_owner_begin(&s);
	v[0] = CStringGetTextDatum(workflow);
	if (wf_query(&q_workflow, v, NULL, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("workflow \"%s\" does not exist", workflow)));
	owner = DatumGetObjectId(wf_get_datum(0, 1, &isnull));
	if (!wf_can_see(owner, caller))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for workflow \"%s\"", workflow),
				 errdetail("Only its owner and members of workflows_admin may set its retention.")));
	v[1] = retention ? IntervalPGetDatum(retention) : (Datum) 0;
	n[1] = retention ? ' ' : 'n';
	v[2] = CStringGetTextDatum(GetUserNameFromId(caller, false));
	v[3] = ObjectIdGetDatum(owner);
	wf_query(&q_set_retention, v, n, 0);
	wf_as_owner_end(&s);
	PG_RETURN_VOID();
}

/*
 * Only what happened can be recorded: a 'schedule' row if the caller's job
 * for the schedule exists, an 'unschedule' row if it does not (any more).
 */
static WfQuery q_audit_schedule = {
	"INSERT INTO workflows.audit (acting_role, action, workflow, owner, details) "
	"SELECT $3, $1, $4, $5::oid::regrole, "
	"       jsonb_build_object('schedule', $2) || COALESCE($6, '{}') "
	"WHERE ($1 = 'schedule') = EXISTS (SELECT 1 FROM cron.job j "
	"      WHERE j.jobname = workflows._cron_job_name($2) AND j.username = $3)",
	6, {TEXTOID, TEXTOID, TEXTOID, TEXTOID, OIDOID, JSONBOID}, NULL
};

/*
 * workflows._audit_schedule(action text, schedule_name text, workflow text,
 * details jsonb): the audit row of schedule() and unschedule(), which run
 * with the caller's rights (pg_cron checks them).  Executable by PUBLIC for
 * that reason, so it records the real caller and checks that the change
 * it records is there.
 */
Datum
wf_audit_schedule(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	char	   *action = required_text(fcinfo, 0, "action");
	char	   *name = required_text(fcinfo, 1, "schedule name");
	WfAsOwner	s;
	Datum		v[6];
	char		n[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	if (strcmp(action, "schedule") != 0 && strcmp(action, "unschedule") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid schedule action \"%s\"", action)));
	wf_as_owner_begin(&s);
	v[0] = CStringGetTextDatum(action);
	v[1] = CStringGetTextDatum(name);
	v[2] = CStringGetTextDatum(GetUserNameFromId(caller, false));
	v[3] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	n[3] = PG_ARGISNULL(2) ? 'n' : ' ';
	v[4] = ObjectIdGetDatum(caller);
	v[5] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	n[5] = PG_ARGISNULL(3) ? 'n' : ' ';
	if (wf_query(&q_audit_schedule, v, n, 0) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot record %s of schedule \"%s\": it did not happen", action, name),
				 errdetail("Only schedule() and unschedule() record schedule changes.")));
	wf_as_owner_end(&s);
	PG_RETURN_VOID();
}

/*
 * The audit rows of the actions written in SQL that run with the caller's
 * rights: purge() (for workflows_admin), start_on_insert() and
 * stop_on_insert() (CREATE/DROP TRIGGER check the caller's rights).  Only
 * what happened can be recorded: a start_on_insert row if the table has
 * the workflow's trigger, a stop_on_insert row if it has not (any more).
 */
static WfQuery q_audit_trigger = {
	"INSERT INTO workflows.audit (acting_role, action, workflow, owner, details) "
	"SELECT $1, $2, w.name, w.owner, "
	"       jsonb_build_object('table', $3::oid::regclass::text, "
	"                          'trigger', workflows._start_trigger_name(w.name)) "
	"FROM workflows.workflows w WHERE w.name = $4 "
	"AND ($2 = 'start_on_insert') = EXISTS (SELECT 1 FROM pg_trigger t "
	"      WHERE t.tgrelid = $3 AND t.tgname = workflows._start_trigger_name(w.name) "
	"        AND t.tgfoid = 'workflows._start_from_row()'::regprocedure)",
	4, {TEXTOID, TEXTOID, OIDOID, TEXTOID}, NULL
};

static WfQuery q_audit_purge = {
	"INSERT INTO workflows.audit (acting_role, action, details) VALUES ($1, 'purge', $2)",
	2, {TEXTOID, JSONBOID}, NULL
};

/*
 * workflows._audit_sql(action text, workflow text, tbl regclass, details
 * jsonb): executable by PUBLIC (the functions above run as their caller),
 * so it records the real caller and checks what it records.
 */
PG_FUNCTION_INFO_V1(wf_audit_sql);
Datum
wf_audit_sql(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	char	   *action = required_text(fcinfo, 0, "action");
	WfAsOwner	s;
	Datum		v[4];
	bool		purge = strcmp(action, "purge") == 0;

	if (!purge && strcmp(action, "start_on_insert") != 0 &&
		strcmp(action, "stop_on_insert") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid action \"%s\"", action)));
	if (purge && !superuser() && !wf_can_see(InvalidOid, caller))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to record a purge"),
				 errdetail("Only members of workflows_admin purge.")));
	wf_as_owner_begin(&s);
	v[0] = CStringGetTextDatum(GetUserNameFromId(caller, false));
	if (purge)
	{
		v[1] = PG_ARGISNULL(3) ? JsonbPGetDatum(wf_cstring_jsonb("{}")) : PG_GETARG_DATUM(3);
		wf_query(&q_audit_purge, v, NULL, 0);
	}
	else
	{
		v[1] = CStringGetTextDatum(action);
		v[2] = ObjectIdGetDatum(PG_ARGISNULL(2) ? InvalidOid : PG_GETARG_OID(2));
		v[3] = PointerGetDatum(cstring_to_text(required_text(fcinfo, 1, "workflow")));
		if (wf_query(&q_audit_trigger, v, NULL, 0) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot record %s: it did not happen", action)));
	}
	wf_as_owner_end(&s);
	PG_RETURN_VOID();
}

static WfQuery q_set_version = {
	"UPDATE workflows.instances i SET version_id = v.version_id, revision = i.revision + 1 "
	"FROM (SELECT version_id, fn FROM workflows.versions "
	"      WHERE workflow = $2 AND ($3::text IS NULL OR version_id = $3) "
	"      ORDER BY created_at DESC LIMIT 1) v "
	"WHERE i.id = $1 RETURNING v.version_id, v.fn::oid",
	3, {TEXTOID, TEXTOID, TEXTOID}, NULL
};

/*
 * workflows.set_version(id text, version text DEFAULT NULL) returns text
 *
 * Moves an instance that no executor runs (errored, terminated, paused or
 * complete) to another version of its workflow -- the newest when version
 * is NULL -- keeping its memoized steps, and returns the version id.  With
 * restart() it re-runs an instance on fixed code: restart() alone keeps
 * the version the instance was created with.  Memos the new code no longer
 * reaches, or reaches with other steps, fail the instance with WF005 when
 * it runs again, as for any changed code.
 */
Datum
wf_set_version(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	char	   *id = required_text(fcinfo, 0, "instance id");
	char	   *version = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	WfAsOwner	s;
	Datum		v[3];
	char		n[3] = {' ', ' ', ' '};
	bool		isnull;
	char	   *status;
	char	   *workflow;
	Oid			owner;
	Oid			fn;
	AclResult	aclresult;
	char	   *result;

	wf_as_owner_begin(&s);
	find_instance(id, caller);
	owner = DatumGetObjectId(wf_get_datum(0, 1, &isnull));
	status = wf_get_text(0, 2);
	workflow = wf_get_text(0, 3);
	v[0] = CStringGetTextDatum(id);
	/* not while an executor may run it (a pause may still be applied) */
	if ((!is_final(status) && strcmp(status, "paused") != 0) ||
		wf_query(&q_lock_instance, v, NULL, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_WF_INVALID_STATUS),
				 errmsg("cannot change the version of workflow instance \"%s\": it is %s", id, status),
				 errhint("An instance keeps the version it runs with; pause it first.")));
	v[1] = CStringGetTextDatum(workflow);
	v[2] = version ? CStringGetTextDatum(version) : (Datum) 0;
	n[2] = version ? ' ' : 'n';
	if (wf_query(&q_set_version, v, n, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("workflow \"%s\" has no version \"%s\"", workflow, version ? version : "")));
	result = spi_strdup(wf_get_text(0, 1));
	fn = DatumGetObjectId(wf_get_datum(0, 2, &isnull));
	check_version_fn(fn, workflow);
	aclresult = wf_proc_aclcheck(fn, caller, ACL_EXECUTE);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_FUNCTION, get_func_name(fn));
	audit(caller, "set_version", id, workflow, owner,
		  wf_cstring_jsonb(psprintf("{\"version\": %s}", json_str(result))));
	wf_as_owner_end(&s);
	PG_RETURN_TEXT_P(cstring_to_text(result));
}

/*-------------------------------------------------------------------------
 *
 * compose.c
 *	  Composition: child workflows (spawn, await, call, map), published
 *	  values (set_event) and the progress stream.
 *
 * A spawn is an ordinary SQL step whose callback is workflows._spawn():
 * the child instances are inserted by the step, so they commit in the same
 * transaction as the step's memo, or not at all.  Whatever crashes, a spawn
 * step has exactly one set of children, and a replay finds their ids in
 * the memo.  Child ids are derived from the parent's id and the step key
 * ("parent/key", "parent/key/0", "parent/key/1", ... for a map), so even a
 * restart that forgets the spawn step finds the same children again and
 * adopts them instead of creating others.
 *
 * An await is an action of its own (WF_ACT_AWAIT).  The executor that
 * reaches it looks at the awaited instances (wf_compose_await()); if they
 * are not final yet, the parent waits for the event type WF_CHILD_EVENT
 * with no process, like wait_for_event().  The transaction that makes a
 * child final inserts that event for its parent (wf_compose_finished()),
 * and the existing event machinery (signal counter, sweep) makes the
 * parent runnable at that commit: no polling.  The same transaction
 * releases the next child that a bounded map held back (options.concurrency):
 * held children are queued with no wake time until a sibling ends.
 *
 * set_event() is also an SQL step (workflows._publish()), so a published
 * value is a memo: the progress stream is the instance's final steps in
 * their order (workflows.progress()), announced with NOTIFY on channel
 * "workflows_progress" by wf_compose_notify_step().
 *
 * IDENTIFICATION
 *	  src/compose.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include "catalog/pg_type.h"
#include "commands/async.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"

PG_FUNCTION_INFO_V1(wf_spawn);
PG_FUNCTION_INFO_V1(wf_await);
PG_FUNCTION_INFO_V1(wf_call);
PG_FUNCTION_INFO_V1(wf_map);
PG_FUNCTION_INFO_V1(wf_set_event);
PG_FUNCTION_INFO_V1(wf_spawn_children);
PG_FUNCTION_INFO_V1(wf_child_final);

int			wf_max_depth = 16;

/*
 * The config of a spawn step: a few quick retries, so that an attempt cut
 * short by a crash is simply run again (its children were rolled back with
 * it), while an error that will not go away (no such workflow, no right to
 * run it) fails the step within milliseconds.
 */
#define WF_SPAWN_CONFIG \
	"{\"retries\": {\"limit\": 3, \"delay\": 10, \"backoff\": \"constant\"}}"

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
check_name(const char *name, int reserve)
{
	if (name[0] == '\0' || strlen(name) > (size_t) (WF_MAX_NAME_LEN - reserve))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("step name must be 1 to %d bytes long", WF_MAX_NAME_LEN - reserve)));
}

/* a string member of a JSON object, or NULL */
static JsonbValue *
member(Jsonb *j, const char *key)
{
	if (j == NULL || !JB_ROOT_IS_OBJECT(j))
		return NULL;
	return getKeyJsonValueFromContainer(&j->root, key, strlen(key), NULL);
}

/*
 * Options of spawn, call and map: an object with the keys this function
 * knows ("id" for one child, "trigger", and "concurrency" for a map).
 */
static void
check_options(Jsonb *options, bool many)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (options == NULL)
		return;
	if (!JB_ROOT_IS_OBJECT(options))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("options must be a JSON object")));
	it = JsonbIteratorInit(&options->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(v.val.string.val, v.val.string.len);
		tok = JsonbIteratorNext(&it, &v, true);
		if (strcmp(key, "id") == 0 && !many)
		{
			if (v.type != jbvString || v.val.string.len == 0 ||
				v.val.string.len > WF_MAX_ID_LEN)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("options.id must be a string of 1 to %d bytes", WF_MAX_ID_LEN)));
		}
		else if (strcmp(key, "trigger") == 0)
		{
			if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("options.trigger must be a JSON object")));
		}
		else if (strcmp(key, "rollback") == 0)
		{
			if (v.type != jbvString || v.val.string.len == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("options.rollback must be SQL text or a function such as \"app.undo(jsonb)\"")));
		}
		else if (strcmp(key, "concurrency") == 0 && many)
		{
			if (v.type != jbvNumeric ||
				DatumGetInt32(DirectFunctionCall1(numeric_int4,
												  NumericGetDatum(v.val.numeric))) < 1)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("options.concurrency must be a positive integer")));
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown option \"%s\"", key),
					 errhint(many ? "A map takes the options \"concurrency\", \"trigger\" and \"rollback\"."
							 : "A spawn takes the options \"id\", \"trigger\" and \"rollback\".")));
	}
}

/*
 * Run (or replay) the spawn step "name": returns the JSON array of the
 * children's ids.  inputs is the array of their params.
 */
static Jsonb *
spawn_step(FunctionCallInfo fcinfo, const char *fname, char *name,
		   const char *workflow, Jsonb *inputs, Jsonb *options, bool many)
{
	StringInfoData buf;
	Datum		d;

	if (workflow[0] == '\0' || strlen(workflow) > WF_MAX_NAME_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("workflow name must be 1 to %d bytes long", WF_MAX_NAME_LEN)));
	check_options(options, many);

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"workflow\": ");
	escape_json(&buf, workflow);
	appendStringInfoString(&buf, ", \"many\": ");
	appendStringInfoString(&buf, many ? "true" : "false");
	appendStringInfoString(&buf, ", \"inputs\": ");
	(void) JsonbToCString(&buf, &inputs->root, VARSIZE(inputs));
	if (options != NULL)
	{
		appendStringInfoString(&buf, ", \"options\": ");
		(void) JsonbToCString(&buf, &options->root, VARSIZE(options));
	}
	appendStringInfoChar(&buf, '}');

	/* a rollback of the spawn step gets the children's ids */
	{
		JsonbValue *rb = member(options, "rollback");
		StringInfoData cfg;

		initStringInfo(&cfg);
		appendBinaryStringInfo(&cfg, WF_SPAWN_CONFIG, strlen(WF_SPAWN_CONFIG) - 1);
		if (rb != NULL)
		{
			appendStringInfoString(&cfg, ", \"rollback\": ");
			escape_json(&cfg, pnstrdup(rb->val.string.val, rb->val.string.len));
		}
		appendStringInfoChar(&cfg, '}');
		d = wf_replay_sql_step(fcinfo, fname, name,
							   "SELECT workflows._spawn($1::pg_catalog.jsonb)",
							   wf_cstring_jsonb(buf.data),
							   wf_cstring_jsonb(cfg.data));
	}
	if (fcinfo->isnull)
		elog(ERROR, "spawn step \"%s\" has no output", name);
	return DatumGetJsonbP(d);
}

/* the one id of a spawn's output */
static char *
first_id(Jsonb *ids)
{
	JsonbValue *v = getIthJsonbValueFromContainer(&ids->root, 0);

	if (v == NULL || v->type != jbvString)
		elog(ERROR, "spawn step output is not an array of ids");
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/*
 * workflows.spawn(name text, workflow text, params jsonb, options jsonb)
 * returns text
 */
Datum
wf_spawn(PG_FUNCTION_ARGS)
{
	char	   *name = required_text(fcinfo, 0, "step name");
	char	   *workflow = required_text(fcinfo, 1, "workflow name");
	Jsonb	   *params = PG_ARGISNULL(2) ? wf_cstring_jsonb("{}") : PG_GETARG_JSONB_P(2);
	Jsonb	   *options = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);
	StringInfoData buf;
	Jsonb	   *ids;

	check_name(name, 0);
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	(void) JsonbToCString(&buf, &params->root, VARSIZE(params));
	appendStringInfoChar(&buf, ']');
	ids = spawn_step(fcinfo, "workflows.spawn()", name, workflow,
					 wf_cstring_jsonb(buf.data), options, false);
	fcinfo->isnull = false;
	PG_RETURN_TEXT_P(cstring_to_text(first_id(ids)));
}

/*
 * The await step "name" on the instances "ids" (a JSON array of strings):
 * returns the memoized result, re-raises its memoized error, or yields the
 * WF_ACT_AWAIT action.  timeout_ms < 0: no timeout.
 */
static Datum
await_step(FunctionCallInfo fcinfo, const char *fname, char *name,
		   Jsonb *ids, bool any, int64 timeout_ms, const char *group)
{
	StringInfoData buf;
	Jsonb	   *args;
	int64		hash;
	WfMemo	   *memo;
	WfAction   *a;
	char	   *key;
	MemoryContext old;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"ids\": ");
	(void) JsonbToCString(&buf, &ids->root, VARSIZE(ids));
	appendStringInfoString(&buf, any ? ", \"mode\": \"any\"" : ", \"mode\": \"all\"");
	if (group != NULL)
	{
		/* the ids are all the children of spawn step "group" (map, call) */
		appendStringInfoString(&buf, ", \"group\": ");
		escape_json(&buf, group);
	}
	appendStringInfoChar(&buf, '}');
	args = wf_cstring_jsonb(buf.data);
	hash = wf_replay_hash('a', "await", args);

	memo = wf_replay_begin(fname, name, 'a', hash, &key);
	if (memo != NULL && memo->status == 'c')
		return wf_replay_output(fcinfo, memo);
	if (memo != NULL && memo->status == 'f')
		wf_replay_reraise(memo);
	a = wf_replay_new_action(WF_ACT_AWAIT, memo, key, name, hash);
	if (memo == NULL)
		a->until = timeout_ms < 0 ? DT_NOEND :
			TimestampTzPlusMilliseconds(wf_replay_now(), timeout_ms);
	old = MemoryContextSwitchTo(wf_replay_runcxt());
	a->args = DatumGetJsonbPCopy(JsonbPGetDatum(args));
	MemoryContextSwitchTo(old);
	wf_replay_yield(key);
}

/*
 * workflows.await(name text, ids text[], mode text, timeout interval)
 * returns jsonb
 */
Datum
wf_await(PG_FUNCTION_ARGS)
{
	char	   *name = required_text(fcinfo, 0, "step name");
	char	   *mode = PG_ARGISNULL(2) ? "all" : text_to_cstring(PG_GETARG_TEXT_PP(2));
	int64		timeout_ms = -1;
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	int			nelems;
	StringInfoData buf;

	check_name(name, 0);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("instance ids must not be null")));
	if (strcmp(mode, "all") != 0 && strcmp(mode, "any") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("await mode must be \"all\" or \"any\", not \"%s\"", mode)));
	if (!PG_ARGISNULL(3))
	{
		timeout_ms = wf_interval_ms(PG_GETARG_INTERVAL_P(3));
		if (timeout_ms < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("await timeout must not be negative")));
	}
	arr = PG_GETARG_ARRAYTYPE_P(1);
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &nelems);
	if (nelems == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("await needs at least one instance id")));
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	for (int i = 0; i < nelems; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("instance ids must not be null")));
		if (i > 0)
			appendStringInfoString(&buf, ", ");
		escape_json(&buf, TextDatumGetCString(elems[i]));
	}
	appendStringInfoChar(&buf, ']');
	return await_step(fcinfo, "workflows.await()", name, wf_cstring_jsonb(buf.data),
					  strcmp(mode, "any") == 0, timeout_ms, NULL);
}

/*
 * Raise the error of an awaited instance that did not complete: its
 * SQLSTATE (WF013 for a terminated one), its message in the detail.
 */
static void
pg_attribute_noreturn()
raise_child_error(JsonbValue *entry)
{
	JsonbContainer *c = entry->val.binary.data;
	JsonbValue *id = getKeyJsonValueFromContainer(c, "id", 2, NULL);
	JsonbValue *status = getKeyJsonValueFromContainer(c, "status", 6, NULL);
	JsonbValue *error = getKeyJsonValueFromContainer(c, "error", 5, NULL);
	char	   *idtext = id ? pnstrdup(id->val.string.val, id->val.string.len) : "?";
	char	   *st = status ? pnstrdup(status->val.string.val, status->val.string.len) : "?";
	char	   *message = NULL;
	int			code = ERRCODE_WF_CHILD_FAILED;

	if (error != NULL && error->type == jbvBinary)
	{
		JsonbValue *m = getKeyJsonValueFromContainer(error->val.binary.data, "message", 7, NULL);
		JsonbValue *s = getKeyJsonValueFromContainer(error->val.binary.data, "sqlstate", 8, NULL);

		if (m != NULL && m->type == jbvString)
			message = pnstrdup(m->val.string.val, m->val.string.len);
		if (s != NULL && s->type == jbvString && s->val.string.len == 5)
		{
			char	   *ss = s->val.string.val;

			code = MAKE_SQLSTATE(ss[0], ss[1], ss[2], ss[3], ss[4]);
		}
	}
	ereport(ERROR,
			(errcode(code),
			 errmsg("child workflow instance \"%s\" %s", idtext, st),
			 message ? errdetail_internal("%s", message) :
			 errdetail("The instance was terminated before it completed.")));
}

/* the output of one awaited instance, or its error raised */
static Jsonb *
child_output(JsonbValue *entry)
{
	JsonbContainer *c = entry->val.binary.data;
	JsonbValue *status = getKeyJsonValueFromContainer(c, "status", 6, NULL);
	JsonbValue *output;

	if (status == NULL || status->type != jbvString ||
		status->val.string.len != 8 || strncmp(status->val.string.val, "complete", 8) != 0)
		raise_child_error(entry);
	output = getKeyJsonValueFromContainer(c, "output", 6, NULL);
	if (output == NULL)
		return NULL;
	return JsonbValueToJsonb(output);
}

/*
 * workflows.call(name text, workflow text, params jsonb, options jsonb)
 * returns jsonb: spawn the child (step "name"), await it (step
 * "name/await"), return its output or raise its error.
 */
Datum
wf_call(PG_FUNCTION_ARGS)
{
	char	   *name = required_text(fcinfo, 0, "step name");
	char	   *workflow = required_text(fcinfo, 1, "workflow name");
	Jsonb	   *params = PG_ARGISNULL(2) ? wf_cstring_jsonb("{}") : PG_GETARG_JSONB_P(2);
	Jsonb	   *options = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);
	StringInfoData buf;
	Jsonb	   *ids;
	Jsonb	   *result;
	JsonbValue *entry;
	Jsonb	   *out;
	char	   *spawn_key;

	check_name(name, 6);
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	(void) JsonbToCString(&buf, &params->root, VARSIZE(params));
	appendStringInfoChar(&buf, ']');
	spawn_key = wf_replay_peek_key(name);
	ids = spawn_step(fcinfo, "workflows.call()", name, workflow,
					 wf_cstring_jsonb(buf.data), options, false);
	result = DatumGetJsonbP(await_step(fcinfo, "workflows.call()",
									   psprintf("%s/await", name), ids, false, -1,
									   spawn_key));
	entry = getIthJsonbValueFromContainer(&result->root, 0);
	if (entry == NULL || entry->type != jbvBinary)
		elog(ERROR, "await result is not an array of objects");
	out = child_output(entry);
	if (out == NULL)
	{
		fcinfo->isnull = true;
		return (Datum) 0;
	}
	fcinfo->isnull = false;
	PG_RETURN_JSONB_P(out);
}

/*
 * workflows.map(name text, workflow text, inputs jsonb, options jsonb)
 * returns jsonb: one child per element of inputs (step "name"), all
 * awaited (step "name/await"); their outputs in input order, or the error
 * of the first (in input order) that did not complete.
 */
Datum
wf_map(PG_FUNCTION_ARGS)
{
	char	   *name = required_text(fcinfo, 0, "step name");
	char	   *workflow = required_text(fcinfo, 1, "workflow name");
	Jsonb	   *inputs;
	Jsonb	   *options = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);
	Jsonb	   *ids;
	Jsonb	   *result;
	char	   *spawn_key;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	StringInfoData buf;
	bool		first = true;

	check_name(name, 6);
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("map inputs must not be null")));
	inputs = PG_GETARG_JSONB_P(2);
	if (!JB_ROOT_IS_ARRAY(inputs) || JB_ROOT_IS_SCALAR(inputs))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("map inputs must be a JSON array")));
	if (JB_ROOT_COUNT(inputs) == 0)
	{
		/* nothing to spawn, nothing to wait for: no steps either */
		char	   *key;

		check_options(options, true);
		(void) wf_replay_begin("workflows.map()", name, 's', 0, &key);
		PG_RETURN_JSONB_P(wf_cstring_jsonb("[]"));
	}
	spawn_key = wf_replay_peek_key(name);
	ids = spawn_step(fcinfo, "workflows.map()", name, workflow, inputs, options, true);
	result = DatumGetJsonbP(await_step(fcinfo, "workflows.map()",
									   psprintf("%s/await", name), ids, false, -1,
									   spawn_key));

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	it = JsonbIteratorInit(&result->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		Jsonb	   *out;

		if (tok != WJB_ELEM)
			continue;
		out = child_output(&v);
		if (!first)
			appendStringInfoString(&buf, ", ");
		first = false;
		if (out == NULL)
			appendStringInfoString(&buf, "null");
		else
			(void) JsonbToCString(&buf, &out->root, VARSIZE(out));
	}
	appendStringInfoChar(&buf, ']');
	fcinfo->isnull = false;
	PG_RETURN_JSONB_P(wf_cstring_jsonb(buf.data));
}

/*
 * workflows.set_event(key text, value jsonb) returns void: the step
 * "set_event:<key>", whose output is the value.
 */
Datum
wf_set_event(PG_FUNCTION_ARGS)
{
	char	   *key = required_text(fcinfo, 0, "event key");
	Jsonb	   *value = PG_ARGISNULL(1) ? wf_cstring_jsonb("null") : PG_GETARG_JSONB_P(1);
	StringInfoData buf;

	if (key[0] == '\0' || strlen(key) > WF_MAX_NAME_LEN - 10)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event key must be 1 to %d bytes long", WF_MAX_NAME_LEN - 10)));
	/* an object is bound as one argument, whatever the value is */
	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"value\": ");
	(void) JsonbToCString(&buf, &value->root, VARSIZE(value));
	appendStringInfoChar(&buf, '}');
	(void) wf_replay_sql_step(fcinfo, "workflows.set_event()",
							  psprintf("set_event:%s", key),
							  "SELECT $1::pg_catalog.jsonb OPERATOR(pg_catalog.->) 'value'",
							  wf_cstring_jsonb(buf.data), NULL);
	fcinfo->isnull = true;
	PG_RETURN_VOID();
}

/* ---- the spawn step's callback ---- */

static WfQuery q_parent = {
	"SELECT depth, owner::oid FROM workflows.instances WHERE id = $1",
	1, {TEXTOID}, NULL
};

static WfQuery q_version = {
	"SELECT version_id, fn::oid FROM workflows.versions "
	"WHERE workflow = $1 ORDER BY created_at DESC LIMIT 1",
	1, {TEXTOID}, NULL
};

/*
 * Insert the children in one statement.  Returns the ids in input order,
 * how many ids were taken by instances that are not this parent's children
 * from this step, and how many rows were inserted (fewer than the inputs:
 * a restart adopted children that exist already).  Beyond $8
 * (concurrency) children are held: queued with no wake time.
 */
static WfQuery q_spawn = {
	"WITH k AS ("
	"  SELECT e.ord, e.value, "
	"    CASE WHEN $6::text IS NOT NULL THEN $6 "
	"         WHEN octet_length(x.id) <= 200 THEN x.id ELSE md5(x.id) END AS id "
	"  FROM jsonb_array_elements($5) WITH ORDINALITY e(value, ord), "
	"  LATERAL (SELECT CASE WHEN $9 THEN $1 || '/' || $4 || '/' || (e.ord - 1) "
	"                  ELSE $1 || '/' || $4 END AS id) x), "
	"ins AS ("
	"  INSERT INTO workflows.instances (id, workflow, version_id, owner, params, trigger, "
	"    wake_at, parent, root, depth, spawned_by, held) "
	"  SELECT k.id, $2, $3, p.owner, k.value, "
	"    COALESCE($7, jsonb_build_object('source', 'spawn', 'parent', $1::text, 'step', $4::text)), "
	"    CASE WHEN $8::int IS NULL OR k.ord <= $8 THEN now() END, "
	"    p.id, COALESCE(p.root, p.id), p.depth + 1, $4, NOT ($8::int IS NULL OR k.ord <= $8) "
	"  FROM k, workflows.instances p WHERE p.id = $1 "
	"  ON CONFLICT (id) DO NOTHING RETURNING id) "
	"SELECT (SELECT jsonb_agg(k.id ORDER BY k.ord) FROM k), "
	"  (SELECT count(*) FROM k WHERE k.id NOT IN (SELECT id FROM ins) "
	"     AND NOT EXISTS (SELECT 1 FROM workflows.instances i "
	"                     WHERE i.id = k.id AND i.parent = $1 AND i.spawned_by = $4)), "
	"  (SELECT count(*) FROM ins), "
	"  (SELECT min(k.id) FROM k WHERE k.id NOT IN (SELECT id FROM ins) "
	"     AND NOT EXISTS (SELECT 1 FROM workflows.instances i "
	"                     WHERE i.id = k.id AND i.parent = $1 AND i.spawned_by = $4))",
	9, {TEXTOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID, TEXTOID, JSONBOID, INT4OID, BOOLOID}, NULL
};

static char *
object_text(Jsonb *j, const char *key)
{
	JsonbValue *v = member(j, key);

	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* each child's params obey workflows.max_payload_size, as create()'s do */
static void
check_inputs(JsonbValue *inputs)
{
	Jsonb	   *arr = JsonbValueToJsonb(inputs);
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (!JB_ROOT_IS_ARRAY(arr) || JB_ROOT_IS_SCALAR(arr))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid spawn arguments")));
	it = JsonbIteratorInit(&arr->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		Jsonb	   *one;

		if (tok != WJB_ELEM)
			continue;
		one = JsonbValueToJsonb(&v);
		if (VARSIZE(one) > (Size) wf_max_payload_size)
			ereport(ERROR,
					(errcode(ERRCODE_WF_LIMIT_EXCEEDED),
					 errmsg("child params are %u bytes, more than workflows.max_payload_size (%d)",
							(unsigned int) VARSIZE(one), wf_max_payload_size)));
		pfree(one);
	}
}

/*
 * workflows._spawn(args jsonb) returns jsonb
 *
 * The callback of a spawn step (see spawn_step()): runs inside the step,
 * as the instance's owner, who must be allowed to run the workflow.  The
 * parent is the instance whose step runs (never an argument), the step
 * key that of the running step.  Inserts as the extension's owner.
 */
Datum
wf_spawn_children(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	Jsonb	   *args = PG_GETARG_JSONB_P(0);
	const char *parent = wf_replay_instance();
	WfAction   *a = wf_replay_action();
	char	   *workflow = object_text(args, "workflow");
	JsonbValue *inputs = member(args, "inputs");
	JsonbValue *many = member(args, "many");
	JsonbValue *optv = member(args, "options");
	Jsonb	   *options = optv ? JsonbValueToJsonb(optv) : NULL;
	JsonbValue *conc = member(options, "concurrency");
	JsonbValue *trig = member(options, "trigger");
	char	   *id = object_text(options, "id");
	WfAsOwner	s;
	Datum		v[9];
	char		n[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	int			depth;
	Oid			fn;
	AclResult	aclresult;
	Jsonb	   *ids;
	int64		conflicts;
	bool		in_step = wf_in_step(true);
	MemoryContext callcxt = CurrentMemoryContext;

	(void) wf_in_step(in_step);
	if (parent == NULL || !in_step || a == NULL || a->key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_WF_NOT_IN_WORKFLOW),
				 errmsg("workflows._spawn() is called by the steps of workflows.spawn(), call() and map()")));
	if (workflow == NULL || inputs == NULL || many == NULL || many->type != jbvBool)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid spawn arguments")));

	check_inputs(inputs);
	wf_as_owner_begin(&s);
	v[0] = CStringGetTextDatum(parent);
	if (wf_query(&q_parent, v, NULL, 1) != 1)
		elog(ERROR, "parent instance \"%s\" not found", parent);
	depth = DatumGetInt32(wf_get_datum(0, 1, &isnull));
	if (depth + 1 > wf_max_depth)
		ereport(ERROR,
				(errcode(ERRCODE_WF_DEPTH_EXCEEDED),
				 errmsg("workflow instance \"%s\" is nested %d deep and may not spawn children",
						parent, depth),
				 errdetail("workflows.max_depth is %d.", wf_max_depth),
				 errhint("A workflow that spawns itself without end (or a cycle of workflows) reaches this limit.")));

	v[0] = CStringGetTextDatum(workflow);
	if (wf_query(&q_version, v, NULL, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("workflow \"%s\" does not exist", workflow),
				 errhint("Register it with workflows.register().")));
	v[2] = PointerGetDatum(cstring_to_text(wf_get_text(0, 1)));
	fn = DatumGetObjectId(wf_get_datum(0, 2, &isnull));
	aclresult = wf_proc_aclcheck(fn, caller, ACL_EXECUTE);
	if (aclresult != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to run workflow \"%s\"", workflow),
				 errdetail("The owner of instance \"%s\" may not execute its function %s.",
						   parent, format_procedure(fn))));

	v[0] = CStringGetTextDatum(parent);
	v[1] = CStringGetTextDatum(workflow);
	v[3] = CStringGetTextDatum(a->key);
	v[4] = JsonbPGetDatum(JsonbValueToJsonb(inputs));
	v[5] = id ? CStringGetTextDatum(id) : (Datum) 0;
	n[5] = id ? ' ' : 'n';
	v[6] = trig ? JsonbPGetDatum(JsonbValueToJsonb(trig)) : (Datum) 0;
	n[6] = trig ? ' ' : 'n';
	v[7] = conc ? DirectFunctionCall1(numeric_int4, NumericGetDatum(conc->val.numeric)) : (Datum) 0;
	n[7] = conc ? ' ' : 'n';
	v[8] = BoolGetDatum(many->val.boolean);
	wf_query(&q_spawn, v, n, 1);
	conflicts = DatumGetInt64(wf_get_datum(0, 2, &isnull));
	if (conflicts > 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("workflow instance \"%s\" already exists", wf_get_text(0, 4)),
				 errhint("A child's id must not be taken by another instance; pass another options.id.")));
	ids = wf_get_jsonb(0, 1);
	{
		/* out of SPI's memory, which wf_as_owner_end() frees */
		MemoryContext old = MemoryContextSwitchTo(callcxt);

		ids = DatumGetJsonbPCopy(JsonbPGetDatum(ids));
		MemoryContextSwitchTo(old);
	}
	wf_as_owner_end(&s);
	wf_wake_at_commit();
	PG_RETURN_JSONB_P(ids);
}

/* ---- the executor's side ---- */

static WfQuery q_consume = {
	"UPDATE workflows.events SET consumed_by = $2, consumed_at = now() "
	"WHERE instance_id = $1 AND type = '" WF_CHILD_EVENT "' AND consumed_by IS NULL",
	2, {TEXTOID, TEXTOID}, NULL
};

/*
 * Is any child of this spawn step still live?  Through the expression of
 * instances_live_children only (parent and spawned_by are not compared on
 * their own: a plan on instances_by_parent would read every child; equal
 * expressions with equal steps have equal parents).
 */
static WfQuery q_group_live = {
	"SELECT EXISTS (SELECT 1 FROM workflows.instances "
	"  WHERE parent || '/' || spawned_by = $1 || '/' || $2 AND spawned_by = $2 "
	"  AND status IN ('queued', 'running', 'waiting', 'paused'))",
	2, {TEXTOID, TEXTOID}, NULL
};

static WfQuery q_awaited = {
	"SELECT jsonb_agg(jsonb_build_object('id', u.id, 'status', i.status, "
	"         'output', i.output, 'error', i.error) ORDER BY u.ord), "
	"  count(*) FILTER (WHERE i.status IN ('complete', 'errored', 'terminated')), "
	"  count(*), "
	"  min(u.id) FILTER (WHERE i.id IS NULL), "
	"  min(u.id) FILTER (WHERE i.id IS NOT NULL AND NOT ("
	"    pg_has_role($3::oid, i.owner, 'USAGE') OR "
	"    pg_has_role($3::oid, 'workflows_admin', 'USAGE'))), "
	"  count(*) FILTER (WHERE i.parent IS DISTINCT FROM $1) "
	"FROM jsonb_array_elements_text($2) WITH ORDINALITY u(id, ord) "
	"LEFT JOIN workflows.instances i ON i.id = u.id",
	3, {TEXTOID, JSONBOID, OIDOID}, NULL
};

static Jsonb *
error_doc(const char *message, const char *sqlstate)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"message\": ");
	escape_json(&buf, message);
	appendStringInfoString(&buf, ", \"sqlstate\": ");
	escape_json(&buf, sqlstate);
	appendStringInfoChar(&buf, '}');
	return wf_cstring_jsonb(buf.data);
}

/*
 * Look at the instances an await step waits for.  Returns 'c' (complete:
 * *output is the result), 'f' (failed for good: *error; a timeout, an id
 * that does not exist or that the owner may not see) or 'w' (wait:
 * *wake is when to look again without being woken, DT_NOEND for never,
 * and *waiting_for the instance's waiting_for: WF_CHILD_EVENT, woken by
 * every child event, or WF_GROUP_WAIT plus the spawn step's key for all
 * the children of one spawn step, woken only once none of them lives).
 * Consumes the instance's child events first: they woke it for this look,
 * and a child that ends after the look sends another.  Runs in the tick's
 * transaction as the executor, connected to SPI.
 */
char
wf_compose_await(const char *id, Oid owner, WfAction *a, TimestampTz now,
				 Jsonb **output, Jsonb **error, TimestampTz *wake,
				 const char **waiting_for)
{
	Datum		v[3];
	bool		isnull;
	JsonbValue *mode = member(a->args, "mode");
	JsonbValue *ids = member(a->args, "ids");
	JsonbValue *group = member(a->args, "group");
	int64		final,
				total,
				strangers;
	char	   *missing,
				*hidden;
	bool		any = (mode != NULL && mode->type == jbvString &&
					   strncmp(mode->val.string.val, "any", 3) == 0);

	v[0] = CStringGetTextDatum(id);
	v[1] = CStringGetTextDatum(a->key);
	wf_query(&q_consume, v, NULL, 0);

	/*
	 * All the children of one spawn step (map, call): while one of them
	 * lives, a probe of the partial index of live children says so, and
	 * the instance waits on without reading the others -- a map over N
	 * children is woken up to N times, and must not read N rows each time.
	 */
	if (group != NULL && group->type == jbvString && !any)
	{
		v[1] = CStringGetTextDatum(pnstrdup(group->val.string.val, group->val.string.len));
		wf_query(&q_group_live, v, NULL, 1);
		if (DatumGetBool(wf_get_datum(0, 1, &isnull)))
		{
			if (a->until != DT_NOEND && a->until <= now)
				goto full;		/* the timeout's message counts them */
			*wake = a->until;
			/* woken by wf_compose_sweep() once none of them lives */
			*waiting_for = psprintf("%s%.*s", WF_GROUP_WAIT, group->val.string.len,
									group->val.string.val);
			return 'w';
		}
	}
full:
	v[1] = JsonbPGetDatum(JsonbValueToJsonb(ids));
	v[2] = ObjectIdGetDatum(owner);
	wf_query(&q_awaited, v, NULL, 1);
	final = DatumGetInt64(wf_get_datum(0, 2, &isnull));
	total = DatumGetInt64(wf_get_datum(0, 3, &isnull));
	missing = wf_get_text(0, 4);
	hidden = wf_get_text(0, 5);
	strangers = DatumGetInt64(wf_get_datum(0, 6, &isnull));

	if (missing != NULL)
	{
		*error = error_doc(psprintf("workflow instance \"%s\" does not exist", missing), "42704");
		return 'f';
	}
	if (hidden != NULL)
	{
		*error = error_doc(psprintf("permission denied for workflow instance \"%s\"", hidden), "42501");
		return 'f';
	}
	if (final == total || (any && final > 0))
	{
		*output = wf_get_jsonb(0, 1);
		return 'c';
	}
	if (a->until != DT_NOEND && a->until <= now)
	{
		*error = error_doc(psprintf("timed out waiting for %lld of %lld instances",
									(long long) (total - final), (long long) total),
						   "WF011");
		return 'f';
	}
	*wake = a->until;
	*waiting_for = WF_CHILD_EVENT;
	/* instances that are not our children send us nothing: look again */
	if (strangers > 0)
	{
		TimestampTz poll = TimestampTzPlusMilliseconds(now, wf_poll_interval_ms);

		if (poll < *wake)
			*wake = poll;
	}
	return 'w';
}

/*
 * Its plan is made once, maybe while the table is small, so no condition
 * may let a partial index that grows with a map's size serve it: the
 * instance is found by its id alone (with "parent IS NOT NULL", a plan
 * walked the whole of instances_by_parent for it), the held sibling
 * through instances_held's own key, which no other index has (a plan on
 * instances_live_children read every live sibling).  Either made a map
 * quadratic in its size.  A child without a parent matches nothing below.
 */
static WfQuery q_finished = {
	"WITH c0 AS (SELECT i.parent, i.spawned_by, i.status FROM workflows.instances i "
	"            WHERE i.id = $1), "
	"c AS (SELECT c0.*, p.waiting_for FROM c0 JOIN workflows.instances p ON p.id = c0.parent "
	"      WHERE p.status IN ('queued', 'running', 'waiting', 'paused')), "
	"e AS (INSERT INTO workflows.events (instance_id, type, payload) "
	"      SELECT c.parent, '" WF_CHILD_EVENT "', "
	"             jsonb_build_object('id', $1::text, 'status', c.status) "
	"      FROM c WHERE c.waiting_for IS NULL OR c.waiting_for NOT LIKE '" WF_GROUP_WAIT "%' "
	"      RETURNING 1), "
	"r AS (UPDATE workflows.instances SET held = false, wake_at = now() "
	"      WHERE id = (SELECT h.id FROM workflows.instances h "
	"                  WHERE ARRAY[h.parent, h.spawned_by] = "
	"                        (SELECT ARRAY[c0.parent, c0.spawned_by] FROM c0) AND h.held "
	"                    AND h.status = 'queued' "
	"                  ORDER BY length(h.id), h.id LIMIT 1 FOR UPDATE OF h SKIP LOCKED) "
	"      RETURNING 1) "
	"SELECT (SELECT count(*) FROM c), (SELECT count(*) FROM r)",
	1, {TEXTOID}, NULL
};

/*
 * An instance just became final (complete, errored, terminated) in the
 * current transaction: tell its parent, if it has a live one, with a child
 * event (unless it awaits a whole spawn step: see wf_compose_sweep()) and
 * a bump of child_generation at commit, which makes the executors sweep;
 * and release the next child held back by the same bounded map.  A parent
 * that is already final gets nothing: its child ending wakes nobody.
 * Connected to
 * SPI, as the extension's owner (the executor, or _apply()).
 */
void
wf_compose_finished(const char *id)
{
	Datum		v[1];
	bool		isnull;

	v[0] = CStringGetTextDatum(id);
	wf_query(&q_finished, v, NULL, 1);
	if (DatumGetInt64(wf_get_datum(0, 1, &isnull)) > 0)
		wf_child_signal_at_commit();
	if (DatumGetInt64(wf_get_datum(0, 2, &isnull)) > 0)
		wf_wake_at_commit();
}

/*
 * Instances awaiting all the children of one spawn step (waiting_for
 * WF_GROUP_WAIT || key: a map, a call) get no event per child -- a map
 * over N children would be woken up to N times, each a transaction of its
 * own -- but are made due by the sweep that finds none of those children
 * alive.  It cannot be missed: every child's end bumps child_generation at
 * its commit, every executor sweeps after its batch when it moved, and the
 * sweep after the last child's commit sees all of them final (an instance
 * its executor held meanwhile is swept by that executor after its own
 * commit).  The scan walks the partial index of such instances
 * (instances_group_waits), so it costs nothing while nothing waits.  The
 * probe for a live child stays a subplan (OFFSET 0 keeps it from becoming
 * a join) through instances_live_children's expression, as q_group_live's:
 * a plan made while the table was small otherwise read every child of the
 * map for each waiting parent, once per sweep -- quadratic in its size.
 */
static WfQuery q_group_sweep = {
	"WITH found AS MATERIALIZED ("
	"  SELECT i.id FROM workflows.instances i "
	"  WHERE i.waiting_for LIKE '" WF_GROUP_WAIT "%' AND i.status = 'waiting' AND i.wake_at > $1 "
	"    AND NOT EXISTS (SELECT 1 FROM workflows.instances c "
	"                    WHERE c.parent || '/' || c.spawned_by = i.id || '/' || substr(i.waiting_for, 17) "
	"                      AND c.spawned_by = substr(i.waiting_for, 17) "
	"                      AND c.status IN ('queued', 'running', 'waiting', 'paused') "
	"                    OFFSET 0)), "
	"u AS (UPDATE workflows.instances SET wake_at = $1 WHERE id IN ("
	"  SELECT i.id FROM workflows.instances i "
	"  WHERE i.id IN (SELECT f.id FROM found f) AND i.status = 'waiting' AND i.wake_at > $1 "
	"  FOR NO KEY UPDATE OF i SKIP LOCKED) RETURNING 1) "
	"SELECT (SELECT count(*) FROM found) - (SELECT count(*) FROM u)",
	1, {TIMESTAMPTZOID}, NULL
};

/*
 * Part of the executors' sweep (executor.c): returns how many of the
 * instances it found it could not take (locked), for the caller to sweep
 * again.
 */
int64
wf_compose_sweep(TimestampTz now)
{
	Datum		v[1];
	bool		isnull;

	v[0] = TimestampTzGetDatum(now);
	wf_query(&q_group_sweep, v, NULL, 1);
	return DatumGetInt64(wf_get_datum(0, 1, &isnull));
}

/*
 * workflows._child_final(id text) returns void: wf_compose_finished() for
 * _apply(), which terminates instances outside the executors.
 */
Datum
wf_child_final(PG_FUNCTION_ARGS)
{
	char	   *id = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	wf_compose_finished(id);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * A step of instance "id" became final: announce it on channel
 * "workflows_progress" at commit (only ids, keys and positions: never
 * data), if workflows.notify is on -- a published value (set_event())
 * always, any other step only with workflows.notify_steps, because a
 * NOTIFY takes a cluster-wide lock at commit and the per-step commit path
 * takes none otherwise.
 */
void
wf_compose_notify_step(const char *id, const char *key, int seq, const char *status)
{
	StringInfoData buf;

	if (!wf_notify || seq < 0 ||
		(!wf_notify_steps && strncmp(key, "set_event:", 10) != 0))
		return;
	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"id\": ");
	escape_json(&buf, id);
	appendStringInfo(&buf, ", \"seq\": %d, \"key\": ", seq + 1);
	escape_json(&buf, key);
	appendStringInfoString(&buf, ", \"status\": ");
	escape_json(&buf, status);
	appendStringInfoChar(&buf, '}');
	if (buf.len < NAMEDATALEN * 100)
		Async_Notify("workflows_progress", buf.data);
}

PG_FUNCTION_INFO_V1(wf_signal_sql);

/*
 * workflows._signal_at_commit() returns void: requests were left for
 * executors (_cascade()); make them sweep at commit.
 */
Datum
wf_signal_sql(PG_FUNCTION_ARGS)
{
	wf_signal_at_commit();
	PG_RETURN_VOID();
}

/* ---- rollback handlers (saga) ---- */

PG_FUNCTION_INFO_V1(wf_rollback);

/*
 * The next compensation to run: of the completed steps whose config has a
 * "rollback", the latest (in the instance's order) whose rollback step has
 * not ended yet.  Its rollback step is keyed "rollback:<key>" (an md5 for
 * keys too long) and has no place in the instance's order (seq -1): a
 * replay never reaches it.
 */
static WfQuery q_next_rollback = {
	"SELECT CASE WHEN octet_length(s.key) <= 200 THEN 'rollback:' || s.key "
	"            ELSE 'rollback:' || md5(s.key) END, "
	"  'rollback:' || left(s.name, 190), s.output, s.config, s.config->>'rollback', "
	"  CASE WHEN s.config->>'rollback' ~ "
	"    '^\\s*[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)?\\s*\\([A-Za-z0-9_ ,.\\[\\]\"]*\\)\\s*$' "
	"    THEN to_regprocedure(s.config->>'rollback')::oid END, "
	"  r.key IS NULL, r.attempts, r.interrupted, r.started_at, r.wake_at "
	"FROM workflows.steps s "
	"LEFT JOIN workflows.steps r ON r.instance_id = s.instance_id "
	"  AND r.key = CASE WHEN octet_length(s.key) <= 200 THEN 'rollback:' || s.key "
	"                   ELSE 'rollback:' || md5(s.key) END "
	"WHERE s.instance_id = $1 AND s.type = 'step' AND s.status = 'complete' AND s.seq >= 0 "
	"  AND s.config ? 'rollback' AND (r.key IS NULL OR r.status NOT IN ('complete', 'failed')) "
	"ORDER BY s.seq DESC LIMIT 1",
	1, {TEXTOID}, NULL
};

/*
 * Fill *a with the next compensation of instance "id" (see above), as a
 * step action the executor runs with run_step(): as the owner, with the
 * retries of the step it compensates, given that step's output (a
 * function gets it as its jsonb input; SQL gets it as $1).  Returns false
 * when none is left.  Its until is the time of its next attempt, if it
 * waits for one.  Allocates in the caller's context; connected to SPI.
 */
bool
wf_compose_next_rollback(const char *id, WfAction *a)
{
	Datum		v[1];
	bool		isnull;
	MemoryContext callcxt = CurrentMemoryContext;
	MemoryContext old;
	Jsonb	   *output;
	Jsonb	   *config;
	Datum		d;

	v[0] = CStringGetTextDatum(id);
	if (wf_query(&q_next_rollback, v, NULL, 1) == 0)
		return false;

	old = MemoryContextSwitchTo(callcxt);
	memset(a, 0, sizeof(WfAction));
	a->kind = WF_ACT_STEP;
	a->key = wf_get_text(0, 1);
	a->name = wf_get_text(0, 2);
	output = wf_get_jsonb(0, 3);
	config = wf_get_jsonb(0, 4);
	wf_parse_step_config(config, &a->config);
	a->config.rollback = NULL;
	a->config.inline_ok = false;
	d = wf_get_datum(0, 6, &isnull);
	a->fn = isnull ? InvalidOid : DatumGetObjectId(d);
	a->step_kind = OidIsValid(a->fn) ? &wf_fn_kind : &wf_sql_kind;
	if (!OidIsValid(a->fn))
	{
		StringInfoData buf;

		/* SQL: the output is $1 (a one-element array binds its element) */
		a->sql = wf_get_text(0, 5);
		initStringInfo(&buf);
		appendStringInfoChar(&buf, '[');
		if (output != NULL)
			(void) JsonbToCString(&buf, &output->root, VARSIZE(output));
		else
			appendStringInfoString(&buf, "null");
		appendStringInfoChar(&buf, ']');
		a->args = wf_cstring_jsonb(buf.data);
	}
	else
		a->args = output ? output : wf_cstring_jsonb("null");
	a->hash = 0;
	a->seq = -1;
	a->is_new = DatumGetBool(wf_get_datum(0, 7, &isnull));
	if (a->is_new)
	{
		a->attempt = 1;
		a->started = GetCurrentTimestamp();
	}
	else
	{
		a->attempt = DatumGetInt32(wf_get_datum(0, 8, &isnull)) + 1;
		a->interrupted = DatumGetInt32(wf_get_datum(0, 9, &isnull));
		a->started = DatumGetTimestampTz(wf_get_datum(0, 10, &isnull));
		d = wf_get_datum(0, 11, &isnull);
		a->until = isnull ? 0 : DatumGetTimestampTz(d);
	}
	MemoryContextSwitchTo(old);
	return true;
}

static WfQuery q_rollback_summary = {
	"SELECT COALESCE(jsonb_agg(jsonb_build_object('step', substr(key, 10), "
	"         'status', status) ORDER BY started_at, key), '[]') "
	"FROM workflows.steps WHERE instance_id = $1 AND key LIKE 'rollback:%' AND seq < 0",
	1, {TEXTOID}, NULL
};

/* what the rollbacks of instance "id" did: the output of a rollback() step */
Jsonb *
wf_compose_rollback_summary(const char *id)
{
	Datum		v[1];

	v[0] = CStringGetTextDatum(id);
	wf_query(&q_rollback_summary, v, NULL, 1);
	return wf_get_jsonb(0, 1);
}

/*
 * workflows.rollback() returns jsonb: a step that runs the compensations
 * of every completed step with a "rollback" that has not been compensated
 * yet, latest first; returns [{step, status}] of all the instance's
 * compensations so far.
 */
Datum
wf_rollback(PG_FUNCTION_ARGS)
{
	WfMemo	   *memo;
	char	   *key;
	int64		hash = wf_replay_hash('r', "rollback", NULL);

	memo = wf_replay_begin("workflows.rollback()", "rollback", 's', hash, &key);
	if (memo != NULL && memo->status == 'c')
		return wf_replay_output(fcinfo, memo);
	if (memo != NULL && memo->status == 'f')
		wf_replay_reraise(memo);
	(void) wf_replay_new_action(WF_ACT_ROLLBACK, memo, key, "rollback", hash);
	wf_replay_yield(key);
}

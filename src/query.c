/*-------------------------------------------------------------------------
 *
 * query.c
 *	  The one SPI wrapper: prepared statements on the extension's tables,
 *	  and small helpers to read their results.
 *
 * Every statement the extension runs on its own tables is a WfQuery: SQL
 * text with positional parameters, prepared on first use and kept for the
 * life of the process (the plan cache re-plans it after DDL).  Values are
 * always parameters; nothing is ever spliced into SQL text.
 *
 * The caller must be connected to SPI and inside a transaction.
 *
 * IDENTIFICATION
 *	  src/query.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_proc.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/syscache.h"

/*
 * Run a prepared statement; returns SPI_processed.  Errors propagate.
 * "count" limits the rows returned (0: all).
 */
int
wf_query(WfQuery *q, Datum *values, const char *nulls, long count)
{
	int			rc;

	if (q->plan == NULL)
	{
		/*
		 * A generic plan from the start: these statements run thousands of
		 * times a second with parameters that never call for another plan,
		 * and planning each execution (the first five custom plans, and
		 * every one where a generic plan looks costlier) was a tenth of an
		 * executor's time.
		 */
		SPIPlanPtr	plan = SPI_prepare_cursor(q->sql, q->nargs, q->argtypes,
											  CURSOR_OPT_GENERIC_PLAN);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s",
				 q->sql, SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
		q->plan = plan;
	}
	rc = SPI_execute_plan(q->plan, values, nulls, false, count);
	if (rc < 0)
		elog(ERROR, "SPI_execute_plan failed for \"%s\": %s",
			 q->sql, SPI_result_code_string(rc));
	return (int) SPI_processed;
}

/*
 * wf_query() for a statement whose only good plan walks an index, with
 * sequential and bitmap scans off: a plan made while its table looked
 * empty (a fresh database, before autoanalyze) would otherwise stay cached
 * and read every row at every execution once the table has grown (the
 * claim's scan of wake_at, flow control's counts).  The settings are
 * undone at once.
 */
int
wf_query_indexed(WfQuery *q, Datum *values, const char *nulls, long count)
{
	int			nest = NewGUCNestLevel();
	int			n;

	(void) set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_bitmapscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	n = wf_query(q, values, nulls, count);
	AtEOXact_GUC(true, nest);
	return n;
}

Datum
wf_get_datum(int row, int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
						 col, isnull);
}

/* a text column as a C string in the caller's memory context, or NULL */
char *
wf_get_text(int row, int col)
{
	bool		isnull;
	Datum		d = wf_get_datum(row, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/* a jsonb column, detoasted into the caller's memory context, or NULL */
Jsonb *
wf_get_jsonb(int row, int col)
{
	bool		isnull;
	Datum		d = wf_get_datum(row, col, &isnull);

	return isnull ? NULL : DatumGetJsonbPCopy(d);
}

/*
 * The role that owns the extension's tables: the API functions write them
 * as this role after they have checked the caller.
 */
Oid
wf_extension_owner(void)
{
	HeapTuple	tup;
	Oid			owner;

	tup = SearchSysCache1(NAMESPACENAME, CStringGetDatum("workflows"));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_SCHEMA),
				 errmsg("schema \"workflows\" does not exist"),
				 errhint("Run CREATE EXTENSION workflows.")));
	owner = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * May "role" see and control the instances of "owner"?  Its own (or those
 * of a role whose privileges it has), or any if it is a workflows_admin or
 * a superuser.
 */
bool
wf_can_see(Oid owner, Oid role)
{
	Oid			admin;

	if (superuser_arg(role) || has_privs_of_role(role, owner))
		return true;
	admin = get_role_oid("workflows_admin", true);
	return OidIsValid(admin) && has_privs_of_role(role, admin);
}

Jsonb *
wf_cstring_jsonb(const char *json)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}

/* append "key": "value" (a JSON string) to a StringInfo building an object */
static void
add_field(StringInfo buf, const char *key, const char *value, bool *first)
{
	if (value == NULL)
		return;
	if (!*first)
		appendStringInfoString(buf, ", ");
	*first = false;
	escape_json(buf, key);
	appendStringInfoString(buf, ": ");
	escape_json(buf, value);
}

/*
 * An error as the JSON object stored in attempts, steps and instances:
 * message, sqlstate, and detail, hint and context when present.
 */
Jsonb *
wf_error_jsonb(ErrorData *edata)
{
	StringInfoData buf;
	bool		first = true;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	add_field(&buf, "message", edata->message ? edata->message : "", &first);
	add_field(&buf, "sqlstate", unpack_sql_state(edata->sqlerrcode), &first);
	add_field(&buf, "detail", edata->detail, &first);
	add_field(&buf, "hint", edata->hint, &first);
	add_field(&buf, "context", edata->context, &first);
	appendStringInfoChar(&buf, '}');
	return wf_cstring_jsonb(buf.data);
}

/*
 * A fingerprint of a function's definition: a new version is registered
 * when it changes, even under the same name and signature.
 */
int64
wf_function_hash(Oid fn)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	bool		isnull;
	Datum		d;
	uint64		h = (uint64) fn;
	Form_pg_proc proc;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function with OID %u does not exist", fn)));
	proc = (Form_pg_proc) GETSTRUCT(tup);
	h = hash_combine64(h, (uint64) proc->prolang);
	h = hash_combine64(h, (uint64) proc->prorettype);
	d = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_prosrc, &isnull);
	if (!isnull)
	{
		text	   *src = DatumGetTextPP(d);

		h = hash_combine64(h, hash_bytes_extended((unsigned char *) VARDATA_ANY(src),
												  VARSIZE_ANY_EXHDR(src), 0));
	}
	d = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_probin, &isnull);
	if (!isnull)
	{
		text	   *bin = DatumGetTextPP(d);

		h = hash_combine64(h, hash_bytes_extended((unsigned char *) VARDATA_ANY(bin),
												  VARSIZE_ANY_EXHDR(bin), 0));
	}
	ReleaseSysCache(tup);
	return (int64) h;
}

/*
 * The version of the extension's SQL objects in this database
 * (pg_extension.extversion), or NULL when the extension is not created.
 * The library serves exactly one version of them, WF_EXTVERSION: after the
 * library was replaced, a database stays on the old version until
 * ALTER EXTENSION workflows UPDATE.
 */
char *
wf_installed_version(void)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tup;
	char	   *version = NULL;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("workflows"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		version = isnull ? pstrdup("") : TextDatumGetCString(d);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

/*
 * Refuse to act on SQL objects of another version than the library's
 * (between a library upgrade and ALTER EXTENSION UPDATE).
 */
void
wf_check_installed_version(void)
{
	char	   *version = wf_installed_version();

	if (version != NULL && strcmp(version, WF_EXTVERSION) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"workflows\" is at version %s but its library is version %s",
						version, WF_EXTVERSION),
				 errhint("Run ALTER EXTENSION workflows UPDATE.")));
}

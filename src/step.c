/*-------------------------------------------------------------------------
 *
 * step.c
 *	  Run a step's callback: SQL text or a function, giving jsonb.
 *
 * The executor calls these inside the step's own subtransaction, as the
 * instance's owner, with the step's timeout armed.  A SQL callback's output
 * is the first column of the first row of its (last) statement as jsonb;
 * no row gives null.  Its arguments are a JSON array bound to $1..$n as
 * parameters whose types the statement decides (as with a driver's
 * unspecified parameter types), from each element's text form; JSON null is
 * SQL NULL, and a scalar is $1.  A function callback takes jsonb and
 * returns jsonb, json, or any type, which is converted with to_jsonb().
 *
 * Both run in an atomic context: a COMMIT or ROLLBACK inside a step is an
 * error, because the step's writes must commit together with its memo.
 *
 * IDENTIFICATION
 *	  src/step.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include "access/htup_details.h"
#include "common/hashfn.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/analyze.h"
#include "parser/parser.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

/*
 * Any value as jsonb: jsonb as is, json parsed, anything else through
 * to_jsonb() (which needs to know the argument's type from fn_expr).
 */
Jsonb *
wf_datum_to_jsonb(Datum value, Oid typid, bool isnull)
{
	FmgrInfo	flinfo;
	FuncExpr   *expr;

	if (isnull || typid == VOIDOID)
		return NULL;
	if (typid == JSONBOID)
		return DatumGetJsonbPCopy(value);
	if (typid == JSONOID)
		return DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
												  CStringGetDatum(TextDatumGetCString(value))));
	if (typid == UNKNOWNOID)
		return wf_datum_to_jsonb(CStringGetTextDatum(DatumGetCString(value)),
								 TEXTOID, false);

	fmgr_info(F_TO_JSONB, &flinfo);
	expr = makeFuncExpr(F_TO_JSONB, JSONBOID,
						list_make1(makeNullConst(typid, -1, InvalidOid)),
						InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL);
	flinfo.fn_expr = (Node *) expr;
	return DatumGetJsonbP(FunctionCall1(&flinfo, value));
}

/* the text form of one argument: strings unquoted, the rest as JSON */
static char *
arg_text(JsonbValue *v, bool *isnull)
{
	*isnull = false;
	switch (v->type)
	{
		case jbvNull:
			*isnull = true;
			return NULL;
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(v->val.numeric)));
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		case jbvBinary:
			return JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
		default:
			elog(ERROR, "unexpected jsonb value type %d", (int) v->type);
	}
	return NULL;
}

/*
 * Plans of step SQL, kept per executor.  A step's statement is parsed,
 * its parameters' types inferred and the statement planned once per owner
 * and text, not at every attempt: PostgreSQL's plan cache then replans it
 * only when what it depends on changes (objects, the search_path, the
 * role for row-level security).  Kept: single SELECT, INSERT, UPDATE,
 * DELETE or MERGE statements.  Other statements (utility commands, several
 * statements in one text) run as before, one at a time, so that a
 * statement may use what an earlier one of the same step created.  Keyed
 * by owner, so that one role's plan never runs for another.
 */
typedef struct WfStepPlanKey
{
	Oid			owner;
	int			nargs;
	uint32		hash;			/* of the text */
} WfStepPlanKey;

typedef struct WfStepPlan
{
	WfStepPlanKey key;
	char	   *sql;
	SPIPlanPtr	plan;			/* NULL: not kept (runs as a one-off) */
	Oid		   *types;			/* of the nargs parameters */
} WfStepPlan;

#define WF_MAX_STEP_PLANS	1024

static HTAB *step_plans = NULL;
static MemoryContext step_plans_cxt = NULL;

static WfStepPlanKey
plan_key(const char *sql, int nargs)
{
	WfStepPlanKey key;

	memset(&key, 0, sizeof(key));
	key.owner = GetUserId();
	key.nargs = nargs;
	key.hash = hash_bytes((const unsigned char *) sql, strlen(sql));
	return key;
}

static WfStepPlan *
cached_plan(const char *sql, int nargs)
{
	WfStepPlanKey key = plan_key(sql, nargs);
	WfStepPlan *entry;

	if (step_plans == NULL)
		return NULL;
	entry = hash_search(step_plans, &key, HASH_FIND, NULL);
	if (entry == NULL || strcmp(entry->sql, sql) != 0)
		return NULL;
	if (entry->plan == NULL && nargs == 0)
		return NULL;			/* known not to be kept: run it as a one-off */
	return entry;
}

/* forget every plan: the cache is full */
static void
reset_plans(void)
{
	HASH_SEQ_STATUS status;
	WfStepPlan *entry;

	hash_seq_init(&status, step_plans);
	while ((entry = hash_seq_search(&status)) != NULL)
		if (entry->plan != NULL)
			SPI_freeplan(entry->plan);
	MemoryContextReset(step_plans_cxt);
	step_plans = NULL;
}

static bool
plannable(Node *stmt)
{
	switch (nodeTag(stmt))
	{
		case T_SelectStmt:
		case T_InsertStmt:
		case T_UpdateStmt:
		case T_DeleteStmt:
#if PG_VERSION_NUM >= 150000
		case T_MergeStmt:
#endif
			return true;
		default:
			return false;
	}
}

/*
 * Parse the statement, let it decide its parameters' types, and keep its
 * plan when it is one plannable statement.  Errors (syntax, $n beyond the
 * arguments) are the step's.
 */
static WfStepPlan *
prepare_plan(const char *sql, int nargs)
{
	WfStepPlanKey key = plan_key(sql, nargs);
	List	   *raw = raw_parser(sql, RAW_PARSE_DEFAULT);
	Oid		   *types;
	int			ntypes = nargs;
	bool		keep;
	WfStepPlan *entry;
	SPIPlanPtr	plan = NULL;
	bool		found;
	int			i;

	if (nargs > 0 && list_length(raw) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("a step with args must be a single SQL statement")));
	keep = (list_length(raw) == 1 && plannable(linitial_node(RawStmt, raw)->stmt));

	types = palloc0(sizeof(Oid) * Max(nargs, 1));
	if (nargs > 0)
	{
		/* let the statement decide the parameters' types */
		(void) parse_analyze_varparams(linitial_node(RawStmt, raw), sql,
									   &types, &ntypes, NULL);
		if (ntypes > nargs)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_PARAMETER),
					 errmsg("step SQL uses $%d but args has %d element%s",
							ntypes, nargs, nargs == 1 ? "" : "s")));
		for (i = 0; i < nargs; i++)
			if (types[i] == InvalidOid || types[i] == UNKNOWNOID)
				types[i] = TEXTOID;
	}
	if (keep)
	{
		plan = SPI_prepare(sql, nargs, types);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
	}

	if (step_plans == NULL || hash_get_num_entries(step_plans) >= WF_MAX_STEP_PLANS)
	{
		HASHCTL		ctl;

		if (step_plans_cxt == NULL)
			step_plans_cxt = AllocSetContextCreate(TopMemoryContext, "workflows step plans",
												   ALLOCSET_DEFAULT_SIZES);
		if (step_plans != NULL)
			reset_plans();
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(WfStepPlanKey);
		ctl.entrysize = sizeof(WfStepPlan);
		ctl.hcxt = step_plans_cxt;
		step_plans = hash_create("workflows step plans", 64, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	entry = hash_search(step_plans, &key, HASH_ENTER, &found);
	if (found && entry->plan != NULL)
		SPI_freeplan(entry->plan);	/* another text with the same hash */
	entry->key = key;
	entry->sql = MemoryContextStrdup(step_plans_cxt, sql);
	entry->plan = plan;
	entry->types = MemoryContextAlloc(step_plans_cxt, sizeof(Oid) * Max(nargs, 1));
	memcpy(entry->types, types, sizeof(Oid) * Max(nargs, 1));
	return entry;
}

/*
 * Run SQL text with args; see the file header for the contract.  Called in
 * the step's subtransaction; returns the output in the caller's context.
 */
Jsonb *
wf_run_sql_callback(const char *sql, Jsonb *args)
{
	MemoryContext callercxt = CurrentMemoryContext;
	List	   *argtexts = NIL;
	int			nargs = 0;
	int			rc;
	Jsonb	   *result = NULL;
	WfStepPlan *plan;

	/* collect the arguments' text forms */
	if (args != NULL)
	{
		JsonbIterator *it = JsonbIteratorInit(&args->root);
		JsonbValue	v;
		JsonbIteratorToken tok;
		bool		isnull;

		if (JB_ROOT_IS_OBJECT(args))
		{
			/* an object is one argument: its JSON text */
			argtexts = list_make1(JsonbToCString(NULL, &args->root, VARSIZE(args)));
			nargs = 1;
		}
		else
		{
			/* an array's elements, or a scalar (a one-element raw array) */
			while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
			{
				if (tok != WJB_ELEM)
					continue;
				argtexts = lappend(argtexts, arg_text(&v, &isnull));
				nargs++;
			}
		}
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	plan = cached_plan(sql, nargs);
	if (plan == NULL && nargs == 0)
		rc = SPI_execute(sql, false, 0);
	else
	{
		Datum	   *values;
		char	   *nulls;
		int			i;

		if (plan == NULL)
			plan = prepare_plan(sql, nargs);
		values = palloc(sizeof(Datum) * Max(nargs, 1));
		nulls = palloc(Max(nargs, 1));
		for (i = 0; i < nargs; i++)
		{
			char	   *t = list_nth(argtexts, i);
			Oid			typinput,
						typioparam;

			if (t == NULL)
			{
				values[i] = (Datum) 0;
				nulls[i] = 'n';
				continue;
			}
			getTypeInputInfo(plan->types[i], &typinput, &typioparam);
			values[i] = OidInputFunctionCall(typinput, t, typioparam, -1);
			nulls[i] = ' ';
		}
		if (plan->plan != NULL)
			rc = SPI_execute_plan(plan->plan, values, nulls, false, 0);
		else
			rc = SPI_execute_with_args(sql, nargs, plan->types, values, nulls, false, 0);
	}

	if (rc == SPI_ERROR_TRANSACTION)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_TERMINATION),
				 errmsg("a step cannot commit or roll back"),
				 errdetail("A step's writes commit together with its memoized output.")));
	if (rc < 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("step SQL cannot be run: %s", SPI_result_code_string(rc))));

	if (SPI_tuptable != NULL && SPI_processed > 0 && SPI_tuptable->tupdesc->natts > 0)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		Oid			typid = SPI_gettypeid(SPI_tuptable->tupdesc, 1);
		MemoryContext old = MemoryContextSwitchTo(callercxt);

		result = wf_datum_to_jsonb(d, typid, isnull);
		MemoryContextSwitchTo(old);
	}

	SPI_finish();
	return result;
}

/*
 * Is fn usable as a step callback?  One argument of type jsonb, not a set,
 * not a procedure.  Raised at the step call, so the workflow sees it.
 */
void
wf_check_step_fn(Oid fn)
{
	HeapTuple	tup;
	Form_pg_proc proc;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function with OID %u does not exist", fn)));
	proc = (Form_pg_proc) GETSTRUCT(tup);
	if (proc->prokind != PROKIND_FUNCTION || proc->proretset ||
		proc->pronargs != 1 || proc->proargtypes.values[0] != JSONBOID)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("step function %s must take one jsonb argument and return one value",
						format_procedure(fn))));
	ReleaseSysCache(tup);
}

/*
 * Call fn(input) as the current user, checking EXECUTE first.  Called in
 * the step's subtransaction; returns the output in the caller's context.
 */
Jsonb *
wf_run_fn_callback(Oid fn, Jsonb *input)
{
	FmgrInfo	flinfo;
	LOCAL_FCINFO(fcinfo, 1);
	Datum		result;
	AclResult	aclresult;

	aclresult = wf_proc_aclcheck(fn, GetUserId(), ACL_EXECUTE);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_FUNCTION, get_func_name(fn));

	fmgr_info(fn, &flinfo);
	if (flinfo.fn_strict && input == NULL)
		return NULL;
	InitFunctionCallInfoData(*fcinfo, &flinfo, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = JsonbPGetDatum(input);
	fcinfo->args[0].isnull = (input == NULL);
	result = FunctionCallInvoke(fcinfo);
	return wf_datum_to_jsonb(result, get_func_rettype(fn), fcinfo->isnull);
}

/*-------------------------------------------------------------------------
 *
 * wf_test_kinds.c
 *	  A step plugin, as another extension would write one: two kinds of
 *	  steps registered with the workflows extension's step-kind registry.
 *
 *	  "upper": in the transaction.  {"text": "abc"} -> {"upper": "ABC",
 *	  "role": <the role it ran as>}; {"fail": "message"} raises.
 *
 *	  "timer": outside any transaction.  {"ms": N} -> {"waited": N} after
 *	  N milliseconds, without a socket: it only lowers the engine's wait.
 *
 *	  Load it with shared_preload_libraries = 'workflows,wf_test_kinds'.
 *
 * IDENTIFICATION
 *	  test/plugin/wf_test_kinds.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "extension/workflows/workflows_step_kind.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static char *
request_text(Jsonb *request, const char *key)
{
	JsonbValue *v;

	if (request == NULL || !JB_ROOT_IS_OBJECT(request))
		return NULL;
	v = getKeyJsonValueFromContainer(&request->root, key, strlen(key), NULL);
	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

static void
upper_validate(Jsonb *request)
{
	if (request_text(request, "text") == NULL && request_text(request, "fail") == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an upper step needs {\"text\": \"...\"}")));
}

static Jsonb *
upper_run(WfStepCall *call)
{
	char	   *text = request_text(call->request, "text");
	char	   *fail = request_text(call->request, "fail");
	StringInfoData buf;

	if (fail != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_RAISE_EXCEPTION),
				 errmsg("%s", fail)));
	for (char *p = text; *p; p++)
		*p = pg_ascii_toupper((unsigned char) *p);
	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"upper\": \"%s\", \"role\": \"%s\"}", text,
					 GetUserNameFromId(GetUserId(), false));
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

static const WfStepKind upper_kind = {
	.abi = WF_STEP_KIND_ABI,
	.name = "upper",
	.validate = upper_validate,
	.run = upper_run,
};

typedef struct Timer
{
	int64		ms;
	TimestampTz due;
} Timer;

static List *timers = NIL;		/* in flight, for wait() */

static void
timer_prepare(WfStepCall *call)
{
	Timer	   *t = MemoryContextAllocZero(call->cxt, sizeof(Timer));
	char	   *ms = NULL;
	JsonbValue *v = getKeyJsonValueFromContainer(&call->request->root, "ms", 2, NULL);

	if (v == NULL || v->type != jbvNumeric)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a timer step needs {\"ms\": N}")));
	ms = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
	t->ms = atol(ms);
	call->private_data = t;
	if (call->timeout_ms <= 0)
		call->timeout_ms = t->ms + 60000;
}

static bool
timer_start(WfStepCall *call, WfStepResult *result)
{
	Timer	   *t = call->private_data;
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	t->due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), t->ms);
	timers = lappend(timers, t);
	MemoryContextSwitchTo(old);
	return true;
}

static int
timer_wait(WfWaitSocket *sockets, int max, long *timeout_ms)
{
	ListCell   *lc;
	TimestampTz now = GetCurrentTimestamp();

	foreach(lc, timers)
	{
		Timer	   *t = lfirst(lc);
		long		left = Max(0, TimestampDifferenceMilliseconds(now, t->due));

		*timeout_ms = Min(*timeout_ms, left);
	}
	return 0;
}

static void
timer_drive(const WfWaitSocket *ready, int nready)
{
}

static bool
timer_poll(WfStepCall *call, WfStepResult *result)
{
	Timer	   *t = call->private_data;

	if (GetCurrentTimestamp() < t->due)
		return false;
	timers = list_delete_ptr(timers, t);
	result->ok = true;
	result->output = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
														CStringGetDatum(psprintf("{\"waited\": " INT64_FORMAT "}", t->ms))));
	return true;
}

static void
timer_cancel(WfStepCall *call)
{
	timers = list_delete_ptr(timers, call->private_data);
}

static const WfStepKind timer_kind = {
	.abi = WF_STEP_KIND_ABI,
	.name = "timer",
	.prepare = timer_prepare,
	.start = timer_start,
	.poll = timer_poll,
	.cancel = timer_cancel,
	.wait = timer_wait,
	.drive = timer_drive,
};

void
_PG_init(void)
{
	workflows_register_step_kind(&upper_kind);
	workflows_register_step_kind(&timer_kind);
}

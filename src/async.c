/*-------------------------------------------------------------------------
 *
 * async.c
 *	  Steps that run outside any transaction: the calls an executor has in
 *	  flight, waiting on them, and recording how they ended.
 *
 * The executor's tick decides that a step of an out-of-transaction kind
 * (HTTP) runs: it records the step as "calling" with a lease on the
 * instance (its wake time is the call's deadline plus WF_CALL_LEASE_MS,
 * so no executor claims it meanwhile), lets the kind prepare the call
 * (wf_call_new(), kind->prepare) and queues it here (wf_call_queue()).
 * Nothing is sent before that transaction commits (wf_calls_committed());
 * a rollback forgets the call (wf_calls_abandon()).  The executor then
 * goes on with other instances, and between them, and while it is idle,
 * waits on its latch and on every call's sockets at once
 * (wf_calls_service()).  Calls that ended are recorded together in one
 * short transaction: the attempt, the step's new state, and the instance
 * made due (or due at its retry time), waking the executors at commit.
 *
 * A call whose executor stops or crashes is never recorded; when the
 * lease passes, an executor claims the instance, finds the step still
 * "calling", records that attempt as interrupted (WF008) and makes the
 * next one (executor.c, start_call()): at least once, with the same
 * Idempotency-Key.
 *
 * IDENTIFICATION
 *	  src/async.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/wait_event.h"

/* the most sockets waited on at once (beyond them, a short timeout) */
#define WF_MAX_WAIT_SOCKETS	1024

typedef struct WfCall
{
	WfStepCall	call;			/* must be first */
	const WfStepKind *kind;
	bool		started;		/* handed to the kind (after commit) */
	bool		ended;
	WfStepResult result;
	WfStepConfig config;
	int			interrupted;
	int			seq;			/* of the step in its instance */
	TimestampTz start;
	TimestampTz end;
	TimestampTz give_up;		/* the engine's own deadline */
} WfCall;

static MemoryContext calls_cxt = NULL;
static List *calls = NIL;		/* of WfCall, in calls_cxt */

/*
 * Instances whose call waits for a place (wf_calls_defer()), oldest first:
 * made due by the commit that frees places.  Their wake time is a later
 * fallback, for when this executor stops.
 */
#define WF_MAX_DEFERRED		10000
static List *deferred = NIL;	/* of char *, in calls_cxt */

int
wf_calls_in_flight(void)
{
	return list_length(calls);
}

/* a call to prepare, in a memory context of its own */
WfStepCall *
wf_call_new(const char *id, const char *key, Oid owner, int attempt,
			Jsonb *request, int64 timeout_ms)
{
	MemoryContext cxt;
	WfCall	   *c;

	if (calls_cxt == NULL)
		calls_cxt = AllocSetContextCreate(TopMemoryContext, "workflows calls",
										  ALLOCSET_SMALL_SIZES);
	cxt = AllocSetContextCreate(calls_cxt, "workflows call", ALLOCSET_SMALL_SIZES);
	c = MemoryContextAllocZero(cxt, sizeof(WfCall));
	c->call.cxt = cxt;
	c->call.instance_id = MemoryContextStrdup(cxt, id);
	c->call.step_key = MemoryContextStrdup(cxt, key);
	c->call.owner = owner;
	c->call.attempt = attempt;
	c->call.timeout_ms = timeout_ms;
	c->call.request = request ? (Jsonb *) MemoryContextAlloc(cxt, VARSIZE(request)) : NULL;
	if (request)
		memcpy(c->call.request, request, VARSIZE(request));
	return &c->call;
}

/* an instance whose call found no place: wake it when one frees */
void
wf_calls_defer(const char *id)
{
	MemoryContext old;
	ListCell   *lc;

	if (calls_cxt == NULL || list_length(deferred) >= WF_MAX_DEFERRED)
		return;
	foreach(lc, deferred)
		if (strcmp(lfirst(lc), id) == 0)
			return;
	old = MemoryContextSwitchTo(calls_cxt);
	deferred = lappend(deferred, pstrdup(id));
	MemoryContextSwitchTo(old);
}

static WfQuery q_wake_deferred = {
	"UPDATE workflows.instances SET wake_at = now(), revision = revision + 1 "
	"WHERE id = $1 AND wake_at > now() AND status = 'running'",
	1, {TEXTOID}, NULL
};

/* forget a call that never started */
void
wf_call_discard(WfStepCall *call)
{
	MemoryContextDelete(call->cxt);
}

/* the call is recorded as started: send it once that commits */
void
wf_call_queue(WfStepCall *call, const WfStepKind *kind, const WfStepConfig *cfg,
			  int interrupted, int seq, TimestampTz start)
{
	WfCall	   *c = (WfCall *) call;
	MemoryContext old = MemoryContextSwitchTo(calls_cxt);

	c->kind = kind;
	c->config = *cfg;
	c->interrupted = interrupted;
	c->seq = seq;
	c->start = start;
	calls = lappend(calls, c);
	MemoryContextSwitchTo(old);
}

/* the transaction that recorded the calls committed: send them */
void
wf_calls_committed(void)
{
	ListCell   *lc;

	foreach(lc, calls)
	{
		WfCall	   *c = lfirst(lc);

		if (c->started)
			continue;
		c->started = true;
		c->start = GetCurrentTimestamp();
		c->give_up = TimestampTzPlusMilliseconds(c->start, c->call.timeout_ms + 1000);
		if (!c->kind->start(&c->call, &c->result))
		{
			c->ended = true;
			c->end = GetCurrentTimestamp();
		}
	}
}

/* that transaction was rolled back: nothing of the unsent calls happened */
void
wf_calls_abandon(void)
{
	List	   *keep = NIL;
	ListCell   *lc;
	MemoryContext old = MemoryContextSwitchTo(calls_cxt);

	foreach(lc, calls)
	{
		WfCall	   *c = lfirst(lc);

		if (c->started)
			keep = lappend(keep, c);
		else
			MemoryContextDelete(c->call.cxt);
	}
	list_free(calls);
	calls = keep;
	MemoryContextSwitchTo(old);
}

/* the distinct kinds of the calls in flight */
static List *
active_kinds(void)
{
	List	   *kinds = NIL;
	ListCell   *lc;

	foreach(lc, calls)
	{
		WfCall	   *c = lfirst(lc);

		if (c->started && !c->ended)
			kinds = list_append_unique_ptr(kinds, (void *) c->kind);
	}
	return kinds;
}

static WfQuery q_call_end = {
	"WITH s AS ("
	"  UPDATE workflows.steps SET status = $3, output = $4, error = $5, ended_at = $7, "
	"    wake_at = $8, interrupted = $11 "
	"  WHERE instance_id = $1 AND key = $2 AND status = 'calling' AND attempts = $6 "
	"  RETURNING instance_id), "
	"a AS (INSERT INTO workflows.attempt_log (instance_id, step_key, attempt, started_at, "
	"    ended_at, success, error, run, detail) "
	"  SELECT $1, $2, $6, $9, $10, $3 = 'complete', $5, i.run, $12 "
	"  FROM s JOIN workflows.instances i ON i.id = s.instance_id), "
	"i AS (UPDATE workflows.instances SET wake_at = COALESCE($8, now()), revision = revision + 1 "
	"  WHERE id = $1 AND wake_at IS NOT NULL AND EXISTS (SELECT 1 FROM s)) "
	"SELECT count(*) FROM s",
	12, {TEXTOID, TEXTOID, TEXTOID, JSONBOID, JSONBOID, INT4OID, TIMESTAMPTZOID,
	TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID, JSONBOID}, NULL
};

/* a step of a shared resource ended its call: its place frees at commit */
static WfQuery q_call_flow_exit = {
	"SELECT workflows._flow_step_exit($1, $2, $3)",
	3, {TEXTOID, TEXTOID, TEXTOID}, NULL
};

/* the error of a failed attempt, as every step error is stored */
static Jsonb *
result_error(WfStepResult *r)
{
	ErrorData	edata;

	memset(&edata, 0, sizeof(edata));
	edata.elevel = ERROR;
	edata.sqlerrcode = r->sqlerrcode ? r->sqlerrcode : ERRCODE_INTERNAL_ERROR;
	edata.message = r->message ? r->message : "the call failed";
	edata.detail = r->detail;
	return wf_error_jsonb(&edata);
}

/* record one ended call: connected to SPI, in a transaction */
static void
record(WfCall *c)
{
	WfStepResult *r = &c->result;
	Datum		v[12];
	char		n[12];
	const char *status;
	TimestampTz wake = 0;
	Jsonb	   *error = NULL;
	int			charged = c->call.attempt - c->interrupted;
	bool		recorded;
	bool		isnull;

	memset(n, ' ', sizeof(n));
	if (r->ok)
		status = "complete";
	else
	{
		error = result_error(r);
		if (!r->retryable || charged > c->config.retries_limit)
			status = "failed";
		else
		{
			int64		delay = wf_retry_delay_ms(&c->config, charged);

			status = "retrying";
			wake = TimestampTzPlusMilliseconds(c->end, Max(delay, r->retry_after_ms));
		}
	}
	if (r->output != NULL && VARSIZE(r->output) > (Size) wf_max_output_size)
	{
		/* a kind's result beyond the limit fails like a step's would */
		WfStepResult big;

		memset(&big, 0, sizeof(big));
		big.sqlerrcode = ERRCODE_WF_LIMIT_EXCEEDED;
		big.message = psprintf("step output is %u bytes, more than workflows.max_output_size (%d)",
							   (unsigned int) VARSIZE(r->output), wf_max_output_size);
		error = result_error(&big);
		status = "failed";
		r->output = NULL;
	}
	v[0] = CStringGetTextDatum(c->call.instance_id);
	v[1] = CStringGetTextDatum(c->call.step_key);
	v[2] = CStringGetTextDatum(status);
	v[3] = JsonbPGetDatum(r->output);
	n[3] = (strcmp(status, "complete") == 0 && r->output) ? ' ' : 'n';
	v[4] = JsonbPGetDatum(error);
	n[4] = error ? ' ' : 'n';
	v[5] = Int32GetDatum(c->call.attempt);
	v[6] = TimestampTzGetDatum(c->end);
	n[6] = strcmp(status, "retrying") == 0 ? 'n' : ' ';
	v[7] = TimestampTzGetDatum(wake);
	n[7] = wake ? ' ' : 'n';
	v[8] = TimestampTzGetDatum(c->start);
	v[9] = TimestampTzGetDatum(c->end);
	v[10] = Int32GetDatum(c->interrupted);
	v[11] = JsonbPGetDatum(r->attempt_detail);
	n[11] = r->attempt_detail ? ' ' : 'n';
	wf_query(&q_call_end, v, n, 1);
	recorded = DatumGetInt64(wf_get_datum(0, 1, &isnull)) > 0;
	/* the progress stream (compose.c), as for every step that ends */
	if (recorded && strcmp(status, "retrying") != 0)
		wf_compose_notify_step(c->call.instance_id, c->call.step_key, c->seq, status);
	if (c->config.conc_limit > 0 || c->config.thr_limit > 0)
	{
		Datum		f[3];
		char		fn[3] = {' ', ' ', ' '};

		f[0] = v[0];
		f[1] = v[1];
		f[2] = c->config.conc_limit > 0 ? CStringGetTextDatum(c->config.conc_key) : (Datum) 0;
		fn[2] = c->config.conc_limit > 0 ? ' ' : 'n';
		wf_query(&q_call_flow_exit, f, fn, 0);
	}
	if (wf_log_level >= WF_LOG_FAILURES && !r->ok)
		ereport(LOG,
				(errmsg("workflows: %s step \"%s\" of instance \"%s\", attempt %d: %s",
						c->kind->name, c->call.step_key, c->call.instance_id, c->call.attempt,
						wf_log_step_details && r->message ? r->message :
						unpack_sql_state(r->sqlerrcode))));
}

/*
 * Record the ended calls in one transaction.  If that fails (the engine's
 * bookkeeping, not the calls), the answers are dropped: the steps stay
 * "calling" and their leases bring them back, as after a crash; the
 * executor goes on.
 */
static void
record_transaction(List *ended)
{
	MemoryContext cxt = CurrentMemoryContext;
	ListCell   *lc;

	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "workflows: recording calls");
		foreach(lc, ended)
			record(lfirst(lc));
		/* as many waiting for a place as there are places now */
		for (int i = list_length(ended); i > 0 && deferred != NIL; i--)
		{
			char	   *id = linitial(deferred);
			Datum		v = CStringGetTextDatum(id);

			wf_query(&q_wake_deferred, &v, NULL, 0);
			deferred = list_delete_first(deferred);
			pfree(id);
		}
		wf_wake_at_commit();
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG,
				(errmsg("workflows: could not record %d ended calls, their steps run again after their leases: %s",
						list_length(ended), edata->message)));
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* record every ended call in one transaction, and forget them */
static void
record_ended(void)
{
	List	   *ended = NIL;
	List	   *keep = NIL;
	ListCell   *lc;
	MemoryContext old;

	foreach(lc, calls)
	{
		WfCall	   *c = lfirst(lc);

		if (c->ended)
			ended = lappend(ended, c);
	}
	if (ended == NIL)
		return;

	record_transaction(ended);

	old = MemoryContextSwitchTo(calls_cxt);
	foreach(lc, calls)
	{
		WfCall	   *c = lfirst(lc);

		if (c->ended)
			MemoryContextDelete(c->call.cxt);
		else
			keep = lappend(keep, c);
	}
	list_free(calls);
	calls = keep;
	MemoryContextSwitchTo(old);
}

/* after the kinds were driven: which calls ended? */
static void
poll_calls(void)
{
	TimestampTz now = GetCurrentTimestamp();
	ListCell   *lc;

	foreach(lc, calls)
	{
		WfCall	   *c = lfirst(lc);
		MemoryContext old;

		if (!c->started || c->ended)
			continue;
		old = MemoryContextSwitchTo(c->call.cxt);
		if (c->kind->poll(&c->call, &c->result))
		{
			c->ended = true;
			c->end = GetCurrentTimestamp();
		}
		else if (now >= c->give_up)
		{
			/* the kind did not end it in time: the engine does */
			c->kind->cancel(&c->call);
			memset(&c->result, 0, sizeof(c->result));
			c->result.sqlerrcode = ERRCODE_WF_STEP_TIMEOUT;
			c->result.message = psprintf("%s step \"%s\" timed out after " INT64_FORMAT " ms",
										 c->kind->name, c->call.step_key, c->call.timeout_ms);
			c->result.retryable = true;
			c->ended = true;
			c->end = now;
		}
		MemoryContextSwitchTo(old);
	}
}

/*
 * Wait up to timeout_ms (0: only look) for the latch or any call's
 * sockets, make progress on the calls, and record those that ended.
 * Called between ticks (no transaction open) and instead of the idle
 * wait while calls are in flight.  Returns true if the latch was set.
 */
bool
wf_calls_service(long timeout_ms)
{
	List	   *kinds;
	ListCell   *lc;
	WfWaitSocket *socks;
	int		   *sock_kind;
	int			nsocks = 0;
	WaitEventSet *set;
	WaitEvent  *events;
	int			nevents;
	int			k;
	bool		latch = false;
	MemoryContext cxt;
	MemoryContext old;
	TimestampTz now = GetCurrentTimestamp();

	if (calls == NIL)
		return false;
	cxt = AllocSetContextCreate(CurrentMemoryContext, "workflows call wait",
								ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);

	/* the engine's own deadlines bound the wait too */
	foreach(lc, calls)
	{
		WfCall	   *c = lfirst(lc);

		if (c->started && !c->ended)
			timeout_ms = Min(timeout_ms, Max(0, TimestampDifferenceMilliseconds(now, c->give_up)));
		else if (c->ended)
			timeout_ms = 0;
	}

	kinds = active_kinds();
	socks = palloc(sizeof(WfWaitSocket) * WF_MAX_WAIT_SOCKETS);
	sock_kind = palloc(sizeof(int) * WF_MAX_WAIT_SOCKETS);
	k = 0;
	foreach(lc, kinds)
	{
		const WfStepKind *kind = lfirst(lc);
		int			got = kind->wait(socks + nsocks, WF_MAX_WAIT_SOCKETS - nsocks, &timeout_ms);

		for (int i = 0; i < got; i++)
			sock_kind[nsocks + i] = k;
		nsocks += got;
		k++;
	}
	if (nsocks == WF_MAX_WAIT_SOCKETS)
		timeout_ms = Min(timeout_ms, 10);	/* more sockets than watched */

	/*
	 * A set latch ends a wait before the sockets are even looked at: with
	 * one (or only looking), look at the sockets alone, without waiting.
	 */
	if (timeout_ms > 0 && MyLatch->is_set)
	{
		latch = true;
		timeout_ms = 0;
	}
	set = wf_create_wait_event_set(nsocks + 2);
	if (timeout_ms > 0)
		AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (int i = 0; i < nsocks; i++)
		AddWaitEventToSet(set,
						  ((socks[i].events & WF_WAIT_READ) ? WL_SOCKET_READABLE : 0) |
						  ((socks[i].events & WF_WAIT_WRITE) ? WL_SOCKET_WRITEABLE : 0),
						  socks[i].sock, NULL, (void *) (intptr_t) i);
	events = palloc(sizeof(WaitEvent) * (nsocks + 2));
	nevents = WaitEventSetWait(set, Max(timeout_ms, 0), events, nsocks + 2,
							   PG_WAIT_EXTENSION);
	FreeWaitEventSet(set);

	/* hand each kind its ready sockets */
	k = 0;
	foreach(lc, kinds)
	{
		const WfStepKind *kind = lfirst(lc);
		WfWaitSocket *ready = palloc(sizeof(WfWaitSocket) * (nevents + 1));
		int			nready = 0;

		for (int e = 0; e < nevents; e++)
		{
			int			i;

			if (events[e].events & WL_LATCH_SET)
			{
				latch = true;
				continue;
			}
			if (!(events[e].events & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE)))
				continue;
			i = (int) (intptr_t) events[e].user_data;
			if (sock_kind[i] != k)
				continue;
			ready[nready].sock = socks[i].sock;
			ready[nready].events = ((events[e].events & WL_SOCKET_READABLE) ? WF_WAIT_READ : 0) |
				((events[e].events & WL_SOCKET_WRITEABLE) ? WF_WAIT_WRITE : 0);
			nready++;
		}
		kind->drive(ready, nready);
		k++;
	}
	if (kinds == NIL)
		for (int e = 0; e < nevents; e++)
			latch |= (events[e].events & WL_LATCH_SET) != 0;

	poll_calls();
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	record_ended();
	return latch;
}

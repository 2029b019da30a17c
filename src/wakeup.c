/*-------------------------------------------------------------------------
 *
 * wakeup.c
 *	  Wake executors when the transaction that gave them work commits.
 *
 * create(), send_event() and the control commands only write rows; the rows
 * become visible at commit, so that is when the executors must look.  A
 * transaction callback runs after the commit is visible to other backends
 * and sets the executors' latches: a new instance starts within
 * milliseconds, with no polling and no NOTIFY (which would take a global
 * lock in every commit).  An aborted transaction wakes nobody.
 *
 * IDENTIFICATION
 *	  src/wakeup.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include "miscadmin.h"

static bool callback_registered = false;
static bool pending_wake = false;
static bool pending_event = false;
static bool pending_launch = false;
static bool pending_waiters = false;

static void
wf_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (pending_launch)
				wf_request_launch(MyDatabaseId);
			if (pending_event && wf_shared != NULL)
				pg_atomic_fetch_add_u64(&wf_shared->signal_generation, 1);
			if (pending_wake)
				wf_wake_database(MyDatabaseId);
			if (pending_waiters)
				wf_wake_waiters(0);
			pending_wake = pending_event = pending_launch = pending_waiters = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			pending_wake = pending_event = pending_launch = pending_waiters = false;
			break;
		default:
			break;
	}
}

static void
wf_register_callback(void)
{
	if (!callback_registered)
	{
		RegisterXactCallback(wf_xact_callback, NULL);
		callback_registered = true;
	}
}

/* wake this database's executors when the current transaction commits */
void
wf_wake_at_commit(void)
{
	wf_register_callback();
	pending_wake = true;
}

/* the current transaction ended an instance: wake workflows.wait() callers */
void
wf_waiters_at_commit(void)
{
	wf_register_callback();
	pending_waiters = true;
}

/*
 * The current transaction sent an event or left a request for the executor
 * that holds an instance: executors must sweep for them.
 */
void
wf_signal_at_commit(void)
{
	wf_register_callback();
	pending_event = true;
	pending_wake = true;
}

/* the current transaction created the extension: start its executors */
void
wf_launch_at_commit(void)
{
	wf_register_callback();
	pending_launch = true;
}

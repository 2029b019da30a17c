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
 * lock in every commit).  New instances wake one idle executor each, at
 * most (wf_wake_idle(), shmem.c); events, commands and the rest wake them
 * all.  An aborted transaction wakes nobody.
 *
 * A transaction that would wake someone cannot be prepared (PREPARE
 * TRANSACTION): its rows become visible at COMMIT PREPARED, possibly in
 * another session, where no callback of ours runs; waking at this session's
 * next unrelated commit would be wrong too.  It is refused instead.
 *
 * The same callback ends what DBA commands started (utility.c): databases
 * whose executors were paused get them back when the transaction ends,
 * committed or not, and databases created or dropped are looked at again by
 * the launcher once that is committed.
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
static bool pending_child = false;
static bool pending_launch = false;
static bool pending_waiters = false;
static int64 pending_new = 0;	/* instances made runnable: wake that many */

/* databases to probe at commit, and to resume at the end (utility.c) */
#define WF_MAX_PENDING_DBS	8
static Oid	probe_dbs[WF_MAX_PENDING_DBS];
static int	nprobe_dbs = 0;
static Oid	resume_dbs[WF_MAX_PENDING_DBS];
static int	nresume_dbs = 0;

static void
resume_all(void)
{
	for (int i = 0; i < nresume_dbs; i++)
		wf_resume_database(resume_dbs[i]);
	nresume_dbs = 0;
}

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
			if (pending_child && wf_shared != NULL)
				pg_atomic_fetch_add_u64(&wf_shared->child_generation, 1);
			if (pending_wake)
				wf_wake_database(MyDatabaseId);
			else if (pending_new > 0)
				wf_wake_idle(MyDatabaseId, (int) Min(pending_new, WF_MAX_WORKERS_LIMIT));
			if (pending_waiters)
				wf_wake_waiters(0);
			for (int i = 0; i < nprobe_dbs; i++)
				wf_request_launch(probe_dbs[i]);
			nprobe_dbs = 0;
			resume_all();
			pending_wake = pending_event = pending_child = pending_launch = pending_waiters = false;
			pending_new = 0;
			break;
		case XACT_EVENT_PRE_PREPARE:
			if (pending_wake || pending_new > 0 || pending_event || pending_child ||
				pending_launch || pending_waiters)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that created, resumed or signalled workflow instances or created the workflows extension"),
						 errdetail("The executors would be woken at this session's next commit instead of at COMMIT PREPARED."),
						 errhint("Call workflows.create(), send_event() and the control commands outside transactions that use two-phase commit.")));
			break;
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			resume_all();
			nprobe_dbs = 0;
			pending_wake = pending_event = pending_child = pending_launch = pending_waiters = false;
			pending_new = 0;
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

/*
 * The current transaction made n new instances runnable: wake as many idle
 * executors (at most), not all of them (shmem.c, wf_wake_idle()).
 */
void
wf_wake_new_at_commit(int64 n)
{
	wf_register_callback();
	pending_new += n;
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

/*
 * The current transaction ended a child instance and left its parent an
 * event (compose.c): executors sweep for it once their batch is over.
 */
void
wf_child_signal_at_commit(void)
{
	wf_register_callback();
	pending_child = true;
	pending_wake = true;
}

/*
 * The current transaction created the extension: start its executors, and
 * warn now if they will not be able to start.
 */
void
wf_launch_at_commit(void)
{
	wf_register_callback();
	pending_launch = true;
	wf_check_launch();
}

/* ask the launcher to probe a database once the current transaction commits */
void
wf_probe_at_commit(Oid dboid)
{
	wf_register_callback();
	if (nprobe_dbs < WF_MAX_PENDING_DBS)
		probe_dbs[nprobe_dbs++] = dboid;
	else
		wf_request_launch(dboid);	/* early; the rescan covers the rest */
}

/*
 * A database's executors were paused (wf_pause_database()): resume them
 * when the current transaction ends, however it ends.
 */
void
wf_resume_at_end(Oid dboid)
{
	wf_register_callback();
	for (int i = 0; i < nresume_dbs; i++)
		if (resume_dbs[i] == dboid)
			return;
	if (nresume_dbs < WF_MAX_PENDING_DBS)
		resume_dbs[nresume_dbs++] = dboid;
	/* else the launcher resumes them when this backend exits */
}

/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  Shared state between the launcher, the executors and the backends.
 *
 * A table of served databases (workflows.max_databases entries), each
 * owning workflows.max_workers executor slots; the launcher's identity; a
 * queue of databases to look at again; the probes' answers; the backends
 * blocked in workflows.wait(); and a counter bumped after each commit that
 * sent an event.
 *
 * Locking is split by who contends: each slot has a spinlock (its executor
 * reports its progress there, committing backends read its latch there),
 * the launch queue has a spinlock, the waiters have an LWLock of their own,
 * and the database table has the main LWLock, which only the launcher, DBA
 * commands and the status functions take.  Nothing a committing create() or
 * send_event() does, and nothing an executor does per step, takes an
 * LWLock.
 *
 * IDENTIFICATION
 *	  src/shmem.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include <signal.h>

#include "common/hashfn.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/shmem.h"

WfShared   *wf_shared = NULL;
WfDatabase *wf_databases = NULL;
WfWorkerSlot *wf_slots = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* how long a DBA command waits for the executors it stopped to be gone */
#define WF_PAUSE_WAIT_MS	10000

static Size
wf_shmem_size(void)
{
	Size		size = MAXALIGN(sizeof(WfShared));

	size = add_size(size, MAXALIGN(mul_size(wf_max_databases, sizeof(WfDatabase))));
	size = add_size(size, mul_size(mul_size(wf_max_databases, wf_max_workers),
								   sizeof(WfWorkerSlot)));
	return size;
}

static void
wf_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(wf_shmem_size());
	RequestNamedLWLockTranche("workflows", 2);
}

static void
wf_shmem_startup(void)
{
	bool		found;
	char	   *base;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	base = ShmemInitStruct("workflows", wf_shmem_size(), &found);
	wf_shared = (WfShared *) base;
	wf_databases = (WfDatabase *) (base + MAXALIGN(sizeof(WfShared)));
	wf_slots = (WfWorkerSlot *) (base + MAXALIGN(sizeof(WfShared)) +
								 MAXALIGN(sizeof(WfDatabase) * wf_max_databases));
	if (!found)
	{
		LWLockPadded *locks = GetNamedLWLockTranche("workflows");

		memset(base, 0, wf_shmem_size());
		wf_shared->lock = &locks[0].lock;
		wf_shared->waiters_lock = &locks[1].lock;
		SpinLockInit(&wf_shared->launch_mutex);
		/* start at 1 so that a new executor (which saw 0) sweeps once */
		pg_atomic_init_u64(&wf_shared->signal_generation, 1);
		pg_atomic_init_u64(&wf_shared->child_generation, 1);
		wf_shared->ndatabases = wf_max_databases;
		wf_shared->nslots = wf_max_databases * wf_max_workers;
		for (int i = 0; i < wf_shared->nslots; i++)
			SpinLockInit(&wf_slots[i].mutex);
		for (int i = 0; i < WF_MAX_PROBES; i++)
			SpinLockInit(&wf_shared->probes[i].mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

void
wf_shmem_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = wf_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = wf_shmem_startup;
}

/*
 * The entry of a served database, or -1.  Reads dboid without a lock (see
 * WfDatabase): the answer may be stale by the time the caller uses it, which
 * the callers tolerate.  The last answer is remembered, since a backend asks
 * about its own database nearly every time.
 */
int
wf_find_database(Oid dboid)
{
	static int	hint = 0;
	int			i;

	if (wf_shared == NULL || !OidIsValid(dboid))
		return -1;
	if (hint < wf_shared->ndatabases &&
		((volatile WfDatabase *) &wf_databases[hint])->dboid == dboid)
		return hint;
	for (i = 0; i < wf_shared->ndatabases; i++)
	{
		if (((volatile WfDatabase *) &wf_databases[i])->dboid == dboid)
		{
			hint = i;
			return i;
		}
	}
	return -1;
}

/*
 * Set the latch of every running executor of a database.  Called after
 * commit by wakeup.c, so whatever the committed transaction made runnable is
 * visible to the executors when they wake.  Takes only the spinlocks of that
 * database's slots.
 */
void
wf_wake_database(Oid dboid)
{
	int			d = wf_find_database(dboid);
	int			k;

	if (d < 0)
		return;
	for (k = 0; k < wf_max_workers; k++)
	{
		WfWorkerSlot *slot = &wf_slots[d * wf_max_workers + k];
		PGPROC	   *proc;

		SpinLockAcquire(&slot->mutex);
		proc = (slot->dboid == dboid) ? slot->proc : NULL;
		SpinLockRelease(&slot->mutex);
		if (proc != NULL)
			SetLatch(&proc->procLatch);
	}
}

/*
 * Waking executors for new instances.  A commit that made n instances
 * runnable (create(), create_batch()) wakes at most n executors, and only
 * idle ones: waking every executor for one instance made all but one of
 * them look for work, find none and plan their sleep again, a transaction
 * each, on the cores the one that found it needed (a thundering herd).
 *
 * No wake-up is lost.  An executor marks itself idle before every claim
 * that looks for new work (wf_executor_looking()), and a committer reads
 * the marks after its commit is visible.  So either the claim's snapshot
 * sees the commit, or the committer sees the mark and sets the latch; an
 * executor whose mark another committer took meanwhile has its latch set,
 * and claims again before it sleeps.  An executor that is busy (no mark)
 * claims again after its instance anyway.  One woken for new work that
 * finds other work first hands the wake-up on to another idle executor
 * (wf_executor_found_work()), so that a new instance is not left waiting
 * behind a batch while an executor sleeps.
 */
void
wf_wake_idle(Oid dboid, int n)
{
	static int	next = 0;
	int			d = wf_find_database(dboid);

	if (d < 0)
		return;
	next = (next + 1) % wf_max_workers;
	for (int i = 0; i < wf_max_workers && n > 0; i++)
	{
		WfWorkerSlot *slot = &wf_slots[d * wf_max_workers + (next + i) % wf_max_workers];
		PGPROC	   *proc = NULL;

		SpinLockAcquire(&slot->mutex);
		if (slot->dboid == dboid && slot->proc != NULL && slot->idle)
		{
			proc = slot->proc;
			slot->idle = false;
			slot->woken = true;
		}
		SpinLockRelease(&slot->mutex);
		if (proc != NULL)
		{
			SetLatch(&proc->procLatch);
			n--;
		}
	}
}

/* an executor is about to look for new work (see wf_wake_idle()) */
void
wf_executor_looking(WfWorkerSlot *slot)
{
	SpinLockAcquire(&slot->mutex);
	slot->idle = true;
	slot->woken = false;
	SpinLockRelease(&slot->mutex);
}

/*
 * An executor found work: it is no longer idle.  Returns true if it was
 * woken for new work meanwhile, which it must hand on.
 */
bool
wf_executor_found_work(WfWorkerSlot *slot)
{
	bool		woken;

	SpinLockAcquire(&slot->mutex);
	woken = slot->woken;
	slot->idle = false;
	slot->woken = false;
	SpinLockRelease(&slot->mutex);
	return woken;
}

static void
wake_launcher(void)
{
	PGPROC	   *launcher;

	LWLockAcquire(wf_shared->lock, LW_SHARED);
	launcher = wf_shared->launcher_proc;
	LWLockRelease(wf_shared->lock);
	if (launcher != NULL)
		SetLatch(&launcher->procLatch);
}

/*
 * Ask the launcher to look at a database again: its extension was just
 * created, it was just created, or it was just dropped.  A request that
 * does not fit in the queue is not lost: the overflow makes the launcher
 * look at every database.
 */
void
wf_request_launch(Oid dboid)
{
	if (wf_shared == NULL)
		return;
	SpinLockAcquire(&wf_shared->launch_mutex);
	if (wf_shared->nlaunch < WF_MAX_LAUNCH)
		wf_shared->launch[wf_shared->nlaunch++] = dboid;
	else
		wf_shared->launch_overflow = true;
	SpinLockRelease(&wf_shared->launch_mutex);
	wake_launcher();
}

/* a consistent copy of slot n, for the executors view */
void
wf_read_slot(int n, WfWorkerSlot *copy)
{
	WfWorkerSlot *slot = &wf_slots[n];

	SpinLockAcquire(&slot->mutex);
	memcpy(copy, slot, sizeof(WfWorkerSlot));
	SpinLockRelease(&slot->mutex);
}

/*
 * Does executor "index" of a database have a live process that was started
 * with this generation of its slot?  (An orphan of an earlier launcher does
 * not count: its slot went to a successor.)
 */
bool
wf_executor_running(Oid dboid, int index, uint32 generation)
{
	int			d = wf_find_database(dboid);
	WfWorkerSlot copy;

	if (d < 0 || index < 0 || index >= wf_max_workers)
		return false;
	wf_read_slot(d * wf_max_workers + index, &copy);
	return copy.dboid == dboid && copy.pid != 0 && copy.generation == generation;
}

/*
 * Stop a database's executors for a command that needs the database to
 * itself (CREATE DATABASE ... TEMPLATE, ALTER DATABASE RENAME / SET
 * TABLESPACE, DROP DATABASE), and keep them stopped until
 * wf_resume_database() or until this backend exits (the launcher checks
 * that the pausing process is alive).  Waits until the launcher reports them
 * gone, at most WF_PAUSE_WAIT_MS; PostgreSQL's own check that nobody else is
 * connected comes after this and waits too.  The caller has checked that
 * the command is allowed.  Without a launcher, the executors are signalled
 * directly.
 */
void
wf_pause_database(Oid dboid)
{
	int			d;
	bool		have_launcher;
	int			waited;

	if (wf_shared == NULL)
		return;
	LWLockAcquire(wf_shared->lock, LW_EXCLUSIVE);
	d = wf_find_database(dboid);
	if (d >= 0 && wf_databases[d].dboid == dboid)
	{
		int			k;

		for (k = 0; k < WF_MAX_PAUSERS; k++)
			if (wf_databases[d].paused_by[k] == 0 ||
				wf_databases[d].paused_by[k] == MyProcPid)
			{
				wf_databases[d].paused_by[k] = MyProcPid;
				break;
			}
		wf_databases[d].stopped = false;
	}
	else
		d = -1;
	have_launcher = (wf_shared->launcher_proc != NULL);
	LWLockRelease(wf_shared->lock);
	if (d < 0)
		return;
	wf_resume_at_end(dboid);

	if (!have_launcher)
	{
		for (int k = 0; k < wf_max_workers; k++)
		{
			WfWorkerSlot *slot = &wf_slots[d * wf_max_workers + k];
			pid_t		pid;

			SpinLockAcquire(&slot->mutex);
			pid = (slot->dboid == dboid) ? slot->pid : 0;
			SpinLockRelease(&slot->mutex);
			if (pid != 0)
				kill(pid, SIGTERM);
		}
		return;
	}

	wake_launcher();
	for (waited = 0; waited < WF_PAUSE_WAIT_MS; waited += 10)
	{
		bool		stopped;

		LWLockAcquire(wf_shared->lock, LW_SHARED);
		stopped = wf_databases[d].dboid != dboid || wf_databases[d].stopped;
		LWLockRelease(wf_shared->lock);
		if (stopped)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* undo wf_pause_database(): the launcher may start the executors again */
void
wf_resume_database(Oid dboid)
{
	int			d;
	bool		changed = false;

	if (wf_shared == NULL)
		return;
	LWLockAcquire(wf_shared->lock, LW_EXCLUSIVE);
	d = wf_find_database(dboid);
	if (d >= 0 && wf_databases[d].dboid == dboid)
	{
		for (int k = 0; k < WF_MAX_PAUSERS; k++)
			if (wf_databases[d].paused_by[k] == MyProcPid)
			{
				wf_databases[d].paused_by[k] = 0;
				changed = true;
			}
	}
	LWLockRelease(wf_shared->lock);
	if (changed)
		wake_launcher();
}

/*
 * How many background worker processes could start now.  Workers
 * registered but not started yet are not counted, so this is an upper
 * bound, good enough for a warning.
 */
int
wf_free_worker_processes(void)
{
	return Max(0, max_worker_processes - wf_count_busy_bgworker_procs());
}

uint32
wf_id_hash(const char *id)
{
	return hash_bytes((const unsigned char *) id, strlen(id));
}

/*
 * Register this backend as waiting for an instance.  Returns the waiter's
 * number, or -1 if every slot is taken (the caller then polls).
 */
int
wf_add_waiter(uint32 idhash)
{
	int			i;
	int			n = -1;

	LWLockAcquire(wf_shared->waiters_lock, LW_EXCLUSIVE);
	for (i = 0; i < WF_MAX_WAITERS; i++)
	{
		if (wf_shared->waiters[i].proc == NULL)
		{
			wf_shared->waiters[i].proc = MyProc;
			wf_shared->waiters[i].idhash = idhash;
			n = i;
			break;
		}
	}
	LWLockRelease(wf_shared->waiters_lock);
	return n;
}

void
wf_remove_waiter(int n)
{
	if (n < 0)
		return;
	LWLockAcquire(wf_shared->waiters_lock, LW_EXCLUSIVE);
	wf_shared->waiters[n].proc = NULL;
	LWLockRelease(wf_shared->waiters_lock);
}

/* an instance reached a final state: wake whoever waits for it (0: all) */
void
wf_wake_waiters(uint32 idhash)
{
	int			i;

	LWLockAcquire(wf_shared->waiters_lock, LW_SHARED);
	for (i = 0; i < WF_MAX_WAITERS; i++)
		if (wf_shared->waiters[i].proc != NULL &&
			(idhash == 0 || wf_shared->waiters[i].idhash == idhash))
			SetLatch(&wf_shared->waiters[i].proc->procLatch);
	LWLockRelease(wf_shared->waiters_lock);
}

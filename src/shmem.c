/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  Shared state between the launcher, the executors and the backends.
 *
 * A fixed array of executor slots (workflows.max_databases times
 * workflows.max_workers), the launcher's identity, a queue of databases
 * whose extension was just created, and a counter bumped after each commit
 * that sent an event.  Backends use it to wake the executors of their
 * database at commit (see wakeup.c); nothing here is ever waited on.
 *
 * IDENTIFICATION
 *	  src/shmem.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

WfShared   *wf_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static Size
wf_shmem_size(void)
{
	Size		size = offsetof(WfShared, slots);

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
	RequestNamedLWLockTranche("workflows", 1);
}

static void
wf_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	wf_shared = ShmemInitStruct("workflows", wf_shmem_size(), &found);
	if (!found)
	{
		memset(wf_shared, 0, wf_shmem_size());
		wf_shared->lock = &(GetNamedLWLockTranche("workflows"))->lock;
		/* start at 1 so that a new executor (which saw 0) sweeps once */
		pg_atomic_init_u64(&wf_shared->signal_generation, 1);
		wf_shared->nslots = wf_max_databases * wf_max_workers;
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
 * Set the latch of every running executor of a database.  Called after
 * commit by wakeup.c, so whatever the committed transaction made runnable is
 * visible to the executors when they wake.
 */
void
wf_wake_database(Oid dboid)
{
	int			i;

	if (wf_shared == NULL)
		return;
	LWLockAcquire(wf_shared->lock, LW_SHARED);
	for (i = 0; i < wf_shared->nslots; i++)
	{
		WfWorkerSlot *slot = &wf_shared->slots[i];

		if (slot->dboid == dboid && slot->proc != NULL)
			SetLatch(&slot->proc->procLatch);
	}
	LWLockRelease(wf_shared->lock);
}

/*
 * Ask the launcher to start the executors of a database (its extension was
 * just created).  The launcher ignores a database it already serves.
 */
void
wf_request_launch(Oid dboid)
{
	PGPROC	   *launcher = NULL;

	if (wf_shared == NULL)
		return;
	LWLockAcquire(wf_shared->lock, LW_EXCLUSIVE);
	if (wf_shared->nlaunch < (int) lengthof(wf_shared->launch))
		wf_shared->launch[wf_shared->nlaunch++] = dboid;
	launcher = wf_shared->launcher_proc;
	LWLockRelease(wf_shared->lock);

	if (launcher != NULL)
		SetLatch(&launcher->procLatch);
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

	LWLockAcquire(wf_shared->lock, LW_EXCLUSIVE);
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
	LWLockRelease(wf_shared->lock);
	return n;
}

void
wf_remove_waiter(int n)
{
	if (n < 0)
		return;
	LWLockAcquire(wf_shared->lock, LW_EXCLUSIVE);
	wf_shared->waiters[n].proc = NULL;
	LWLockRelease(wf_shared->lock);
}

/* an instance reached a final state: wake whoever waits for it (0: all) */
void
wf_wake_waiters(uint32 idhash)
{
	int			i;

	LWLockAcquire(wf_shared->lock, LW_SHARED);
	for (i = 0; i < WF_MAX_WAITERS; i++)
		if (wf_shared->waiters[i].proc != NULL &&
			(idhash == 0 || wf_shared->waiters[i].idhash == idhash))
			SetLatch(&wf_shared->waiters[i].proc->procLatch);
	LWLockRelease(wf_shared->lock);
}

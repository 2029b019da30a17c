/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  Start, watch and restart the executors of every database that has
 *	  the extension.
 *
 * The launcher is a static background worker bound to no database (it reads
 * only the shared catalog pg_database).  It starts only once recovery has
 * finished, so nothing runs on a standby, and it starts after a promotion.
 *
 * For each connectable database it starts executor 0 as a probe: the probe
 * checks whether the extension exists there and either reports itself ready
 * (the launcher then starts the other executors) or exits saying the
 * extension is absent.  CREATE EXTENSION asks for a new probe at commit
 * (workflows._launch()), DROP EXTENSION is noticed by the executors, which
 * exit saying so.  Any other exit of an executor -- an error, SIGTERM,
 * pg_terminate_backend -- is answered by a restart one second later, so a
 * failing executor cannot spin.
 *
 * IDENTIFICATION
 *	  src/launcher.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include <signal.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

/* how long the launcher waits before restarting an executor that exited */
#define WF_RESTART_DELAY_MS		1000

typedef enum WfDbState
{
	WF_DB_PROBE,				/* executor 0 checks for the extension */
	WF_DB_ACTIVE,				/* the extension exists: run all executors */
	WF_DB_ABSENT				/* no extension: nothing runs */
} WfDbState;

typedef struct WfExecutor
{
	BackgroundWorkerHandle *handle;
	int			slotno;
	TimestampTz restart_at;
} WfExecutor;

typedef struct WfDb
{
	Oid			dboid;
	WfDbState	state;
	bool		reprobe;		/* extension created while a probe ran */
	WfExecutor	exec[WF_MAX_WORKERS_LIMIT];
} WfDb;

static WfDb *dbs;
static int	ndbs;

void
wf_register_launcher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "workflows");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "wf_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "workflows launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "workflows launcher");
	RegisterBackgroundWorker(&worker);
}

static WfDb *
find_db(Oid dboid, bool create)
{
	int			i;

	for (i = 0; i < ndbs; i++)
		if (dbs[i].dboid == dboid)
			return &dbs[i];
	if (!create)
		return NULL;
	if (ndbs >= wf_max_databases)
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("workflows cannot serve database %u", dboid),
				 errdetail("workflows.max_databases (%d) databases are already served.",
						   wf_max_databases)));
		return NULL;
	}
	memset(&dbs[ndbs], 0, sizeof(WfDb));
	dbs[ndbs].dboid = dboid;
	dbs[ndbs].state = WF_DB_PROBE;
	for (i = 0; i < WF_MAX_WORKERS_LIMIT; i++)
		dbs[ndbs].exec[i].slotno = -1;
	return &dbs[ndbs++];
}

/*
 * Start executor "index" of a database: take a shared slot, then register a
 * dynamic worker that reports to us.  When no worker can be registered now
 * (max_worker_processes is used up) try again later.
 */
static void
start_executor(WfDb *db, int index)
{
	WfExecutor *ex = &db->exec[index];
	BackgroundWorker worker;
	int			slotno = -1;
	int			i;

	LWLockAcquire(wf_shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < wf_shared->nslots; i++)
	{
		WfWorkerSlot *slot = &wf_shared->slots[i];

		if (slot->dboid == InvalidOid)
		{
			memset(slot, 0, sizeof(WfWorkerSlot));
			slot->dboid = db->dboid;
			slot->index = index;
			slotno = i;
			break;
		}
	}
	LWLockRelease(wf_shared->lock);

	if (slotno < 0)
	{
		ex->restart_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													 WF_RESTART_DELAY_MS);
		return;
	}

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "workflows");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "wf_executor_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "workflows executor %d for database %u",
			 index, db->dboid);
	snprintf(worker.bgw_type, BGW_MAXLEN, "workflows executor");
	worker.bgw_main_arg = Int32GetDatum(slotno);
	/* the executor's identity travels with it, not only in the slot */
	memcpy(worker.bgw_extra, &db->dboid, sizeof(Oid));
	memcpy(worker.bgw_extra + sizeof(Oid), &index, sizeof(int));
	worker.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&worker, &ex->handle))
	{
		LWLockAcquire(wf_shared->lock, LW_EXCLUSIVE);
		wf_shared->slots[slotno].dboid = InvalidOid;
		LWLockRelease(wf_shared->lock);
		ex->handle = NULL;
		ex->restart_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													 WF_RESTART_DELAY_MS);
		ereport(LOG,
				(errmsg("workflows could not start an executor for database %u", db->dboid),
				 errhint("Raise max_worker_processes.")));
		return;
	}
	ex->slotno = slotno;
}

static bool
database_exists(Oid dboid)
{
	bool		exists;

	StartTransactionCommand();
	exists = SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(dboid));
	CommitTransactionCommand();
	return exists;
}

/*
 * Look at one executor: free the slot of one that stopped and decide whether
 * to start it again.  Returns the time of its next restart, or 0.
 */
static TimestampTz
tend_executor(WfDb *db, int index, TimestampTz now)
{
	WfExecutor *ex = &db->exec[index];

	if (ex->handle != NULL)
	{
		pid_t		pid;
		WfWorkerSlot *slot = &wf_shared->slots[ex->slotno];
		bool		absent;

		if (GetBackgroundWorkerPid(ex->handle, &pid) != BGWH_STOPPED)
		{
			if (db->state == WF_DB_PROBE && index == 0 && slot->ready)
				db->state = WF_DB_ACTIVE;
			return 0;
		}

		/* stopped: learn why, then free its slot */
		LWLockAcquire(wf_shared->lock, LW_EXCLUSIVE);
		absent = slot->extension_absent;
		slot->dboid = InvalidOid;
		LWLockRelease(wf_shared->lock);

		ex->restart_at = TimestampTzPlusMilliseconds(now, WF_RESTART_DELAY_MS);
		/*
		 * Executor 0 alone decides whether the database has the extension:
		 * the others may report an absence that a CREATE EXTENSION handled
		 * in the same pass has already made stale.
		 */
		if (index == 0 && (absent || !database_exists(db->dboid)))
		{
			/* a probe may have looked before CREATE EXTENSION committed */
			db->state = db->reprobe ? WF_DB_PROBE : WF_DB_ABSENT;
			if (db->reprobe)
				ex->restart_at = now;
			db->reprobe = false;
		}
		pfree(ex->handle);
		ex->handle = NULL;
		ex->slotno = -1;
	}

	if (db->state == WF_DB_ABSENT)
		return 0;
	if (db->state == WF_DB_PROBE && index > 0)
		return 0;
	if (ex->restart_at > now)
		return ex->restart_at;
	start_executor(db, index);
	return ex->handle ? 0 : ex->restart_at;
}

/* every database that accepts connections and is not a template */
static void
add_all_databases(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (db->datallowconn && !db->datistemplate)
			(void) find_db(db->oid, true);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
}

/*
 * A launcher that was restarted (after an error or pg_terminate_backend)
 * cannot adopt the executors of its predecessor, which it has no handles
 * for: stop them, and start afresh.  Their transactions roll back, so no
 * step is lost or done twice.
 */
static void
stop_orphans(void)
{
	int			tries;

	for (tries = 0; tries < 100; tries++)
	{
		int			alive = 0;
		int			i;

		LWLockAcquire(wf_shared->lock, LW_EXCLUSIVE);
		for (i = 0; i < wf_shared->nslots; i++)
		{
			WfWorkerSlot *slot = &wf_shared->slots[i];

			if (slot->dboid == InvalidOid)
				continue;
			if (slot->pid != 0)
			{
				if (tries == 0)
					kill(slot->pid, SIGTERM);
				alive++;
			}
			else if (tries > 10)
				slot->dboid = InvalidOid;	/* registered, never started */
		}
		LWLockRelease(wf_shared->lock);
		if (alive == 0 && tries > 10)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 100L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	LWLockAcquire(wf_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < wf_shared->nslots; i++)
		wf_shared->slots[i].dboid = InvalidOid;
	LWLockRelease(wf_shared->lock);
}

static void
launcher_detach(int code, Datum arg)
{
	LWLockAcquire(wf_shared->lock, LW_EXCLUSIVE);
	wf_shared->launcher_pid = 0;
	wf_shared->launcher_proc = NULL;
	LWLockRelease(wf_shared->lock);
}

void
wf_launcher_main(Datum arg)
{
	bool		have_orphans = false;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("workflows launcher");

	dbs = MemoryContextAllocZero(TopMemoryContext, sizeof(WfDb) * wf_max_databases);
	ndbs = 0;

	LWLockAcquire(wf_shared->lock, LW_EXCLUSIVE);
	wf_shared->launcher_pid = MyProcPid;
	wf_shared->launcher_proc = MyProc;
	/* requests made before we started are covered by the full scan below */
	wf_shared->nlaunch = 0;
	for (int i = 0; i < wf_shared->nslots; i++)
		if (wf_shared->slots[i].dboid != InvalidOid)
			have_orphans = true;
	LWLockRelease(wf_shared->lock);
	before_shmem_exit(launcher_detach, 0);

	if (have_orphans)
		stop_orphans();

	add_all_databases();
	ereport(LOG, (errmsg("workflows launcher started")));

	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();
		TimestampTz next = 0;
		Oid			launch[lengthof(wf_shared->launch)];
		int			nlaunch;
		long		timeout;
		int			i,
					j;

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		LWLockAcquire(wf_shared->lock, LW_EXCLUSIVE);
		nlaunch = wf_shared->nlaunch;
		memcpy(launch, wf_shared->launch, sizeof(Oid) * nlaunch);
		wf_shared->nlaunch = 0;
		LWLockRelease(wf_shared->lock);

		for (i = 0; i < nlaunch; i++)
		{
			WfDb	   *db = find_db(launch[i], true);

			if (db == NULL)
				continue;
			/* a probe already running may have looked too early */
			db->reprobe = (db->exec[0].handle != NULL);
			if (db->state == WF_DB_ABSENT)
			{
				db->state = WF_DB_PROBE;
				for (j = 0; j < WF_MAX_WORKERS_LIMIT; j++)
					db->exec[j].restart_at = 0;
			}
		}

		for (i = 0; i < ndbs; i++)
		{
			WfDb	   *db = &dbs[i];

			for (j = 0; j < wf_max_workers; j++)
			{
				TimestampTz t = tend_executor(db, j, now);

				if (t != 0 && (next == 0 || t < next))
					next = t;
			}
		}

		/* forget databases where nothing runs any more */
		for (i = 0; i < ndbs;)
		{
			bool		idle = dbs[i].state == WF_DB_ABSENT;

			for (j = 0; j < wf_max_workers && idle; j++)
				if (dbs[i].exec[j].handle != NULL)
					idle = false;
			if (idle)
				dbs[i] = dbs[--ndbs];
			else
				i++;
		}

		if (next == 0)
			timeout = -1;
		else
			timeout = Max(1, TimestampDifferenceMilliseconds(now, next));

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | (timeout >= 0 ? WL_TIMEOUT : 0),
						 timeout, PG_WAIT_EXTENSION);
	}
}

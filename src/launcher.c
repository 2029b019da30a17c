/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  Find the databases that have the extension; start, watch, pause and
 *	  restart their executors.
 *
 * The launcher is a static background worker bound to no database (it reads
 * only the shared catalog pg_database).  It starts only once recovery has
 * finished, so nothing runs on a standby, and it starts after a promotion.
 *
 * Whether a database has the extension can only be seen from inside it, so
 * the launcher asks a short-lived probe worker (at most WF_MAX_PROBES at a
 * time).  Probes hold no executor slot: only a database where a probe found
 * the extension gets an entry in the shared database table and its
 * workflows.max_workers executor slots, so databases without the extension
 * can never crowd out one that has it.  A database with the extension that
 * finds the table full waits for an entry (it is "stranded", which
 * workflows.executor_status() and the log say) and gets the first one
 * freed.
 *
 * Databases are probed at start, when the launch queue says so (CREATE
 * EXTENSION, CREATE DATABASE, DROP DATABASE, at commit), after the queue
 * overflowed (then every database is probed again, so no request is lost),
 * and when a rescan of pg_database once a minute finds a database not seen
 * before.  Executors that exit because the extension is gone make the
 * launcher probe again (the extension may have been created again since);
 * any other exit is answered by a restart one second later, so a failing
 * executor cannot spin.  A backend running CREATE DATABASE ... TEMPLATE,
 * ALTER DATABASE or DROP DATABASE on a database pauses it (utility.c): the
 * launcher stops its executors and starts them again when the pause ends
 * or the pausing backend is gone.
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
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

/* how long the launcher waits before restarting an executor that exited */
#define WF_RESTART_DELAY_MS		1000
/* how often pg_database is scanned for databases not seen before */
#define WF_RESCAN_INTERVAL_MS	60000
/* at most one log line per database and this interval about failed starts */
#define WF_LOG_INTERVAL_MS		60000

typedef enum WfDbState
{
	WF_DB_UNKNOWN,				/* to be probed */
	WF_DB_PROBING,				/* a probe is looking */
	WF_DB_ABSENT,				/* no extension: nothing runs */
	WF_DB_PRESENT,				/* the extension exists: run its executors */
	WF_DB_GONE					/* dropped: stop everything, then forget it */
} WfDbState;

typedef struct WfExecutor
{
	BackgroundWorkerHandle *handle;
	uint32		generation;		/* of its slot, as we assigned it */
	TimestampTz restart_at;
} WfExecutor;

/* what the launcher knows about one database (its private memory) */
typedef struct WfDb
{
	Oid			dboid;
	char		name[NAMEDATALEN];
	WfDbState	state;
	bool		reprobe;		/* asked again while a probe was looking */
	int			probe;			/* probe slot in use, or -1 */
	BackgroundWorkerHandle *probe_handle;
	TimestampTz probe_at;		/* earliest time of the next probe */
	int			entry;			/* shared database entry, or -1 */
	bool		paused;			/* a DBA command needs it to itself */
	bool		start_failed;	/* the last worker registration failed */
	int64		failed_starts;
	TimestampTz logged_at;		/* last log line about failed starts */
	int			unlogged;		/* failed starts since then */
	TimestampTz stranded_logged_at; /* last "cannot serve" log line */
	WfExecutor	exec[WF_MAX_WORKERS_LIMIT];
} WfDb;

static WfDb *dbs;
static int	ndbs;
static int	maxdbs;
static Oid	probe_owner[WF_MAX_PROBES];

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

/*
 * Does the database exist?  Fills in its name when it does, and whether it
 * accepts connections.  Starts and ends a transaction of its own (the
 * launcher is in none between passes).
 */
static bool
lookup_database_ext(Oid dboid, char *name, bool *allowconn)
{
	HeapTuple	tup;
	bool		exists = false;

	StartTransactionCommand();
	tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dboid));
	if (HeapTupleIsValid(tup))
	{
		Form_pg_database form = (Form_pg_database) GETSTRUCT(tup);

		if (name != NULL)
			strlcpy(name, NameStr(form->datname), NAMEDATALEN);
		if (allowconn != NULL)
			*allowconn = form->datallowconn;
		ReleaseSysCache(tup);
		exists = true;
	}
	CommitTransactionCommand();
	return exists;
}

static bool
lookup_database(Oid dboid, char *name)
{
	return lookup_database_ext(dboid, name, NULL);
}

static WfDb *
find_db(Oid dboid)
{
	for (int i = 0; i < ndbs; i++)
		if (dbs[i].dboid == dboid)
			return &dbs[i];
	return NULL;
}

/* remember a database, to be probed; name may be NULL (looked up) */
static WfDb *
add_db(Oid dboid, const char *name)
{
	WfDb	   *db;

	if (ndbs == maxdbs)
	{
		maxdbs *= 2;
		dbs = repalloc(dbs, sizeof(WfDb) * maxdbs);
	}
	db = &dbs[ndbs++];
	memset(db, 0, sizeof(WfDb));
	db->dboid = dboid;
	db->state = WF_DB_UNKNOWN;
	db->probe = -1;
	db->entry = -1;
	if (name != NULL)
		strlcpy(db->name, name, NAMEDATALEN);
	else if (!lookup_database(dboid, db->name))
		snprintf(db->name, NAMEDATALEN, "%u", dboid);
	return db;
}

/*
 * A worker could not be registered (max_worker_processes is used up).
 * Counted for executor_status(), logged at most once a minute per database
 * (every second would bury the log, and the count says it goes on).  A
 * probe is the worker that would look for the extension in the database.
 */
static void
note_start_failure(WfDb *db, bool probe, TimestampTz now)
{
	db->failed_starts++;
	db->start_failed = true;
	if (db->logged_at != 0 &&
		!TimestampDifferenceExceeds(db->logged_at, now, WF_LOG_INTERVAL_MS))
	{
		db->unlogged++;
		return;
	}
	ereport(LOG,
			(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
			 probe ?
			 errmsg("workflows could not start a probe for database \"%s\"", db->name) :
			 errmsg("workflows could not start an executor for database \"%s\"", db->name),
			 db->unlogged > 0 ?
			 errdetail("%d more attempts failed since the last message; workflow instances of this database wait until an executor runs.",
					   db->unlogged) :
			 errdetail("Workflow instances of this database wait until an executor runs; the launcher retries every second."),
			 errhint("Raise max_worker_processes (now %d).", max_worker_processes)));
	db->logged_at = now;
	db->unlogged = 0;
}

static bool
register_worker(WfDb *db, const char *function, const char *name, int arg,
				uint32 generation, int index, BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "workflows");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker.bgw_name, BGW_MAXLEN, "%s", name);
	snprintf(worker.bgw_type, BGW_MAXLEN, "%s",
			 index < 0 ? "workflows probe" : "workflows executor");
	worker.bgw_main_arg = Int32GetDatum(arg);
	/* the worker's identity travels with it, not only in shared memory */
	memcpy(worker.bgw_extra, &db->dboid, sizeof(Oid));
	memcpy(worker.bgw_extra + sizeof(Oid), &index, sizeof(int));
	memcpy(worker.bgw_extra + sizeof(Oid) + sizeof(int), &generation, sizeof(uint32));
	worker.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&worker, handle))
	{
		*handle = NULL;
		return false;
	}
	return true;
}

/* ask a probe worker whether the database has the extension */
static void
start_probe(WfDb *db, TimestampTz now)
{
	char		name[BGW_MAXLEN];
	int			p;

	for (p = 0; p < WF_MAX_PROBES; p++)
		if (!OidIsValid(probe_owner[p]))
			break;
	if (p == WF_MAX_PROBES)
		return;					/* a finishing probe sets our latch */

	SpinLockAcquire(&wf_shared->probes[p].mutex);
	wf_shared->probes[p].dboid = db->dboid;
	wf_shared->probes[p].result = WF_PROBE_PENDING;
	SpinLockRelease(&wf_shared->probes[p].mutex);

	snprintf(name, sizeof(name), "workflows probe for database %s", db->name);
	if (!register_worker(db, "wf_probe_main", name, p, 0, -1, &db->probe_handle))
	{
		note_start_failure(db, true, now);
		db->probe_at = TimestampTzPlusMilliseconds(now, WF_RESTART_DELAY_MS);
		return;
	}
	db->start_failed = false;
	probe_owner[p] = db->dboid;
	db->probe = p;
	db->state = WF_DB_PROBING;
	db->reprobe = false;
}

/* a probe stopped: take its answer */
static void
finish_probe(WfDb *db, TimestampTz now)
{
	int			result;
	bool		allowconn = true;

	SpinLockAcquire(&wf_shared->probes[db->probe].mutex);
	result = wf_shared->probes[db->probe].result;
	wf_shared->probes[db->probe].dboid = InvalidOid;
	SpinLockRelease(&wf_shared->probes[db->probe].mutex);
	probe_owner[db->probe] = InvalidOid;
	db->probe = -1;
	pfree(db->probe_handle);
	db->probe_handle = NULL;

	if (db->reprobe)
	{
		/* it may have looked before the CREATE EXTENSION committed */
		db->state = WF_DB_UNKNOWN;
		db->probe_at = now;
	}
	else if (result == WF_PROBE_PRESENT)
	{
		db->state = WF_DB_PRESENT;
		for (int k = 0; k < WF_MAX_WORKERS_LIMIT; k++)
			db->exec[k].restart_at = 0;
	}
	else if (result == WF_PROBE_ABSENT)
		db->state = WF_DB_ABSENT;
	else if (!lookup_database_ext(db->dboid, NULL, &allowconn))
		db->state = WF_DB_GONE;
	else if (!allowconn)
		db->state = WF_DB_ABSENT;	/* until a request makes us look again */
	else
	{
		/* it died before answering (say, connections were refused) */
		db->state = WF_DB_UNKNOWN;
		db->probe_at = TimestampTzPlusMilliseconds(now, WF_RESTART_DELAY_MS);
	}
}

/*
 * Take a free entry of the shared database table, or stay stranded.  A
 * stranded database is looked at on every pass of the launcher (any
 * wake-up), so the log line saying so is written at most once a minute per
 * database, like those about failed starts.
 */
static void
take_entry(WfDb *db, TimestampTz now)
{
	LWLockAcquire(wf_shared->lock, LW_EXCLUSIVE);
	for (int d = 0; d < wf_shared->ndatabases; d++)
	{
		if (!OidIsValid(wf_databases[d].dboid))
		{
			memset(&wf_databases[d], 0, sizeof(WfDatabase));
			wf_databases[d].dboid = db->dboid;
			db->entry = d;
			break;
		}
	}
	LWLockRelease(wf_shared->lock);
	if (db->entry >= 0)
	{
		db->stranded_logged_at = 0;
		return;
	}
	if (db->stranded_logged_at != 0 &&
		!TimestampDifferenceExceeds(db->stranded_logged_at, now, WF_LOG_INTERVAL_MS))
		return;
	ereport(LOG,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("workflows cannot serve database \"%s\" yet", db->name),
			 errdetail("workflows.max_databases (%d) databases with the extension are already served; this message is repeated at most once a minute while it lasts.",
					   wf_max_databases),
			 errhint("Raise workflows.max_databases, or drop the extension where it is not used.")));
	db->stranded_logged_at = now;
}

static void
free_entry(WfDb *db)
{
	int			d = db->entry;

	LWLockAcquire(wf_shared->lock, LW_EXCLUSIVE);
	wf_databases[d].dboid = InvalidOid;
	LWLockRelease(wf_shared->lock);
	for (int k = 0; k < wf_max_workers; k++)
	{
		WfWorkerSlot *slot = &wf_slots[d * wf_max_workers + k];

		SpinLockAcquire(&slot->mutex);
		slot->dboid = InvalidOid;
		SpinLockRelease(&slot->mutex);
	}
	db->entry = -1;
}

/*
 * Start executor "index" of a database: assign its slot a new generation,
 * then register a dynamic worker that reports to us.  When no worker can be
 * registered now (max_worker_processes is used up) try again later.
 */
static void
start_executor(WfDb *db, int index, TimestampTz now)
{
	WfExecutor *ex = &db->exec[index];
	int			slotno = db->entry * wf_max_workers + index;
	WfWorkerSlot *slot = &wf_slots[slotno];
	char		name[BGW_MAXLEN];
	uint32		generation;

	SpinLockAcquire(&slot->mutex);
	generation = ++slot->generation;
	slot->dboid = db->dboid;
	slot->index = index;
	slot->pid = 0;
	slot->proc = NULL;
	slot->ready = false;
	slot->idle = slot->woken = false;
	slot->extension_absent = false;
	slot->owner = InvalidOid;
	slot->instance[0] = '\0';
	slot->step[0] = '\0';
	slot->since = 0;
	SpinLockRelease(&slot->mutex);

	snprintf(name, sizeof(name), "workflows executor %d for database %s",
			 index, db->name);
	if (!register_worker(db, "wf_executor_main", name, slotno, generation,
						 index, &ex->handle))
	{
		ex->restart_at = TimestampTzPlusMilliseconds(now, WF_RESTART_DELAY_MS);
		note_start_failure(db, false, now);
		return;
	}
	db->start_failed = false;
	ex->generation = generation;
}

/*
 * Look at one executor: notice that it stopped, and why; stop it when it
 * must not run; start it when it should.  Returns the time of its next
 * start, or 0.
 */
static TimestampTz
tend_executor(WfDb *db, int index, bool wanted, TimestampTz now)
{
	WfExecutor *ex = &db->exec[index];

	if (ex->handle != NULL)
	{
		pid_t		pid;
		bool		absent = false;

		if (GetBackgroundWorkerPid(ex->handle, &pid) != BGWH_STOPPED)
		{
			if (!wanted)
				TerminateBackgroundWorker(ex->handle);
			return 0;
		}

		if (db->entry >= 0)
		{
			WfWorkerSlot *slot = &wf_slots[db->entry * wf_max_workers + index];

			SpinLockAcquire(&slot->mutex);
			if (slot->generation == ex->generation)
				absent = slot->extension_absent;
			SpinLockRelease(&slot->mutex);
		}
		pfree(ex->handle);
		ex->handle = NULL;
		ex->restart_at = TimestampTzPlusMilliseconds(now, WF_RESTART_DELAY_MS);

		if (db->state == WF_DB_PRESENT && absent)
		{
			/*
			 * The extension is gone, or was dropped and created again
			 * meanwhile: a probe decides.  The other executors find out by
			 * themselves or are stopped if the probe finds nothing.
			 */
			db->state = WF_DB_UNKNOWN;
			db->probe_at = now;
		}
		else if (db->state == WF_DB_PRESENT && !db->paused &&
				 !lookup_database(db->dboid, NULL))
			db->state = WF_DB_GONE;
		wanted = wanted && db->state == WF_DB_PRESENT;
	}

	if (!wanted)
		return 0;
	if (ex->restart_at > now)
		return ex->restart_at;
	start_executor(db, index, now);
	return ex->handle ? 0 : ex->restart_at;
}

static bool
has_workers(WfDb *db)
{
	if (db->probe_handle != NULL)
		return true;
	for (int k = 0; k < wf_max_workers; k++)
		if (db->exec[k].handle != NULL)
			return true;
	return false;
}

/*
 * One database, one pass.  Returns the time the launcher must look again
 * without being woken, or 0.
 */
static TimestampTz
tend_db(WfDb *db, TimestampTz now)
{
	TimestampTz next = 0;
	bool		wanted;

	if (db->state == WF_DB_PROBING)
	{
		pid_t		pid;

		if (GetBackgroundWorkerPid(db->probe_handle, &pid) == BGWH_STOPPED)
			finish_probe(db, now);
	}
	if (db->state == WF_DB_PRESENT && db->entry < 0)
		take_entry(db, now);

	wanted = db->state == WF_DB_PRESENT && db->entry >= 0 && !db->paused;
	for (int k = 0; k < wf_max_workers; k++)
	{
		TimestampTz t = tend_executor(db, k, wanted, now);

		if (t != 0 && (next == 0 || t < next))
			next = t;
		wanted = wanted && db->state == WF_DB_PRESENT;
	}

	/* after the executors, which may have found the extension gone */
	if (db->state == WF_DB_UNKNOWN)
	{
		if (db->probe_at <= now)
			start_probe(db, now);
		/* else no probe slot was free: a finishing probe sets our latch */
		if (db->state == WF_DB_UNKNOWN && db->probe_at > now &&
			(next == 0 || db->probe_at < next))
			next = db->probe_at;
	}

	/* nothing may run here any more: give the entry back */
	if (db->entry >= 0 && (db->state == WF_DB_ABSENT || db->state == WF_DB_GONE) &&
		!has_workers(db))
		free_entry(db);
	return next;
}

/*
 * Databases not seen before that accept connections and are not templates.
 * With "all", every database not known to have the extension is probed
 * again, for requests lost to the launch queue's overflow.
 */
static void
scan_databases(bool all, TimestampTz now)
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
		Form_pg_database form = (Form_pg_database) GETSTRUCT(tup);
		WfDb	   *db = find_db(form->oid);

		if (db == NULL)
		{
			if (form->datallowconn && !form->datistemplate)
				(void) add_db(form->oid, NameStr(form->datname));
		}
		else if (all && db->state == WF_DB_ABSENT)
		{
			db->state = WF_DB_UNKNOWN;
			db->probe_at = now;
		}
		else if (all && db->state == WF_DB_PROBING)
			db->reprobe = true;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
}

/* the launch queue: databases to look at again */
static bool
take_requests(TimestampTz now)
{
	Oid			launch[WF_MAX_LAUNCH];
	int			nlaunch;
	bool		overflow;

	SpinLockAcquire(&wf_shared->launch_mutex);
	nlaunch = wf_shared->nlaunch;
	memcpy(launch, wf_shared->launch, sizeof(Oid) * nlaunch);
	overflow = wf_shared->launch_overflow;
	wf_shared->nlaunch = 0;
	wf_shared->launch_overflow = false;
	SpinLockRelease(&wf_shared->launch_mutex);

	for (int i = 0; i < nlaunch; i++)
	{
		WfDb	   *db = find_db(launch[i]);

		if (db == NULL)
		{
			if (lookup_database(launch[i], NULL))
				(void) add_db(launch[i], NULL);
			continue;
		}
		switch (db->state)
		{
			case WF_DB_UNKNOWN:
				db->probe_at = now;
				break;
			case WF_DB_PROBING:
				db->reprobe = true;
				break;
			case WF_DB_ABSENT:
				db->state = WF_DB_UNKNOWN;
				db->probe_at = now;
				break;
			case WF_DB_PRESENT:
				/* served already; unless it was just dropped */
				if (!lookup_database(db->dboid, NULL))
					db->state = WF_DB_GONE;
				break;
			case WF_DB_GONE:
				break;
		}
	}
	return overflow;
}

/*
 * Read the pauses of DBA commands (dropping those of backends that are
 * gone) and publish what executor_status() shows: executors running, failed
 * starts, the problem if fewer run than configured, stranded databases.
 */
static void
exchange_state(void)
{
	int			nstranded = 0;

	LWLockAcquire(wf_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < ndbs; i++)
	{
		WfDb	   *db = &dbs[i];
		WfDatabase *e;
		int			running = 0;

		if (db->entry < 0 && nstranded < WF_MAX_STRANDED &&
			(db->state == WF_DB_PRESENT ||
			 (db->state == WF_DB_UNKNOWN && db->start_failed)))
		{
			wf_shared->stranded[nstranded] = db->dboid;
			wf_shared->stranded_why[nstranded] = db->state == WF_DB_PRESENT ? 'f' : 'w';
			wf_shared->stranded_failed[nstranded] = db->failed_starts;
			nstranded++;
		}
		if (db->entry < 0)
			continue;
		e = &wf_databases[db->entry];

		db->paused = false;
		for (int k = 0; k < WF_MAX_PAUSERS; k++)
		{
			if (e->paused_by[k] == 0)
				continue;
			if (kill(e->paused_by[k], 0) != 0 && errno == ESRCH)
				e->paused_by[k] = 0;
			else
				db->paused = true;
		}

		for (int k = 0; k < wf_max_workers; k++)
		{
			WfWorkerSlot *slot = &wf_slots[db->entry * wf_max_workers + k];

			SpinLockAcquire(&slot->mutex);
			if (slot->pid != 0 && slot->generation == db->exec[k].generation)
				running++;
			SpinLockRelease(&slot->mutex);
		}
		e->running = running;
		e->failed_starts = db->failed_starts;
		e->stopped = db->paused && !has_workers(db);
		if (db->paused)
			snprintf(e->problem, WF_PROBLEM_LEN,
					 "stopped while a command needs the database to itself (CREATE DATABASE ... TEMPLATE, ALTER DATABASE, DROP DATABASE)");
		else if (db->state != WF_DB_PRESENT)
			snprintf(e->problem, WF_PROBLEM_LEN, "checking whether the extension still exists");
		else if (db->start_failed)
			snprintf(e->problem, WF_PROBLEM_LEN,
					 "no free background worker process: max_worker_processes (%d) is used up",
					 max_worker_processes);
		else if (running < wf_max_workers)
			snprintf(e->problem, WF_PROBLEM_LEN, "starting");
		else
			e->problem[0] = '\0';
	}
	wf_shared->nstranded = nstranded;
	LWLockRelease(wf_shared->lock);
}

/*
 * A launcher that was restarted (after an error or pg_terminate_backend)
 * cannot adopt the executors of its predecessor, which it has no handles
 * for: stop them, and start afresh.  Their transactions roll back, so no
 * step is lost or done twice.  An orphan that does not exit in time keeps
 * running until it does, but every slot gets a new generation, so it can
 * no longer write to a slot its successor uses.
 */
static void
stop_orphans(void)
{
	for (int tries = 0; tries < 100; tries++)
	{
		int			alive = 0;

		for (int i = 0; i < wf_shared->nslots; i++)
		{
			WfWorkerSlot *slot = &wf_slots[i];
			pid_t		pid;

			SpinLockAcquire(&slot->mutex);
			pid = slot->pid;
			SpinLockRelease(&slot->mutex);
			if (pid != 0)
			{
				if (tries == 0)
					kill(pid, SIGTERM);
				alive++;
			}
		}
		if (alive == 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 100L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	for (int i = 0; i < wf_shared->nslots; i++)
	{
		WfWorkerSlot *slot = &wf_slots[i];

		SpinLockAcquire(&slot->mutex);
		slot->generation++;
		slot->dboid = InvalidOid;
		slot->pid = 0;
		slot->proc = NULL;
		SpinLockRelease(&slot->mutex);
	}
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
	TimestampTz rescan_at;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("workflows launcher");

	maxdbs = 16;
	dbs = MemoryContextAllocZero(TopMemoryContext, sizeof(WfDb) * maxdbs);
	ndbs = 0;

	LWLockAcquire(wf_shared->lock, LW_EXCLUSIVE);
	wf_shared->launcher_pid = MyProcPid;
	wf_shared->launcher_proc = MyProc;
	/* a predecessor's table: every database is probed afresh */
	memset(wf_databases, 0, sizeof(WfDatabase) * wf_shared->ndatabases);
	wf_shared->nstranded = 0;
	LWLockRelease(wf_shared->lock);
	before_shmem_exit(launcher_detach, 0);

	for (int p = 0; p < WF_MAX_PROBES; p++)
	{
		SpinLockAcquire(&wf_shared->probes[p].mutex);
		wf_shared->probes[p].dboid = InvalidOid;
		SpinLockRelease(&wf_shared->probes[p].mutex);
	}
	stop_orphans();

	scan_databases(false, GetCurrentTimestamp());
	rescan_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), WF_RESCAN_INTERVAL_MS);
	ereport(LOG, (errmsg("workflows launcher started")));

	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();
		TimestampTz next = rescan_at;
		long		timeout;
		bool		overflow;
		int			i;

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		overflow = take_requests(now);
		if (overflow || now >= rescan_at)
		{
			scan_databases(overflow, now);
			rescan_at = TimestampTzPlusMilliseconds(now, WF_RESCAN_INTERVAL_MS);
			next = rescan_at;
		}

		exchange_state();
		for (i = 0; i < ndbs; i++)
		{
			TimestampTz t = tend_db(&dbs[i], now);

			if (t != 0 && t < next)
				next = t;
		}
		exchange_state();

		/* forget dropped databases once nothing of theirs runs */
		for (i = 0; i < ndbs;)
		{
			if (dbs[i].state == WF_DB_GONE && dbs[i].entry < 0 && !has_workers(&dbs[i]))
				dbs[i] = dbs[--ndbs];
			else
				i++;
		}

		timeout = Max(1, TimestampDifferenceMilliseconds(now, next));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
	}
}

/*
 * A probe: connect to the database, look for the extension, tell the
 * launcher through probe slot "arg", exit.  A probe that cannot connect
 * (the database was dropped, or does not accept connections) dies without
 * an answer; the launcher then looks at pg_database.
 */
void
wf_probe_main(Datum arg)
{
	int			p = DatumGetInt32(arg);
	Oid			dboid;
	bool		present;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("workflows probe");

	StartTransactionCommand();
	present = OidIsValid(get_extension_oid("workflows", true));
	CommitTransactionCommand();

	SpinLockAcquire(&wf_shared->probes[p].mutex);
	if (wf_shared->probes[p].dboid == dboid)
		wf_shared->probes[p].result = present ? WF_PROBE_PRESENT : WF_PROBE_ABSENT;
	SpinLockRelease(&wf_shared->probes[p].mutex);
	ereport(DEBUG1,
			(errmsg("workflows probe: extension %s in this database",
					present ? "present" : "not present")));
	proc_exit(0);
}

/*
 * Called by CREATE EXTENSION (workflows._launch()): warn when this
 * database's executors will not all be able to start, so that the problem
 * is seen when it is made and not when instances stay queued.  The count of
 * free worker processes is a snapshot; the launcher needs them a moment
 * later.
 */
void
wf_check_launch(void)
{
	int			free_workers = wf_free_worker_processes();
	bool		have_launcher;
	int			used = 0;
	bool		served = false;
	char	   *dbname = get_database_name(MyDatabaseId);

	LWLockAcquire(wf_shared->lock, LW_SHARED);
	have_launcher = wf_shared->launcher_proc != NULL;
	for (int d = 0; d < wf_shared->ndatabases; d++)
	{
		if (OidIsValid(wf_databases[d].dboid))
			used++;
		if (wf_databases[d].dboid == MyDatabaseId)
			served = true;
	}
	LWLockRelease(wf_shared->lock);

	if (!have_launcher)
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the workflows launcher is not running"),
				 errdetail("Workflow instances of database \"%s\" stay queued until it runs and starts executors.",
						   dbname),
				 errhint("Check the server log for why the launcher exited; it is restarted within seconds.")));
	else if (!served && used >= wf_shared->ndatabases)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("workflows cannot start executors for database \"%s\"", dbname),
				 errdetail("workflows.max_databases (%d) databases with the extension are already served; instances of this database stay queued until one of them is freed.",
						   wf_shared->ndatabases),
				 errhint("Raise workflows.max_databases (a restart is needed).")));
	else if (!served && free_workers < wf_max_workers)
		ereport(WARNING,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 free_workers == 0 ?
				 errmsg("workflows cannot start executors for database \"%s\"", dbname) :
				 errmsg("workflows can start only %d of the %d executors of database \"%s\"",
						free_workers, wf_max_workers, dbname),
				 errdetail("%d background worker processes are free; each executor needs one. Instances stay queued while no executor runs.",
						   free_workers),
				 errhint("Raise max_worker_processes (now %d); see workflows.executor_status().",
						 max_worker_processes)));
}

PG_FUNCTION_INFO_V1(wf_executor_status);

static void
status_row(ReturnSetInfo *rsinfo, Oid dboid, int running, int64 failed,
		   const char *problem)
{
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};
	char	   *name = get_database_name(dboid);

	if (name == NULL)
		return;					/* dropped meanwhile */
	values[0] = CStringGetTextDatum(name);
	values[1] = Int32GetDatum(wf_max_workers);
	values[2] = Int32GetDatum(running);
	values[3] = Int64GetDatum(failed);
	values[4] = problem[0] ? CStringGetTextDatum(problem) : (Datum) 0;
	nulls[4] = problem[0] == '\0';
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * workflows.executor_status(): per database with the extension that the
 * launcher knows of (and always the current one), how many executors are
 * configured and how many run, how many starts failed, and why fewer run
 * than configured.  Reads the state the launcher publishes at every pass.
 */
Datum
wf_executor_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	WfDatabase *copy;
	Oid			stranded[WF_MAX_STRANDED];
	char		why[WF_MAX_STRANDED];
	int64		failed[WF_MAX_STRANDED];
	int			nstranded;
	bool		have_launcher;
	bool		seen_mine = false;
	int			n = wf_shared->ndatabases;

	InitMaterializedSRF(fcinfo, 0);
	copy = palloc(sizeof(WfDatabase) * n);
	LWLockAcquire(wf_shared->lock, LW_SHARED);
	memcpy(copy, wf_databases, sizeof(WfDatabase) * n);
	nstranded = wf_shared->nstranded;
	memcpy(stranded, wf_shared->stranded, sizeof(Oid) * nstranded);
	memcpy(why, wf_shared->stranded_why, nstranded);
	memcpy(failed, wf_shared->stranded_failed, sizeof(int64) * nstranded);
	have_launcher = wf_shared->launcher_proc != NULL;
	LWLockRelease(wf_shared->lock);

	for (int d = 0; d < n; d++)
	{
		if (!OidIsValid(copy[d].dboid))
			continue;
		seen_mine |= copy[d].dboid == MyDatabaseId;
		status_row(rsinfo, copy[d].dboid, copy[d].running, copy[d].failed_starts,
				   have_launcher ? copy[d].problem : "the workflows launcher is not running");
	}
	for (int i = 0; i < nstranded; i++)
	{
		char		problem[WF_PROBLEM_LEN];

		seen_mine |= stranded[i] == MyDatabaseId;
		if (why[i] == 'f')
			snprintf(problem, sizeof(problem),
					 "workflows.max_databases (%d) databases are already served",
					 wf_shared->ndatabases);
		else
			snprintf(problem, sizeof(problem),
					 "no free background worker process: max_worker_processes (%d) is used up",
					 max_worker_processes);
		status_row(rsinfo, stranded[i], 0, failed[i], problem);
	}
	if (!seen_mine)
		status_row(rsinfo, MyDatabaseId, 0, 0,
				   have_launcher ? "not started yet: the launcher is looking for the extension" :
				   "the workflows launcher is not running");
	return (Datum) 0;
}

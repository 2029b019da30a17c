/*-------------------------------------------------------------------------
 *
 * utility.c
 *	  React to DROP DATABASE and DROP EXTENSION at once.
 *
 * Executors stay connected to their database.  DROP DATABASE refuses to
 * drop a database that other sessions use (it waits five seconds for them
 * first), so before it runs we ask that database's executors to exit and
 * tell the launcher not to restart them; if the drop fails, the launcher is
 * asked to start them again.  Only for a role that may drop the database
 * (its owner, or a superuser): anyone else's DROP DATABASE fails on its
 * permission check and must not interrupt the executors' steps on the way
 * (the chaos soak, test/t/017_chaos_soak.pl, tries).  After DROP EXTENSION commits, the executors
 * are woken so that they notice at once rather than at their next poll.
 *
 * IDENTIFICATION
 *	  src/utility.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include <signal.h>

#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/lwlock.h"
#include "tcop/utility.h"

static ProcessUtility_hook_type prev_utility_hook = NULL;

/* ask a database's executors to exit for good; returns how many were asked */
static int
stop_database_executors(Oid dboid)
{
	int			n = 0;
	int			i;

	LWLockAcquire(wf_shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < wf_shared->nslots; i++)
	{
		WfWorkerSlot *slot = &wf_shared->slots[i];

		if (slot->dboid != dboid)
			continue;
		slot->extension_absent = true;
		if (slot->pid != 0)
		{
			kill(slot->pid, SIGTERM);
			n++;
		}
	}
	LWLockRelease(wf_shared->lock);
	return n;
}

static bool
drops_workflows(DropStmt *stmt)
{
	ListCell   *lc;

	if (stmt->removeType != OBJECT_EXTENSION)
		return false;
	foreach(lc, stmt->objects)
	{
		Node	   *obj = lfirst(lc);

		if (IsA(obj, String) && strcmp(strVal(obj), "workflows") == 0)
			return true;
	}
	return false;
}

static void
wf_process_utility(PlannedStmt *pstmt, const char *queryString,
				   bool readOnlyTree, ProcessUtilityContext context,
				   ParamListInfo params, QueryEnvironment *queryEnv,
				   DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	volatile Oid dropped_db = InvalidOid;

	if (wf_shared != NULL && IsA(parsetree, DropdbStmt))
	{
		DropdbStmt *stmt = (DropdbStmt *) parsetree;

		dropped_db = get_database_oid(stmt->dbname, true);
		if (OidIsValid(dropped_db) && !wf_database_ownercheck(dropped_db, GetUserId()))
			dropped_db = InvalidOid;
		if (OidIsValid(dropped_db))
			(void) stop_database_executors(dropped_db);
	}
	else if (wf_shared != NULL && IsA(parsetree, DropStmt) &&
			 drops_workflows((DropStmt *) parsetree))
		wf_wake_at_commit();

	wf_roles_utility(parsetree, false);
	PG_TRY();
	{
		if (prev_utility_hook)
			prev_utility_hook(pstmt, queryString, readOnlyTree, context,
							  params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
	}
	PG_CATCH();
	{
		/* the database is still there: its executors must come back */
		if (OidIsValid(dropped_db))
			wf_request_launch(dropped_db);
		PG_RE_THROW();
	}
	PG_END_TRY();
	wf_roles_utility(parsetree, true);
}

void
wf_install_utility_hook(void)
{
	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = wf_process_utility;
}

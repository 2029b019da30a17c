/*-------------------------------------------------------------------------
 *
 * utility.c
 *	  Keep database-level DBA commands working while executors are
 *	  connected, and react to DROP EXTENSION at once.
 *
 * Executors stay connected to their database, and PostgreSQL refuses to
 * drop, rename, move (SET TABLESPACE) or copy (CREATE DATABASE ... TEMPLATE)
 * a database that other sessions use, after waiting five seconds for them.
 * So before such a command runs we pause that database's executors (the
 * launcher stops them and does not restart them) and resume them when the
 * transaction ends, committed or not; TimescaleDB's loader does the same.
 * A database created or dropped is looked at again by the launcher after
 * commit: a copy of a database with the extension gets executors of its
 * own, a dropped one is forgotten.
 *
 * We act only when PostgreSQL's own permission checks for the command would
 * pass (we make the same checks first): a role that may not drop, rename,
 * move or copy a database must not be able to stop its executors, killing
 * the steps they run.  When a check fails we do nothing and let PostgreSQL
 * raise its error.
 *
 * After DROP EXTENSION commits, the executors are woken so that they
 * notice at once rather than at their next poll.
 *
 * IDENTIFICATION
 *	  src/utility.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include "access/htup_details.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "commands/tablespace.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/syscache.h"

static ProcessUtility_hook_type prev_utility_hook = NULL;

static bool
is_template(Oid dboid)
{
	HeapTuple	tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dboid));
	bool		result = false;

	if (HeapTupleIsValid(tup))
	{
		result = ((Form_pg_database) GETSTRUCT(tup))->datistemplate;
		ReleaseSysCache(tup);
	}
	return result;
}

/* dropdb(): must own it; not the current database; not a template */
static Oid
drop_target(DropdbStmt *stmt)
{
	Oid			dboid = get_database_oid(stmt->dbname, true);

	if (!OidIsValid(dboid) || dboid == MyDatabaseId ||
		!wf_database_ownercheck(dboid, GetUserId()) || is_template(dboid))
		return InvalidOid;
	return dboid;
}

/*
 * createdb(): CREATEDB privilege; a source that is not a template may be
 * copied only by its owner.  The source is the TEMPLATE option, or
 * template1.
 */
static Oid
copy_source(CreatedbStmt *stmt)
{
	const char *source = "template1";
	ListCell   *lc;
	Oid			dboid;

	foreach(lc, stmt->options)
	{
		DefElem    *opt = lfirst_node(DefElem, lc);

		if (strcmp(opt->defname, "template") == 0 && opt->arg != NULL)
			source = defGetString(opt);
	}
	dboid = get_database_oid(source, true);
	if (!OidIsValid(dboid) || !have_createdb_privilege() ||
		(!is_template(dboid) && !wf_database_ownercheck(dboid, GetUserId())))
		return InvalidOid;
	return dboid;
}

/*
 * RenameDatabase(): must own it and have CREATEDB; the new name is free;
 * not the current database.
 */
static Oid
rename_target(RenameStmt *stmt)
{
	Oid			dboid;

	if (stmt->renameType != OBJECT_DATABASE)
		return InvalidOid;
	dboid = get_database_oid(stmt->subname, true);
	if (!OidIsValid(dboid) || dboid == MyDatabaseId ||
		!wf_database_ownercheck(dboid, GetUserId()) || !have_createdb_privilege() ||
		OidIsValid(get_database_oid(stmt->newname, true)))
		return InvalidOid;
	return dboid;
}

/*
 * movedb() (ALTER DATABASE ... SET TABLESPACE): must own it; not the current
 * database; CREATE on the tablespace.
 */
static Oid
move_target(AlterDatabaseStmt *stmt)
{
	const char *tablespace = NULL;
	ListCell   *lc;
	Oid			dboid;
	Oid			spcoid;

	foreach(lc, stmt->options)
	{
		DefElem    *opt = lfirst_node(DefElem, lc);

		if (strcmp(opt->defname, "tablespace") == 0 && opt->arg != NULL)
			tablespace = defGetString(opt);
	}
	if (tablespace == NULL)
		return InvalidOid;
	dboid = get_database_oid(stmt->dbname, true);
	spcoid = get_tablespace_oid(tablespace, true);
	if (!OidIsValid(dboid) || !OidIsValid(spcoid) || dboid == MyDatabaseId ||
		!wf_database_ownercheck(dboid, GetUserId()) ||
		wf_tablespace_aclcheck(spcoid, GetUserId(), ACL_CREATE) != ACLCHECK_OK)
		return InvalidOid;
	return dboid;
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
	Oid			paused = InvalidOid;

	if (wf_shared != NULL)
	{
		switch (nodeTag(parsetree))
		{
			case T_DropdbStmt:
				paused = drop_target((DropdbStmt *) parsetree);
				/* once the drop commits, the launcher forgets the database */
				if (OidIsValid(paused))
					wf_probe_at_commit(paused);
				break;
			case T_CreatedbStmt:
				paused = copy_source((CreatedbStmt *) parsetree);
				break;
			case T_RenameStmt:
				paused = rename_target((RenameStmt *) parsetree);
				break;
			case T_AlterDatabaseStmt:
				paused = move_target((AlterDatabaseStmt *) parsetree);
				break;
			case T_DropStmt:
				if (drops_workflows((DropStmt *) parsetree))
					wf_wake_at_commit();
				break;
			default:
				break;
		}
	}

	/* resumed at the end of the transaction, whichever way it ends */
	if (OidIsValid(paused))
		wf_pause_database(paused);

	/* a utility command of workflow code that runs steps in place (replay.c) */
	switch (nodeTag(parsetree))
	{
		case T_VariableSetStmt:
		case T_VariableShowStmt:
		case T_DeclareCursorStmt:
		case T_FetchStmt:
		case T_ClosePortalStmt:
		case T_ExplainStmt:
			break;
		default:
			wf_replay_watch_write(true);
			break;
	}

	wf_roles_utility(parsetree, false);
	if (prev_utility_hook)
		prev_utility_hook(pstmt, queryString, readOnlyTree, context,
						  params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
	wf_roles_utility(parsetree, true);

	/* a new database may have the extension (its template had it) */
	if (wf_shared != NULL && IsA(parsetree, CreatedbStmt))
	{
		Oid			created = get_database_oid(((CreatedbStmt *) parsetree)->dbname, true);

		if (OidIsValid(created))
			wf_probe_at_commit(created);
	}
}

void
wf_install_utility_hook(void)
{
	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = wf_process_utility;
}

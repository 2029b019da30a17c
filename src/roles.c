/*-------------------------------------------------------------------------
 *
 * roles.c
 *	  What happens to a role's instances when the role is dropped,
 *	  reassigned, or has its objects dropped.
 *
 * Instances and workflows name their owner by OID (a regrole column), and
 * PostgreSQL's dependency tracking (pg_shdepend) knows nothing of rows, so
 * by itself DROP ROLE would leave instances that fail later with "invalid
 * role OID".  The utility hook (utility.c) calls wf_roles_utility() around
 * the commands that concern roles, and we do for the rows what PostgreSQL
 * does for the objects of the current database:
 *
 *	DROP ROLE r          refuses while r owns instances or workflows here
 *	REASSIGN OWNED BY r  moves r's instances and workflows here to the new role
 *	DROP OWNED BY r      erases r's instances here (whatever their status,
 *	                     with an 'erase' audit row each), and deletes r's
 *	                     workflows that no instance uses any more and r's
 *	                     secrets; before it runs, r's pinned copies of
 *	                     replaced functions leave the extension, so that
 *	                     it can drop them
 *
 * Secrets (workflows._secrets) follow the same rules: DROP ROLE refuses
 * while r has secrets here, REASSIGN OWNED moves them (refused if the new
 * role has a secret of the same name), DROP OWNED deletes them.
 *
 * A hook sees only its own database: instances in other databases of a
 * dropped role cannot be protected, so the executor that claims one ends it
 * with WF009 (wf_missing_owner_error()) instead of running it as nobody.
 *
 * IDENTIFICATION
 *	  src/roles.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/syscache.h"

static WfQuery q_owned = {
	"SELECT (SELECT count(*) FROM workflows.instances WHERE owner = $1::oid::regrole), "
	"       (SELECT count(*) FROM workflows.workflows WHERE owner = $1::oid::regrole), "
	"       (SELECT count(*) FROM workflows._secrets WHERE owner = $1)",
	1, {OIDOID}, NULL
};

/* a secret name both roles have: REASSIGN OWNED cannot merge them */
static WfQuery q_secret_clash = {
	"SELECT a.name FROM workflows._secrets a "
	"JOIN workflows._secrets b ON b.name = a.name AND b.owner = $2 "
	"WHERE a.owner = $1 ORDER BY a.name LIMIT 1",
	2, {OIDOID, OIDOID}, NULL
};

/* DROP OWNED: the role's secrets go, one drop_secret audit row each */
static WfQuery q_drop_secrets = {
	"WITH s AS (DELETE FROM workflows._secrets WHERE owner = $1 RETURNING name) "
	"INSERT INTO workflows.audit (acting_role, action, owner, details) "
	"SELECT $2, 'drop_secret', $1::regrole, "
	"       jsonb_build_object('name', s.name, 'drop_owned', true) FROM s",
	2, {OIDOID, TEXTOID}, NULL
};

/*
 * The pinned copies of replaced workflow functions (workflows_code) that a
 * role owns.  They are members of the extension (DROP EXTENSION drops
 * them), so PostgreSQL's DROP OWNED would refuse to drop them ("extension
 * workflows requires it"): before DROP OWNED, they leave the extension,
 * and DROP OWNED drops them with the role's other functions.
 */
static WfQuery q_pinned_of = {
	"SELECT 'workflows_code.' || pg_catalog.quote_ident(p.proname) || '(' || "
	"       pg_catalog.pg_get_function_identity_arguments(p.oid) || ')' "
	"FROM pg_catalog.pg_proc p "
	"JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_proc'::regclass "
	"  AND d.objid = p.oid AND d.deptype = 'e' "
	"  AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'workflows') "
	"WHERE p.proowner = $1 "
	"  AND p.pronamespace = 'workflows_code'::regnamespace ORDER BY p.oid",
	1, {OIDOID}, NULL
};

static WfQuery q_reassign = {
	"WITH i AS (UPDATE workflows.instances SET owner = $2::oid::regrole "
	"           WHERE owner = $1::oid::regrole RETURNING 1), "
	"w AS (UPDATE workflows.workflows SET owner = $2::oid::regrole "
	"      WHERE owner = $1::oid::regrole RETURNING 1), "
	"v AS (UPDATE workflows.versions SET created_by = $2::oid::regrole "
	"      WHERE created_by = $1::oid::regrole), "
	"r AS (UPDATE workflows.requests SET requested_by = $2::oid::regrole "
	"      WHERE requested_by = $1::oid::regrole), "
	"s AS (UPDATE workflows._secrets SET owner = $2, updated_at = now() "
	"      WHERE owner = $1 RETURNING 1) "
	"INSERT INTO workflows.audit (acting_role, action, owner, details) "
	"SELECT $3, 'reassign', $2::oid::regrole, jsonb_strip_nulls(jsonb_build_object("
	"         'from', $4, 'to', $5, "
	"         'instances', (SELECT count(*) FROM i), 'workflows', (SELECT count(*) FROM w), "
	"         'secrets', NULLIF((SELECT count(*) FROM s), 0))) "
	"WHERE EXISTS (SELECT 1 FROM i) OR EXISTS (SELECT 1 FROM w) OR EXISTS (SELECT 1 FROM s)",
	5, {OIDOID, OIDOID, TEXTOID, TEXTOID, TEXTOID}, NULL
};

static WfQuery q_instances_of = {
	"SELECT id FROM workflows.instances WHERE owner = $1::oid::regrole ORDER BY id",
	1, {OIDOID}, NULL
};

static WfQuery q_drop_workflows = {
	"DELETE FROM workflows.workflows w WHERE w.owner = $1::oid::regrole "
	"AND NOT EXISTS (SELECT 1 FROM workflows.instances i WHERE i.workflow = w.name)",
	1, {OIDOID}, NULL
};

/* is the extension installed in this database? */
static bool
extension_here(void)
{
	return OidIsValid(get_extension_oid("workflows", true));
}

/*
 * Before DROP ROLE: refuse, as PostgreSQL does for a role that owns
 * objects, while a role to be dropped owns instances or workflows here.
 */
static void
check_drop_role(DropRoleStmt *stmt)
{
	WfAsOwner	s;
	ListCell   *lc;

	wf_as_owner_begin(&s);
	foreach(lc, stmt->roles)
	{
		RoleSpec   *spec = lfirst(lc);
		Oid			role;
		int64		ninstances;
		int64		nworkflows;
		int64		nsecrets;
		Datum		v[1];
		bool		isnull;

		if (spec->roletype != ROLESPEC_CSTRING)
			continue;			/* DROP ROLE refuses these itself */
		role = get_role_oid(spec->rolename, true);
		if (!OidIsValid(role))
			continue;			/* IF EXISTS, or DROP ROLE's own error */
		v[0] = ObjectIdGetDatum(role);
		wf_query(&q_owned, v, NULL, 1);
		ninstances = DatumGetInt64(wf_get_datum(0, 1, &isnull));
		nworkflows = DatumGetInt64(wf_get_datum(0, 2, &isnull));
		nsecrets = DatumGetInt64(wf_get_datum(0, 3, &isnull));
		if (ninstances > 0 || nworkflows > 0 || nsecrets > 0)
			ereport(ERROR,
					(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
					 errmsg("role \"%s\" cannot be dropped because some objects depend on it",
							spec->rolename),
					 errdetail("Role \"%s\" owns " INT64_FORMAT " workflow instances, "
							   INT64_FORMAT " workflows and " INT64_FORMAT
							   " secrets in database \"%s\".",
							   spec->rolename, ninstances, nworkflows, nsecrets,
							   get_database_name(MyDatabaseId)),
					 errhint("Move them with REASSIGN OWNED BY %s TO another role, or erase them with DROP OWNED BY %s, in every database where the role owns instances.",
							 quote_identifier(spec->rolename),
							 quote_identifier(spec->rolename))));
	}
	wf_as_owner_end(&s);
}

/* the roles a REASSIGN OWNED or DROP OWNED names; they exist (it succeeded) */
static List *
role_oids(List *specs)
{
	List	   *oids = NIL;
	ListCell   *lc;

	foreach(lc, specs)
		oids = lappend_oid(oids, get_rolespec_oid(lfirst(lc), false));
	return oids;
}

/* after REASSIGN OWNED: the roles' instances and workflows here are newrole's */
static void
reassign_owned(ReassignOwnedStmt *stmt)
{
	Oid			caller = GetUserId();
	Oid			newrole = get_rolespec_oid(stmt->newrole, false);
	List	   *roles = role_oids(stmt->roles);
	WfAsOwner	s;
	ListCell   *lc;

	wf_as_owner_begin(&s);
	foreach(lc, roles)
	{
		Oid			role = lfirst_oid(lc);
		Datum		v[5];

		if (role == newrole)
			continue;
		v[0] = ObjectIdGetDatum(role);
		v[1] = ObjectIdGetDatum(newrole);
		if (wf_query(&q_secret_clash, v, NULL, 1) == 1)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("role \"%s\" already has a secret named \"%s\"",
							GetUserNameFromId(newrole, false), wf_get_text(0, 1)),
					 errdetail("REASSIGN OWNED moves the secrets of role \"%s\" to it, and secret names are unique per role.",
							   GetUserNameFromId(role, false)),
					 errhint("Drop one of the two secrets with workflows.drop_secret(), as its role, then run REASSIGN OWNED again.")));
		v[2] = CStringGetTextDatum(GetUserNameFromId(caller, false));
		v[3] = CStringGetTextDatum(GetUserNameFromId(role, false));
		v[4] = CStringGetTextDatum(GetUserNameFromId(newrole, false));
		wf_query(&q_reassign, v, NULL, 0);
	}
	wf_as_owner_end(&s);
}

/*
 * After DROP OWNED: erase the roles' instances here, whatever their status
 * (DROP OWNED drops everything a role owns; one that runs a step is erased
 * when that step's transaction ends), then the roles' workflows that no
 * instance uses any more.
 */
static void
drop_owned(DropOwnedStmt *stmt)
{
	Oid			caller = GetUserId();
	List	   *roles = role_oids(stmt->roles);
	WfAsOwner	s;
	ListCell   *lc;
	Jsonb	   *details = wf_cstring_jsonb("{\"drop_owned\": true}");

	wf_as_owner_begin(&s);
	foreach(lc, roles)
	{
		Datum		v[1];
		int			n;
		List	   *ids = NIL;
		ListCell   *lc2;

		v[0] = ObjectIdGetDatum(lfirst_oid(lc));
		n = wf_query(&q_instances_of, v, NULL, 0);
		for (int k = 0; k < n; k++)
			ids = lappend(ids, wf_get_text(k, 1));
		foreach(lc2, ids)
			(void) wf_erase_instance(lfirst(lc2), caller, details);
	}
	/* (after all the roles' instances: one may use another's workflow) */
	foreach(lc, roles)
	{
		Datum		v[2];

		v[0] = ObjectIdGetDatum(lfirst_oid(lc));
		wf_query(&q_drop_workflows, v, NULL, 0);
		v[1] = CStringGetTextDatum(GetUserNameFromId(caller, false));
		wf_query(&q_drop_secrets, v, NULL, 0);
	}
	wf_as_owner_end(&s);
	if (roles != NIL)
		wf_waiters_at_commit();
}

/*
 * Before DROP OWNED: the roles' pinned copies leave the extension, so that
 * DROP OWNED can drop them like the roles' other functions (see
 * q_pinned_of).  Only for a caller allowed to drop the roles' objects
 * (PostgreSQL's own check, which comes later); anybody else gets
 * PostgreSQL's refusal, and if the statement fails, this is rolled back
 * with it.
 */
static void
release_pinned(DropOwnedStmt *stmt)
{
	Oid			caller = GetUserId();
	List	   *roles = NIL;
	List	   *fns = NIL;
	WfAsOwner	s;
	ListCell   *lc;

	foreach(lc, stmt->roles)
	{
		Oid			role = get_rolespec_oid(lfirst(lc), true);

		if (!OidIsValid(role) || !has_privs_of_role(caller, role))
			return;
		roles = lappend_oid(roles, role);
	}
	wf_as_owner_begin(&s);
	foreach(lc, roles)
	{
		Datum		v[1];
		int			n;

		v[0] = ObjectIdGetDatum(lfirst_oid(lc));
		n = wf_query(&q_pinned_of, v, NULL, 0);
		for (int k = 0; k < n; k++)
			fns = lappend(fns, wf_get_text(k, 1));
	}
	foreach(lc, fns)
	{
		/* schema-qualified and quoted, whatever the session's search_path */
		if (SPI_execute(psprintf("ALTER EXTENSION workflows DROP FUNCTION %s",
								 (char *) lfirst(lc)), false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not release pinned copy %s", (char *) lfirst(lc));
	}
	wf_as_owner_end(&s);
}

/*
 * Called by the utility hook before (after = false) and after (after =
 * true) every utility statement runs; acts only on DROP ROLE (before),
 * REASSIGN OWNED and DROP OWNED (after, so that PostgreSQL has checked the
 * caller's rights), and only where the extension is installed.
 */
void
wf_roles_utility(Node *parsetree, bool after)
{
	if (!after && IsA(parsetree, DropRoleStmt))
	{
		/*
		 * Only for a caller who may drop roles at all: anybody else gets
		 * PostgreSQL's own refusal, and learns nothing of others' instances.
		 */
		if ((superuser() || has_createrole_privilege(GetUserId())) && extension_here())
			check_drop_role((DropRoleStmt *) parsetree);
	}
	else if (after && IsA(parsetree, ReassignOwnedStmt))
	{
		if (extension_here())
			reassign_owned((ReassignOwnedStmt *) parsetree);
	}
	else if (!after && IsA(parsetree, DropOwnedStmt))
	{
		if (extension_here())
			release_pinned((DropOwnedStmt *) parsetree);
	}
	else if (after && IsA(parsetree, DropOwnedStmt))
	{
		if (extension_here())
			drop_owned((DropOwnedStmt *) parsetree);
	}
}

/*
 * The error an instance ends with when its owner no longer exists: the role
 * was dropped from another database, where our hook could not see this
 * database's instances.  NULL while the owner exists.  Called by the
 * executor when it claims an instance, in its transaction.
 */
Jsonb *
wf_missing_owner_error(Oid owner)
{
	ErrorData	edata;

	if (SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(owner)))
		return NULL;
	memset(&edata, 0, sizeof(edata));
	edata.sqlerrcode = ERRCODE_WF_ENGINE_FAILED;
	edata.message = psprintf("the owner of the workflow instance (role with OID %u) no longer exists",
							 owner);
	edata.detail = "The role was dropped while it owned the instance, from a database where the instance could not be seen.";
	edata.hint = "Instances run as their owner: create the instance again as an existing role.";
	return wf_error_jsonb(&edata);
}

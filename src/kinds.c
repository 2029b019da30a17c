/*-------------------------------------------------------------------------
 *
 * kinds.c
 *	  The step-kind registry: the built-in kinds (SQL text, function, HTTP)
 *	  and those other extensions add (workflows_step_kind.h).
 *
 * Every step goes through a kind: the executor runs in-transaction kinds
 * with kind->run (executor.c, run_step()) and out-of-transaction kinds
 * with start/poll (async.c).  A kind is looked up by name once per step
 * call; the list is short.
 *
 * IDENTIFICATION
 *	  src/kinds.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"

static Jsonb *
run_sql(WfStepCall *call)
{
	return wf_run_sql_callback(call->sql, call->request);
}

static Jsonb *
run_fn(WfStepCall *call)
{
	return wf_run_fn_callback(call->fn, call->request);
}

const WfStepKind wf_sql_kind = {
	.abi = WF_STEP_KIND_ABI,
	.name = "sql",
	.run = run_sql,
};

const WfStepKind wf_fn_kind = {
	.abi = WF_STEP_KIND_ABI,
	.name = "function",
	.run = run_fn,
};

static const WfStepKind *const builtin_kinds[] = {&wf_sql_kind, &wf_fn_kind, &wf_http_kind};

/*
 * In _PG_init: make the registry exist.  The built-in kinds are not in it:
 * they are looked up first, so no plugin can take their names.
 */
void
wf_register_builtin_kinds(void)
{
	(void) find_rendezvous_variable(WF_STEP_KIND_RENDEZVOUS);
}

/* a kind by name, or an error that says how to make it known */
const WfStepKind *
wf_step_kind(const char *name)
{
	List	  **kinds;
	ListCell   *lc;

	for (int i = 0; i < (int) lengthof(builtin_kinds); i++)
		if (strcmp(builtin_kinds[i]->name, name) == 0)
			return builtin_kinds[i];

	kinds = (List **) find_rendezvous_variable(WF_STEP_KIND_RENDEZVOUS);
	foreach(lc, *kinds)
	{
		const WfStepKind *k = (const WfStepKind *) lfirst(lc);

		if (strcmp(k->name, name) != 0)
			continue;
		if (k->abi != WF_STEP_KIND_ABI)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("step kind \"%s\" was built for another version of the workflows extension", name),
					 errdetail("It has interface version %d; this library has %d.",
							   k->abi, WF_STEP_KIND_ABI),
					 errhint("Rebuild the plugin against the installed workflows_step_kind.h.")));
		if ((k->run == NULL) == (k->start == NULL || k->poll == NULL || k->cancel == NULL ||
								 k->wait == NULL || k->drive == NULL))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("step kind \"%s\" is malformed", name),
					 errdetail("A kind has either run, or start, poll, cancel, wait and drive.")));
		return k;
	}
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("step kind \"%s\" does not exist", name),
			 errhint("A plugin's kinds exist in the processes that loaded its library: list it in shared_preload_libraries after workflows.")));
	pg_unreachable();
}

/*
 * May the owner use the kind at all?  (Out-of-transaction kinds reach the
 * world outside the database: a kind may require a role.)
 */
void
wf_check_kind_privilege(const WfStepKind *kind, Oid owner)
{
	Oid			role;

	if (kind->required_role == NULL)
		return;
	role = get_role_oid(kind->required_role, true);
	if (!OidIsValid(role) || !has_privs_of_role(owner, role))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to use %s steps", kind->name),
				 errdetail("Role \"%s\" is not a member of %s.",
						   GetUserNameFromId(owner, false), kind->required_role),
				 errhint("A superuser or the extension's owner may GRANT %s TO the role.",
						 kind->required_role)));
}

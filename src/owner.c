/*-------------------------------------------------------------------------
 *
 * owner.c
 *	  The one place where code that an ordinary role controls runs: the
 *	  workflow function (replay) and step callbacks, as the instance's owner.
 *
 * An executor connects as the bootstrap superuser, because its bookkeeping
 * writes tables that ordinary roles cannot.  User code therefore must never
 * run while that identity is current -- not while its callback is on the
 * stack, and not later either.  PostgreSQL runs code long after a statement
 * returned: deferred constraint triggers (and the deferred uniqueness and
 * exclusion rechecks, which evaluate index expressions), foreign-key actions
 * that fire the referencing table's triggers, cursors WITH HOLD that are
 * materialized at commit.  (LISTEN, applied at commit, is refused in a
 * background worker by PostgreSQL itself.)  Had a
 * step left any of these queued, they would run at the tick's commit with
 * the executor's identity.
 *
 * So the bracket below does, in one subtransaction and as the owner:
 *
 *	- run the callback with SECURITY_LOCAL_USERID_CHANGE (no SET ROLE, no
 *	  SET SESSION AUTHORIZATION) and the configured search_path, in a GUC
 *	  nest level of its own (every setting it makes is undone);
 *	- for a step, whose writes are kept: fire every deferred trigger event
 *	  that is still queued (SET CONSTRAINTS ALL IMMEDIATE, which also fires
 *	  what those triggers queue in turn), close every cursor it left open
 *	  (WITH HOLD ones included) -- still as the owner, so that a violation
 *	  fails the step like any error -- and only then release the
 *	  subtransaction and switch back;
 *	- for a replay: run it as a security-restricted operation as well (no
 *	  temporary tables, no cursors WITH HOLD, no deferred triggers can even
 *	  be queued by workflow code), and roll the subtransaction back, which
 *	  discards anything it queued -- unless the replay ran steps in place
 *	  (replay.c, "inline steps") and workflow code itself wrote nothing:
 *	  then it is settled and released like a step, still as the owner.
 *	  The steps it ran in place are brackets of their own, nested in it:
 *	  as the owner, not security-restricted (as any step), their deferred
 *	  trigger events fired before they return; only the cursors they leave
 *	  wait for the replay's settling, because the workflow function's own
 *	  portals are open around them.
 *
 * After the bracket nothing of the user's code is queued for later: what
 * remains in the session (temporary tables, session advisory locks,
 * prepared statements, sequence state) is removed by wf_clean_session()
 * before the next run, which may belong to another role.
 *
 * IDENTIFICATION
 *	  src/owner.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include "commands/prepare.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "catalog/namespace.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/lock.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/resowner.h"

/*
 * Fire every queued deferred trigger event now, as the current user, and
 * leave nothing open that would run at commit.  Called inside a step's
 * subtransaction, after its callback returned.
 *
 * SET CONSTRAINTS ALL IMMEDIATE is how PostgreSQL itself fires deferred
 * events in the middle of a transaction, and it is safe inside a
 * subtransaction (fired events are kept until the subtransaction ends, so a
 * later rollback restores them).  Its side effect is that the rest of the
 * transaction runs with all constraints immediate; the executor therefore
 * ends the transaction after a step when the database has initially
 * deferred constraints (has_deferred_constraints() in executor.c).
 */
static void
settle(bool portals)
{
	ConstraintsSetStmt *all_immediate = makeNode(ConstraintsSetStmt);

	all_immediate->constraints = NIL;
	all_immediate->deferred = false;
	AfterTriggerSetState(all_immediate);

	/*
	 * Cursors the step left open, WITH HOLD ones too: a held cursor would
	 * run the rest of its query at commit.  The executor itself has no
	 * portal open here (it runs no query of its own around the callback).
	 * Not for a step run from inside a replay: the workflow function's own
	 * portals (a FOR loop over a query) are open around it; that replay's
	 * bracket closes what is left when the function has returned.
	 */
	if (portals)
		PortalHashTableDeleteAll();

	/* closing a cursor queues nothing, but make "nothing queued" certain */
	AfterTriggerSetState(all_immediate);
}

/*
 * Run fn(arg) as "role" in a subtransaction of its own; see the file
 * header.  WF_AS_STEP: its writes stay, what it queued is settled first.
 * WF_AS_INLINE_STEP: the same for a step that a replay runs in place
 * (replay.c); it is not security-restricted even though the replay around
 * it is, as a step run by the executor is not.  WF_AS_REPLAY: security-
 * restricted, rolled back unless wf_replay_keep() says that it ran steps
 * in place and wrote nothing itself: then settled and kept like a step.
 *
 * Must be called in a transaction, outside any query.  Returns NULL on
 * success, or the error (allocated in the caller's memory context) after
 * rolling the subtransaction back.  Either way the caller's identity,
 * security context, memory context and resource owner are restored.
 */
ErrorData *
wf_run_as(Oid role, WfRunAs mode, void (*fn) (void *arg), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner resowner = CurrentResourceOwner;
	Oid			save_userid;
	int			save_sec;
	ErrorData  *volatile edata = NULL;

	GetUserIdAndSecContext(&save_userid, &save_sec);

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		int			nest;
		int			sec = save_sec | SECURITY_LOCAL_USERID_CHANGE;
		bool		keep;

		if (mode == WF_AS_REPLAY)
			sec |= SECURITY_RESTRICTED_OPERATION;
		else if (mode == WF_AS_INLINE_STEP)
			sec &= ~SECURITY_RESTRICTED_OPERATION;
		SetUserIdAndSecContext(role, sec);
		nest = NewGUCNestLevel();
		(void) set_config_option("search_path", wf_step_search_path,
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);

		fn(arg);

		keep = (mode != WF_AS_REPLAY || wf_replay_keep());
		if (keep)
			settle(mode != WF_AS_INLINE_STEP);
		AtEOXact_GUC(false, nest);

		/*
		 * End the subtransaction while still the owner: its end-of-
		 * subtransaction callbacks belong to the user's code too.
		 */
		if (keep)
			ReleaseCurrentSubTransaction();
		else
			RollbackAndReleaseCurrentSubTransaction();
		SetUserIdAndSecContext(save_userid, save_sec);
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = resowner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		SetUserIdAndSecContext(save_userid, save_sec);
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = resowner;
	}
	PG_END_TRY();

	return edata;
}

/*
 * Nothing user code leaves in the session may reach the next run or step,
 * which may belong to another role: session advisory locks, temporary
 * tables, prepared statements and sequence state (lastval) go.  (GUC
 * changes are undone with the GUC nest level of each run and step; writes
 * of workflow code with the rollback of its subtransaction.)  Runs as the
 * executor: none of this runs user code.
 */
void
wf_clean_session(void)
{
	LockReleaseSession(USER_LOCKMETHOD);
	ResetTempTableNamespace();
	DropAllPreparedStatements();
	ResetSequenceCaches();		/* lastval() and currval() */
}

/*-------------------------------------------------------------------------
 *
 * workflows_step_kind.h
 *	  The step-kind registry of the workflows extension: how another
 *	  extension adds a kind of step.
 *
 * Installed with the extension (include/server/extension/workflows/).  A
 * kind is a name plus callbacks.  Workflow code calls it with
 *
 *		workflows.plugin_step(name text, kind text, request jsonb,
 *							  config jsonb DEFAULT NULL) RETURNS jsonb
 *
 * (or with a SQL function of the plugin's own that calls that), and the
 * engine memoizes, retries, times out and records it like any step.
 *
 * A kind either runs inside the executor's transaction ("run": exactly
 * once for database work, as the owner of the instance, in a
 * subtransaction of its own) or outside any transaction ("start", "poll",
 * "cancel": at least once, for the world outside the database; the engine
 * records that the call is in flight, commits, drives the call while it
 * runs other instances, and records its result in a short transaction).
 *
 * Registration works in any load order: a plugin calls
 * workflows_register_step_kind() from its _PG_init, which appends to a
 * list kept under a rendezvous variable; the engine looks kinds up there
 * when a step names them.  For executors (background workers) to find a
 * kind, its library must be loaded in them too: list it in
 * shared_preload_libraries after workflows.  See README.md, "Writing a
 * step plugin", and test/plugin/ for a complete example.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WORKFLOWS_STEP_KIND_H
#define WORKFLOWS_STEP_KIND_H

#include "postgres.h"

#include "fmgr.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

/* bumped whenever the structs below change incompatibly */
#define WF_STEP_KIND_ABI	1

/* name of the rendezvous variable holding the List of kinds */
#define WF_STEP_KIND_RENDEZVOUS	"workflows_step_kinds"

/* the longest kind name */
#define WF_STEP_KIND_NAMELEN	63

/*
 * One attempt of a step, as the engine gives it to the kind.  Everything
 * is allocated in a memory context that lives until the attempt is
 * recorded ("cxt"); a kind may keep its own state in "private_data".
 */
typedef struct WfStepCall
{
	const char *instance_id;
	const char *step_key;		/* name#occurrence, unique in the instance */
	Oid			owner;			/* the instance's owner */
	int			attempt;		/* 1, 2, ... */
	/*
	 * Out-of-transaction kinds: how long the attempt may take.  The engine
	 * sets the step config's "timeout" if the config has one, else 0;
	 * prepare may set it (from the request, or a default of the kind's);
	 * still 0 after prepare: 10 minutes.  The engine lets nobody else take
	 * the instance until this has passed (plus 5 seconds), and gives up on
	 * the call then.
	 */
	int64		timeout_ms;
	Jsonb	   *request;		/* what the workflow passed */
	MemoryContext cxt;
	void	   *private_data;	/* the kind's */

	/* built-in kinds only (SQL text, function) */
	const char *sql;
	Oid			fn;
} WfStepCall;

/* how an out-of-transaction attempt ended */
typedef struct WfStepResult
{
	bool		ok;
	Jsonb	   *output;			/* ok: the step's result */
	/* not ok: */
	int			sqlerrcode;		/* MAKE_SQLSTATE(...) */
	char	   *message;		/* must not contain secrets */
	char	   *detail;			/* may be NULL */
	bool		retryable;		/* false: the step fails now, whatever the
								 * retry limit */
	int64		retry_after_ms; /* > 0: no retry before this long */
	/* either way: shown with the attempt in status() (e.g. an HTTP status) */
	Jsonb	   *attempt_detail;
} WfStepResult;

/* a socket an out-of-transaction kind waits on */
#define WF_WAIT_READ	0x01
#define WF_WAIT_WRITE	0x02
typedef struct WfWaitSocket
{
	pgsocket	sock;
	int			events;			/* WF_WAIT_READ | WF_WAIT_WRITE */
} WfWaitSocket;

typedef struct WfStepKind
{
	int			abi;			/* WF_STEP_KIND_ABI */
	const char *name;			/* [a-z0-9_]+, at most WF_STEP_KIND_NAMELEN */

	/*
	 * Checks a request when the workflow reaches the step (inside the
	 * replay, as the instance's owner).  Raise an error (22023) to refuse
	 * it; nothing has run then.  NULL: any request.
	 */
	void		(*validate) (Jsonb *request);

	/*
	 * What the step will do, for detecting changed workflow code (WF005).
	 * NULL: a hash of the request.
	 */
	int64		(*hash) (Jsonb *request);

	/*
	 * In-transaction kinds: run the attempt as the owner, in its own
	 * subtransaction; return the result (NULL: JSON null) or raise.
	 */
	Jsonb	   *(*run) (WfStepCall *call);

	/*
	 * Out-of-transaction kinds (run is NULL, these three are set):
	 *
	 * prepare: inside the executor's transaction that records the attempt
	 * as started, as the executor (not the owner); may read the database,
	 * must not write it.  Raise to fail the attempt.  May be NULL.
	 *
	 * start: after that transaction committed, with no transaction open.
	 * Must not block.  Return false if the attempt ended already (*result
	 * filled in).
	 *
	 * wait: the sockets of all of this kind's calls in flight (at most
	 * max), and *timeout_ms lowered to when drive must run at the latest.
	 * Returns how many sockets it filled in.
	 *
	 * drive: after the engine waited (on everything: the kinds' sockets,
	 * its latch, a timeout), with the sockets of this kind that are ready
	 * (nready may be 0).  Makes progress on every call; must not block.
	 *
	 * poll: after drive: has this attempt ended?  If so, fill in *result
	 * and return true; the engine then forgets the call (cancel is not
	 * called for it).
	 *
	 * cancel: the engine gives up on a call that has not ended (its
	 * timeout passed, or the executor stops); release what it holds.  No
	 * transaction open.
	 *
	 * Every callback but prepare runs with no transaction open: it must not
	 * raise errors (report failures in *result) and must not touch the
	 * database.
	 */
	void		(*prepare) (WfStepCall *call);
	bool		(*start) (WfStepCall *call, WfStepResult *result);
	bool		(*poll) (WfStepCall *call, WfStepResult *result);
	void		(*cancel) (WfStepCall *call);
	int			(*wait) (WfWaitSocket *sockets, int max, long *timeout_ms);
	void		(*drive) (const WfWaitSocket *ready, int nready);

	/* out-of-transaction kinds: may the step run in a role without this? */
	const char *required_role;	/* NULL: any role that can run the workflow */
} WfStepKind;

/*
 * Register a kind (from _PG_init).  The struct must outlive the process
 * (make it static const).  A name registered twice keeps the first.
 */
static inline void
workflows_register_step_kind(const WfStepKind *kind)
{
	List	  **kinds = (List **) find_rendezvous_variable(WF_STEP_KIND_RENDEZVOUS);
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	*kinds = lappend(*kinds, (void *) kind);
	MemoryContextSwitchTo(old);
}

#endif							/* WORKFLOWS_STEP_KIND_H */

/*-------------------------------------------------------------------------
 *
 * errors.h
 *	  The extension's own SQLSTATE class "WF".
 *
 * Conditions that are specific to durable execution get codes of their own
 * so that workflow code can catch them by name (WHEN SQLSTATE 'WF002') and
 * operators can grep for them.  Everything else uses PostgreSQL's standard
 * codes.  The codes are part of the documented API (README, "Errors").
 *
 * IDENTIFICATION
 *	  src/errors.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef WF_ERRORS_H
#define WF_ERRORS_H

#include "utils/elog.h"

/* internal: a step call must wait; never meant to be caught by user code */
#define ERRCODE_WF_YIELD				MAKE_SQLSTATE('W','F','0','0','0')
/* raised by a step to fail it at once, without retries */
#define ERRCODE_WF_NON_RETRYABLE		MAKE_SQLSTATE('W','F','0','0','1')
/* wait_for_event() reached its timeout */
#define ERRCODE_WF_EVENT_TIMEOUT		MAKE_SQLSTATE('W','F','0','0','2')
/* one attempt of a step exceeded its timeout */
#define ERRCODE_WF_STEP_TIMEOUT			MAKE_SQLSTATE('W','F','0','0','3')
/* a step function was called outside a running workflow */
#define ERRCODE_WF_NOT_IN_WORKFLOW		MAKE_SQLSTATE('W','F','0','0','4')
/* a replayed step no longer matches what it ran before */
#define ERRCODE_WF_STEP_MISMATCH		MAKE_SQLSTATE('W','F','0','0','5')
/* a command is not allowed in the instance's current status */
#define ERRCODE_WF_INVALID_STATUS		MAKE_SQLSTATE('W','F','0','0','6')
/* a limit set by a GUC was exceeded */
#define ERRCODE_WF_LIMIT_EXCEEDED		MAKE_SQLSTATE('W','F','0','0','7')
/* the process running a step died several times: the step is quarantined */
#define ERRCODE_WF_STEP_CRASHED			MAKE_SQLSTATE('W','F','0','0','8')
/* the engine could not advance an instance (not its step's fault: its
 * bookkeeping failed, its function or its owner was dropped) */
#define ERRCODE_WF_ENGINE_FAILED		MAKE_SQLSTATE('W','F','0','0','9')
#define ERRCODE_WF_HTTP_FAILED			MAKE_SQLSTATE('W','F','0','1','0')

/* workflows.await() reached its timeout */
#define ERRCODE_WF_AWAIT_TIMEOUT		MAKE_SQLSTATE('W','F','0','1','1')
/* a spawn would nest instances deeper than workflows.max_depth */
#define ERRCODE_WF_DEPTH_EXCEEDED		MAKE_SQLSTATE('W','F','0','1','2')
/* call()/map(): a child was terminated (errored children raise their own code) */
#define ERRCODE_WF_CHILD_FAILED			MAKE_SQLSTATE('W','F','0','1','3')

#endif							/* WF_ERRORS_H */

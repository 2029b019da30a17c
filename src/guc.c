/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  Every configuration parameter of the extension, in one place.
 *
 * Defaults are chosen for a small server and documented in the README
 * ("Configuration").  Limits exist so that a bad or hostile input is refused
 * with a clear error instead of filling the disk or memory.
 *
 * IDENTIFICATION
 *	  src/guc.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include "utils/guc.h"
#include "utils/memutils.h"

int			wf_max_workers = 2;
int			wf_max_databases = 16;
int			wf_poll_interval_ms = 10000;
int			wf_steps_per_transaction = 1;
bool		wf_inline_steps = true;
int			wf_max_payload_size = 1024 * 1024;
int			wf_max_output_size = 1024 * 1024;
int			wf_max_steps = 10000;
int			wf_max_step_crashes = 3;
char	   *wf_step_search_path = NULL;
int			wf_retention_s = 7 * 24 * 3600;
int			wf_memo_cache_kb = 16 * 1024;
int			wf_audit_retention_s = 30 * 24 * 3600;
int			wf_log_level = WF_LOG_FAILURES;
bool		wf_log_step_details = true;
bool		wf_notify = true;
char	   *wf_http_allowed_hosts = NULL;
int			wf_max_calls = 256;
bool		wf_notify_steps = false;

static const struct config_enum_entry log_level_options[] = {
	{"off", WF_LOG_OFF, false},
	{"failures", WF_LOG_FAILURES, false},
	{"all", WF_LOG_ALL, false},
	{NULL, 0, false}
};

void
wf_define_gucs(void)
{
	DefineCustomIntVariable("workflows.max_workers",
							"Executors started for each database that has the extension.",
							NULL,
							&wf_max_workers,
							2, 1, WF_MAX_WORKERS_LIMIT,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("workflows.max_databases",
							"Databases that can run workflows at the same time.",
							NULL,
							&wf_max_databases,
							16, 1, 1024,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("workflows.poll_interval",
							"Longest time an idle executor sleeps before it looks for work again.",
							"Executors are woken at commit and at the earliest wake time; this is only a fallback.",
							&wf_poll_interval_ms,
							10000, 100, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("workflows.steps_per_transaction",
							"Steps an executor may run and memoize in one transaction.",
							"1 commits every step on its own; more steps per commit raise throughput but make each step visible later.",
							&wf_steps_per_transaction,
							1, 1, 10000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("workflows.inline_steps",
							 "Lets a replay run the steps after the first in place, committing them together.",
							 "A run that then stops anywhere but at its end is rolled back and that stretch runs one step per replay.",
							 &wf_inline_steps,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("workflows.max_payload_size",
							"Largest params of an instance and payload of an event.",
							NULL,
							&wf_max_payload_size,
							1024 * 1024, 1024, MaxAllocSize / 2,
							PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("workflows.max_output_size",
							"Largest output of a step or of an instance.",
							NULL,
							&wf_max_output_size,
							1024 * 1024, 1024, MaxAllocSize / 2,
							PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("workflows.max_steps",
							"Largest number of steps in one instance.",
							NULL,
							&wf_max_steps,
							10000, 1, INT_MAX / 2,
							PGC_SUSET, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("workflows.max_step_crashes",
							"Times a step may crash its executor before it is failed for good.",
							NULL,
							&wf_max_step_crashes,
							3, 1, 100,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("workflows.step_search_path",
							   "search_path under which workflow functions and steps run.",
							   "pg_catalog comes first so that no schema can shadow a built-in.",
							   &wf_step_search_path,
							   "pg_catalog, \"$user\", public",
							   PGC_SUSET, 0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("workflows.retention",
							"How long finished instances are kept before they are deleted.",
							"Complete, errored and terminated instances older than this are deleted with their steps, attempts and events. 0 keeps them forever.",
							&wf_retention_s,
							7 * 24 * 3600, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("workflows.memo_cache_size",
							"Most memory an executor keeps for the step outputs of the instance it runs.",
							"Outputs beyond it stay in workflows.steps and are read when a replay reaches their step.",
							&wf_memo_cache_kb,
							16 * 1024, 0, INT_MAX / 1024,
							PGC_SIGHUP, GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("workflows.audit_retention",
							"How long rows of the audit trail (workflows.audit) are kept.",
							"Older rows are deleted in the background with finished instances and by workflows.purge(). 0 keeps them forever.",
							&wf_audit_retention_s,
							30 * 24 * 3600, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomEnumVariable("workflows.log_level",
							 "What executors write to the server log.",
							 "off: nothing above DEBUG1; failures: failed steps and errored instances at LOG; all: also every instance's start and end.",
							 &wf_log_level,
							 WF_LOG_FAILURES, log_level_options,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("workflows.log_step_details",
							 "Whether error messages and step SQL may appear in the log and in pg_stat_activity.",
							 "Turn off to keep step SQL and payload values (which error messages may quote) out of them.",
							 &wf_log_step_details,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("workflows.max_depth",
							"How deep child instances may nest (workflows.spawn(), call(), map()).",
							"A spawn that would nest deeper fails with SQLSTATE WF012.",
							&wf_max_depth,
							16, 1, 1000,
							PGC_SUSET, 0,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("workflows.notify_steps",
							 "Whether every step that ends is announced with NOTIFY on channel workflows_progress.",
							 "Published values (workflows.set_event()) are announced whenever workflows.notify is on; this adds every other step, at the cost of a NOTIFY (a cluster-wide lock at commit) per step commit.",
							 &wf_notify_steps,
							 false,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("workflows.notify",
							 "Whether the end of an instance is announced with NOTIFY on channel workflows.",
							 "NOTIFY takes a cluster-wide lock at commit; turn it off when nobody listens and instances are short.",
							 &wf_notify,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("workflows.http_allowed_hosts",
							   "Hosts HTTP steps may call: names, *.domain patterns, addresses and networks, or *.",
							   "Loopback, private, link-local and other inner addresses are refused unless an address or network entry contains them; a host name entry never allows them.",
							   &wf_http_allowed_hosts,
							   "*",
							   PGC_SUSET, GUC_LIST_INPUT,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("workflows.max_calls_in_flight",
							"Most out-of-transaction steps (HTTP) one executor drives at once.",
							"A step beyond it waits a moment for a free place, and another executor may take it.",
							&wf_max_calls,
							256, 1, 10000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("workflows");
}

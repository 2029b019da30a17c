-- registration, instances, events, steps

/*
 * Registration and instances
 */
CREATE FUNCTION workflows.register(name text, fn regprocedure)
    RETURNS text
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_register';
COMMENT ON FUNCTION workflows.register(text, regprocedure) IS
    'register fn(jsonb) as the newest version of workflow "name"; returns the version id';

CREATE FUNCTION workflows.create(workflow text, params jsonb DEFAULT '{}', id text DEFAULT NULL,
                                 trigger jsonb DEFAULT NULL, options jsonb DEFAULT NULL)
    RETURNS text
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_create';
COMMENT ON FUNCTION workflows.create(text, jsonb, text, jsonb, jsonb) IS
    'create an instance of a workflow; it starts when the transaction commits (options: priority, delay, startAt); returns its id';

CREATE FUNCTION workflows.send_event(instance text, type text, payload jsonb DEFAULT NULL)
    RETURNS void
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_send_event';
COMMENT ON FUNCTION workflows.send_event(text, text, jsonb) IS
    'deliver an event to an instance; it is kept until a wait_for_event of that type consumes it';

/*
 * Steps: called by workflow functions while an executor runs them
 *
 * These five C functions do not pin search_path, unlike every other
 * function of the extension: they look nothing up by name (the step's own
 * SQL runs later, under workflows.step_search_path), and a SET clause would
 * make every replayed step call go through fmgr_security_definer(), which
 * re-parses search_path each time -- measured at 1.2 us of the 1.4 us that
 * a memoized step call cost, the dominant term of a long instance's replay.
 */
CREATE FUNCTION workflows.step(name text, sql text, args jsonb DEFAULT NULL, config jsonb DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'wf_step_sql';
COMMENT ON FUNCTION workflows.step(text, text, jsonb, jsonb) IS
    'run SQL as a durable step: its result is memoized and its writes commit with the memo';

CREATE FUNCTION workflows.step(name text, fn regprocedure, input jsonb, config jsonb DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'wf_step_fn';
COMMENT ON FUNCTION workflows.step(text, regprocedure, jsonb, jsonb) IS
    'call fn(input) as a durable step: its result is memoized and its writes commit with the memo';

CREATE FUNCTION workflows.sleep(name text, duration interval)
    RETURNS void
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'wf_sleep';
COMMENT ON FUNCTION workflows.sleep(text, interval) IS
    'durably sleep: the instance waits without holding a process';

CREATE FUNCTION workflows.sleep_until(name text, at timestamptz)
    RETURNS void
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'wf_sleep_until';
COMMENT ON FUNCTION workflows.sleep_until(text, timestamptz) IS
    'durably sleep until a point in time';

CREATE FUNCTION workflows.wait_for_event(name text, type text, timeout interval DEFAULT '24 hours')
    RETURNS jsonb
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'wf_wait_for_event';
COMMENT ON FUNCTION workflows.wait_for_event(text, text, interval) IS
    'wait for an event of this type; returns {type, payload, timestamp}; raises WF002 on timeout';

CREATE FUNCTION workflows.fail(message text, detail text DEFAULT NULL)
    RETURNS void
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_fail';
COMMENT ON FUNCTION workflows.fail(text, text) IS
    'raise a non-retryable error (SQLSTATE WF001): the step fails at once, without retries';

CREATE FUNCTION workflows.wait(id text, timeout interval DEFAULT '1 minute')
    RETURNS jsonb
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_wait';
COMMENT ON FUNCTION workflows.wait(text, interval) IS
    'block until the instance is complete, errored or terminated (or the timeout) and return its status document';


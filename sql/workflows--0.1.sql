/* workflows--0.1.sql: durable execution inside PostgreSQL */

\echo Use "CREATE EXTENSION workflows" to load this file. \quit
-- tables, roles, row-level security
/*
 * Roles
 *
 * Members of workflows_admin see and control every instance; everybody else
 * sees and controls the instances they created.  Roles are cluster-wide, so
 * the role survives DROP EXTENSION and is shared by every database.
 */
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'workflows_admin') THEN
        CREATE ROLE workflows_admin NOLOGIN;
    END IF;
END
$$;

/*
 * Tables
 *
 * Every table is keyed by instance id first (except the two small
 * registration tables), so that a distributed PostgreSQL can shard them by
 * instance and keep an instance with its steps.  Nobody but the extension
 * writes them: the API functions check the caller and write as the
 * extension's owner.
 */
-- pinned copies of workflow functions replaced under running instances
CREATE SCHEMA workflows_code;
REVOKE ALL ON SCHEMA workflows_code FROM PUBLIC;

CREATE TABLE workflows.workflows (
    name        text PRIMARY KEY
                CHECK (name <> '' AND octet_length(name) <= 200),
    owner       regrole NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE workflows.versions (
    version_id  text PRIMARY KEY,
    workflow    text NOT NULL REFERENCES workflows.workflows (name) ON DELETE CASCADE,
    fn          regprocedure NOT NULL,
    fn_hash     bigint NOT NULL,
    created_by  regrole NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- the function's definition as registered, to recreate it as
    -- workflows_code."v_<version_id>" if it is replaced while instances of
    -- this version run (NULL for C and internal functions)
    code        text
);
CREATE INDEX versions_by_workflow ON workflows.versions (workflow, created_at DESC);

CREATE TABLE workflows.instances (
    id          text PRIMARY KEY
                CHECK (id <> '' AND octet_length(id) <= 200),
    workflow    text NOT NULL,
    version_id  text NOT NULL REFERENCES workflows.versions (version_id),
    owner       regrole NOT NULL,
    status      text NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'running', 'paused', 'waiting',
                                  'errored', 'terminated', 'complete')),
    params      jsonb NOT NULL,
    output      jsonb,
    error       jsonb,
    trigger     jsonb NOT NULL DEFAULT '{"source": "api"}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    ended_at    timestamptz,
    -- runnable when not null and due; null for final and paused instances
    wake_at     timestamptz,
    -- event type while the instance waits for an event
    waiting_for text,
    -- bumped by every executor commit: tells an executor its memo cache is stale
    revision    bigint NOT NULL DEFAULT 0
);
-- the scheduler's only scan: runnable instances by wake time
CREATE INDEX instances_runnable ON workflows.instances (wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX instances_by_workflow ON workflows.instances (workflow, created_at);
CREATE INDEX instances_by_status ON workflows.instances (status, created_at);

CREATE TABLE workflows.steps (
    instance_id text NOT NULL REFERENCES workflows.instances (id) ON DELETE CASCADE,
    key         text NOT NULL,
    seq         integer NOT NULL,
    name        text NOT NULL,
    type        text NOT NULL CHECK (type IN ('step', 'sleep', 'event')),
    status      text NOT NULL
                CHECK (status IN ('retrying', 'waiting', 'complete', 'failed')),
    output      jsonb,
    error       jsonb,
    config      jsonb,
    hash        bigint,
    attempts    integer NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    -- end of a sleep, deadline of an event wait, or time of the next retry
    wake_at     timestamptz,
    PRIMARY KEY (instance_id, key)
);

CREATE TABLE workflows.attempts (
    instance_id text NOT NULL,
    step_key    text NOT NULL,
    attempt     integer NOT NULL,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz NOT NULL,
    success     boolean NOT NULL,
    error       jsonb,
    PRIMARY KEY (instance_id, step_key, attempt),
    FOREIGN KEY (instance_id, step_key)
        REFERENCES workflows.steps (instance_id, key) ON DELETE CASCADE
);

CREATE TABLE workflows.events (
    instance_id text NOT NULL REFERENCES workflows.instances (id) ON DELETE CASCADE,
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    type        text NOT NULL,
    payload     jsonb,
    sent_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    consumed_by text,
    consumed_at timestamptz,
    PRIMARY KEY (instance_id, seq)
);
-- undelivered events: looked up by the instance that waits for them
CREATE INDEX events_pending ON workflows.events (instance_id, type, seq)
    WHERE consumed_by IS NULL;

-- control commands waiting for the executor that holds the instance
CREATE TABLE workflows.requests (
    instance_id text PRIMARY KEY REFERENCES workflows.instances (id) ON DELETE CASCADE,
    command     text NOT NULL CHECK (command IN ('pause', 'terminate', 'restart')),
    from_step   text,
    requested_by regrole NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now()
);

-- the tables' rows are user data: pg_dump must dump them
SELECT pg_catalog.pg_extension_config_dump('workflows.workflows', '');
SELECT pg_catalog.pg_extension_config_dump('workflows.versions', '');
SELECT pg_catalog.pg_extension_config_dump('workflows.instances', '');
SELECT pg_catalog.pg_extension_config_dump('workflows.steps', '');
SELECT pg_catalog.pg_extension_config_dump('workflows.attempts', '');
SELECT pg_catalog.pg_extension_config_dump('workflows.events', '');
SELECT pg_catalog.pg_extension_config_dump('workflows.requests', '');

/*
 * Row-level security: a role sees the instances it owns (or that a role it
 * belongs to owns); workflows_admin sees all.  Steps, attempts and events
 * follow their instance.  Superusers, and so the executors, bypass RLS.
 */
CREATE FUNCTION workflows._visible(owner regrole) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pg_has_role(owner, 'USAGE') OR pg_has_role('workflows_admin', 'USAGE') $$;

ALTER TABLE workflows.instances ENABLE ROW LEVEL SECURITY;
CREATE POLICY instances_visible ON workflows.instances FOR SELECT
    USING (workflows._visible(owner));

ALTER TABLE workflows.steps ENABLE ROW LEVEL SECURITY;
CREATE POLICY steps_visible ON workflows.steps FOR SELECT
    USING (EXISTS (SELECT 1 FROM workflows.instances i WHERE i.id = instance_id));

ALTER TABLE workflows.attempts ENABLE ROW LEVEL SECURITY;
CREATE POLICY attempts_visible ON workflows.attempts FOR SELECT
    USING (EXISTS (SELECT 1 FROM workflows.instances i WHERE i.id = instance_id));

ALTER TABLE workflows.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY events_visible ON workflows.events FOR SELECT
    USING (EXISTS (SELECT 1 FROM workflows.instances i WHERE i.id = instance_id));

ALTER TABLE workflows.requests ENABLE ROW LEVEL SECURITY;
CREATE POLICY requests_visible ON workflows.requests FOR SELECT
    USING (EXISTS (SELECT 1 FROM workflows.instances i WHERE i.id = instance_id));

REVOKE ALL ON ALL TABLES IN SCHEMA workflows FROM PUBLIC;
GRANT USAGE ON SCHEMA workflows TO PUBLIC;
GRANT SELECT ON workflows.workflows, workflows.versions, workflows.instances,
    workflows.steps, workflows.attempts, workflows.events, workflows.requests TO PUBLIC;

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
                                 trigger jsonb DEFAULT NULL)
    RETURNS text
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_create';
COMMENT ON FUNCTION workflows.create(text, jsonb, text, jsonb) IS
    'create an instance of a workflow; it starts when the transaction commits; returns its id';

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

-- the status document

/*
 * Status document, in the shape hosted workflow products return
 */
CREATE FUNCTION workflows._step_doc(s workflows.steps)
    RETURNS jsonb
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'name', s.name,
        'key', s.key,
        'type', CASE s.type WHEN 'event' THEN 'waitForEvent' ELSE s.type END,
        'status', CASE WHEN s.type = 'sleep' AND s.wake_at > now() THEN 'waiting'
                       ELSE s.status END,
        'start', s.started_at,
        'end', CASE WHEN s.type = 'sleep' THEN s.wake_at ELSE s.ended_at END,
        'nextAttempt', CASE WHEN s.status = 'retrying' THEN s.wake_at END,
        'deadline', CASE WHEN s.type = 'event' AND s.status = 'waiting' THEN s.wake_at END,
        'config', s.config,
        'success', CASE WHEN s.status = 'complete' THEN true
                        WHEN s.status = 'failed' THEN false END,
        'error', s.error))
    || jsonb_build_object('output', s.output)
    || CASE WHEN s.type = 'step' THEN jsonb_build_object('attempts', COALESCE(
        (SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                    'attempt', a.attempt, 'start', a.started_at, 'end', a.ended_at,
                    'success', a.success, 'error', a.error)) ORDER BY a.attempt)
           FROM workflows.attempts a
          WHERE a.instance_id = s.instance_id AND a.step_key = s.key), '[]'))
       ELSE '{}' END
    $$;

CREATE FUNCTION workflows.status(id text)
    RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    i workflows.instances;
BEGIN
    SELECT * INTO i FROM workflows.instances WHERE instances.id = status.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow instance "%" does not exist', id
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN jsonb_build_object(
        'id', i.id,
        'workflow', i.workflow,
        'status', CASE WHEN i.status IN ('queued', 'running', 'waiting') AND EXISTS (
                           SELECT 1 FROM workflows.requests r
                            WHERE r.instance_id = i.id AND r.command = 'pause')
                       THEN 'waitingForPause' ELSE i.status END,
        'params', i.params,
        'trigger', i.trigger,
        'versionId', i.version_id,
        'queued', i.created_at,
        'start', i.started_at,
        'end', i.ended_at,
        'success', CASE i.status WHEN 'complete' THEN true
                                 WHEN 'errored' THEN false
                                 WHEN 'terminated' THEN false END,
        'steps', COALESCE((SELECT jsonb_agg(workflows._step_doc(s) ORDER BY s.seq)
                             FROM workflows.steps s WHERE s.instance_id = i.id), '[]'),
        'error', i.error,
        'output', i.output);
END
$$;
COMMENT ON FUNCTION workflows.status(text) IS
    'the instance as one JSON document: status, params, trigger, versionId, times, steps with attempts, error, output';


/*
 * Executors and listing
 */
CREATE FUNCTION workflows._executors(OUT pid integer, OUT datid oid, OUT executor integer,
                                     OUT instance text, OUT step text, OUT since timestamptz)
    RETURNS SETOF record
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_executors';

CREATE VIEW workflows.executors AS
    SELECT e.pid, d.datname, e.executor, e.instance, e.step, e.since
      FROM workflows._executors() e
      LEFT JOIN pg_catalog.pg_database d ON d.oid = e.datid;
COMMENT ON VIEW workflows.executors IS
    'the executors of this server: process, database, and the instance and step each runs (for instances you may see)';
GRANT SELECT ON workflows.executors TO PUBLIC;

CREATE INDEX instances_by_created ON workflows.instances (created_at, id);
CREATE INDEX instances_finished ON workflows.instances (ended_at) WHERE ended_at IS NOT NULL;

CREATE FUNCTION workflows.list(workflow text DEFAULT NULL, status text DEFAULT NULL,
                               created_after timestamptz DEFAULT NULL,
                               created_before timestamptz DEFAULT NULL,
                               page_size integer DEFAULT 50, after_id text DEFAULT NULL)
    RETURNS SETOF workflows.instances
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    after_created timestamptz;
BEGIN
    IF page_size IS NULL OR page_size < 1 OR page_size > 10000 THEN
        RAISE EXCEPTION 'page_size must be from 1 to 10000' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF after_id IS NOT NULL THEN
        SELECT i.created_at INTO after_created FROM workflows.instances i WHERE i.id = after_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'workflow instance "%" does not exist', after_id
                USING ERRCODE = 'undefined_object';
        END IF;
    END IF;
    RETURN QUERY
        SELECT i.*
          FROM workflows.instances i
         WHERE (list.workflow IS NULL OR i.workflow = list.workflow)
           AND (list.status IS NULL OR i.status = list.status)
           AND (created_after IS NULL OR i.created_at >= created_after)
           AND (created_before IS NULL OR i.created_at < created_before)
           AND (after_id IS NULL OR (i.created_at, i.id) > (after_created, after_id))
         ORDER BY i.created_at, i.id
         LIMIT page_size;
END
$$;
COMMENT ON FUNCTION workflows.list(text, text, timestamptz, timestamptz, integer, text) IS
    'list instances by workflow, status and creation time, oldest first; page with after_id => the last id of the previous page';
-- control commands and batches

/*
 * Control commands
 *
 * _apply() performs a command on an instance whose row the caller has
 * locked: the command functions when no executor holds the instance, an
 * executor at its step boundary otherwise.  With strict, a command the
 * current status does not allow is an error naming the status; without, it
 * is dropped (an executor applying a stale request).  Returns the new
 * status.  See the README's table of statuses and commands.
 */
CREATE FUNCTION workflows._apply(instance text, command text, from_step text, strict boolean)
    RETURNS text
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    i workflows.instances;
    from_seq integer := 0;
    new_status text;
BEGIN
    SELECT * INTO i FROM workflows.instances WHERE id = instance;
    DELETE FROM workflows.requests r WHERE r.instance_id = instance;
    IF command = 'pause' AND i.status IN ('queued', 'running', 'waiting') THEN
        new_status := 'paused';
        UPDATE workflows.instances
           SET status = 'paused', wake_at = NULL, waiting_for = NULL, revision = revision + 1
         WHERE id = instance;
    ELSIF command = 'resume' AND i.status = 'paused' THEN
        new_status := CASE WHEN i.started_at IS NULL THEN 'queued' ELSE 'running' END;
        UPDATE workflows.instances
           SET status = new_status, wake_at = now(), revision = revision + 1
         WHERE id = instance;
    ELSIF command = 'terminate' AND i.status NOT IN ('complete', 'errored', 'terminated') THEN
        new_status := 'terminated';
        UPDATE workflows.instances
           SET status = 'terminated', wake_at = NULL, waiting_for = NULL,
               ended_at = now(), revision = revision + 1
         WHERE id = instance;
        -- like the executors' notice of complete and errored instances
        IF current_setting('workflows.notify')::boolean THEN
            PERFORM pg_notify('workflows', jsonb_build_object('id', instance, 'status', 'terminated')::text);
        END IF;
    ELSIF command = 'restart' THEN
        IF from_step IS NOT NULL THEN
            SELECT s.seq INTO from_seq FROM workflows.steps s
             WHERE s.instance_id = instance AND s.key = from_step;
            IF NOT FOUND THEN
                IF NOT strict THEN
                    RETURN i.status;
                END IF;
                RAISE EXCEPTION 'workflow instance "%" has no step "%"', instance, from_step
                    USING ERRCODE = 'undefined_object',
                          HINT = 'Steps are named by their key: the name, plus "#n" for the n-th step of that name.';
            END IF;
        END IF;
        -- events taken by the steps that will run again can be taken again
        UPDATE workflows.events e SET consumed_by = NULL, consumed_at = NULL
         WHERE e.instance_id = instance AND e.consumed_by IN (
               SELECT s.key FROM workflows.steps s
                WHERE s.instance_id = instance AND s.seq >= from_seq);
        DELETE FROM workflows.steps s WHERE s.instance_id = instance AND s.seq >= from_seq;
        new_status := CASE WHEN from_seq = 0 THEN 'queued' ELSE 'running' END;
        UPDATE workflows.instances
           SET status = new_status, wake_at = now(), waiting_for = NULL, output = NULL,
               error = NULL, ended_at = NULL,
               started_at = CASE WHEN from_seq = 0 THEN NULL ELSE started_at END,
               revision = revision + 1
         WHERE id = instance;
    ELSIF strict THEN
        RAISE EXCEPTION 'cannot % workflow instance "%": it is %', command, instance, i.status
            USING ERRCODE = 'WF006';
    ELSE
        new_status := i.status;
    END IF;
    RETURN new_status;
END
$$;
REVOKE ALL ON FUNCTION workflows._apply(text, text, text, boolean) FROM PUBLIC;

CREATE FUNCTION workflows.pause(id text)
    RETURNS text
    LANGUAGE c VOLATILE STRICT
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_pause';
COMMENT ON FUNCTION workflows.pause(text) IS
    'pause an instance at its next step boundary; returns paused or waitingForPause';

CREATE FUNCTION workflows.resume(id text)
    RETURNS text
    LANGUAGE c VOLATILE STRICT
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_resume';
COMMENT ON FUNCTION workflows.resume(text) IS
    'resume a paused instance; returns its new status';

CREATE FUNCTION workflows.terminate(id text)
    RETURNS text
    LANGUAGE c VOLATILE STRICT
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_terminate';
COMMENT ON FUNCTION workflows.terminate(text) IS
    'stop an instance for good (a running one at its step boundary); returns terminated or terminating';

CREATE FUNCTION workflows.restart(id text, from_step text DEFAULT NULL)
    RETURNS text
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_restart';
COMMENT ON FUNCTION workflows.restart(text, text) IS
    'run an instance again from the start, or from a step (keeping the memos of the steps before it)';

CREATE FUNCTION workflows.create_batch(workflow text, instances jsonb, if_not_exists boolean DEFAULT false)
    RETURNS SETOF text
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_create_batch';
COMMENT ON FUNCTION workflows.create_batch(text, jsonb, boolean) IS
    'create many instances atomically from [{"id": ..., "params": ...}, ...]; returns their ids';

/*
 * Retention: executor 0 of each database deletes finished instances older
 * than workflows.retention in the background; purge() does it now.
 */
CREATE FUNCTION workflows.purge(older_than interval)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    n bigint;
BEGIN
    IF older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must not be negative' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM workflows.instances i
     WHERE i.status IN ('complete', 'errored', 'terminated')
       AND i.ended_at < now() - older_than;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION workflows.purge(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION workflows.purge(interval) TO workflows_admin;
COMMENT ON FUNCTION workflows.purge(interval) IS
    'delete complete, errored and terminated instances that ended more than older_than ago, with their steps, attempts and events';
-- starting instances: cron schedules (pg_cron) and table inserts

/*
 * Cron schedules
 *
 * A schedule is a pg_cron job named "workflows:<schedule name>", owned by
 * the role that called schedule() (pg_cron runs a job as the role that
 * scheduled it, in the database it was scheduled in).  The job's command
 * carries the whole schedule as one JSON document:
 *
 *     SELECT workflows._scheduled($wf${"schedule": ..., "workflow": ...,
 *                                      "params": ..., "overlap": ...}$wf$)
 *
 * so cron.job is the only place a schedule is stored: nothing to keep in
 * step with it, and workflows.schedules reads it back from there.  pg_cron
 * is optional: it is looked up at run time (dynamic SQL), and schedule()
 * explains how to install it when it is missing.
 */

-- the prefix of the pg_cron job names of schedules; a job name is a "name"
-- (at most 63 bytes), which leaves 53 bytes for the schedule's name
CREATE FUNCTION workflows._cron_job_name(schedule_name text)
    RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT 'workflows:' || schedule_name $$;
-- used by the invoker-rights functions below: harmless, so left executable
GRANT EXECUTE ON FUNCTION workflows._cron_job_name(text) TO PUBLIC;

-- raise a helpful error unless pg_cron can be used from here by this role
CREATE FUNCTION workflows._require_cron()
    RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    preloaded boolean;      -- null: cannot tell (the settings are superuser-only)
    crondb text;
    db text := pg_catalog.current_database();
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        BEGIN
            preloaded := 'pg_cron' = ANY (pg_catalog.string_to_array(pg_catalog.translate(
                pg_catalog.current_setting('shared_preload_libraries'), ' "', ''), ','));
            IF preloaded THEN
                crondb := pg_catalog.current_setting('cron.database_name', true);
            END IF;
        EXCEPTION WHEN insufficient_privilege THEN
            preloaded := NULL;
        END;
        RAISE EXCEPTION 'pg_cron is not installed in database "%"', db
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'Workflow schedules are pg_cron jobs.',
                  HINT = CASE
                      WHEN preloaded AND crondb IS DISTINCT FROM db THEN pg_catalog.format(
                          'pg_cron runs its jobs in database "%s" (cron.database_name): schedule workflows there, '
                          'or set cron.database_name = ''%s'' in postgresql.conf, restart the server, '
                          'then run CREATE EXTENSION pg_cron in database "%s".', crondb, db, db)
                      WHEN preloaded THEN 'Run CREATE EXTENSION pg_cron in this database.'
                      ELSE pg_catalog.format(
                          'Install pg_cron: add pg_cron to shared_preload_libraries and set cron.database_name = ''%s'' '
                          'in postgresql.conf, restart the server, then run CREATE EXTENSION pg_cron in database "%s".',
                          db, db)
                  END;
    END IF;
    IF NOT pg_catalog.has_schema_privilege('cron', 'USAGE') THEN
        RAISE EXCEPTION 'permission denied for schema cron'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = pg_catalog.format('A superuser can allow it: GRANT USAGE ON SCHEMA cron TO %I;',
                                           current_user);
    END IF;
END
$$;
-- called by the invoker-rights functions below; it only reads settings
GRANT EXECUTE ON FUNCTION workflows._require_cron() TO PUBLIC;

/*
 * The command of a schedule's job: create an instance of the workflow with
 * trigger {"source": "cron", "schedule": <name>}, as the job's role; with
 * overlap "skip", only if no instance that this schedule started (for this
 * role) is still queued, running, waiting or paused.  Returns the new
 * instance's id, or NULL when skipped.
 *
 * pg_cron runs it as the role that scheduled the job, so it must stay
 * executable by PUBLIC; it confers nothing: create() checks the caller as
 * usual and the instance belongs to the caller.
 */
CREATE FUNCTION workflows._scheduled(spec jsonb)
    RETURNS text
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    sched text := spec->>'schedule';
    me oid := (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user);
    busy workflows.instances;
BEGIN
    IF pg_catalog.jsonb_typeof(spec) IS DISTINCT FROM 'object' OR sched IS NULL
       OR spec->>'workflow' IS NULL THEN
        RAISE EXCEPTION 'invalid workflow schedule: %', spec
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Create schedules with workflows.schedule().';
    END IF;
    IF spec->>'overlap' = 'skip' THEN
        -- one run of a schedule at a time decides (pg_cron does not start a
        -- job while its previous run is active, but a manual run could)
        PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('workflows._scheduled'),
                                                 pg_catalog.hashtext(me::text || ':' || sched));
        SELECT * INTO busy FROM workflows.instances i
         WHERE i.status IN ('queued', 'running', 'waiting', 'paused')
           AND i.trigger->>'source' = 'cron' AND i.trigger->>'schedule' = sched
           AND i.owner::oid = me
         ORDER BY i.created_at
         LIMIT 1;
        IF FOUND THEN
            RAISE NOTICE 'schedule "%" skipped: instance "%" is still %', sched, busy.id, busy.status;
            RETURN NULL;
        END IF;
    END IF;
    RETURN workflows.create(workflow => spec->>'workflow',
                            params => COALESCE(spec->'params', '{}'),
                            id => NULL,
                            trigger => pg_catalog.jsonb_build_object('source', 'cron', 'schedule', sched));
END
$$;
GRANT EXECUTE ON FUNCTION workflows._scheduled(jsonb) TO PUBLIC;

-- the skip policy's check and workflows.schedules' last instance
CREATE INDEX instances_by_schedule ON workflows.instances ((trigger->>'schedule'), created_at)
    WHERE trigger->>'source' = 'cron';

CREATE FUNCTION workflows.schedule(schedule_name text, cron text, workflow text,
                                   params jsonb DEFAULT '{}', overlap text DEFAULT 'allow')
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    fn regprocedure;
    body text;
    tag text := 'wf';
    jobid bigint;
BEGIN
    IF schedule_name IS NULL OR schedule_name = '' OR octet_length(schedule_name) > 53 THEN
        RAISE EXCEPTION 'schedule name must be 1 to 53 bytes long'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF schedule.cron IS NULL THEN
        RAISE EXCEPTION 'cron schedule must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Use a cron expression such as ''0 3 * * *'' (every day at 03:00).';
    END IF;
    IF schedule.params IS NULL THEN
        RAISE EXCEPTION 'instance params must not be null'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass ''{}'' for no params.';
    END IF;
    IF overlap IS NULL OR overlap NOT IN ('allow', 'skip') THEN
        RAISE EXCEPTION 'invalid overlap policy "%"', overlap
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use ''allow'' (start an instance at every tick) or ''skip'' '
                         '(not while the previous one is unfinished).';
    END IF;
    SELECT v.fn INTO fn FROM workflows.versions v
     WHERE v.workflow = schedule.workflow ORDER BY v.created_at DESC LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow "%" does not exist', schedule.workflow
            USING ERRCODE = 'undefined_object', HINT = 'Register it with workflows.register().';
    END IF;
    IF NOT has_function_privilege(fn, 'EXECUTE') THEN
        RAISE EXCEPTION 'permission denied for function %', fn
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'The instances a schedule starts belong to the role that scheduled it, '
                           'which must be allowed to execute the workflow''s function.';
    END IF;
    PERFORM workflows._require_cron();

    body := jsonb_build_object('schedule', schedule_name, 'workflow', schedule.workflow,
                               'params', schedule.params, 'overlap', overlap)::text;
    WHILE strpos(body, '$' || tag || '$') > 0 LOOP
        tag := tag || 'x';
    END LOOP;
    -- cron syntax errors come from pg_cron; an existing schedule of this
    -- name (of this role) is replaced
    EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO jobid
        USING workflows._cron_job_name(schedule_name), schedule.cron,
              format('SELECT workflows._scheduled($%s$%s$%s$)', tag, body, tag);
    RETURN jobid;
END
$$;
COMMENT ON FUNCTION workflows.schedule(text, text, text, jsonb, text) IS
    'start an instance of a workflow on a cron schedule (a pg_cron job); overlap allow|skip; returns the job id';

CREATE FUNCTION workflows.unschedule(schedule_name text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    present boolean;
BEGIN
    IF schedule_name IS NULL THEN
        RAISE EXCEPTION 'schedule name must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM workflows._require_cron();
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM cron.job WHERE jobname = $1 AND username = current_user)'
        INTO present USING workflows._cron_job_name(schedule_name);
    IF NOT present THEN
        RAISE EXCEPTION 'schedule "%" does not exist', schedule_name
            USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE 'SELECT cron.unschedule($1::name)' USING workflows._cron_job_name(schedule_name);
END
$$;
COMMENT ON FUNCTION workflows.unschedule(text) IS
    'remove a schedule made by workflows.schedule(); instances it started are not touched';

/*
 * The schedules the caller can see: pg_cron shows a role its own jobs
 * (superusers see all).  Empty when pg_cron is not installed here or the
 * caller may not use its schema.
 */
CREATE FUNCTION workflows.schedules()
    RETURNS TABLE (schedule_name text, cron text, workflow text, params jsonb, overlap text,
                   active boolean, owner text, database text, jobid bigint,
                   last_run_at timestamptz, last_run_status text, last_run_message text,
                   last_instance text, last_instance_status text)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    j record;
    m text[];
    spec jsonb;
    recent workflows.instances;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        RETURN;
    END IF;
    IF NOT has_schema_privilege('cron', 'USAGE') THEN
        RETURN;
    END IF;
    FOR j IN EXECUTE $q$
        SELECT j.jobid, j.jobname::text AS jobname, j.schedule, j.command, j.username::text AS username,
               j.database::text AS database, COALESCE((to_jsonb(j)->>'active')::boolean, true) AS active,
               r.start_time, r.status, r.return_message
          FROM cron.job j
          LEFT JOIN LATERAL (SELECT d.start_time, d.status, d.return_message
                               FROM cron.job_run_details d
                              WHERE d.jobid = j.jobid
                              ORDER BY d.runid DESC LIMIT 1) r ON true
         WHERE left(j.jobname, 10) = 'workflows:'
         ORDER BY j.jobname, j.username
    $q$
    LOOP
        schedule_name := substr(j.jobname, 11);
        cron := j.schedule;
        m := regexp_match(j.command, '^SELECT workflows\._scheduled\(\$(\w*)\$(.*)\$\1\$\)$');
        spec := NULL;
        IF m IS NOT NULL THEN
            BEGIN
                spec := m[2]::jsonb;
            EXCEPTION WHEN invalid_text_representation THEN
                spec := NULL;
            END;
        END IF;
        workflow := spec->>'workflow';
        params := spec->'params';
        overlap := spec->>'overlap';
        active := j.active;
        owner := j.username;
        database := j.database;
        jobid := j.jobid;
        last_run_at := j.start_time;
        last_run_status := j.status;
        last_run_message := j.return_message;
        recent := NULL;
        IF j.database = current_database() THEN
            SELECT * INTO recent FROM workflows.instances i
             WHERE i.trigger->>'source' = 'cron' AND i.trigger->>'schedule' = schedule_name
               AND i.owner::oid = (SELECT r.oid FROM pg_roles r WHERE r.rolname = j.username)
             ORDER BY i.created_at DESC LIMIT 1;
        END IF;
        last_instance := recent.id;
        last_instance_status := recent.status;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION workflows.schedules() IS
    'the workflow schedules (pg_cron jobs) the caller can see, with their last run and last instance';

CREATE VIEW workflows.schedules WITH (security_invoker = true) AS
    SELECT * FROM workflows.schedules();
COMMENT ON VIEW workflows.schedules IS
    'the workflow schedules (pg_cron jobs) the caller can see, with their last run and last instance';
GRANT SELECT ON workflows.schedules TO PUBLIC;

/*
 * Starting instances from table inserts
 *
 * start_on_insert() puts an AFTER INSERT ... FOR EACH ROW trigger on a
 * table.  For every inserted row it creates an instance with the row (as
 * jsonb) as params and trigger {"source": "trigger", "table": ...,
 * "operation": "INSERT"}, in the inserting transaction: an insert that
 * rolls back starts nothing.  The instance belongs to the inserting role,
 * which must be allowed to execute the workflow's function.
 */

-- the trigger's name for a workflow: "workflows_start_<workflow>", cut to
-- fit an identifier (with a hash of the whole name when cut)
CREATE FUNCTION workflows._start_trigger_name(workflow text)
    RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    tname text := 'workflows_start_' || workflow;
BEGIN
    IF octet_length(tname) <= 63 THEN
        RETURN tname;
    END IF;
    tname := left(tname, 54);
    WHILE octet_length(tname) > 54 LOOP
        tname := left(tname, -1);
    END LOOP;
    RETURN tname || '_' || left(md5(workflow), 8);
END
$$;
GRANT EXECUTE ON FUNCTION workflows._start_trigger_name(text) TO PUBLIC;

-- the trigger function: runs as the inserting role.  CREATE TRIGGER needs
-- EXECUTE on it, so it stays executable by PUBLIC; it can only be called
-- as a trigger, and only creates instances through create().
CREATE FUNCTION workflows._start_from_row()
    RETURNS trigger
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    trg jsonb := jsonb_build_object('source', 'trigger',
                                    'table', format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME),
                                    'operation', TG_OP);
    root text;
BEGIN
    IF TG_LEVEL <> 'ROW' OR TG_NARGS < 1 THEN
        RAISE EXCEPTION 'workflows._start_from_row() must be a row trigger with the workflow''s name as argument'
            USING ERRCODE = 'trigger_protocol_violated';
    END IF;
    -- a row inserted into a partitioned table: name the table, and the
    -- partition the row went to
    IF (SELECT c.relispartition FROM pg_class c WHERE c.oid = TG_RELID) THEN
        SELECT format('%I.%I', n.nspname, c.relname) INTO root
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = pg_partition_root(TG_RELID);
        trg := trg || jsonb_build_object('table', root, 'partition', trg->'table');
    END IF;
    PERFORM workflows.create(workflow => TG_ARGV[0], params => to_jsonb(NEW), id => NULL,
                             trigger => trg);
    RETURN NULL;
END
$$;
GRANT EXECUTE ON FUNCTION workflows._start_from_row() TO PUBLIC;

CREATE FUNCTION workflows.start_on_insert(tbl regclass, workflow text)
    RETURNS text
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    tname text := workflows._start_trigger_name(start_on_insert.workflow);
BEGIN
    IF tbl IS NULL OR workflow IS NULL THEN
        RAISE EXCEPTION 'table and workflow must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM workflows.workflows w WHERE w.name = start_on_insert.workflow) THEN
        RAISE EXCEPTION 'workflow "%" does not exist', workflow
            USING ERRCODE = 'undefined_object', HINT = 'Register it with workflows.register().';
    END IF;
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = tbl) NOT IN ('r', 'p', 'f') THEN
        RAISE EXCEPTION '"%" is not a table', tbl
            USING ERRCODE = 'wrong_object_type';
    END IF;
    -- CREATE TRIGGER checks the caller's rights (the TRIGGER privilege)
    EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER INSERT ON %s FOR EACH ROW '
                   'EXECUTE FUNCTION workflows._start_from_row(%L)',
                   tname, tbl, workflow);
    RETURN tname;
END
$$;
COMMENT ON FUNCTION workflows.start_on_insert(regclass, text) IS
    'start an instance of a workflow for every row inserted into a table (row as params), in the inserting transaction; returns the trigger''s name';

CREATE FUNCTION workflows.stop_on_insert(tbl regclass, workflow text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    tname text := workflows._start_trigger_name(stop_on_insert.workflow);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger t
                    WHERE t.tgrelid = tbl AND t.tgname = tname
                      AND t.tgfoid = 'workflows._start_from_row()'::regprocedure) THEN
        RAISE EXCEPTION 'table % does not start workflow "%"', tbl, workflow
            USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format('DROP TRIGGER %I ON %s', tname, tbl);
END
$$;
COMMENT ON FUNCTION workflows.stop_on_insert(regclass, text) IS
    'undo workflows.start_on_insert(): inserts into the table no longer start the workflow';

-- observability: describe(), metrics views

/*
 * Formatting helpers for describe().  They are used by invoker-rights
 * functions and only format their arguments, so they stay executable.
 */
CREATE FUNCTION workflows._fmt_interval(d interval)
    RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE WHEN x.neg THEN '-' ELSE '' END || CASE
        WHEN x.s < 1 THEN round(x.s * 1000)::bigint || 'ms'
        WHEN x.s < 60 THEN to_char(x.s, 'FM990.0') || 's'
        WHEN x.s < 3600 THEN floor(x.s / 60)::bigint || 'm '
                             || lpad(floor(mod(x.s, 60))::bigint::text, 2, '0') || 's'
        WHEN x.s < 86400 THEN floor(x.s / 3600)::bigint || 'h '
                              || lpad(floor(mod(x.s, 3600) / 60)::bigint::text, 2, '0') || 'm'
        ELSE floor(x.s / 86400)::bigint || 'd '
             || lpad(floor(mod(x.s, 86400) / 3600)::bigint::text, 2, '0') || 'h'
        END
      FROM (SELECT abs(extract(epoch FROM d)) AS s, extract(epoch FROM d) < 0 AS neg) x
     WHERE d IS NOT NULL
    $$;
GRANT EXECUTE ON FUNCTION workflows._fmt_interval(interval) TO PUBLIC;

-- JSON on one line, cut to at most n characters
CREATE FUNCTION workflows._fmt_json(j jsonb, n integer DEFAULT 200)
    RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE WHEN length(t) > n THEN left(t, n - 1) || '…' ELSE t END
      FROM (SELECT j::text AS t) x
    $$;
GRANT EXECUTE ON FUNCTION workflows._fmt_json(jsonb, integer) TO PUBLIC;

-- text on one line (newlines and tabs become spaces), cut to n characters
CREATE FUNCTION workflows._fmt_line(t text, n integer DEFAULT 200)
    RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE WHEN length(u) > n THEN left(u, n - 1) || '…' ELSE u END
      FROM (SELECT regexp_replace(t, '\s+', ' ', 'g') AS u) x
    $$;
GRANT EXECUTE ON FUNCTION workflows._fmt_line(text, integer) TO PUBLIC;

/*
 * describe(id): an instance for people, one line per row, in the shape of
 * the "describe" commands of hosted workflow products: a header (workflow,
 * id, version, status, trigger, times, last successful step, params,
 * output, error), then a table of the steps.  Readable in psql without \x:
 *
 *     SELECT * FROM workflows.describe('order-1234');
 */
CREATE FUNCTION workflows.describe(id text)
    RETURNS SETOF text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    i workflows.instances;
    st workflows.steps;
    cur workflows.steps;
    ok workflows.steps;
    req workflows.requests;
    label_width constant integer := 11;
    state text;
    trg text;
    nsteps integer := 0;
    ncomplete integer := 0;
    nevents integer;
    npending integer;
    -- the steps table, by column
    c_n text[] := ARRAY['#'];
    c_key text[] := ARRAY['step'];
    c_type text[] := ARRAY['type'];
    c_start text[] := ARRAY['start'];
    c_end text[] := ARRAY['end'];
    c_dur text[] := ARRAY['duration'];
    c_att text[] := ARRAY['attempts'];
    c_status text[] := ARRAY['status'];
    w integer[];
    k integer;
    s_status text;
    s_end timestamptz;
    day date;
BEGIN
    SELECT * INTO i FROM workflows.instances WHERE instances.id = describe.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow instance "%" does not exist', describe.id
            USING ERRCODE = 'undefined_object';
    END IF;
    SELECT * INTO req FROM workflows.requests r WHERE r.instance_id = i.id;
    -- the step the instance waits in, if any
    SELECT * INTO cur FROM workflows.steps s
     WHERE s.instance_id = i.id AND s.status IN ('waiting', 'retrying')
     ORDER BY s.seq DESC LIMIT 1;
    SELECT * INTO ok FROM workflows.steps s
     WHERE s.instance_id = i.id AND s.status = 'complete'
     ORDER BY s.seq DESC LIMIT 1;
    day := (i.created_at)::date;

    state := CASE i.status
        WHEN 'complete' THEN '✓ complete'
        WHEN 'errored' THEN '✗ errored'
        WHEN 'terminated' THEN '■ terminated'
        WHEN 'paused' THEN '⏸ paused'
        WHEN 'waiting' THEN '◷ waiting'
        WHEN 'running' THEN '▶ running'
        WHEN 'queued' THEN '… queued'
        ELSE i.status END;
    IF i.status = 'waiting' AND cur.key IS NOT NULL THEN
        state := state || CASE
            WHEN cur.type = 'event' THEN format(': for event "%s" in step "%s", until %s',
                COALESCE(i.waiting_for, '?'), cur.key,
                to_char(cur.wake_at, 'YYYY-MM-DD HH24:MI:SS.MS TZ'))
            WHEN cur.type = 'sleep' THEN format(': sleeping in step "%s" until %s',
                cur.key, to_char(cur.wake_at, 'YYYY-MM-DD HH24:MI:SS.MS TZ'))
            ELSE format(': step "%s" will retry at %s (attempt %s failed)',
                cur.key, to_char(cur.wake_at, 'YYYY-MM-DD HH24:MI:SS.MS TZ'), cur.attempts)
            END;
    END IF;
    IF req.command IS NOT NULL AND i.status NOT IN ('complete', 'errored', 'terminated') THEN
        state := state || format(' (%s requested)', req.command);
    END IF;

    trg := CASE i.trigger->>'source'
        WHEN 'api' THEN 'api'
        WHEN 'cron' THEN format('cron, schedule "%s"', i.trigger->>'schedule')
        WHEN 'trigger' THEN format('%s on table %s', i.trigger->>'operation', i.trigger->>'table')
        ELSE NULL END;
    IF trg IS NULL OR (i.trigger - ARRAY['source', 'schedule', 'operation', 'table']) <> '{}' THEN
        trg := workflows._fmt_json(i.trigger);
    END IF;

    RETURN NEXT rpad('workflow', label_width) || i.workflow;
    RETURN NEXT rpad('id', label_width) || i.id;
    RETURN NEXT rpad('version', label_width) || i.version_id;
    RETURN NEXT rpad('status', label_width) || state;
    RETURN NEXT rpad('trigger', label_width) || trg;
    RETURN NEXT rpad('queued', label_width) || to_char(i.created_at, 'YYYY-MM-DD HH24:MI:SS.MS TZ');
    RETURN NEXT rpad('started', label_width)
                || COALESCE(to_char(i.started_at, 'YYYY-MM-DD HH24:MI:SS.MS TZ'), '-');
    RETURN NEXT rpad('ended', label_width)
                || COALESCE(to_char(i.ended_at, 'YYYY-MM-DD HH24:MI:SS.MS TZ'), '-');
    RETURN NEXT rpad('duration', label_width) || CASE
        WHEN i.started_at IS NULL THEN '-'
        WHEN i.ended_at IS NOT NULL THEN workflows._fmt_interval(i.ended_at - i.started_at)
        ELSE workflows._fmt_interval(clock_timestamp() - i.started_at) || ' so far' END;
    RETURN NEXT rpad('last step', label_width) || CASE
        WHEN ok.key IS NULL THEN '-'
        ELSE format('%s (%s)', ok.key, to_char(COALESCE(ok.ended_at, ok.wake_at),
                                                  'YYYY-MM-DD HH24:MI:SS.MS TZ')) END;
    SELECT count(*), count(*) FILTER (WHERE e.consumed_by IS NULL) INTO nevents, npending
      FROM workflows.events e WHERE e.instance_id = i.id;
    IF nevents > 0 THEN
        RETURN NEXT rpad('events', label_width) || format('%s received, %s pending', nevents, npending);
    END IF;
    RETURN NEXT rpad('params', label_width) || workflows._fmt_json(i.params);
    RETURN NEXT rpad('output', label_width) || COALESCE(workflows._fmt_json(i.output), '-');
    IF i.error IS NULL THEN
        RETURN NEXT rpad('error', label_width) || '-';
    ELSE
        RETURN NEXT rpad('error', label_width)
                    || COALESCE(i.error->>'sqlstate' || ': ', '')
                    || workflows._fmt_line(COALESCE(i.error->>'message', i.error::text));
        IF i.error->>'detail' IS NOT NULL THEN
            RETURN NEXT rpad('  detail', label_width) || workflows._fmt_line(i.error->>'detail');
        END IF;
        IF i.error->>'hint' IS NOT NULL THEN
            RETURN NEXT rpad('  hint', label_width) || workflows._fmt_line(i.error->>'hint');
        END IF;
    END IF;

    -- the steps
    FOR st IN SELECT * FROM workflows.steps s WHERE s.instance_id = i.id ORDER BY s.seq LOOP
        nsteps := nsteps + 1;
        IF st.status = 'complete' THEN
            ncomplete := ncomplete + 1;
        END IF;
        -- a sleep ends at its wake time
        s_end := CASE WHEN st.type = 'sleep' AND st.status = 'complete' THEN st.wake_at
                      ELSE st.ended_at END;
        s_status := CASE
            WHEN st.status = 'complete' THEN '✓ complete'
            WHEN st.status = 'failed' THEN '✗ failed: '
                 || COALESCE(st.error->>'sqlstate' || ': ', '')
                 || workflows._fmt_line(COALESCE(st.error->>'message', st.error::text), 80)
            WHEN st.status = 'retrying' THEN format('↻ retry at %s after: %s',
                 to_char(st.wake_at, CASE WHEN st.wake_at::date = day THEN 'HH24:MI:SS.MS'
                                          ELSE 'YYYY-MM-DD HH24:MI:SS.MS' END),
                 workflows._fmt_line(COALESCE(st.error->>'message', st.error::text), 60))
            WHEN st.type = 'sleep' THEN '◷ until ' || to_char(st.wake_at,
                 CASE WHEN st.wake_at::date = day THEN 'HH24:MI:SS.MS' ELSE 'YYYY-MM-DD HH24:MI:SS.MS' END)
            WHEN st.type = 'event' THEN '◷ event'
                 || COALESCE(' "' || CASE WHEN cur.key = st.key THEN i.waiting_for END || '"', '')
                 || ' until ' || to_char(st.wake_at,
                 CASE WHEN st.wake_at::date = day THEN 'HH24:MI:SS.MS' ELSE 'YYYY-MM-DD HH24:MI:SS.MS' END)
            ELSE st.status END;
        c_n := c_n || (st.seq + 1)::text;
        c_key := c_key || workflows._fmt_line(st.key, 40);
        c_type := c_type || st.type;
        c_start := c_start || to_char(st.started_at,
            CASE WHEN st.started_at::date = day THEN 'HH24:MI:SS.MS' ELSE 'YYYY-MM-DD HH24:MI:SS.MS' END);
        c_end := c_end || COALESCE(to_char(s_end,
            CASE WHEN s_end::date = day THEN 'HH24:MI:SS.MS' ELSE 'YYYY-MM-DD HH24:MI:SS.MS' END), '-');
        c_dur := c_dur || COALESCE(workflows._fmt_interval(s_end - st.started_at), '-');
        c_att := c_att || CASE WHEN st.type = 'step' THEN st.attempts::text ELSE '-' END;
        c_status := c_status || s_status;
    END LOOP;

    RETURN NEXT '';
    IF nsteps = 0 THEN
        RETURN NEXT 'steps: none yet';
        RETURN;
    END IF;
    RETURN NEXT format('steps: %s (%s complete)', nsteps, ncomplete);
    w := ARRAY[(SELECT max(length(x)) FROM unnest(c_n) x),
               (SELECT max(length(x)) FROM unnest(c_key) x),
               (SELECT max(length(x)) FROM unnest(c_type) x),
               (SELECT max(length(x)) FROM unnest(c_start) x),
               (SELECT max(length(x)) FROM unnest(c_end) x),
               (SELECT max(length(x)) FROM unnest(c_dur) x),
               (SELECT max(length(x)) FROM unnest(c_att) x)];
    FOR k IN 1 .. nsteps + 1 LOOP
        RETURN NEXT lpad(c_n[k], w[1]) || '  ' || rpad(c_key[k], w[2]) || '  '
                    || rpad(c_type[k], w[3]) || '  ' || rpad(c_start[k], w[4]) || '  '
                    || rpad(c_end[k], w[5]) || '  ' || lpad(c_dur[k], w[6]) || '  '
                    || lpad(c_att[k], w[7]) || '  ' || c_status[k];
    END LOOP;
END
$$;
COMMENT ON FUNCTION workflows.describe(text) IS
    'an instance for people, one line per row: status, trigger, times, output, error, then a table of its steps';

/*
 * Metrics.  Every view runs with the querying role's rights
 * (security_invoker), so row-level security applies: a role counts its own
 * instances, members of workflows_admin count all.  Durations are in
 * seconds (double precision, to the microsecond), ready for scraping.
 */

-- per workflow and time bucket of created_at
CREATE FUNCTION workflows.metrics(bucket interval DEFAULT '1 hour',
                                  since timestamptz DEFAULT now() - interval '1 day')
    RETURNS TABLE (bucket_start timestamptz, workflow text, created bigint, completed bigint,
                   errored bigint, terminated bigint, unfinished bigint,
                   p50_seconds double precision, p95_seconds double precision,
                   p99_seconds double precision)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
    SELECT date_bin($1, i.created_at, timestamptz '2000-01-01 00:00:00+00') AS bucket_start,
           i.workflow,
           count(*),
           count(*) FILTER (WHERE i.status = 'complete'),
           count(*) FILTER (WHERE i.status = 'errored'),
           count(*) FILTER (WHERE i.status = 'terminated'),
           count(*) FILTER (WHERE i.status NOT IN ('complete', 'errored', 'terminated')),
           round((percentile_cont(0.50) WITHIN GROUP (ORDER BY extract(epoch FROM i.ended_at - i.started_at)))::numeric, 6)::float8,
           round((percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM i.ended_at - i.started_at)))::numeric, 6)::float8,
           round((percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM i.ended_at - i.started_at)))::numeric, 6)::float8
      FROM workflows.instances i
     WHERE i.created_at >= $2
     GROUP BY 1, 2
     ORDER BY 1, 2
    $$;
COMMENT ON FUNCTION workflows.metrics(interval, timestamptz) IS
    'instances created per workflow and time bucket since a time: counts by outcome, run time p50/p95/p99 in seconds';

CREATE VIEW workflows.metrics_hourly WITH (security_invoker = true) AS
    SELECT i.workflow,
           date_trunc('hour', i.created_at) AS hour,
           count(*) AS created,
           count(*) FILTER (WHERE i.status = 'complete') AS completed,
           count(*) FILTER (WHERE i.status = 'errored') AS errored,
           count(*) FILTER (WHERE i.status = 'terminated') AS terminated,
           count(*) FILTER (WHERE i.status NOT IN ('complete', 'errored', 'terminated')) AS unfinished,
           round((percentile_cont(0.50) WITHIN GROUP (ORDER BY extract(epoch FROM i.ended_at - i.started_at)))::numeric, 6)::float8 AS p50_seconds,
           round((percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM i.ended_at - i.started_at)))::numeric, 6)::float8 AS p95_seconds,
           round((percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM i.ended_at - i.started_at)))::numeric, 6)::float8 AS p99_seconds
      FROM workflows.instances i
     GROUP BY 1, 2;
COMMENT ON VIEW workflows.metrics_hourly IS
    'instances per workflow and hour of creation: counts by outcome, run time (start to end) p50/p95/p99 in seconds';

CREATE VIEW workflows.step_metrics WITH (security_invoker = true) AS
    WITH st AS (
        SELECT i.workflow, s.name,
               count(*) AS runs,
               count(*) FILTER (WHERE s.status = 'complete') AS completed,
               count(*) FILTER (WHERE s.status = 'failed') AS failed,
               count(*) FILTER (WHERE s.status = 'retrying') AS retrying
          FROM workflows.steps s JOIN workflows.instances i ON i.id = s.instance_id
         WHERE s.type = 'step'
         GROUP BY 1, 2),
    att AS (
        SELECT i.workflow, s.name,
               count(*) AS attempts,
               count(*) FILTER (WHERE NOT a.success) AS failures,
               round((percentile_cont(0.50) WITHIN GROUP (ORDER BY extract(epoch FROM a.ended_at - a.started_at)))::numeric, 6)::float8 AS p50_seconds,
               round((percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM a.ended_at - a.started_at)))::numeric, 6)::float8 AS p95_seconds
          FROM workflows.attempts a
          JOIN workflows.steps s ON s.instance_id = a.instance_id AND s.key = a.step_key
          JOIN workflows.instances i ON i.id = a.instance_id
         GROUP BY 1, 2)
    SELECT st.workflow, st.name AS step, st.runs, st.completed, st.failed, st.retrying,
           COALESCE(att.attempts, 0) AS attempts,
           COALESCE(att.failures, 0) AS failures,
           round(COALESCE(att.failures, 0)::numeric / NULLIF(att.attempts, 0), 4) AS failure_rate,
           att.p50_seconds, att.p95_seconds
      FROM st LEFT JOIN att ON att.workflow = st.workflow AND att.name = st.name;
COMMENT ON VIEW workflows.step_metrics IS
    'per workflow and step name: runs by status, attempts, failed attempts, failure rate, attempt duration p50/p95 in seconds';

CREATE VIEW workflows.backlog WITH (security_invoker = true) AS
    SELECT i.workflow,
           count(*) FILTER (WHERE i.status = 'queued') AS queued,
           count(*) FILTER (WHERE i.status = 'running') AS running,
           count(*) FILTER (WHERE i.status = 'waiting') AS waiting,
           count(*) FILTER (WHERE i.status = 'paused') AS paused,
           count(*) FILTER (WHERE i.wake_at <= now()) AS runnable,
           extract(epoch FROM now() - min(i.wake_at) FILTER (WHERE i.wake_at <= now()))::float8
               AS oldest_runnable_seconds,
           extract(epoch FROM now() - min(i.created_at) FILTER (WHERE i.status = 'queued'))::float8
               AS oldest_queued_seconds
      FROM workflows.instances i
     WHERE i.status IN ('queued', 'running', 'waiting', 'paused')
     GROUP BY 1;
COMMENT ON VIEW workflows.backlog IS
    'unfinished instances per workflow: counts by status, how many are due to run, and how long the oldest due one has waited (seconds)';

GRANT SELECT ON workflows.metrics_hourly, workflows.step_metrics, workflows.backlog TO PUBLIC;

-- last: start this database's executors when CREATE EXTENSION commits

/*
 * Internal: tell the launcher that this database now has the extension, so
 * that its executors start without a server restart.  Takes effect at commit.
 */
CREATE FUNCTION workflows._launch()
    RETURNS void
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_launch';
REVOKE ALL ON FUNCTION workflows._launch() FROM PUBLIC;

SELECT workflows._launch();


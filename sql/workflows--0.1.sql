/* workflows--0.1.sql: durable execution inside PostgreSQL */

\echo Use "CREATE EXTENSION workflows" to load this file. \quit

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
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
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

CREATE FUNCTION workflows.create(workflow text, params jsonb DEFAULT '{}', id text DEFAULT NULL)
    RETURNS text
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_create';
COMMENT ON FUNCTION workflows.create(text, jsonb, text) IS
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
 */
CREATE FUNCTION workflows.step(name text, sql text, args jsonb DEFAULT NULL, config jsonb DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_step_sql';
COMMENT ON FUNCTION workflows.step(text, text, jsonb, jsonb) IS
    'run SQL as a durable step: its result is memoized and its writes commit with the memo';

CREATE FUNCTION workflows.step(name text, fn regprocedure, input jsonb, config jsonb DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_step_fn';
COMMENT ON FUNCTION workflows.step(text, regprocedure, jsonb, jsonb) IS
    'call fn(input) as a durable step: its result is memoized and its writes commit with the memo';

CREATE FUNCTION workflows.sleep(name text, duration interval)
    RETURNS void
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_sleep';
COMMENT ON FUNCTION workflows.sleep(text, interval) IS
    'durably sleep: the instance waits without holding a process';

CREATE FUNCTION workflows.sleep_until(name text, at timestamptz)
    RETURNS void
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_sleep_until';
COMMENT ON FUNCTION workflows.sleep_until(text, timestamptz) IS
    'durably sleep until a point in time';

CREATE FUNCTION workflows.wait_for_event(name text, type text, timeout interval DEFAULT '24 hours')
    RETURNS jsonb
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
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

CREATE FUNCTION workflows.wait(id text, timeout interval DEFAULT '1 minute')
    RETURNS jsonb
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_wait';
COMMENT ON FUNCTION workflows.wait(text, interval) IS
    'block until the instance is complete, errored or terminated (or the timeout) and return its status document';

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

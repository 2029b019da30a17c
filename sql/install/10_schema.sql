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
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- how long finished instances of this workflow are kept; NULL: the
    -- global workflows.retention; 0: forever (workflows.set_retention())
    retention   interval
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
    -- 1 to 200 bytes, checked by create() and create_batch()
    id          text PRIMARY KEY,
    workflow    text NOT NULL,
    version_id  text NOT NULL REFERENCES workflows.versions (version_id),
    owner       regrole NOT NULL,
    status      text NOT NULL DEFAULT 'queued',
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
    revision    bigint NOT NULL DEFAULT 0,
    -- the run: 1, bumped by every restart; attempts are kept per run
    run         integer NOT NULL DEFAULT 1
);
-- the scheduler's only scan: runnable instances by wake time
CREATE INDEX instances_runnable ON workflows.instances (wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX instances_by_workflow ON workflows.instances (workflow, created_at);
CREATE INDEX instances_by_status ON workflows.instances (status, created_at);

CREATE TABLE workflows.steps (
    -- no foreign key: see instances_deleted below
    instance_id text NOT NULL,
    key         text NOT NULL,
    seq         integer NOT NULL,
    name        text NOT NULL,
    type        text NOT NULL,
    status      text NOT NULL,
    output      jsonb,
    error       jsonb,
    config      jsonb,
    hash        bigint,
    attempts    integer NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    -- end of a sleep, deadline of an event wait, or time of the next retry
    wake_at     timestamptz,
    -- attempts cut short by an orderly stop of their executor (shutdown,
    -- pg_terminate_backend): not charged to the retry limit or quarantine
    interrupted integer NOT NULL DEFAULT 0,
    PRIMARY KEY (instance_id, key)
);

/*
 * Attempts belong to the instance, not to the step row: a restart deletes
 * the step rows it runs again, but keeps the attempts (and their errors) of
 * the run it replaces, under that run's number, until the instance goes.
 * (The columns are in the order an updated 0.1 database has them.)  Users
 * read them in the view workflows.attempts (sql/install/27_attempts.sql): a
 * step whose first attempt succeeded keeps that attempt in its own row
 * (steps.attempt_run), and only the other attempts have a row here.
 */
CREATE TABLE workflows.attempt_log (
    instance_id text NOT NULL,
    step_key    text NOT NULL,
    attempt     integer NOT NULL,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz NOT NULL,
    success     boolean NOT NULL,
    error       jsonb,
    run         integer NOT NULL,
    CONSTRAINT attempts_pkey PRIMARY KEY (instance_id, run, step_key, attempt)
);

/*
 * An instance's steps and attempts go with it, as by ON DELETE CASCADE, but
 * they have no foreign key: a foreign key looks up (and locks) the instance
 * for every step and attempt row written, a query each, a tenth of an
 * executor's work in a workload of short steps.  Those rows are written
 * only by an executor that holds the instance's row locked, for an instance
 * that is not final, and no instance is deleted before it is final; this
 * trigger deletes them with the instances, once per statement that deletes
 * any (purge(), erase(), a collapsed create, a dropped role's workflows).
 */
CREATE FUNCTION workflows._instances_deleted()
    RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
BEGIN
    DELETE FROM workflows.attempt_log a USING gone g WHERE a.instance_id = g.id;
    DELETE FROM workflows.steps s USING gone g WHERE s.instance_id = g.id;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION workflows._instances_deleted() FROM PUBLIC;
CREATE TRIGGER instances_deleted AFTER DELETE ON workflows.instances
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION workflows._instances_deleted();

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

/*
 * The audit trail: who did what to which instance or workflow, and when.
 * One row per control action, written in the action's transaction by the
 * function that performs it (nobody writes it directly).  details holds
 * only non-payload arguments: sizes and hashes stand for params and event
 * payloads, never their content.  Rows are kept for workflows.audit_retention;
 * erase() deletes an instance's rows and leaves one 'erase' row.
 */
CREATE TABLE workflows.audit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    session_role name NOT NULL DEFAULT session_user,
    -- the role that acted (current_user at the call); a keyword: quote it
    acting_role name NOT NULL,
    action      text NOT NULL,
    instance_id text,
    workflow    text,
    -- whose instance or workflow it concerns: decides who may read the row
    owner       regrole,
    details     jsonb
);
CREATE INDEX audit_by_instance ON workflows.audit (instance_id) WHERE instance_id IS NOT NULL;
-- the creates that debounce or singleton collapsed into an instance: erased with it
CREATE INDEX audit_collapsed ON workflows.audit ((details->>'collapsedInto'))
    WHERE action = 'create' AND details ? 'collapsedInto';
CREATE INDEX audit_by_time ON workflows.audit (at);

/*
 * The values of the columns below are written only by the engine's own
 * code, from fixed strings, so they carry no CHECK constraint: PostgreSQL
 * reads a table's CHECK constraints from their stored form again for every
 * statement that writes it, a cost every tick would pay (8 % of an
 * executor's CPU in a burst of wake-ups).  Their comments say what they hold.
 */
COMMENT ON COLUMN workflows.instances.status IS
    'queued, running, paused, waiting, errored, terminated or complete';
COMMENT ON COLUMN workflows.steps.status IS
    'retrying, waiting, complete, failed or calling';
COMMENT ON COLUMN workflows.steps.type IS 'step, sleep or event';
COMMENT ON COLUMN workflows.audit.action IS
    'register, create, pause, resume, terminate, restart, erase, send_event, schedule, unschedule, set_retention, reassign, set_version, set_secret, drop_secret, set_flow_control, purge, start_on_insert or stop_on_insert';

-- the tables' rows are user data: pg_dump must dump them
SELECT pg_catalog.pg_extension_config_dump('workflows.workflows', '');
SELECT pg_catalog.pg_extension_config_dump('workflows.versions', '');
SELECT pg_catalog.pg_extension_config_dump('workflows.instances', '');
SELECT pg_catalog.pg_extension_config_dump('workflows.steps', '');
SELECT pg_catalog.pg_extension_config_dump('workflows.attempt_log', '');
SELECT pg_catalog.pg_extension_config_dump('workflows.events', '');
SELECT pg_catalog.pg_extension_config_dump('workflows.requests', '');
SELECT pg_catalog.pg_extension_config_dump('workflows.audit', '');
-- and the identity sequences' positions: restored at 1, the next event or
-- audit row would collide with a restored one (and events are taken in seq
-- order)
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('workflows.events', 'seq'), '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('workflows.audit', 'id'), '');

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

ALTER TABLE workflows.attempt_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY attempts_visible ON workflows.attempt_log FOR SELECT
    USING (EXISTS (SELECT 1 FROM workflows.instances i WHERE i.id = instance_id));

ALTER TABLE workflows.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY events_visible ON workflows.events FOR SELECT
    USING (EXISTS (SELECT 1 FROM workflows.instances i WHERE i.id = instance_id));

ALTER TABLE workflows.requests ENABLE ROW LEVEL SECURITY;
CREATE POLICY requests_visible ON workflows.requests FOR SELECT
    USING (EXISTS (SELECT 1 FROM workflows.instances i WHERE i.id = instance_id));

ALTER TABLE workflows.audit ENABLE ROW LEVEL SECURITY;
CREATE POLICY audit_visible ON workflows.audit FOR SELECT
    USING (workflows._visible(owner));

REVOKE ALL ON ALL TABLES IN SCHEMA workflows FROM PUBLIC;
GRANT USAGE ON SCHEMA workflows TO PUBLIC;
GRANT SELECT ON workflows.workflows, workflows.versions, workflows.instances,
    workflows.steps, workflows.attempt_log, workflows.events, workflows.requests,
    workflows.audit TO PUBLIC;

/*
 * Why an instance id cannot be used: instance ids are one namespace per
 * database and are not secret (create() with a taken id says so), so an
 * instance the caller may not see is "permission denied" (42501) and only
 * an id that exists nowhere is "does not exist" (42704).  Always raises.
 * SECURITY DEFINER to look past row-level security; it reveals only
 * whether an id exists.
 */
CREATE FUNCTION workflows._instance_unusable(id text)
    RETURNS void
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM workflows.instances i WHERE i.id = _instance_unusable.id) THEN
        RAISE EXCEPTION 'permission denied for workflow instance "%"', id
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Only its owner and members of workflows_admin may use it.';
    END IF;
    RAISE EXCEPTION 'workflow instance "%" does not exist', id
        USING ERRCODE = 'undefined_object';
END
$$;
GRANT EXECUTE ON FUNCTION workflows._instance_unusable(text) TO PUBLIC;


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

-- the audit row of schedule() and unschedule(): see src/api.c
CREATE FUNCTION workflows._audit_schedule(action text, schedule_name text, workflow text, details jsonb)
    RETURNS void
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_audit_schedule';
-- called by the invoker-rights functions below; it records the real caller
-- and only a change that is there
GRANT EXECUTE ON FUNCTION workflows._audit_schedule(text, text, text, jsonb) TO PUBLIC;

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
    PERFORM workflows._audit_schedule('schedule', schedule_name, schedule.workflow,
        jsonb_build_object('cron', schedule.cron, 'overlap', overlap, 'jobid', jobid,
                           'params_bytes', octet_length(schedule.params::text),
                           'params_md5', md5(schedule.params::text)));
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
    PERFORM workflows._audit_schedule('unschedule', schedule_name, NULL, NULL);
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

-- the audit rows of purge(), start_on_insert() and stop_on_insert(), which
-- run with the caller's rights: records the real caller, and only what
-- happened (src/api.c)
CREATE FUNCTION workflows._audit_sql(action text, workflow text, tbl regclass, details jsonb)
    RETURNS void
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_audit_sql';
GRANT EXECUTE ON FUNCTION workflows._audit_sql(text, text, regclass, jsonb) TO PUBLIC;

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
    PERFORM workflows._audit_sql('start_on_insert', workflow, tbl, NULL);
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
    PERFORM workflows._audit_sql('stop_on_insert', workflow, tbl, NULL);
END
$$;
COMMENT ON FUNCTION workflows.stop_on_insert(regclass, text) IS
    'undo workflows.start_on_insert(): inserts into the table no longer start the workflow';


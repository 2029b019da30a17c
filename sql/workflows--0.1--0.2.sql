/* workflows--0.1--0.2.sql: update a database created with 0.1 to 0.2 */

\echo Use "ALTER EXTENSION workflows UPDATE" to load this file. \quit

/*
 * Each section says which change of 0.2 it carries; a fresh 0.2 install
 * (sql/install/) and a 0.1 database updated with this script end with the
 * same schema (test/t/011_upgrade.pl compares them).
 */

-- orderly stops are not crashes: attempts they cut short are counted apart
ALTER TABLE workflows.steps ADD COLUMN interrupted integer NOT NULL DEFAULT 0;

/*
 * Security: one namespace of instance ids (42501 for an instance the caller
 * may not see, 42704 only for an id that does not exist), the audit trail,
 * erasure, run numbers kept by restart, retention per workflow, and roles
 * that own instances (src/roles.c).  Tables first, then functions.
 */
ALTER TABLE workflows.workflows ADD COLUMN retention interval;

ALTER TABLE workflows.instances ADD COLUMN run integer NOT NULL DEFAULT 1;

-- attempts belong to the instance and its run, no longer to the step row
ALTER TABLE workflows.attempts ADD COLUMN run integer NOT NULL DEFAULT 1;
ALTER TABLE workflows.attempts ALTER COLUMN run DROP DEFAULT;
ALTER TABLE workflows.attempts DROP CONSTRAINT attempts_instance_id_step_key_fkey;
ALTER TABLE workflows.attempts DROP CONSTRAINT attempts_pkey;
ALTER TABLE workflows.attempts
    ADD CONSTRAINT attempts_pkey PRIMARY KEY (instance_id, run, step_key, attempt);
ALTER TABLE workflows.attempts
    ADD CONSTRAINT attempts_instance_id_fkey FOREIGN KEY (instance_id)
        REFERENCES workflows.instances (id) ON DELETE CASCADE;

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
    action      text NOT NULL
                CHECK (action IN ('register', 'create', 'pause', 'resume', 'terminate',
                                  'restart', 'erase', 'send_event', 'schedule',
                                  'unschedule', 'set_retention', 'reassign', 'set_version',
                                  'set_secret', 'drop_secret', 'set_flow_control', 'purge',
                                  'start_on_insert', 'stop_on_insert')),
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

SELECT pg_catalog.pg_extension_config_dump('workflows.audit', '');
-- the identity sequences' positions must be dumped too (0.1 restored the
-- events' at 1)
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('workflows.events', 'seq'), '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('workflows.audit', 'id'), '');
ALTER TABLE workflows.audit ENABLE ROW LEVEL SECURITY;
CREATE POLICY audit_visible ON workflows.audit FOR SELECT
    USING (workflows._visible(owner));
REVOKE ALL ON workflows.audit FROM PUBLIC;
GRANT SELECT ON workflows.audit TO PUBLIC;

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

-- the status document is built in one query (status()); its per-step helper goes
DROP FUNCTION workflows._step_doc(workflows.steps);

CREATE OR REPLACE FUNCTION workflows.status(id text)
    RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    i workflows.instances;
    f record;
    steps jsonb;
    held text;
BEGIN
    SELECT * INTO i FROM workflows.instances WHERE instances.id = status.id;
    IF NOT FOUND THEN
        PERFORM workflows._instance_unusable(id);
    END IF;
    -- one query, its plan kept for the session (no function call per step)
    steps := COALESCE((
        SELECT jsonb_agg(
                   jsonb_strip_nulls(jsonb_build_object(
                       'name', s.name,
                       'key', s.key,
                       'type', CASE s.type WHEN 'event' THEN 'waitForEvent' ELSE s.type END,
                       -- a sleep whose time has come is over, even before a replay marks it
                       'status', CASE WHEN s.type = 'sleep' AND s.status = 'waiting'
                                           AND s.wake_at <= clock_timestamp() THEN 'complete'
                                      ELSE s.status END,
                       'start', s.started_at,
                       'end', CASE WHEN s.type = 'sleep' THEN s.wake_at ELSE s.ended_at END,
                       'nextAttempt', CASE WHEN s.status = 'retrying' THEN s.wake_at END,
                       'deadline', CASE WHEN s.type = 'event' AND s.status = 'waiting' THEN s.wake_at END,
                       'config', s.config,
                       'request', s.request,
                       'success', CASE WHEN s.status = 'complete' THEN true
                                       WHEN s.status = 'failed' THEN false END,
                       'error', s.error))
                   || jsonb_build_object('output', s.output)
                   || CASE WHEN s.type = 'step' THEN jsonb_build_object('attempts', COALESCE(
                          (SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                                      'attempt', a.attempt, 'start', a.started_at, 'end', a.ended_at,
                                      'success', a.success, 'error', a.error))
                                  || COALESCE(a.detail, '{}') ORDER BY a.attempt)
                             FROM workflows.attempts a
                            WHERE a.instance_id = s.instance_id AND a.step_key = s.key
                              -- the run that made this step's memo: the current run, or the
                              -- earlier one a restart from a later step kept it from
                              AND a.run = (SELECT max(b.run) FROM workflows.attempts b
                                            WHERE b.instance_id = s.instance_id AND b.step_key = s.key)),
                          '[]'))
                      ELSE '{}' END
                   -- a failure the workflow caught and went on from
                   || CASE WHEN s.status = 'failed' AND i.status = 'complete'
                           THEN '{"handled": true}'::jsonb ELSE '{}' END
                   -- compensations (seq -1) after the steps, in the order they ran
                   ORDER BY s.seq < 0, s.seq, s.started_at)
          FROM workflows.steps s WHERE s.instance_id = i.id), '[]');
    IF i.status IN ('queued', 'running', 'waiting') THEN
        held := workflows._flow_reason(i.id);
    END IF;
    -- what an executor is doing right now (not committed yet)
    IF i.status IN ('queued', 'running', 'waiting') THEN
        SELECT * INTO f FROM workflows._in_flight() x WHERE x.instance = i.id;
        IF FOUND THEN
            i.status := 'running';
            IF f.step IS NOT NULL THEN
                steps := workflows._with_step_in_flight(steps, i.id, f.step, f.since);
            END IF;
        END IF;
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
        'run', i.run,
        'queued', i.created_at,
        'start', i.started_at,
        'end', i.ended_at,
        'success', CASE i.status WHEN 'complete' THEN true
                                 WHEN 'errored' THEN false
                                 WHEN 'terminated' THEN false END,
        'steps', steps,
        'error', i.error,
        'output', i.output)
        -- flow control: why it is held back (sql/install/45_flow_control.sql)
        || CASE WHEN held IS NOT NULL THEN jsonb_build_object('heldBack', held) ELSE '{}' END
        -- lineage (workflows.spawn()): the parent, and the first 1000 children
        -- (workflows.list(parent => id) pages through all of them)
        || CASE WHEN i.parent IS NOT NULL
                THEN jsonb_build_object('parent', i.parent, 'root', i.root, 'depth', i.depth)
                ELSE '{}' END
        || COALESCE((SELECT jsonb_build_object('children', jsonb_agg(jsonb_build_object(
                                'id', c.id, 'workflow', c.workflow, 'status', c.status)
                                ORDER BY c.created_at, c.id))
                       FROM (SELECT c.id, c.workflow, c.status, c.created_at
                               FROM workflows.instances c
                              WHERE c.parent = i.id
                              ORDER BY c.created_at, c.id LIMIT 1000) c
                     HAVING count(*) > 0), '{}');
END
$$;
COMMENT ON FUNCTION workflows.status(text) IS
    'the instance as one JSON document: status, params, trigger, versionId, run, times, steps with attempts, error, output';

CREATE OR REPLACE FUNCTION workflows.describe(id text)
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
    f_step text;
    f_since timestamptz;
    day date;
BEGIN
    SELECT * INTO i FROM workflows.instances WHERE instances.id = describe.id;
    IF NOT FOUND THEN
        PERFORM workflows._instance_unusable(describe.id);
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
            WHEN cur.type = 'await' THEN format(': awaiting instances in step "%s"', cur.key)
                || CASE WHEN cur.wake_at < 'infinity' THEN ' until '
                        || to_char(cur.wake_at, 'YYYY-MM-DD HH24:MI:SS.MS TZ') ELSE '' END
            ELSE format(': step "%s" will retry at %s (attempt %s failed)',
                cur.key, to_char(cur.wake_at, 'YYYY-MM-DD HH24:MI:SS.MS TZ'), cur.attempts)
            END;
    END IF;
    -- flow control: why it is held back (sql/install/45_flow_control.sql)
    IF i.status IN ('queued', 'running', 'waiting') AND workflows._flow_reason(i.id) IS NOT NULL THEN
        state := state || ': ' || workflows._flow_reason(i.id);
    END IF;
    -- what an executor is doing right now (not committed yet)
    SELECT x.step, x.since INTO f_step, f_since FROM workflows._in_flight() x WHERE x.instance = i.id;
    IF FOUND AND i.status IN ('queued', 'running', 'waiting') THEN
        state := '▶ running' || CASE WHEN f_step IS NULL THEN ''
            ELSE format(': step "%s" since %s', f_step, to_char(f_since, 'YYYY-MM-DD HH24:MI:SS.MS TZ')) END;
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
    IF i.run > 1 THEN
        RETURN NEXT rpad('run', label_width) || format('%s (restarted %s times)', i.run, i.run - 1);
    END IF;
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

    -- lineage: the parent, and the tree of descendants (the first 100)
    IF i.parent IS NOT NULL THEN
        RETURN NEXT rpad('parent', label_width) || i.parent
                    || format(' (root %s, depth %s)', i.root, i.depth);
    END IF;
    FOR trg IN
        WITH RECURSIVE t(id, workflow, status, lvl, path) AS (
            SELECT c.id, c.workflow, c.status, 1, ARRAY[c.created_at::text || c.id]
              FROM workflows.instances c WHERE c.parent = i.id
            UNION ALL
            SELECT c.id, c.workflow, c.status, t.lvl + 1, t.path || (c.created_at::text || c.id)
              FROM workflows.instances c JOIN t ON c.parent = t.id
             WHERE t.lvl < 20)
        SELECT repeat('  ', t.lvl - 1) || '└ ' || t.id || '  ' || t.workflow || '  ' || t.status
          FROM t ORDER BY t.path LIMIT 100
    LOOP
        IF nsteps = 0 THEN
            RETURN NEXT 'children';
            nsteps := -1;
        END IF;
        RETURN NEXT '  ' || trg;
    END LOOP;
    nsteps := 0;

    -- the steps
    FOR st IN SELECT * FROM workflows.steps s WHERE s.instance_id = i.id
               ORDER BY s.seq < 0, s.seq, s.started_at LOOP
        nsteps := nsteps + 1;
        IF st.status = 'complete' THEN
            ncomplete := ncomplete + 1;
        END IF;
        -- a sleep ends at its wake time
        s_end := CASE WHEN st.type = 'sleep' AND st.status = 'complete' THEN st.wake_at
                      ELSE st.ended_at END;
        s_status := CASE
            WHEN st.status = 'complete' THEN '✓ complete'
            WHEN st.status = 'failed' THEN '✗ failed'
                 -- caught by the workflow, which went on and completed
                 || CASE WHEN i.status = 'complete' THEN ' (handled)' ELSE '' END || ': '
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
        c_n := c_n || CASE WHEN st.seq < 0 THEN '-' ELSE (st.seq + 1)::text END;
        c_key := c_key || workflows._fmt_line(st.key, 40);
        c_type := c_type || CASE st.type WHEN 'event' THEN 'waitForEvent' ELSE st.type END;
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

CREATE OR REPLACE FUNCTION workflows._apply(instance text, command text, from_step text, strict boolean)
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
        PERFORM workflows._cascade(instance, 'pause');
    ELSIF command = 'resume' AND i.status = 'paused' THEN
        new_status := CASE WHEN i.started_at IS NULL THEN 'queued' ELSE 'running' END;
        -- (a child a bounded map holds back stays held)
        UPDATE workflows.instances
           SET status = new_status, wake_at = CASE WHEN held THEN NULL ELSE now() END,
               revision = revision + 1
         WHERE id = instance;
        PERFORM workflows._cascade(instance, 'resume');
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
        -- its parent learns it ended; its live descendants end too, unless
        -- terminate(id, cascade => false) asked to leave them (from_step '')
        PERFORM workflows._child_final(instance);
        IF from_step IS NULL THEN
            PERFORM workflows._cascade(instance, 'terminate');
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
                          HINT = 'Steps are named by their key: the name for its first call, the name plus "#2" for the second, "#3" for the third and so on.';
            END IF;
        END IF;
        -- events taken by the steps that will run again can be taken again
        UPDATE workflows.events e SET consumed_by = NULL, consumed_at = NULL
         WHERE e.instance_id = instance AND e.consumed_by IN (
               SELECT s.key FROM workflows.steps s
                WHERE s.instance_id = instance AND (s.seq >= from_seq OR s.seq < 0));
        -- (their attempts stay, under the run number being replaced: a first
        -- attempt kept in its step's row gets a row of its own)
        WITH gone AS (
            DELETE FROM workflows.steps s
             WHERE s.instance_id = instance AND (s.seq >= from_seq OR s.seq < 0)
            RETURNING s.instance_id, s.key, s.started_at, s.ended_at, s.attempt_run)
        INSERT INTO workflows.attempt_log (instance_id, step_key, attempt, started_at,
                                           ended_at, success, run)
        SELECT g.instance_id, g.key, 1, g.started_at, g.ended_at, true, g.attempt_run
          FROM gone g
         WHERE g.attempt_run IS NOT NULL;
        new_status := CASE WHEN from_seq = 0 THEN 'queued' ELSE 'running' END;
        UPDATE workflows.instances
           SET status = new_status, wake_at = now(), waiting_for = NULL, output = NULL,
               error = NULL, ended_at = NULL,
               started_at = CASE WHEN from_seq = 0 THEN NULL ELSE started_at END,
               revision = revision + 1, run = run + 1
         WHERE id = instance;
    ELSIF strict THEN
        RAISE EXCEPTION 'cannot % workflow instance "%": it is %', command, instance, i.status
            USING ERRCODE = 'WF006';
    ELSE
        new_status := i.status;
    END IF;
    -- flow control: a paused, terminated or restarted instance frees its slots
    IF new_status IS DISTINCT FROM i.status OR command = 'restart' THEN
        PERFORM workflows._flow_release(instance, new_status)
          FROM workflows.flow_members f WHERE f.instance_id = instance;
    END IF;
    RETURN new_status;
END
$$;

CREATE FUNCTION workflows._purge(cutoff timestamptz, batch integer)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    n bigint;
    m bigint := 0;
    audit_keep interval := current_setting('workflows.audit_retention')::interval;
BEGIN
    DELETE FROM workflows.instances WHERE id IN (
        SELECT i.id FROM workflows.instances i
          LEFT JOIN workflows.workflows w ON w.name = i.workflow
         WHERE i.status IN ('complete', 'errored', 'terminated')
           AND CASE WHEN w.retention IS NULL THEN i.ended_at < cutoff
                    ELSE w.retention > interval '0' AND i.ended_at < now() - w.retention END
         ORDER BY i.ended_at
         LIMIT batch
           FOR UPDATE OF i SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    IF audit_keep > interval '0' THEN
        DELETE FROM workflows.audit WHERE id IN (
            SELECT a.id FROM workflows.audit a
             WHERE a.at < now() - audit_keep
             ORDER BY a.at
             LIMIT batch);
        GET DIAGNOSTICS m = ROW_COUNT;
    END IF;
    RETURN greatest(n, m);
END
$$;
REVOKE ALL ON FUNCTION workflows._purge(timestamptz, integer) FROM PUBLIC;

CREATE OR REPLACE FUNCTION workflows.purge(older_than interval)
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
    n := workflows._purge_now(older_than);
    PERFORM workflows._audit_sql('purge', NULL, NULL,
                                 jsonb_build_object('older_than', older_than::text, 'instances', n));
    RETURN n;
END
$$;
COMMENT ON FUNCTION workflows.purge(interval) IS
    'delete finished instances that ended more than older_than (or their workflow''s own retention) ago, with their steps, attempts and events, and audit rows older than workflows.audit_retention, and return the number of instances deleted';

CREATE FUNCTION workflows.set_retention(workflow text, retention interval)
    RETURNS void
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_set_retention';
COMMENT ON FUNCTION workflows.set_retention(text, interval) IS
    'keep finished instances of a workflow this long instead of workflows.retention (0: forever, NULL: back to workflows.retention)';

CREATE FUNCTION workflows.erase(id text)
    RETURNS void
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_erase';
COMMENT ON FUNCTION workflows.erase(text) IS
    'delete a finished or terminated instance with its steps, attempts, events, requests and audit rows, leaving one audit row of the erasure';

-- the audit row of schedule() and unschedule(): see src/api.c
CREATE FUNCTION workflows._audit_schedule(action text, schedule_name text, workflow text, details jsonb)
    RETURNS void
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_audit_schedule';
-- called by the invoker-rights functions below; it records the real caller
-- and only a change that is there
GRANT EXECUTE ON FUNCTION workflows._audit_schedule(text, text, text, jsonb) TO PUBLIC;

CREATE OR REPLACE FUNCTION workflows.schedule(schedule_name text, cron text, workflow text,
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

CREATE OR REPLACE FUNCTION workflows.unschedule(schedule_name text)
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

/*
 * Step kinds outside the transaction: HTTP steps and secrets (see
 * sql/install/25_http.sql).  A step may now be "calling"; the executors
 * view counts the calls in flight (a new column: the view and its
 * function are made again).
 */
ALTER TABLE workflows.steps DROP CONSTRAINT steps_status_check;
ALTER TABLE workflows.steps ADD CONSTRAINT steps_status_check
    CHECK (status IN ('retrying', 'waiting', 'complete', 'failed', 'calling'));
DROP VIEW workflows.executors;
DROP FUNCTION workflows._executors();
CREATE FUNCTION workflows._executors(OUT pid integer, OUT datid oid, OUT executor integer,
                                     OUT instance text, OUT step text, OUT since timestamptz,
                                     OUT calls integer)
    RETURNS SETOF record
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_executors';
CREATE VIEW workflows.executors AS
    SELECT e.pid, d.datname, e.executor, e.instance, e.step, e.since, e.calls
      FROM workflows._executors() e
      LEFT JOIN pg_catalog.pg_database d ON d.oid = e.datid;
COMMENT ON VIEW workflows.executors IS
    'the executors of this server: process, database, the instance and step each runs (for instances you may see), and its HTTP steps in flight';
GRANT SELECT ON workflows.executors TO PUBLIC;


/*
 * Members of workflows_http may make HTTP steps (a superuser or the
 * extension's owner grants it).  Cluster-wide, like workflows_admin.
 */
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'workflows_http') THEN
        CREATE ROLE workflows_http NOLOGIN;
    END IF;
END
$$;

-- what a step of a plugin kind (HTTP) asked for; secrets appear only by name
ALTER TABLE workflows.steps ADD COLUMN request jsonb;
-- the steps whose call is in flight (few): counted by step-level flow control
CREATE INDEX steps_calling ON workflows.steps (instance_id) WHERE status = 'calling';
-- what the kind reported about the attempt (HTTP: {"httpStatus": 200})
ALTER TABLE workflows.attempts ADD COLUMN detail jsonb;

/*
 * Secrets, per role: write-only (no grants; set_secret() and drop_secret()
 * write, only executors read a value, for the owner of the instance whose
 * step names it).  Dumped with the database, like the instances.
 */
CREATE TABLE workflows._secrets (
    owner       oid NOT NULL,
    name        text NOT NULL,
    value       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, name)
);
REVOKE ALL ON workflows._secrets FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('workflows._secrets', '');

CREATE VIEW workflows.secrets AS
    SELECT s.name, s.owner::regrole AS owner, s.created_at, s.updated_at
      FROM workflows._secrets s
     WHERE pg_catalog.pg_has_role(s.owner, 'USAGE');
COMMENT ON VIEW workflows.secrets IS
    'the names of the secrets of the roles you are a member of (never their values)';
GRANT SELECT ON workflows.secrets TO PUBLIC;

CREATE FUNCTION workflows.set_secret(name text, value text)
    RETURNS void
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_set_secret';
COMMENT ON FUNCTION workflows.set_secret(text, text) IS
    'store (or replace) a secret of the current role, for HTTP step headers such as {"Authorization": {"secret": "name"}}';

CREATE FUNCTION workflows.drop_secret(name text)
    RETURNS boolean
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_drop_secret';
COMMENT ON FUNCTION workflows.drop_secret(text) IS
    'delete a secret of the current role; false if it did not exist';

CREATE FUNCTION workflows.http(name text, request jsonb, config jsonb DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_http';
COMMENT ON FUNCTION workflows.http(text, jsonb, jsonb) IS
    'make an HTTP request as a durable step, outside any transaction; returns {status, headers, body}';

CREATE FUNCTION workflows.plugin_step(name text, kind text, request jsonb, config jsonb DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_plugin_step';
COMMENT ON FUNCTION workflows.plugin_step(text, text, jsonb, jsonb) IS
    'run a step of a kind a plugin registered (workflows_step_kind.h) as a durable step';

-- functions and views changed in this version (tools/upgrade-sync.py)

CREATE FUNCTION workflows._in_flight(OUT instance text, OUT step text, OUT since timestamptz)
    RETURNS SETOF record
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
BEGIN
    -- (PL/pgSQL keeps the plan for the session; a SQL function is planned
    -- at each call)
    RETURN QUERY
    SELECT e.instance, e.step, e.since
      FROM workflows._executors() e
     WHERE e.instance IS NOT NULL
       AND e.datid = (SELECT d.oid FROM pg_catalog.pg_database d
                       WHERE d.datname = pg_catalog.current_database());
END
$$;

CREATE FUNCTION workflows._with_step_in_flight(steps jsonb, instance text, step_key text,
                                                since timestamptz)
    RETURNS jsonb
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
    SELECT CASE
        WHEN s.key IS NULL THEN
            $1 || jsonb_build_array(jsonb_build_object(
                'name', pg_catalog.regexp_replace($3, '#[0-9]+$', ''),
                'key', $3, 'type', 'step', 'status', 'running', 'start', $4,
                'attempts', jsonb_build_array(jsonb_build_object('attempt', 1, 'start', $4))))
        WHEN s.status IN ('complete', 'failed') OR s.ended_at >= $4 THEN $1
        ELSE (SELECT jsonb_agg(CASE WHEN x.d->>'key' = $3
                                   THEN (x.d - 'nextAttempt' - 'end') || jsonb_build_object(
                                        'status', 'running',
                                        'attempts', COALESCE(x.d->'attempts', '[]') || jsonb_build_array(
                                            jsonb_build_object('attempt', s.attempts + 1, 'start', $4)))
                                   ELSE x.d END ORDER BY x.n)
                FROM jsonb_array_elements($1) WITH ORDINALITY AS x(d, n))
        END
      FROM (SELECT) AS one
      LEFT JOIN workflows.steps s ON s.instance_id = $2 AND s.key = $3
    $$;

CREATE OR REPLACE VIEW workflows.backlog WITH (security_invoker = true) AS
    SELECT i.workflow,
           count(*) FILTER (WHERE i.status = 'queued' AND f.instance IS NULL) AS queued,
           count(*) FILTER (WHERE i.status = 'running' OR (f.instance IS NOT NULL AND i.status <> 'paused')) AS running,
           count(*) FILTER (WHERE i.status = 'waiting' AND f.instance IS NULL) AS waiting,
           count(*) FILTER (WHERE i.status = 'paused') AS paused,
           -- due and not held by an executor: waiting for one to take it
           count(*) FILTER (WHERE i.wake_at <= now() AND f.instance IS NULL) AS runnable,
           extract(epoch FROM now() - min(i.wake_at) FILTER (WHERE i.wake_at <= now() AND f.instance IS NULL))::float8
               AS oldest_runnable_seconds,
           extract(epoch FROM now() - min(i.created_at) FILTER (WHERE i.status = 'queued' AND f.instance IS NULL))::float8
               AS oldest_queued_seconds
      FROM workflows.instances i
      -- held by an executor right now: running, whatever was last committed
      LEFT JOIN workflows._in_flight() f ON f.instance = i.id
     WHERE i.status IN ('queued', 'running', 'waiting', 'paused')
     GROUP BY 1;


CREATE OR REPLACE FUNCTION workflows.list(workflow text DEFAULT NULL, status text DEFAULT NULL,
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
    IF list.status IS NOT NULL AND list.status NOT IN
           ('queued', 'running', 'paused', 'waiting', 'errored', 'terminated', 'complete') THEN
        RAISE EXCEPTION 'invalid instance status "%"', list.status
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use queued, running, paused, waiting, errored, terminated or complete.';
    END IF;
    IF after_id IS NOT NULL THEN
        SELECT i.created_at INTO after_created FROM workflows.instances i WHERE i.id = after_id;
        IF NOT FOUND THEN
            -- 42501 for another role's instance, 42704 for none, as everywhere
            PERFORM workflows._instance_unusable(after_id);
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

CREATE FUNCTION workflows.set_version(id text, version text DEFAULT NULL)
    RETURNS text
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_set_version';
COMMENT ON FUNCTION workflows.set_version(text, text) IS
    'move an instance no executor runs (errored, terminated, paused, complete) to another version of its workflow (NULL: the newest), keeping its memos; returns the version id';

-- supervision (executor status)

/*
 * executor_status(): per database with the extension, the executors
 * configured (workflows.max_workers) and running, the worker starts that
 * failed, and in plain words why fewer run than configured (NULL when all
 * run).  The current database always has a row.  Readable by everyone, like
 * pg_stat_activity: it shows database names and counts only.
 */
CREATE FUNCTION workflows.executor_status(OUT datname text, OUT configured integer,
                                          OUT running integer, OUT failed_starts bigint,
                                          OUT problem text)
    RETURNS SETOF record
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_executor_status';
COMMENT ON FUNCTION workflows.executor_status() IS
    'per database with the extension: executors configured and running, failed worker starts, and why fewer run than configured';
GRANT EXECUTE ON FUNCTION workflows.executor_status() TO PUBLIC;

-- flow control (issue 14)

-- create() takes options (priority, delay, startAt): a new argument
DROP FUNCTION workflows.create(text, jsonb, text, jsonb);
CREATE FUNCTION workflows.create(workflow text, params jsonb DEFAULT '{}', id text DEFAULT NULL,
                                 trigger jsonb DEFAULT NULL, options jsonb DEFAULT NULL)
    RETURNS text
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_create';
COMMENT ON FUNCTION workflows.create(text, jsonb, text, jsonb, jsonb) IS
    'create an instance of a workflow; it starts when the transaction commits (options: priority, delay, startAt); returns its id';


/*
 * Flow control is the claim policy of DESIGN.md section 8, kept in one place:
 * this file (the bookkeeping, in SQL) and src/flow.c (the executor's hooks).
 *
 * A workflow with flow control has workflows.workflows.flow_control set;
 * every instance of it has a row in workflows.flow_members (no row, no
 * cost: the executor's claim joins the table and finds nothing).  A member
 * is in one of four states:
 *
 *   ready  needs its slots at its next tick (new, or back from a sleep, an
 *          event wait, a retry delay, a pause or a restart)
 *   holds  holds a concurrency slot for each entry; it runs
 *   held   held back: its instance has wake_at NULL, so it is out of the
 *          runnable partial index and no executor polls it; the
 *          transaction that frees a slot it waits for promotes it
 *   done   final
 *
 * Every exact count of a workflow's holders, and every hand-over of a
 * slot, happens under the exclusive side of a transaction-level advisory
 * lock of that workflow (_flow_lock()), in short transactions the executor
 * commits at once; far from the limit, an executor takes a slot under its
 * shared side in the transaction that runs the instance
 * (wf_flow_acquire_fast(), src/flow.c).  Counts of holders are exact
 * under any number of executors and sessions (src/README.md, "Flow
 * control").  Creating
 * an instance takes no slot and no throttle budget: the executor that first
 * claims it does (a rolled-back create never reaches an executor).
 */
ALTER TABLE workflows.workflows ADD COLUMN flow_control jsonb;

CREATE TABLE workflows.flow_members (
    instance_id   text PRIMARY KEY REFERENCES workflows.instances (id) ON DELETE CASCADE,
    workflow      text NOT NULL,
    state         text NOT NULL DEFAULT 'ready'
                  CHECK (state IN ('ready', 'holds', 'held', 'done')),
    -- the concurrency key of each entry when it last took its slots
    keys          text[] NOT NULL DEFAULT '{}',
    priority      integer NOT NULL DEFAULT 0,
    -- the entry (1 or 2) and key it is held back by
    held_on       smallint,
    held_key      text,
    held_since    timestamptz,
    -- the start the throttle granted it (its budget is consumed)
    throttled_at  timestamptz,
    singleton_key text,
    debounce_key  text,
    -- a debounced instance not yet started: later creates collapse into it
    debouncing    boolean NOT NULL DEFAULT false,
    seq           bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX flow_members_holding_1 ON workflows.flow_members (workflow, (keys[1])) WHERE state = 'holds';
-- (a second entry's key: members of one-entry configs are not in it)
CREATE INDEX flow_members_holding_2 ON workflows.flow_members (workflow, (keys[2]))
    WHERE state = 'holds' AND keys[2] IS NOT NULL;
-- the queue of each entry and key: highest priority first, then oldest
CREATE INDEX flow_members_held ON workflows.flow_members
    (workflow, held_on, held_key, priority DESC, seq) WHERE state = 'held';
CREATE INDEX flow_members_singleton ON workflows.flow_members (workflow, singleton_key)
    WHERE singleton_key IS NOT NULL AND state <> 'done';
CREATE INDEX flow_members_debounce ON workflows.flow_members (workflow, debounce_key)
    WHERE debouncing;

-- the starts each throttle granted in its last period (at most limit of them)
CREATE TABLE workflows.flow_throttles (
    workflow    text NOT NULL REFERENCES workflows.workflows (name) ON DELETE CASCADE,
    key         text NOT NULL,
    starts      timestamptz[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (workflow, key)
);

SELECT pg_catalog.pg_extension_config_dump('workflows.flow_members', '');
SELECT pg_catalog.pg_extension_config_dump('workflows.flow_throttles', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('workflows.flow_members', 'seq'), '');

ALTER TABLE workflows.flow_members ENABLE ROW LEVEL SECURITY;
CREATE POLICY flow_members_visible ON workflows.flow_members FOR SELECT
    USING (EXISTS (SELECT 1 FROM workflows.instances i WHERE i.id = instance_id));
REVOKE ALL ON workflows.flow_members, workflows.flow_throttles FROM PUBLIC;
GRANT SELECT ON workflows.flow_members TO PUBLIC;

/*
 * The key of an instance for one jsonpath (NULL path: the one global key
 * ''): the engine evaluates the path over params, silently (a path that
 * finds nothing gives ''); no user code runs.
 */
CREATE FUNCTION workflows._flow_key(params jsonb, path text)
    RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v jsonb;
BEGIN
    -- PL/pgSQL, not SQL: a SQL function with a pinned search_path is
    -- planned again at every call; this one's expressions are kept
    IF path IS NULL THEN
        RETURN '';
    END IF;
    v := pg_catalog.jsonb_path_query_first(params, path::jsonpath, '{}', true);
    RETURN CASE WHEN v IS NULL THEN ''
                WHEN pg_catalog.jsonb_typeof(v) = 'string' THEN v #>> '{}'
                ELSE v::text END;
END
$$;
REVOKE ALL ON FUNCTION workflows._flow_key(jsonb, text) FROM PUBLIC;

-- the concurrency entries of a config, always as an array
CREATE FUNCTION workflows._flow_entries(config jsonb)
    RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    -- PL/pgSQL for the reason _flow_key() is
    RETURN CASE WHEN config->'concurrency' IS NULL THEN '[]'::jsonb
                WHEN pg_catalog.jsonb_typeof(config->'concurrency') = 'array' THEN config->'concurrency'
                ELSE pg_catalog.jsonb_build_array(config->'concurrency') END;
END
$$;
GRANT EXECUTE ON FUNCTION workflows._flow_entries(jsonb) TO PUBLIC;

-- an interval from config text, or an error naming the key (22023)
CREATE FUNCTION workflows._flow_interval(value jsonb, what text)
    RETURNS interval
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    result interval;
BEGIN
    IF value IS NULL OR pg_catalog.jsonb_typeof(value) <> 'string' THEN
        RAISE EXCEPTION 'flow control key "%" must be an interval string such as "1 minute"', what
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        result := (value #>> '{}')::interval;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow THEN
        RAISE EXCEPTION 'flow control key "%" is not a valid interval: %', what, value #>> '{}'
            USING ERRCODE = 'invalid_parameter_value';
    END;
    IF result <= interval '0' THEN
        RAISE EXCEPTION 'flow control key "%" must be a positive interval', what
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN result;
END
$$;
REVOKE ALL ON FUNCTION workflows._flow_interval(jsonb, text) FROM PUBLIC;

-- an integer in [lo, hi] from config, or an error naming the key (22023)
CREATE FUNCTION workflows._flow_int(value jsonb, what text, lo bigint, hi bigint)
    RETURNS integer
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF value IS NULL OR pg_catalog.jsonb_typeof(value) <> 'number'
       OR (value::text)::numeric <> trunc((value::text)::numeric)
       OR (value::text)::numeric NOT BETWEEN lo AND hi THEN
        RAISE EXCEPTION 'flow control key "%" must be an integer from % to %', what, lo, hi
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN (value::text)::integer;
END
$$;
REVOKE ALL ON FUNCTION workflows._flow_int(jsonb, text, bigint, bigint) FROM PUBLIC;

-- a jsonpath from config, or an error naming the key (22023)
CREATE FUNCTION workflows._flow_path(value jsonb, what text)
    RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    p jsonpath;
BEGIN
    IF value IS NULL THEN
        RETURN NULL;
    END IF;
    IF pg_catalog.jsonb_typeof(value) <> 'string' THEN
        RAISE EXCEPTION 'flow control key "%" must be a jsonpath string such as "$.customerId"', what
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        p := (value #>> '{}')::jsonpath;
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'flow control key "%" is not a valid jsonpath: %', what, value #>> '{}'
            USING ERRCODE = 'invalid_parameter_value';
    END;
    RETURN value #>> '{}';
END
$$;
REVOKE ALL ON FUNCTION workflows._flow_path(jsonb, text) FROM PUBLIC;

-- only these keys in an object, or an error naming the first other one
CREATE FUNCTION workflows._flow_keys_only(value jsonb, what text, allowed text[], required text[])
    RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    k text;
BEGIN
    IF pg_catalog.jsonb_typeof(value) <> 'object' THEN
        RAISE EXCEPTION 'flow control key "%" must be a JSON object', what
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR k IN SELECT pg_catalog.jsonb_object_keys(value) LOOP
        IF NOT k = ANY (allowed) THEN
            RAISE EXCEPTION 'unknown flow control key "%.%"', what, k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('"%s" takes %s.', what, array_to_string(allowed, ', '));
        END IF;
    END LOOP;
    FOREACH k IN ARRAY required LOOP
        IF NOT value ? k THEN
            RAISE EXCEPTION 'flow control key "%.%" is required', what, k
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION workflows._flow_keys_only(jsonb, text, text[], text[]) FROM PUBLIC;

/*
 * Check a flow control config; raises 22023 naming the offending key.
 */
CREATE FUNCTION workflows._flow_validate(config jsonb)
    RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    e jsonb;
    n integer := 0;
    what text;
BEGIN
    IF pg_catalog.jsonb_typeof(config) <> 'object' THEN
        RAISE EXCEPTION 'flow control config must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example {"concurrency": {"limit": 2, "key": "$.customerId"}}.';
    END IF;
    PERFORM workflows._flow_keys_only(config, 'config',
        ARRAY['concurrency', 'throttle', 'priority', 'debounce', 'singleton'], '{}');
    IF config ? 'concurrency' THEN
        IF pg_catalog.jsonb_typeof(config->'concurrency') = 'array' THEN
            IF pg_catalog.jsonb_array_length(config->'concurrency') NOT BETWEEN 1 AND 2 THEN
                RAISE EXCEPTION 'flow control key "concurrency" takes one or two entries'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        END IF;
        FOR e IN SELECT x FROM pg_catalog.jsonb_array_elements(workflows._flow_entries(config)) x LOOP
            n := n + 1;
            what := CASE WHEN pg_catalog.jsonb_typeof(config->'concurrency') = 'array'
                         THEN format('concurrency[%s]', n - 1) ELSE 'concurrency' END;
            PERFORM workflows._flow_keys_only(e, what, ARRAY['limit', 'key'], ARRAY['limit']);
            PERFORM workflows._flow_int(e->'limit', what || '.limit', 1, 1000000);
            PERFORM workflows._flow_path(e->'key', what || '.key');
        END LOOP;
    END IF;
    IF config ? 'throttle' THEN
        PERFORM workflows._flow_keys_only(config->'throttle', 'throttle',
            ARRAY['limit', 'period', 'key'], ARRAY['limit', 'period']);
        PERFORM workflows._flow_int(config->'throttle'->'limit', 'throttle.limit', 1, 10000);
        PERFORM workflows._flow_interval(config->'throttle'->'period', 'throttle.period');
        PERFORM workflows._flow_path(config->'throttle'->'key', 'throttle.key');
    END IF;
    IF config ? 'priority' THEN
        IF pg_catalog.jsonb_typeof(config->'priority') = 'number' THEN
            PERFORM workflows._flow_int(config->'priority', 'priority', -1000000, 1000000);
        ELSE
            PERFORM workflows._flow_keys_only(config->'priority', 'priority',
                ARRAY['key', 'default'], ARRAY['key']);
            PERFORM workflows._flow_path(config->'priority'->'key', 'priority.key');
            IF config->'priority' ? 'default' THEN
                PERFORM workflows._flow_int(config->'priority'->'default', 'priority.default',
                                            -1000000, 1000000);
            END IF;
        END IF;
    END IF;
    IF config ? 'debounce' THEN
        PERFORM workflows._flow_keys_only(config->'debounce', 'debounce',
            ARRAY['period', 'key'], ARRAY['period']);
        PERFORM workflows._flow_interval(config->'debounce'->'period', 'debounce.period');
        PERFORM workflows._flow_path(config->'debounce'->'key', 'debounce.key');
    END IF;
    IF config ? 'singleton' THEN
        PERFORM workflows._flow_keys_only(config->'singleton', 'singleton', ARRAY['key', 'mode'], '{}');
        PERFORM workflows._flow_path(config->'singleton'->'key', 'singleton.key');
        IF config->'singleton' ? 'mode' AND NOT COALESCE(config->'singleton'->>'mode', '') IN ('skip', 'cancel') THEN
            RAISE EXCEPTION 'flow control key "singleton.mode" must be "skip" or "cancel"'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION workflows._flow_validate(jsonb) FROM PUBLIC;

-- serialize the flow bookkeeping of one workflow until the transaction ends
CREATE FUNCTION workflows._flow_lock(workflow text)
    RETURNS void
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pg_catalog.pg_advisory_xact_lock(1464232014, pg_catalog.hashtext(workflow)) $$;
REVOKE ALL ON FUNCTION workflows._flow_lock(text) FROM PUBLIC;

/*
 * The shared side of the same lock: taken by an executor that takes a slot
 * far from the limit (wf_flow_acquire_fast() in src/flow.c) and keeps
 * running the instance in the same transaction.  Whoever counts exactly
 * (the exclusive side) waits until those transactions end, so it sees
 * every slot they took.
 */
CREATE FUNCTION workflows._flow_lock_shared(workflow text)
    RETURNS void
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pg_catalog.pg_advisory_xact_lock_shared(1464232014, pg_catalog.hashtext(workflow)) $$;
REVOKE ALL ON FUNCTION workflows._flow_lock_shared(text) FROM PUBLIC;

/*
 * workflows.set_flow_control(workflow, config): set or (NULL) clear the
 * flow control of a workflow; its owner or workflows_admin only (checked
 * by the C function, src/flow.c, which then calls _flow_set() as the
 * extension's owner).  Members held back under the old config are made
 * runnable, to take their slots under the new one at their next tick.
 */
CREATE FUNCTION workflows.set_flow_control(workflow text, config jsonb)
    RETURNS void
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_set_flow_control';
COMMENT ON FUNCTION workflows.set_flow_control(text, jsonb) IS
    'set (or with NULL clear) the flow control of a workflow: concurrency, throttle, priority, debounce, singleton';
GRANT EXECUTE ON FUNCTION workflows.set_flow_control(text, jsonb) TO PUBLIC;

CREATE FUNCTION workflows._flow_set(workflow text, config jsonb)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
BEGIN
    IF config IS NOT NULL AND pg_catalog.jsonb_typeof(config) = 'null' THEN
        config := NULL;
    END IF;
    IF config IS NOT NULL THEN
        PERFORM workflows._flow_validate(config);
    END IF;
    -- the rows of those held back before the workflow's lock, in the order
    -- in which _flow_release() (a terminate) takes a row and then the lock
    PERFORM 1 FROM workflows.flow_members m
      WHERE m.workflow = _flow_set.workflow AND m.state = 'held'
      ORDER BY m.instance_id FOR UPDATE;
    PERFORM workflows._flow_lock(workflow);
    UPDATE workflows.workflows x SET flow_control = config WHERE x.name = _flow_set.workflow;
    -- whoever waited under the old config tries again under the new one
    WITH h AS (
        UPDATE workflows.flow_members m
           SET state = 'ready', held_on = NULL, held_key = NULL, held_since = NULL
         WHERE m.workflow = _flow_set.workflow AND m.state = 'held'
        RETURNING m.instance_id)
    UPDATE workflows.instances i SET wake_at = now()
      FROM h WHERE i.id = h.instance_id AND i.wake_at IS NULL
       AND i.status IN ('queued', 'running', 'waiting');
    IF FOUND THEN
        PERFORM workflows._wake_at_commit();
    END IF;
END
$$;
REVOKE ALL ON FUNCTION workflows._flow_set(text, jsonb) FROM PUBLIC;

CREATE FUNCTION workflows._wake_at_commit()
    RETURNS void
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'wf_flow_wake_at_commit';
REVOKE ALL ON FUNCTION workflows._wake_at_commit() FROM PUBLIC;

/*
 * Take the concurrency slots of every entry for a member, or hold it back
 * on the first entry that is full.  Caller holds _flow_lock(workflow) and
 * the member's row.  Returns true if it holds its slots now.
 */
CREATE FUNCTION workflows._flow_take(m workflows.flow_members, params jsonb, config jsonb)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    e jsonb;
    n integer := 0;
    k text;
    ks text[] := '{}';
    lim integer;
    running bigint;
BEGIN
    FOR e IN SELECT x FROM pg_catalog.jsonb_array_elements(workflows._flow_entries(config)) x LOOP
        n := n + 1;
        k := workflows._flow_key(params, e->>'key');
        ks := ks || k;
        lim := (e->>'limit')::integer;
        -- holders whose instance is still live (a final one never holds)
        SELECT count(*) INTO running FROM workflows.flow_members f
          JOIN workflows.instances i ON i.id = f.instance_id
         WHERE f.workflow = m.workflow AND f.state = 'holds' AND f.keys[n] = k
           AND i.status IN ('queued', 'running', 'waiting');
        IF running >= lim THEN
            UPDATE workflows.flow_members f
               SET state = 'held', held_on = n, held_key = k,
                   held_since = COALESCE(f.held_since, clock_timestamp())
             WHERE f.instance_id = m.instance_id;
            UPDATE workflows.instances SET wake_at = NULL WHERE id = m.instance_id;
            RETURN false;
        END IF;
    END LOOP;
    UPDATE workflows.flow_members f
       SET state = 'holds', keys = ks, held_on = NULL, held_key = NULL, held_since = NULL,
           debouncing = false
     WHERE f.instance_id = m.instance_id;
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION workflows._flow_take(workflows.flow_members, jsonb, jsonb) FROM PUBLIC;

/*
 * The executor's hook before an instance with flow control runs while it
 * holds no slot (src/flow.c): the throttle grants it a start (or delays it
 * to the start it grants: wake_at in the future), then it takes its
 * concurrency slots or is held back.  The executor holds the instance's row
 * and commits right after.  Returns true if the instance may run now.
 */
CREATE FUNCTION workflows._flow_acquire(instance text)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    m workflows.flow_members;
    i workflows.instances;
    config jsonb;
    t jsonb;
    tk text;
    lim integer;
    period interval;
    s timestamptz[];
    at timestamptz;
    now_ timestamptz := clock_timestamp();
BEGIN
    SELECT * INTO m FROM workflows.flow_members f WHERE f.instance_id = instance FOR UPDATE;
    IF NOT FOUND OR m.state = 'holds' THEN
        RETURN true;
    END IF;
    SELECT * INTO i FROM workflows.instances x WHERE x.id = instance;
    -- the config under the lock: read before, it could be one that
    -- set_flow_control() replaced while we waited for the lock, and the
    -- members it released would not include one held back by the old one
    PERFORM workflows._flow_lock(m.workflow);
    SELECT w.flow_control INTO config FROM workflows.workflows w WHERE w.name = m.workflow;
    IF config IS NULL THEN
        UPDATE workflows.flow_members f SET state = 'holds', debouncing = false, keys = '{}'
         WHERE f.instance_id = instance;
        RETURN true;
    END IF;
    t := config->'throttle';
    IF t IS NOT NULL AND m.throttled_at IS NULL THEN
        tk := workflows._flow_key(i.params, t->>'key');
        lim := (t->>'limit')::integer;
        period := (t->>'period')::interval;
        INSERT INTO workflows.flow_throttles AS x (workflow, key) VALUES (m.workflow, tk)
            ON CONFLICT (workflow, key) DO NOTHING;
        SELECT x.starts INTO s FROM workflows.flow_throttles x
         WHERE x.workflow = m.workflow AND x.key = tk FOR UPDATE;
        -- a sliding window: the (limit)th start back must be a period ago
        IF cardinality(s) < lim THEN
            at := now_;
        ELSE
            at := greatest(now_, s[cardinality(s) - lim + 1] + period);
        END IF;
        s := s || at;
        IF cardinality(s) > lim THEN
            s := s[cardinality(s) - lim + 1 : cardinality(s)];
        END IF;
        UPDATE workflows.flow_throttles x SET starts = s WHERE x.workflow = m.workflow AND x.key = tk;
        UPDATE workflows.flow_members f SET throttled_at = at, debouncing = false
         WHERE f.instance_id = instance;
        m.throttled_at := at;
        IF at > now_ THEN
            UPDATE workflows.flow_members f SET state = 'ready' WHERE f.instance_id = instance;
            UPDATE workflows.instances x SET wake_at = at WHERE x.id = instance;
            RETURN false;
        END IF;
    END IF;
    RETURN workflows._flow_take(m, i.params, config);
END
$$;
REVOKE ALL ON FUNCTION workflows._flow_acquire(text) FROM PUBLIC;

/*
 * An instance with flow control stops holding its slots: it sleeps, waits
 * for an event or a retry (ready), is paused (ready), restarted (ready,
 * with a new throttle start) or final (done).  The slots it frees go at
 * once, in this transaction, to the members held back for them (priority,
 * then age), which are made runnable; the executors are woken at commit.
 * Returns how many were promoted.  Idempotent.
 */
CREATE FUNCTION workflows._flow_release(instance text, new_status text)
    RETURNS integer
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    m workflows.flow_members;
    config jsonb;
    e jsonb;
    n integer := 0;
    tries integer;
    promoted integer := 0;
    c workflows.flow_members;
    p jsonb;
BEGIN
    SELECT * INTO m FROM workflows.flow_members f WHERE f.instance_id = instance FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    PERFORM workflows._flow_lock(m.workflow);
    UPDATE workflows.flow_members f
       SET state = CASE WHEN new_status IN ('complete', 'errored', 'terminated') THEN 'done'
                        ELSE 'ready' END,
           held_on = NULL, held_key = NULL, held_since = NULL,
           debouncing = debouncing AND new_status = 'queued',
           throttled_at = CASE WHEN new_status = 'queued' THEN NULL ELSE throttled_at END
     WHERE f.instance_id = instance;
    IF m.state <> 'holds' THEN
        RETURN 0;
    END IF;
    SELECT w.flow_control INTO config FROM workflows.workflows w WHERE w.name = m.workflow;
    IF config IS NULL THEN
        RETURN 0;
    END IF;
    FOR e IN SELECT x FROM pg_catalog.jsonb_array_elements(workflows._flow_entries(config)) x LOOP
        n := n + 1;
        tries := 0;
        -- hand each free slot of this entry and key to the next one held back for it
        LOOP
            tries := tries + 1;
            EXIT WHEN tries > 16;
            SELECT * INTO c FROM workflows.flow_members f
             WHERE f.workflow = m.workflow AND f.state = 'held' AND f.held_on = n
               AND f.held_key = m.keys[n]
             ORDER BY f.priority DESC, f.seq
             LIMIT 1 FOR UPDATE SKIP LOCKED;
            EXIT WHEN NOT FOUND;
            SELECT i.params INTO p FROM workflows.instances i WHERE i.id = c.instance_id;
            IF workflows._flow_take(c, p, config) THEN
                UPDATE workflows.instances i SET wake_at = now()
                 WHERE i.id = c.instance_id AND i.status IN ('queued', 'running', 'waiting');
                promoted := promoted + 1;
            ELSE
                -- held back again; by this entry: no slot of it is free
                EXIT WHEN (SELECT f.held_on FROM workflows.flow_members f
                            WHERE f.instance_id = c.instance_id) = n;
            END IF;
        END LOOP;
    END LOOP;
    IF promoted > 0 THEN
        PERFORM workflows._wake_at_commit();
    END IF;
    RETURN promoted;
END
$$;
REVOKE ALL ON FUNCTION workflows._flow_release(text, text) FROM PUBLIC;

/*
 * The executor's release (src/flow.c), in a transaction of its own right
 * after the commit that left the instance sleeping, waiting, paused or
 * final: that commit made the slot free already (holders are counted among
 * live instances only), this hands it to the next one held back.  Does
 * nothing if the instance moved on since (its revision changed): whoever
 * moved it released or re-took its slots.  Without exclusive, it only
 * marks the member when nobody of the workflow is held back (under the
 * shared lock), and returns -1 otherwise: the caller then runs it again,
 * exclusive, in a new transaction.
 */
CREATE FUNCTION workflows._flow_release_after(instance text, rev bigint, exclusive boolean)
    RETURNS integer
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    st text;
    m workflows.flow_members;
BEGIN
    SELECT i.status INTO st FROM workflows.instances i
     WHERE i.id = instance AND i.revision = rev AND i.status <> 'running';
    IF st IS NULL THEN
        RETURN 0;
    END IF;
    IF exclusive THEN
        RETURN workflows._flow_release(instance, st);
    END IF;
    -- the member's row before the workflow's lock, as _flow_release() and a
    -- terminate() that calls it take them (the other order deadlocks)
    SELECT * INTO m FROM workflows.flow_members f WHERE f.instance_id = instance FOR UPDATE;
    IF NOT FOUND OR m.state <> 'holds' THEN
        RETURN 0;
    END IF;
    -- nobody held back: no one to hand the slot to (a parker holds the
    -- lock exclusively until it commits, so it is seen here or sees us gone);
    -- _flow_lock_shared(), without a function call's cost
    PERFORM pg_catalog.pg_advisory_xact_lock_shared(1464232014, pg_catalog.hashtext(m.workflow));
    IF EXISTS (SELECT 1 FROM workflows.flow_members f
                WHERE f.workflow = m.workflow AND f.state = 'held') THEN
        RETURN -1;
    END IF;
    UPDATE workflows.flow_members f
       SET state = CASE WHEN st IN ('complete', 'errored', 'terminated') THEN 'done' ELSE 'ready' END
     WHERE f.instance_id = instance AND f.state = 'holds';
    RETURN 0;
END
$$;
REVOKE ALL ON FUNCTION workflows._flow_release_after(text, bigint, boolean) FROM PUBLIC;

/*
 * After a crash (run by the first executor when it starts): an instance
 * that became final or started waiting may not have handed its slot on.
 * Marks such members and promotes the held-back ones into the free slots.
 */
CREATE FUNCTION workflows._flow_repair()
    RETURNS integer
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    r record;
    c workflows.flow_members;
    config jsonb;
    p jsonb;
    promoted integer := 0;
    tries integer;
BEGIN
    UPDATE workflows.flow_members f
       SET state = CASE WHEN i.status IN ('complete', 'errored', 'terminated') THEN 'done' ELSE 'ready' END
      FROM workflows.instances i
     WHERE i.id = f.instance_id AND f.state = 'holds'
       AND i.status NOT IN ('queued', 'running');
    FOR r IN SELECT DISTINCT f.workflow, f.held_on, f.held_key
               FROM workflows.flow_members f WHERE f.state = 'held' LOOP
        PERFORM workflows._flow_lock(r.workflow);
        SELECT w.flow_control INTO config FROM workflows.workflows w WHERE w.name = r.workflow;
        tries := 0;
        LOOP
            tries := tries + 1;
            EXIT WHEN tries > 1000;
            SELECT * INTO c FROM workflows.flow_members f
             WHERE f.workflow = r.workflow AND f.state = 'held' AND f.held_on = r.held_on
               AND f.held_key = r.held_key
             ORDER BY f.priority DESC, f.seq LIMIT 1 FOR UPDATE SKIP LOCKED;
            EXIT WHEN NOT FOUND;
            IF config IS NULL THEN
                UPDATE workflows.flow_members f SET state = 'ready' WHERE f.instance_id = c.instance_id;
                UPDATE workflows.instances i SET wake_at = now()
                 WHERE i.id = c.instance_id AND i.status IN ('queued', 'running', 'waiting');
                CONTINUE;
            END IF;
            SELECT i.params INTO p FROM workflows.instances i WHERE i.id = c.instance_id;
            EXIT WHEN NOT workflows._flow_take(c, p, config);
            UPDATE workflows.instances i SET wake_at = now()
             WHERE i.id = c.instance_id AND i.status IN ('queued', 'running', 'waiting');
            promoted := promoted + 1;
        END LOOP;
    END LOOP;
    IF promoted > 0 THEN
        PERFORM workflows._wake_at_commit();
    END IF;
    RETURN promoted;
END
$$;
REVOKE ALL ON FUNCTION workflows._flow_repair() FROM PUBLIC;

/*
 * create()'s hook (src/flow.c), for a workflow with flow control or a
 * create with options, right after the instance was inserted (wake_at now):
 * applies the options (priority, delay, startAt), debounce and singleton.
 * Returns the id create() returns: the new instance's, or the surviving
 * one's when debounce or singleton "skip" collapsed the create into it (the
 * new row is then deleted again, and its audit row says so).
 */
CREATE FUNCTION workflows._flow_admit(instance text, options jsonb, caller oid)
    RETURNS text
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    i workflows.instances;
    config jsonb;
    prio integer;
    start_at timestamptz;
    k text;
    other text;
    other_owner regrole;
    still boolean;
BEGIN
    SELECT * INTO i FROM workflows.instances x WHERE x.id = instance;
    SELECT w.flow_control INTO config FROM workflows.workflows w WHERE w.name = i.workflow;
    IF options IS NOT NULL AND pg_catalog.jsonb_typeof(options) <> 'null' THEN
        IF pg_catalog.jsonb_typeof(options) <> 'object' THEN
            RAISE EXCEPTION 'create options must be a JSON object'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'For example {"priority": 10, "delay": "5 minutes"}.';
        END IF;
        PERFORM workflows._flow_keys_only(options, 'options', ARRAY['priority', 'delay', 'startAt'], '{}');
        IF options ? 'delay' AND options ? 'startAt' THEN
            RAISE EXCEPTION 'create options "delay" and "startAt" exclude each other'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF options ? 'priority' THEN
            prio := workflows._flow_int(options->'priority', 'options.priority', -1000000, 1000000);
        END IF;
        IF options ? 'delay' THEN
            start_at := now() + workflows._flow_interval(options->'delay', 'options.delay');
        ELSIF options ? 'startAt' THEN
            BEGIN
                start_at := (options->>'startAt')::timestamptz;
            EXCEPTION WHEN OTHERS THEN
                start_at := NULL;
            END;
            IF start_at IS NULL THEN
                RAISE EXCEPTION 'create option "startAt" must be a timestamp such as "2030-01-01T00:00:00Z"'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        END IF;
    END IF;
    IF start_at IS NOT NULL THEN
        UPDATE workflows.instances x SET wake_at = greatest(start_at, now()) WHERE x.id = instance;
    END IF;
    IF config IS NULL THEN
        RETURN instance;
    END IF;

    IF prio IS NULL THEN
        prio := workflows._flow_priority(config, i.params);
    END IF;
    INSERT INTO workflows.flow_members (instance_id, workflow, priority)
    VALUES (instance, i.workflow, prio);

    IF config ? 'singleton' THEN
        k := workflows._flow_key(i.params, config->'singleton'->>'key');
        -- creators of one key wait for each other until commit
        PERFORM pg_catalog.pg_advisory_xact_lock(1464232015, pg_catalog.hashtext(i.workflow || ':' || k));
        SELECT f.instance_id, x.owner INTO other, other_owner
          FROM workflows.flow_members f JOIN workflows.instances x ON x.id = f.instance_id
         WHERE f.workflow = i.workflow AND f.singleton_key = k AND f.state <> 'done'
           AND f.instance_id <> instance
           AND x.status IN ('queued', 'running', 'waiting', 'paused')
         ORDER BY f.seq DESC LIMIT 1;
        IF other IS NOT NULL THEN
            IF NOT pg_catalog.pg_has_role(caller, other_owner, 'USAGE')
               AND NOT pg_catalog.pg_has_role(caller, 'workflows_admin', 'USAGE') THEN
                RAISE EXCEPTION 'workflow "%" has a live instance with singleton key "%" that belongs to another role',
                    i.workflow, k USING ERRCODE = 'unique_violation';
            END IF;
            IF COALESCE(config->'singleton'->>'mode', 'skip') = 'skip' THEN
                PERFORM workflows._flow_collapse(instance, other, 'singleton');
                RETURN other;
            END IF;
            PERFORM workflows.terminate(other);
        END IF;
        UPDATE workflows.flow_members f SET singleton_key = k WHERE f.instance_id = instance;
    END IF;

    IF config ? 'debounce' THEN
        k := workflows._flow_key(i.params, config->'debounce'->>'key');
        PERFORM pg_catalog.pg_advisory_xact_lock(1464232016, pg_catalog.hashtext(i.workflow || ':' || k));
        SELECT f.instance_id, x.owner INTO other, other_owner
          FROM workflows.flow_members f JOIN workflows.instances x ON x.id = f.instance_id
         WHERE f.workflow = i.workflow AND f.debounce_key = k AND f.debouncing
           AND f.instance_id <> instance
         ORDER BY f.seq DESC LIMIT 1
           FOR UPDATE OF x;
        IF other IS NOT NULL THEN
            -- an executor may have started it while we waited for its row
            SELECT f.debouncing INTO still FROM workflows.flow_members f WHERE f.instance_id = other;
            IF still AND NOT pg_catalog.pg_has_role(caller, other_owner, 'USAGE') THEN
                RAISE EXCEPTION 'workflow "%" has a debounced instance with key "%" that belongs to another role',
                    i.workflow, k USING ERRCODE = 'unique_violation';
            END IF;
            IF still THEN
                UPDATE workflows.instances x
                   SET params = i.params,
                       wake_at = greatest(COALESCE(start_at, now()),
                                          now() + (config->'debounce'->>'period')::interval),
                       revision = revision + 1
                 WHERE x.id = other;
                UPDATE workflows.flow_members f SET priority = prio WHERE f.instance_id = other;
                PERFORM workflows._flow_collapse(instance, other, 'debounce');
                RETURN other;
            END IF;
        END IF;
        UPDATE workflows.flow_members f SET debounce_key = k, debouncing = true
         WHERE f.instance_id = instance;
        UPDATE workflows.instances x
           SET wake_at = greatest(COALESCE(start_at, now()),
                                  now() + (config->'debounce'->>'period')::interval)
         WHERE x.id = instance;
    END IF;
    RETURN instance;
END
$$;
REVOKE ALL ON FUNCTION workflows._flow_admit(text, jsonb, oid) FROM PUBLIC;

-- a create collapsed into a live instance: it never existed, its audit row says where it went
CREATE FUNCTION workflows._flow_collapse(instance text, into_id text, why text)
    RETURNS void
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
    UPDATE workflows.audit a
       SET details = COALESCE(a.details, '{}') || jsonb_build_object('collapsedInto', into_id, 'by', why)
     WHERE a.instance_id = instance AND a.action = 'create';
    DELETE FROM workflows.instances i WHERE i.id = instance;
$$;
REVOKE ALL ON FUNCTION workflows._flow_collapse(text, text, text) FROM PUBLIC;

/*
 * Steps that share a resource: "concurrency": {"limit": N, "key": name} and
 * "throttle": {"limit": N, "period": ms, "key": name} in a step's config,
 * shared by every step of the database that names the same key.
 *
 * A slot of a key is a transaction-level advisory lock (class: a hash of
 * the key, object: the slot number), held by the executor's transaction
 * that runs the step and freed by its commit.  A step that finds no slot
 * makes its instance wait (status waiting, no wake time: no executor
 * holds it, none polls it) in workflows.flow_step_waiters; the transaction
 * that ran a step of the key wakes the oldest waiter at its commit.  Both
 * take the key's queue lock, so that the waiter either is seen by the
 * freeing transaction or finds the slot it freed.
 */
CREATE TABLE workflows.flow_step_waiters (
    instance_id text PRIMARY KEY REFERENCES workflows.instances (id) ON DELETE CASCADE,
    key         text NOT NULL,
    since       timestamptz NOT NULL DEFAULT clock_timestamp(),
    seq         bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX flow_step_waiters_queue ON workflows.flow_step_waiters (key, seq);

/*
 * The slots of a step concurrency key: one row per slot, locked FOR UPDATE
 * by the step's transaction while the step runs.  A row lock is free as
 * soon as its transaction is no longer running, before the transaction's
 * commit callbacks wake the next waiter, which must find it free (an
 * advisory lock is released only after those callbacks, later than the
 * queue lock: a woken waiter could find the slot still taken, queue again
 * and never be woken).  Rows are made on first use and never removed.
 */
CREATE TABLE workflows.flow_step_slots (
    key         text NOT NULL,
    n           integer NOT NULL,
    PRIMARY KEY (key, n)
);

-- the starts each step throttle granted in its last period
CREATE TABLE workflows.flow_step_throttles (
    key         text PRIMARY KEY,
    starts      timestamptz[] NOT NULL DEFAULT '{}'
);

-- a start a step throttle granted to a step that has not run yet
CREATE TABLE workflows.flow_step_grants (
    instance_id text NOT NULL REFERENCES workflows.instances (id) ON DELETE CASCADE,
    step_key    text NOT NULL,
    at          timestamptz NOT NULL,
    PRIMARY KEY (instance_id, step_key)
);

SELECT pg_catalog.pg_extension_config_dump('workflows.flow_step_waiters', '');
SELECT pg_catalog.pg_extension_config_dump('workflows.flow_step_throttles', '');
SELECT pg_catalog.pg_extension_config_dump('workflows.flow_step_grants', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('workflows.flow_step_waiters', 'seq'), '');
ALTER TABLE workflows.flow_step_waiters ENABLE ROW LEVEL SECURITY;
CREATE POLICY flow_step_waiters_visible ON workflows.flow_step_waiters FOR SELECT
    USING (EXISTS (SELECT 1 FROM workflows.instances i WHERE i.id = instance_id));
ALTER TABLE workflows.flow_step_grants ENABLE ROW LEVEL SECURITY;
CREATE POLICY flow_step_grants_visible ON workflows.flow_step_grants FOR SELECT
    USING (EXISTS (SELECT 1 FROM workflows.instances i WHERE i.id = instance_id));
REVOKE ALL ON workflows.flow_step_waiters, workflows.flow_step_throttles,
    workflows.flow_step_grants, workflows.flow_step_slots FROM PUBLIC;
GRANT SELECT ON workflows.flow_step_waiters, workflows.flow_step_grants TO PUBLIC;

/*
 * Before a step with a limit runs (src/flow.c, wf_flow_step_enter()).
 * Returns NULL: run it now (the slot is held until this transaction ends);
 * '-infinity': a throttle start was granted now, commit first; 'infinity':
 * wait for a slot; a time: wait until the throttle's start.
 */
CREATE FUNCTION workflows._flow_step_enter(instance text, step_key text,
                                           ckey text, climit integer,
                                           tkey text, tlimit integer, tperiod_ms bigint,
                                           out_of_tx boolean)
    RETURNS timestamptz
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    g timestamptz;
    s timestamptz[];
    at timestamptz;
    now_ timestamptz := clock_timestamp();
    period interval := make_interval(secs => tperiod_ms / 1000.0);
    got boolean;
BEGIN
    IF tkey IS NOT NULL THEN
        SELECT x.at INTO g FROM workflows.flow_step_grants x
         WHERE x.instance_id = instance AND x.step_key = _flow_step_enter.step_key;
        IF g IS NULL THEN
            INSERT INTO workflows.flow_step_throttles AS x (key) VALUES (tkey)
                ON CONFLICT (key) DO NOTHING;
            SELECT x.starts INTO s FROM workflows.flow_step_throttles x WHERE x.key = tkey FOR UPDATE;
            IF cardinality(s) < tlimit THEN
                at := now_;
            ELSE
                at := greatest(now_, s[cardinality(s) - tlimit + 1] + period);
            END IF;
            s := s || at;
            IF cardinality(s) > tlimit THEN
                s := s[cardinality(s) - tlimit + 1 : cardinality(s)];
            END IF;
            UPDATE workflows.flow_step_throttles x SET starts = s WHERE x.key = tkey;
            INSERT INTO workflows.flow_step_grants (instance_id, step_key, at)
            VALUES (instance, step_key, at);
            -- the throttle's row stays locked until commit: commit before the step runs
            RETURN CASE WHEN at > now_ THEN at ELSE '-infinity'::timestamptz END;
        ELSIF g > now_ THEN
            RETURN g;
        END IF;
    END IF;
    IF ckey IS NOT NULL THEN
        FOR attempt IN 1 .. 2 LOOP
            IF attempt = 2 THEN
                -- the queue: a step that frees a slot takes this lock before it commits
                PERFORM pg_catalog.pg_advisory_xact_lock(1464232017, pg_catalog.hashtext(ckey));
            END IF;
            got := workflows._flow_slot(ckey, climit, instance, step_key, out_of_tx);
            IF got IS NULL THEN
                -- the key's slot rows, committed before any step takes one
                INSERT INTO workflows.flow_step_slots (key, n)
                SELECT ckey, slot FROM pg_catalog.generate_series(0, climit - 1) slot
                    ON CONFLICT DO NOTHING;
                RETURN '-infinity';
            ELSIF got THEN
                DELETE FROM workflows.flow_step_waiters w WHERE w.instance_id = instance;
                RETURN NULL;
            END IF;
        END LOOP;
        INSERT INTO workflows.flow_step_waiters AS w (instance_id, key) VALUES (instance, ckey)
            ON CONFLICT (instance_id) DO UPDATE SET key = EXCLUDED.key;
        RETURN 'infinity';
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION workflows._flow_step_enter(text, text, text, integer, text, integer, bigint, boolean) FROM PUBLIC;

/*
 * A place of a step key for an out-of-transaction step (HTTP): its place is
 * its "calling" row, kept while the call is in flight (across transactions)
 * and freed when the call is recorded (src/async.c calls _flow_step_exit()).
 * Counted under the key's queue lock, which entries and exits take.
 */
CREATE FUNCTION workflows._flow_call_slot(ckey text, climit integer, instance text, step_key text)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock(1464232017, pg_catalog.hashtext(ckey));
    RETURN (SELECT count(*) FROM workflows.steps s
             WHERE s.status = 'calling' AND s.config->'concurrency'->>'key' = ckey
               AND NOT (s.instance_id = _flow_call_slot.instance
                        AND s.key = _flow_call_slot.step_key)) < climit;
END
$$;
REVOKE ALL ON FUNCTION workflows._flow_call_slot(text, integer, text, text) FROM PUBLIC;

-- a place of a step key: an advisory lock in the step's transaction, or a
-- "calling" row for an out-of-transaction step
CREATE FUNCTION workflows._flow_slot(ckey text, climit integer, instance text, step_key text,
                                     out_of_tx boolean)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
BEGIN
    IF out_of_tx THEN
        RETURN workflows._flow_call_slot(ckey, climit, instance, step_key);
    END IF;
    RETURN workflows._flow_step_slot(ckey, climit);
END
$$;
REVOKE ALL ON FUNCTION workflows._flow_slot(text, integer, text, text, boolean) FROM PUBLIC;

-- take a free slot of a step key (held until the transaction ends)
CREATE FUNCTION workflows._flow_step_slot(ckey text, climit integer)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM 1 FROM workflows.flow_step_slots s
     WHERE s.key = ckey AND s.n < climit
     ORDER BY s.n LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        RETURN true;
    END IF;
    IF (SELECT count(*) FROM workflows.flow_step_slots s
         WHERE s.key = ckey AND s.n < climit) < climit THEN
        RETURN NULL;
    END IF;
    RETURN false;
END
$$;
REVOKE ALL ON FUNCTION workflows._flow_step_slot(text, integer) FROM PUBLIC;

/*
 * After a step with a limit ran (src/flow.c, wf_flow_step_exit()), in its
 * transaction: its throttle grant is used; the oldest instance still
 * waiting for a slot of its key is woken at commit (which frees the slot).
 */
CREATE FUNCTION workflows._flow_step_exit(instance text, step_key text, ckey text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    w text;
BEGIN
    DELETE FROM workflows.flow_step_grants x
     WHERE x.instance_id = instance AND x.step_key = _flow_step_exit.step_key;
    IF ckey IS NULL THEN
        RETURN;
    END IF;
    PERFORM pg_catalog.pg_advisory_xact_lock(1464232017, pg_catalog.hashtext(ckey));
    LOOP
        DELETE FROM workflows.flow_step_waiters x
         WHERE x.instance_id = (SELECT y.instance_id FROM workflows.flow_step_waiters y
                                 WHERE y.key = ckey ORDER BY y.seq LIMIT 1
                                   FOR UPDATE SKIP LOCKED)
        RETURNING x.instance_id INTO w;
        EXIT WHEN w IS NULL;
        -- (one that was paused, resumed or terminated meanwhile is not waiting)
        UPDATE workflows.instances i SET wake_at = now()
         WHERE i.id = w AND i.status = 'waiting' AND i.wake_at IS NULL;
        IF FOUND THEN
            PERFORM workflows._wake_at_commit();
            EXIT;
        END IF;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION workflows._flow_step_exit(text, text, text) FROM PUBLIC;

/*
 * Why an instance is held back, for status() and describe(); NULL when it
 * is not (or has no flow control).
 */
CREATE FUNCTION workflows._flow_reason(instance text)
    RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    m workflows.flow_members;
    config jsonb;
    lim integer;
    running bigint;
    w timestamptz;
    sk text;
BEGIN
    -- a step waiting for a slot of its key, or for its throttle's start
    SELECT x.key INTO sk FROM workflows.flow_step_waiters x WHERE x.instance_id = instance;
    IF sk IS NOT NULL THEN
        RETURN format('step waiting for a concurrency slot — key "%s"', sk);
    END IF;
    SELECT max(x.at) INTO w FROM workflows.flow_step_grants x WHERE x.instance_id = instance;
    IF w > now() THEN
        RETURN format('step throttled until %s', to_char(w, 'YYYY-MM-DD HH24:MI:SS.MS TZ'));
    END IF;
    SELECT * INTO m FROM workflows.flow_members f WHERE f.instance_id = instance;
    IF NOT FOUND OR m.state IN ('holds', 'done') THEN
        RETURN NULL;
    END IF;
    IF m.state = 'held' THEN
        SELECT x.flow_control INTO config FROM workflows.workflows x WHERE x.name = m.workflow;
        lim := (workflows._flow_entries(config)->(m.held_on - 1)->>'limit')::integer;
        SELECT count(*) INTO running FROM workflows.flow_members f
         WHERE f.workflow = m.workflow AND f.state = 'holds' AND f.keys[m.held_on] = m.held_key;
        RETURN CASE WHEN m.held_key = '' THEN
                        format('waiting for a concurrency slot: %s of %s running', running, lim)
                    ELSE format('waiting for a concurrency slot — key "%s": %s of %s running',
                                m.held_key, running, lim) END;
    END IF;
    SELECT x.wake_at INTO w FROM workflows.instances x WHERE x.id = instance;
    IF m.debouncing AND w > now() THEN
        RETURN format('debounced until %s', to_char(w, 'YYYY-MM-DD HH24:MI:SS.MS TZ'));
    END IF;
    IF m.throttled_at IS NOT NULL AND m.throttled_at > now() THEN
        RETURN format('throttled until %s', to_char(m.throttled_at, 'YYYY-MM-DD HH24:MI:SS.MS TZ'));
    END IF;
    RETURN NULL;
END
$$;
GRANT EXECUTE ON FUNCTION workflows._flow_reason(text) TO PUBLIC;

/*
 * Flow control per workflow and concurrency key: how many hold a slot, how
 * many are held back, since when the oldest waits, and the throttle's next
 * free start.
 */
CREATE VIEW workflows.flow_backlog WITH (security_invoker = true) AS
    SELECT m.workflow,
           CASE WHEN m.state = 'held' THEN m.held_on ELSE 1 END AS entry,
           CASE WHEN m.state = 'held' THEN m.held_key ELSE COALESCE(m.keys[1], '') END AS key,
           count(*) FILTER (WHERE m.state = 'holds') AS running,
           count(*) FILTER (WHERE m.state = 'held') AS held_back,
           count(*) FILTER (WHERE m.state = 'ready' AND m.throttled_at > now()) AS throttled,
           min(m.held_since) FILTER (WHERE m.state = 'held') AS held_since,
           min(i.wake_at) FILTER (WHERE m.state = 'ready' AND i.wake_at > now()) AS next_eligible
      FROM workflows.flow_members m
      JOIN workflows.instances i ON i.id = m.instance_id
     WHERE m.state <> 'done' AND i.status IN ('queued', 'running', 'waiting')
     GROUP BY 1, 2, 3;
COMMENT ON VIEW workflows.flow_backlog IS
    'flow control per workflow and concurrency key: running (holding a slot), held back, throttled, oldest held, next eligible time';
GRANT SELECT ON workflows.flow_backlog TO PUBLIC;

-- composition (issue 15)

/*
 * Lineage.  A child records its parent, the root of its tree, its depth
 * (the root is 0) and the key of the parent's step that spawned it.  A
 * child of a bounded map waits "held" (queued, no wake time) until a
 * sibling ends (src/compose.c).  No foreign key to the parent: a parent may
 * be erased or purged before its children, and instances stay keyed by
 * their own id (DESIGN.md, section 4).
 */
ALTER TABLE workflows.instances
    ADD COLUMN parent text,
    ADD COLUMN root text,
    ADD COLUMN depth integer NOT NULL DEFAULT 0,
    ADD COLUMN spawned_by text,
    ADD COLUMN held boolean NOT NULL DEFAULT false;
CREATE INDEX instances_by_parent ON workflows.instances (parent, created_at, id)
    WHERE parent IS NOT NULL;
-- keyed on an expression that no other index has, so that the lookup of a
-- held sibling (src/compose.c, q_finished) can only take this small index:
-- a plan on instances_live_children would read every live sibling
CREATE INDEX instances_held ON workflows.instances ((ARRAY[parent, spawned_by]))
    WHERE held;
-- instances awaiting all the children of a spawn step: the executors' sweep
-- walks it (src/compose.c, wf_compose_sweep())
CREATE INDEX instances_group_waits ON workflows.instances (id)
    WHERE waiting_for LIKE 'workflows.group:%';
-- live children of a spawn step: an await of a map's children and the
-- executors' sweep probe it (src/compose.c), by an expression that no other
-- index has: a plan on instances_by_parent would read every child
CREATE INDEX instances_live_children ON workflows.instances ((parent || '/' || spawned_by))
    WHERE parent IS NOT NULL AND status IN ('queued', 'running', 'waiting', 'paused');

-- an await is a step type of its own
ALTER TABLE workflows.steps DROP CONSTRAINT steps_type_check;
ALTER TABLE workflows.steps ADD CONSTRAINT steps_type_check
    CHECK (type IN ('step', 'sleep', 'event', 'await'));

/*
 * Called by workflow functions while an executor runs them (no SET
 * search_path, like step(): see 20_api.sql).
 */
CREATE FUNCTION workflows.spawn(name text, workflow text, params jsonb DEFAULT '{}',
                                options jsonb DEFAULT NULL)
    RETURNS text
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'wf_spawn';
COMMENT ON FUNCTION workflows.spawn(text, text, jsonb, jsonb) IS
    'a step that creates a child instance (same owner) in the same transaction as its memo; returns its id';

CREATE FUNCTION workflows.await(name text, ids text[], mode text DEFAULT 'all',
                                timeout interval DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'wf_await';
COMMENT ON FUNCTION workflows.await(text, text[], text, interval) IS
    'wait without a process until all (or any) of the instances are final; returns [{id, status, output, error}]; WF011 on timeout';

CREATE FUNCTION workflows.call(name text, workflow text, params jsonb DEFAULT '{}',
                               options jsonb DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'wf_call';
COMMENT ON FUNCTION workflows.call(text, text, jsonb, jsonb) IS
    'spawn a child and await it: returns its output or raises its error';

CREATE FUNCTION workflows.map(name text, workflow text, inputs jsonb, options jsonb DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'wf_map';
COMMENT ON FUNCTION workflows.map(text, text, jsonb, jsonb) IS
    'one child per element of inputs, awaited together; outputs in input order; options.concurrency bounds running children';

CREATE FUNCTION workflows.set_event(key text, value jsonb)
    RETURNS void
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'wf_set_event';
COMMENT ON FUNCTION workflows.set_event(text, jsonb) IS
    'a step that publishes a value under key, readable with get_event() while the instance runs';

CREATE FUNCTION workflows.rollback()
    RETURNS jsonb
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'wf_rollback';
COMMENT ON FUNCTION workflows.rollback() IS
    'a step that runs the "rollback" of every completed step not compensated yet, latest first; returns [{step, status}]';

-- the spawn step's callback; refuses to run anywhere else (src/compose.c)
CREATE FUNCTION workflows._spawn(args jsonb)
    RETURNS jsonb
    LANGUAGE c VOLATILE STRICT
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_spawn_children';
GRANT EXECUTE ON FUNCTION workflows._spawn(jsonb) TO PUBLIC;

-- an instance ended outside the executors (_apply()): tell its parent
CREATE FUNCTION workflows._child_final(id text)
    RETURNS void
    LANGUAGE c VOLATILE STRICT
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_child_final';
REVOKE ALL ON FUNCTION workflows._child_final(text) FROM PUBLIC;

-- a command left for an executor (cascades): sweep for it at commit
CREATE FUNCTION workflows._signal_at_commit()
    RETURNS void
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_signal_sql';
REVOKE ALL ON FUNCTION workflows._signal_at_commit() FROM PUBLIC;

/*
 * Cascading control: apply a command to the live children of an instance,
 * and through _apply() to theirs.  A child an executor holds gets a
 * request, applied at its step boundary (and cascading from there).  Runs
 * as the extension's owner, inside _apply().
 */
CREATE FUNCTION workflows._cascade(instance text, command text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    c record;
    signal boolean := false;
    actor oid := workflows._acting_role();
    result text;
BEGIN
    FOR c IN SELECT i.id, i.owner, i.workflow, i.status FROM workflows.instances i
              WHERE i.parent = instance
                AND i.status NOT IN ('complete', 'errored', 'terminated')
              ORDER BY i.created_at, i.id LOOP
        PERFORM 1 FROM workflows.instances i WHERE i.id = c.id FOR NO KEY UPDATE SKIP LOCKED;
        IF FOUND THEN
            result := workflows._apply(c.id, command, NULL, false);
            CONTINUE WHEN result = c.status;
        ELSIF command IN ('pause', 'terminate') THEN
            INSERT INTO workflows.requests (instance_id, command, from_step, requested_by)
            VALUES (c.id, command, NULL, actor::regrole)
            ON CONFLICT (instance_id) DO UPDATE SET command = EXCLUDED.command,
                from_step = NULL, requested_by = EXCLUDED.requested_by, requested_at = now();
            signal := true;
            result := CASE command WHEN 'pause' THEN 'waitingForPause' ELSE 'terminating' END;
        ELSE
            CONTINUE;
        END IF;
        INSERT INTO workflows.audit (acting_role, action, instance_id, workflow, owner, details)
        VALUES (pg_catalog.pg_get_userbyid(actor), command, c.id, c.workflow, c.owner,
                jsonb_build_object('result', result, 'cascadedFrom', instance));
    END LOOP;
    IF signal THEN
        PERFORM workflows._signal_at_commit();
    END IF;
END
$$;
REVOKE ALL ON FUNCTION workflows._cascade(text, text) FROM PUBLIC;

/*
 * Reading what an instance publishes
 */
CREATE FUNCTION workflows.get_event(id text, key text, timeout interval DEFAULT '0')
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + COALESCE(timeout, interval '0');
    v jsonb;
    found_it boolean;
BEGIN
    IF key IS NULL OR key = '' THEN
        RAISE EXCEPTION 'event key must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM 1 FROM workflows.instances i WHERE i.id = get_event.id;
    IF NOT FOUND THEN
        PERFORM workflows._instance_unusable(get_event.id);
    END IF;
    LOOP
        found_it := false;
        SELECT s.output, true INTO v, found_it
          FROM workflows.steps s
         WHERE s.instance_id = get_event.id AND s.name = 'set_event:' || get_event.key
           AND s.type = 'step' AND s.status = 'complete'
         ORDER BY s.seq DESC LIMIT 1;
        IF found_it THEN
            RETURN v;
        END IF;
        EXIT WHEN clock_timestamp() >= deadline;
        PERFORM pg_sleep(LEAST(0.01, GREATEST(0, extract(epoch FROM deadline - clock_timestamp()))));
    END LOOP;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION workflows.get_event(text, text, interval) IS
    'the latest value the instance published under key with set_event(), waiting up to timeout for one; NULL if none';

CREATE FUNCTION workflows.progress(id text, after bigint DEFAULT 0)
    RETURNS TABLE (seq bigint, kind text, key text, status text, value jsonb, at timestamptz)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM workflows.instances i WHERE i.id = progress.id;
    IF NOT FOUND THEN
        PERFORM workflows._instance_unusable(progress.id);
    END IF;
    RETURN QUERY
        SELECT (s.seq + 1)::bigint,
               CASE WHEN s.type = 'step' AND s.name LIKE 'set_event:%' THEN 'event'
                    WHEN s.type = 'event' THEN 'waitForEvent' ELSE s.type END,
               CASE WHEN s.type = 'step' AND s.name LIKE 'set_event:%' THEN substr(s.name, 11)
                    ELSE s.key END,
               CASE WHEN s.status = 'waiting' THEN 'complete' ELSE s.status END,
               CASE WHEN s.status = 'failed' THEN s.error ELSE s.output END,
               CASE WHEN s.type = 'sleep' THEN s.wake_at ELSE s.ended_at END
          FROM workflows.steps s
         WHERE s.instance_id = progress.id AND s.seq >= 0 AND s.seq + 1 > COALESCE(after, 0)
           AND (s.status IN ('complete', 'failed')
                OR (s.type = 'sleep' AND s.status = 'waiting' AND s.wake_at <= clock_timestamp()))
         ORDER BY s.seq;
END
$$;
COMMENT ON FUNCTION workflows.progress(text, bigint) IS
    'the instance''s final steps and published values in order, after a sequence number; announced on channel workflows_progress';

GRANT EXECUTE ON FUNCTION workflows.get_event(text, text, interval),
    workflows.progress(text, bigint) TO PUBLIC;

-- terminate() cascades to children unless told not to; list() filters by parent
DROP FUNCTION workflows.terminate(text);
CREATE FUNCTION workflows.terminate(id text, cascade boolean DEFAULT true)
    RETURNS text
    LANGUAGE c VOLATILE STRICT
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_terminate';
COMMENT ON FUNCTION workflows.terminate(text, boolean) IS
    'stop an instance for good (a running one at its step boundary), and its live descendants unless cascade is false; returns terminated or terminating';

DROP FUNCTION workflows.list(text, text, timestamptz, timestamptz, integer, text);
CREATE FUNCTION workflows.list(workflow text DEFAULT NULL, status text DEFAULT NULL,
                               created_after timestamptz DEFAULT NULL,
                               created_before timestamptz DEFAULT NULL,
                               page_size integer DEFAULT 50, after_id text DEFAULT NULL,
                               parent text DEFAULT NULL)
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
    IF list.status IS NOT NULL AND list.status NOT IN
           ('queued', 'running', 'paused', 'waiting', 'errored', 'terminated', 'complete') THEN
        RAISE EXCEPTION 'invalid instance status "%"', list.status
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use queued, running, paused, waiting, errored, terminated or complete.';
    END IF;
    IF list.parent IS NOT NULL THEN
        PERFORM 1 FROM workflows.instances i WHERE i.id = list.parent;
        IF NOT FOUND THEN
            PERFORM workflows._instance_unusable(list.parent);
        END IF;
    END IF;
    IF after_id IS NOT NULL THEN
        SELECT i.created_at INTO after_created FROM workflows.instances i WHERE i.id = after_id;
        IF NOT FOUND THEN
            -- 42501 for another role's instance, 42704 for none, as everywhere
            PERFORM workflows._instance_unusable(after_id);
        END IF;
    END IF;
    RETURN QUERY
        SELECT i.*
          FROM workflows.instances i
         WHERE (list.parent IS NULL OR i.parent = list.parent)
           AND (list.workflow IS NULL OR i.workflow = list.workflow)
           AND (list.status IS NULL OR i.status = list.status)
           AND (created_after IS NULL OR i.created_at >= created_after)
           AND (created_before IS NULL OR i.created_at < created_before)
           AND (after_id IS NULL OR (i.created_at, i.id) > (after_created, after_id))
         ORDER BY i.created_at, i.id
         LIMIT page_size;
END
$$;
COMMENT ON FUNCTION workflows.list(text, text, timestamptz, timestamptz, integer, text, text) IS
    'list instances by workflow, status, creation time and parent, oldest first; page with after_id => the last id of the previous page';

CREATE FUNCTION workflows._erase_refs(instance text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    i workflows.instances;
    path text;
    k text;
    c jsonb;
    total bigint;
    free bigint;
BEGIN
    SELECT * INTO i FROM workflows.instances x WHERE x.id = instance;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    SELECT w.flow_control->'throttle'->>'key' INTO path
      FROM workflows.workflows w WHERE w.name = i.workflow;
    IF path IS NOT NULL THEN
        k := workflows._flow_key(i.params, path);
        PERFORM workflows._flow_lock(i.workflow);
        IF NOT EXISTS (SELECT 1 FROM workflows.flow_members f
                         JOIN workflows.instances o ON o.id = f.instance_id
                        WHERE f.workflow = i.workflow AND f.instance_id <> instance
                          AND workflows._flow_key(o.params, path) = k) THEN
            DELETE FROM workflows.flow_throttles t WHERE t.workflow = i.workflow AND t.key = k;
        END IF;
    END IF;

    FOR c IN SELECT s.config FROM workflows.steps s
              WHERE s.instance_id = instance
                AND (s.config ? 'concurrency' OR s.config ? 'throttle') LOOP
        FOR k IN SELECT DISTINCT x FROM unnest(ARRAY[c->'concurrency'->>'key',
                                                     c->'throttle'->>'key']) x
                  WHERE x IS NOT NULL LOOP
            -- the key's queue lock, which steps take to wait and to wake
            PERFORM pg_catalog.pg_advisory_xact_lock(1464232017, pg_catalog.hashtext(k));
            CONTINUE WHEN EXISTS (SELECT 1 FROM workflows.flow_step_waiters w
                                   WHERE w.key = k AND w.instance_id <> instance);
            -- a slot a running step holds is locked: then the key is in use
            SELECT count(*) INTO total FROM workflows.flow_step_slots s WHERE s.key = k;
            SELECT count(*) INTO free FROM (SELECT 1 FROM workflows.flow_step_slots s
                                             WHERE s.key = k FOR UPDATE SKIP LOCKED) f;
            CONTINUE WHEN free < total;
            DELETE FROM workflows.flow_step_slots s WHERE s.key = k;
            IF c->'throttle'->>'key' = k AND NOT EXISTS (
                   SELECT 1 FROM workflows.flow_step_grants g
                    WHERE g.instance_id <> instance AND g.at > clock_timestamp()) THEN
                DELETE FROM workflows.flow_step_throttles t WHERE t.key = k;
            END IF;
        END LOOP;
    END LOOP;

    DELETE FROM workflows.audit a
     WHERE a.action = 'create' AND a.details ? 'collapsedInto'
       AND a.details->>'collapsedInto' = instance;

    IF i.parent IS NOT NULL THEN
        DELETE FROM workflows.events e
         WHERE e.instance_id = i.parent AND e.type = 'workflows.child'
           AND e.consumed_by IS NOT NULL AND e.payload->>'id' = instance;
        UPDATE workflows.events e SET payload = e.payload - 'id'
         WHERE e.instance_id = i.parent AND e.type = 'workflows.child'
           AND e.payload->>'id' = instance;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION workflows._erase_refs(text) FROM PUBLIC;

CREATE FUNCTION workflows._acting_role()
    RETURNS oid
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'wf_acting_role_sql';
REVOKE ALL ON FUNCTION workflows._acting_role() FROM PUBLIC;

CREATE FUNCTION workflows._audit_sql(action text, workflow text, tbl regclass, details jsonb)
    RETURNS void
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_audit_sql';
GRANT EXECUTE ON FUNCTION workflows._audit_sql(text, text, regclass, jsonb) TO PUBLIC;

CREATE OR REPLACE FUNCTION workflows.start_on_insert(tbl regclass, workflow text)
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

CREATE OR REPLACE FUNCTION workflows.stop_on_insert(tbl regclass, workflow text)
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

CREATE FUNCTION workflows._purge_now(older_than interval)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM workflows.instances i
     USING (SELECT i2.id FROM workflows.instances i2
              LEFT JOIN workflows.workflows w ON w.name = i2.workflow
             WHERE i2.status IN ('complete', 'errored', 'terminated')
               AND CASE WHEN w.retention IS NULL THEN i2.ended_at < now() - older_than
                        ELSE w.retention > interval '0' AND i2.ended_at < now() - w.retention END) d
     WHERE i.id = d.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM workflows._purge(NULL, NULL);
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION workflows._purge_now(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION workflows._purge_now(interval) TO workflows_admin;

-- failed ticks counted per instance, across executors (src/executor.c, safe_tick())
CREATE TABLE workflows.tick_failures (
    instance_id text PRIMARY KEY REFERENCES workflows.instances (id) ON DELETE CASCADE,
    failures    integer NOT NULL,
    -- the instance's revision after the last failure
    revision    bigint NOT NULL,
    failed_at   timestamptz NOT NULL
);
ALTER TABLE workflows.tick_failures ENABLE ROW LEVEL SECURITY;
CREATE POLICY tick_failures_visible ON workflows.tick_failures FOR SELECT
    USING (EXISTS (SELECT 1 FROM workflows.instances i WHERE i.id = instance_id));
REVOKE ALL ON workflows.tick_failures FROM PUBLIC;
GRANT SELECT ON workflows.tick_failures TO PUBLIC;

CREATE FUNCTION workflows._flow_release_now(instance text, new_status text)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    wf text;
BEGIN
    SELECT f.workflow INTO wf FROM workflows.flow_members f
     WHERE f.instance_id = instance AND f.state = 'holds'
       FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        -- holds nothing (nothing to do), or its row is busy: after the commit
        RETURN NOT EXISTS (SELECT 1 FROM workflows.flow_members f
                            WHERE f.instance_id = instance AND f.state = 'holds');
    END IF;
    IF NOT pg_catalog.pg_try_advisory_xact_lock_shared(1464232014, pg_catalog.hashtext(wf))
       OR EXISTS (SELECT 1 FROM workflows.flow_members f
                   WHERE f.workflow = wf AND f.state = 'held') THEN
        RETURN false;
    END IF;
    UPDATE workflows.flow_members f
       SET state = CASE WHEN new_status IN ('complete', 'errored', 'terminated') THEN 'done' ELSE 'ready' END
     WHERE f.instance_id = instance;
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION workflows._flow_release_now(text, text) FROM PUBLIC;

CREATE FUNCTION workflows._flow_priority(config jsonb, params jsonb)
    RETURNS integer
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v jsonb;
BEGIN
    IF pg_catalog.jsonb_typeof(config->'priority') = 'number' THEN
        RETURN (config->>'priority')::integer;
    ELSIF NOT config ? 'priority' THEN
        RETURN 0;
    END IF;
    v := pg_catalog.jsonb_path_query_first(params, (config->'priority'->>'key')::jsonpath, '{}', true);
    IF pg_catalog.jsonb_typeof(v) = 'number' AND (v::text)::numeric BETWEEN -1000000 AND 1000000 THEN
        RETURN (v::text)::numeric::integer;
    END IF;
    RETURN COALESCE((config->'priority'->>'default')::integer, 0);
END
$$;

CREATE FUNCTION workflows._flow_admit_all(workflow text, ids text[])
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    config jsonb;
BEGIN
    SELECT w.flow_control INTO config FROM workflows.workflows w WHERE w.name = _flow_admit_all.workflow;
    IF config IS NULL OR config ? 'singleton' OR config ? 'debounce' THEN
        RETURN false;
    END IF;
    INSERT INTO workflows.flow_members (instance_id, workflow, priority)
    SELECT i.id, i.workflow, workflows._flow_priority(config, i.params)
      FROM workflows.instances i
     WHERE i.id = ANY (ids) AND i.workflow = _flow_admit_all.workflow;
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION workflows._flow_priority(jsonb, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION workflows._flow_admit_all(text, text[]) FROM PUBLIC;


/*
 * No CHECK constraints on the tables every tick writes.  PostgreSQL reads a
 * relation's CHECK constraints from their stored node trees again for every
 * statement that writes it (and plans them again): in a burst of wake-ups
 * that was 8 % of an executor's CPU, for values only the engine's own code
 * writes, from fixed strings (ids are checked by create() and
 * create_batch()).  The values each column may hold are in its comment.
 */
ALTER TABLE workflows.instances DROP CONSTRAINT instances_id_check,
                                DROP CONSTRAINT instances_status_check;
ALTER TABLE workflows.steps DROP CONSTRAINT steps_status_check,
                            DROP CONSTRAINT steps_type_check;
ALTER TABLE workflows.audit DROP CONSTRAINT audit_action_check;
ALTER TABLE workflows.flow_members DROP CONSTRAINT flow_members_state_check;
COMMENT ON COLUMN workflows.instances.status IS
    'queued, running, paused, waiting, errored, terminated or complete';
COMMENT ON COLUMN workflows.steps.status IS
    'retrying, waiting, complete, failed or calling';
COMMENT ON COLUMN workflows.steps.type IS
    'step, sleep, event or await';
COMMENT ON COLUMN workflows.flow_members.state IS
    'ready, holds, held or done';
COMMENT ON COLUMN workflows.audit.action IS
    'register, create, pause, resume, terminate, restart, erase, send_event, schedule, unschedule, set_retention, reassign, set_version, set_secret, drop_secret, set_flow_control, purge, start_on_insert or stop_on_insert';

/*
 * An instance's steps and attempts go with it by a trigger, not by foreign
 * keys: a foreign key looks up (and locks) the instance for every step and
 * attempt row written (sql/install/10_schema.sql says why that is safe).
 */
ALTER TABLE workflows.steps DROP CONSTRAINT steps_instance_id_fkey;
ALTER TABLE workflows.attempts DROP CONSTRAINT attempts_instance_id_fkey;
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

/*
 * A step whose first attempt succeeded keeps that attempt in its own row
 * (steps.attempt_run); the other attempts are rows of workflows.attempt_log,
 * and the view workflows.attempts shows them all, as the table of that name
 * did (sql/install/27_attempts.sql).  Rows already written stay where they
 * are: every one of them is in attempt_log.
 */
ALTER TABLE workflows.attempts RENAME TO attempt_log;
ALTER TABLE workflows.steps ADD COLUMN attempt_run integer;
COMMENT ON COLUMN workflows.steps.attempt_run IS
    'the run of the step''s one attempt, when it succeeded the first time and has no row in workflows.attempt_log';
CREATE VIEW workflows.attempts WITH (security_invoker = true) AS
    SELECT a.instance_id, a.step_key, a.attempt, a.started_at, a.ended_at, a.success,
           a.error, a.run, a.detail
      FROM workflows.attempt_log a
    UNION ALL
    SELECT s.instance_id, s.key, 1, s.started_at, s.ended_at, true,
           NULL::jsonb, s.attempt_run, NULL::jsonb
      FROM workflows.steps s
     WHERE s.attempt_run IS NOT NULL;
COMMENT ON VIEW workflows.attempts IS
    'every attempt of every step: start, end, success, error, run, detail (what a step kind reported)';
GRANT SELECT ON workflows.attempts TO PUBLIC;
/*
 * The view is read-only.  INSTEAD OF triggers make a write to it a matter of
 * privileges, as a write to the table it replaces was: a role without them
 * gets "permission denied" (42501), and one with them an error, not a
 * silent write to nothing.
 */
CREATE FUNCTION workflows._attempts_read_only()
    RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
BEGIN
    RAISE EXCEPTION 'workflows.attempts is a view of attempts the extension records; it cannot be changed'
        USING ERRCODE = 'feature_not_supported';
END
$$;
REVOKE ALL ON FUNCTION workflows._attempts_read_only() FROM PUBLIC;
CREATE TRIGGER attempts_read_only INSTEAD OF INSERT OR UPDATE OR DELETE ON workflows.attempts
    FOR EACH ROW EXECUTE FUNCTION workflows._attempts_read_only();
-- a view of 0.1 that read the table now reads the view
CREATE OR REPLACE VIEW workflows.step_metrics WITH (security_invoker = true) AS
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

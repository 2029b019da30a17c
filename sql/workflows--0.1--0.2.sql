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
                                  'unschedule', 'set_retention', 'reassign', 'set_version')),
    instance_id text,
    workflow    text,
    -- whose instance or workflow it concerns: decides who may read the row
    owner       regrole,
    details     jsonb
);
CREATE INDEX audit_by_instance ON workflows.audit (instance_id) WHERE instance_id IS NOT NULL;
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
                       'success', CASE WHEN s.status = 'complete' THEN true
                                       WHEN s.status = 'failed' THEN false END,
                       'error', s.error))
                   || jsonb_build_object('output', s.output)
                   || CASE WHEN s.type = 'step' THEN jsonb_build_object('attempts', COALESCE(
                          (SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                                      'attempt', a.attempt, 'start', a.started_at, 'end', a.ended_at,
                                      'success', a.success, 'error', a.error)) ORDER BY a.attempt)
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
        -- (their attempts stay, under the run number being replaced)
        DELETE FROM workflows.steps s WHERE s.instance_id = instance AND (s.seq >= from_seq OR s.seq < 0);
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
           count(*) FILTER (WHERE i.wake_at <= now()) AS runnable,
           extract(epoch FROM now() - min(i.wake_at) FILTER (WHERE i.wake_at <= now()))::float8
               AS oldest_runnable_seconds,
           extract(epoch FROM now() - min(i.created_at) FILTER (WHERE i.status = 'queued'))::float8
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
CREATE INDEX instances_held ON workflows.instances (parent, spawned_by)
    WHERE held;
-- instances awaiting all the children of a spawn step: the executors' sweep
-- walks it (src/compose.c, wf_compose_sweep())
CREATE INDEX instances_group_waits ON workflows.instances (id)
    WHERE waiting_for LIKE 'workflows.group:%';
-- live children of a spawn step: an await of a map's children probes it
CREATE INDEX instances_live_children ON workflows.instances (parent, spawned_by)
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
    'wait without a process until all (or any) of the instances are final; returns [{id, status, output, error}]; WF010 on timeout';

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
BEGIN
    FOR c IN SELECT i.id, i.owner FROM workflows.instances i
              WHERE i.parent = instance
                AND i.status NOT IN ('complete', 'errored', 'terminated')
              ORDER BY i.created_at, i.id LOOP
        PERFORM 1 FROM workflows.instances i WHERE i.id = c.id FOR NO KEY UPDATE SKIP LOCKED;
        IF FOUND THEN
            PERFORM workflows._apply(c.id, command, NULL, false);
        ELSIF command IN ('pause', 'terminate') THEN
            INSERT INTO workflows.requests (instance_id, command, from_step, requested_by)
            VALUES (c.id, command, NULL, c.owner)
            ON CONFLICT (instance_id) DO UPDATE SET command = EXCLUDED.command,
                from_step = NULL, requested_at = now();
            signal := true;
        END IF;
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

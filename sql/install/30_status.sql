-- the status document

/*
 * Status document, in the shape hosted workflow products return
 */
CREATE FUNCTION workflows.status(id text)
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


/*
 * Executors and listing
 */
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
 * The instances of this database that an executor holds right now, with
 * the step it runs (NULL while it replays) and since when: the truth that
 * the tables only learn at the executor's next commit.  Only instances the
 * caller may see (workflows._executors() filters them).
 */
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

/*
 * A status document's steps with the step an executor runs right now:
 * its row (a retry) shows the attempt in flight, or a new entry does.
 * Nothing changes when the row already shows the attempt ended after the
 * executor began it (it committed a moment ago).
 */
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

CREATE INDEX instances_by_created ON workflows.instances (created_at, id);
CREATE INDEX instances_finished ON workflows.instances (ended_at) WHERE ended_at IS NOT NULL;

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

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


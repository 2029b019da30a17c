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

CREATE FUNCTION workflows.terminate(id text, cascade boolean DEFAULT true)
    RETURNS text
    LANGUAGE c VOLATILE STRICT
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_terminate';
COMMENT ON FUNCTION workflows.terminate(text, boolean) IS
    'stop an instance for good (a running one at its step boundary), and its live descendants unless cascade is false; returns terminated or terminating';

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
 * than their workflow's retention (set_retention()), or workflows.retention,
 * and audit rows older than workflows.audit_retention, in the background;
 * purge() does it now.
 *
 * _purge() deletes up to batch instances (NULL: all) that ended before
 * cutoff (NULL: keep those of workflows without a retention of their own)
 * or, for a workflow with its own retention, more than that long ago (0:
 * never), and as many audit rows; returns the larger of the two counts, so
 * that a caller deleting in batches knows when to stop.
 */
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

/*
 * purge()'s deletion, as the extension's owner (row-level security lets a
 * member of workflows_admin see every row, but delete none).
 */
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

-- (as the caller: the audit row names who purged)
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
    n := workflows._purge_now(older_than);
    PERFORM workflows._audit_sql('purge', NULL, NULL,
                                 jsonb_build_object('older_than', older_than::text, 'instances', n));
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION workflows.purge(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION workflows.purge(interval) TO workflows_admin;
COMMENT ON FUNCTION workflows.purge(interval) IS
    'delete finished instances that ended more than older_than (or their workflow''s own retention) ago, with their steps, attempts and events, and audit rows older than workflows.audit_retention, and return the number of instances deleted';

CREATE FUNCTION workflows.set_retention(workflow text, retention interval)
    RETURNS void
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_set_retention';
COMMENT ON FUNCTION workflows.set_retention(text, interval) IS
    'keep finished instances of a workflow this long instead of workflows.retention (0: forever, NULL: back to workflows.retention)';

/*
 * Erasure: an instance and everything it has, audit rows included, except
 * one audit row saying that it was erased.
 */
CREATE FUNCTION workflows.erase(id text)
    RETURNS void
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_erase';
COMMENT ON FUNCTION workflows.erase(text) IS
    'delete a finished or terminated instance with its steps, attempts, events, requests and audit rows, leaving one audit row of the erasure';

CREATE FUNCTION workflows.set_version(id text, version text DEFAULT NULL)
    RETURNS text
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_set_version';
COMMENT ON FUNCTION workflows.set_version(text, text) IS
    'move an instance no executor runs (errored, terminated, paused, complete) to another version of its workflow (NULL: the newest), keeping its memos; returns the version id';

-- composition (issue 15): child workflows, published values, the progress stream

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
COMMENT ON COLUMN workflows.steps.type IS 'step, sleep, event or await';

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
 * as the extension's owner, inside _apply().  Each child it changes (or
 * leaves a request for) gets an audit row of its own, with the role that
 * gave the command (_acting_role(): the caller of pause(), resume() or
 * terminate(), or for a request the role that asked) and "cascadedFrom".
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

/*
 * Erasure, beyond the instance's own rows (which go with it by cascade):
 * what other rows hold of it.  Called by src/api.c (wf_erase_instance())
 * for each instance it erases, before deleting it, as the extension's
 * owner.  Removes:
 *
 * - the throttle row (workflows.flow_throttles) of the instance's key under
 *   its workflow's throttle, the key being a value of its params, unless
 *   another instance of the workflow that still exists has the same key
 *   (then the key is that instance's data too, and the row still counts
 *   its starts).  Taken under the workflow's flow lock, like a start.
 * - the rows of the step keys its steps named ("concurrency"/"throttle" in
 *   a step's config; a key can be built from params): the slot rows when
 *   no other instance waits for the key and no step holds one of them, the
 *   throttle row when besides no other instance holds a start granted for
 *   later.  Its recent starts are forgotten with it.
 * - the audit rows of the creates that debounce or singleton collapsed
 *   into it (their params hashes are those of its params).
 * - its id in its parent's child events: a consumed one is deleted, one the
 *   parent has not consumed yet (it still wakes the parent) loses the id.
 *   The parent's memos (spawn, await, call, map) keep what the child
 *   returned: that is the parent's state.
 */
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

-- the role a control command acts for (src/api.c): recorded by _cascade()
CREATE FUNCTION workflows._acting_role()
    RETURNS oid
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'wf_acting_role_sql';
REVOKE ALL ON FUNCTION workflows._acting_role() FROM PUBLIC;

-- flow control (issue 14): concurrency, throttle, priority, debounce, singleton

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
 * control").  Lock order, everywhere: a member's row (FOR UPDATE) before
 * its workflow's lock; the rows of other members are taken SKIP LOCKED
 * under the lock.  Creating
 * an instance takes no slot and no throttle budget: the executor that first
 * claims it does (a rolled-back create never reaches an executor).
 */
ALTER TABLE workflows.workflows ADD COLUMN flow_control jsonb;

CREATE TABLE workflows.flow_members (
    instance_id   text PRIMARY KEY REFERENCES workflows.instances (id) ON DELETE CASCADE,
    workflow      text NOT NULL,
    state         text NOT NULL DEFAULT 'ready',
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
COMMENT ON COLUMN workflows.flow_members.state IS 'ready, holds, held or done';
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
 * The executor's release in the transaction of the tick that left the
 * instance sleeping, waiting, paused or final (src/flow.c), when it costs
 * nothing but marking the member: nobody of the workflow is held back, so
 * there is no one to hand the slot to.  It never waits: if the member's
 * row or the shared lock is not free at once, or someone is held back, it
 * returns false and the executor releases after the commit
 * (_flow_release_after(), which hands the slot on).  Under the shared
 * lock, a parker (exclusive) either committed before -- and is seen here
 * -- or counts after this commit, when the instance is no longer live.
 */
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

-- an instance's priority under a config: the config's number, or its key's over params
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
REVOKE ALL ON FUNCTION workflows._flow_priority(jsonb, jsonb) FROM PUBLIC;

/*
 * create_batch()'s hook for a batch without create options, when the
 * workflow has neither debounce nor singleton (src/api.c): every instance
 * just becomes a member, in one statement.  Returns false, doing nothing,
 * otherwise: the caller then admits each instance (_flow_admit()).
 */
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
REVOKE ALL ON FUNCTION workflows._flow_admit_all(text, text[]) FROM PUBLIC;

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
 * '-infinity': commit first, then come back (a throttle start was granted
 * now, or the key's slot rows were made); 'infinity':
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

-- a place of a step key: a slot row locked by the step's transaction, or a
-- "calling" row for an out-of-transaction step; NULL: make the slot rows
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

/*
 * Take a free slot of a step key (a row of flow_step_slots locked until the
 * transaction ends).  NULL: the key has fewer slot rows than its limit; the
 * caller commits them (_flow_make_slots()) and tries again, so that no step
 * transaction ever waits for another's uncommitted slot rows.
 */
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

--
-- Races between executors, timers and events, checked by their invariants
-- (the interleavings are up to the executors, the outcomes are not).
--
\set VERBOSITY terse

-- two executors never run one instance: every step takes an advisory lock
-- keyed by its instance without waiting; a second executor in the same
-- instance at the same time would fail to get it
CREATE TABLE exclusive_log (instance text, step int, got_lock boolean);
CREATE FUNCTION exclusive(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    i int;
BEGIN
    FOR i IN 1..5 LOOP
        PERFORM workflows.step('s',
            'INSERT INTO exclusive_log
             SELECT $1, $2, pg_try_advisory_xact_lock(hashtext($1)) FROM pg_sleep(0.002)',
            jsonb_build_array(event->>'instanceId', i));
    END LOOP;
    RETURN NULL;
END
$$;
SELECT workflows.register('exclusive', 'exclusive(jsonb)') IS NOT NULL AS registered;
SELECT count(*) FROM workflows.create_batch('exclusive',
    (SELECT jsonb_agg(jsonb_build_object('id', 'ex-' || g)) FROM generate_series(1, 60) g));
SELECT wait_until($$SELECT count(*) = 60 FROM workflows.instances
    WHERE workflow = 'exclusive' AND status = 'complete'$$, 120);
SELECT count(*) AS steps, count(*) FILTER (WHERE NOT got_lock) AS overlapping,
       count(DISTINCT (instance, step)) AS distinct_steps
  FROM exclusive_log;

-- a timer and an event racing for one wait: each wait ends once, either
-- with the event (consumed by it) or with the timeout (the event stays)
CREATE TABLE race_log (instance text, outcome text);
CREATE FUNCTION racing(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    r jsonb;
BEGIN
    BEGIN
        r := workflows.wait_for_event('wait', 'go', (event->'payload'->>'timeout')::interval);
        r := '"event"';
    EXCEPTION WHEN SQLSTATE 'WF002' THEN
        r := '"timeout"';
    END;
    PERFORM workflows.step('record', 'INSERT INTO race_log VALUES ($1, $2)',
                           jsonb_build_array(event->>'instanceId', r));
    RETURN r;
END
$$;
SELECT workflows.register('racing', 'racing(jsonb)') IS NOT NULL AS registered;
SELECT count(*) FROM workflows.create_batch('racing',
    (SELECT jsonb_agg(jsonb_build_object('id', 'race-' || g,
                                         'params', jsonb_build_object('timeout', (100 + 10 * g) || ' ms')))
       FROM generate_series(1, 40) g));
-- send the events while the deadlines (100 to 500 ms) pass
SELECT pg_sleep(0.3);
DO $$
BEGIN
    FOR g IN 1..40 LOOP
        BEGIN
            PERFORM workflows.send_event('race-' || g, 'go', to_jsonb(g));
        EXCEPTION WHEN SQLSTATE 'WF006' THEN
            NULL;   -- already timed out and complete
        END;
    END LOOP;
END
$$;
SELECT wait_until($$SELECT count(*) = 40 FROM workflows.instances
    WHERE workflow = 'racing' AND status = 'complete'$$, 120);
-- every instance recorded exactly one outcome, its output says the same
SELECT count(*) AS instances, count(DISTINCT instance) AS distinct_instances,
       bool_and(l.outcome = i.output #>> '{}') AS outputs_agree
  FROM race_log l JOIN workflows.instances i ON i.id = l.instance;
-- an event was consumed exactly by the waits that ended with it
SELECT count(*) FILTER (WHERE l.outcome = 'event' AND e.consumed_by IS NULL) AS event_not_consumed,
       count(*) FILTER (WHERE l.outcome = 'timeout' AND e.consumed_by IS NOT NULL) AS timeout_but_consumed
  FROM race_log l LEFT JOIN workflows.events e ON e.instance_id = l.instance;

--
-- Stability: a replay that takes another path is detected (WF005), errors
-- that no retry can mend fail a step at once, and the times recorded for an
-- instance and its steps agree.
--
\set VERBOSITY terse

-- (1) a workflow that decides a step's name from a table read outside any
-- step (against the rules of workflows): when the table changes under a
-- waiting instance, its replay asks for a new step without reaching the
-- one it ran before
CREATE TABLE stab_branch (name text);
INSERT INTO stab_branch VALUES ('a');
CREATE TABLE stab_effects (instance text, step text);
CREATE FUNCTION stab_diverge(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    b text := (SELECT name FROM stab_branch);
BEGIN
    PERFORM workflows.step('first ' || b,
        'INSERT INTO stab_effects VALUES ($1, $2) RETURNING 1',
        jsonb_build_array(event->>'instanceId', 'first ' || b));
    PERFORM workflows.wait_for_event('go', 'go', '1 hour');
    RETURN workflows.step('last', 'SELECT 2');
END $$;
SELECT workflows.register('stab-diverge', 'stab_diverge(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('stab-diverge', '{}', 'diverge-1');
SELECT workflows.create('stab-diverge', '{}', 'diverge-2');
SELECT wait_until($$SELECT count(*) = 2 FROM workflows.instances
                    WHERE id LIKE 'diverge-%' AND status = 'waiting'$$);
-- the same path: completes
SELECT workflows.send_event('diverge-1', 'go');
SELECT wait_until($$SELECT status = 'complete' FROM workflows.instances WHERE id = 'diverge-1'$$);
-- another path: refused, and the new step never ran
UPDATE stab_branch SET name = 'b';
SELECT workflows.send_event('diverge-2', 'go');
SELECT wait_until($$SELECT status = 'errored' FROM workflows.instances WHERE id = 'diverge-2'$$);
SELECT error->>'sqlstate' AS sqlstate, error->>'message' AS message
  FROM workflows.instances WHERE id = 'diverge-2';
SELECT step FROM stab_effects WHERE instance = 'diverge-2' ORDER BY step;

-- (2) errors no retry can mend fail at once, whatever the retry policy
CREATE FUNCTION stab_run(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('s', event->'payload'->>'sql', NULL,
                          '{"retries": {"limit": 5, "delay": "10 minutes"}}');
END $$;
SELECT workflows.register('stab-run', 'stab_run(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('stab-run', jsonb_build_object('sql', s), 'permanent-' || n)
  FROM (VALUES (1, 'COMMIT'), (2, 'SELEC 1'), (3, 'SELECT $1'),
               (4, 'SELECT workflows.sleep(''x'', ''1 s'')'), (5, 'SELECT 1/0')) v(n, s);
SELECT wait_until($$SELECT count(*) = 4 FROM workflows.instances
                    WHERE id LIKE 'permanent-%' AND status = 'errored'$$);
SELECT i.id, i.status, s.status AS step, s.attempts, s.error->>'sqlstate' AS sqlstate
  FROM workflows.instances i JOIN workflows.steps s ON s.instance_id = i.id
 WHERE i.id LIKE 'permanent-%' ORDER BY i.id;

-- (3) no step starts before its instance
SELECT count(*) AS steps_before_their_instance
  FROM workflows.steps s JOIN workflows.instances i ON i.id = s.instance_id
 WHERE s.started_at < i.started_at;

-- (4) while a step runs, status(), describe() and backlog say so, with the
-- step in flight (no end yet), before the executor has committed anything
CREATE FUNCTION stab_slow(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM workflows.step('slow', 'SELECT pg_advisory_xact_lock(4242)');
    RETURN workflows.step('quick', 'SELECT 1');
END $$;
SELECT workflows.register('stab-slow', 'stab_slow(jsonb)') IS NOT NULL AS registered;
SELECT pg_advisory_lock(4242);
SELECT workflows.create('stab-slow', '{}', 'slow-1');
SELECT wait_until($$SELECT workflows.status('slow-1')->>'status' = 'running'
                      AND jsonb_array_length(workflows.status('slow-1')->'steps') = 1$$);
SELECT status FROM workflows.instances WHERE id = 'slow-1';  -- the last committed state
SELECT s->>'key' AS key, s->>'status' AS status, s ? 'end' AS has_end,
       jsonb_array_length(s->'attempts') AS attempts
  FROM jsonb_array_elements(workflows.status('slow-1')->'steps') s;
SELECT regexp_replace(line, 'since .*', 'since ...') AS line
  FROM workflows.describe('slow-1') line WHERE line LIKE 'status%';
-- held by an executor: running, not runnable (not waiting for an executor)
SELECT running, runnable, oldest_runnable_seconds IS NULL AS none_waiting
  FROM workflows.backlog WHERE workflow = 'stab-slow';
SELECT pg_advisory_unlock(4242);
SELECT wait_until($$SELECT status = 'complete' FROM workflows.instances WHERE id = 'slow-1'$$);
SELECT s->>'key' AS key, s->>'status' AS status FROM jsonb_array_elements(workflows.status('slow-1')->'steps') s;

-- (5) wait() on an instance created by the same, still open transaction:
-- a clear error at once, not a wait for the whole timeout
BEGIN;
SELECT workflows.create('stab-run', '{"sql": "SELECT 1"}', 'same-tx') IS NOT NULL AS created;
SELECT workflows.wait('same-tx', '1 minute');
ROLLBACK;

-- (6) list() with a status that does not exist: an error, not an empty page
SELECT * FROM workflows.list(status => 'bogus');
-- (the SQLSTATE, which terse hides)
DO $$
BEGIN
    PERFORM * FROM workflows.list(status => 'bogus');
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'list(status => bogus): %', SQLSTATE;
END $$;

-- (7) restart() keeps the version an instance was created with; after a
-- fix is registered, set_version() moves the errored instance to it, and
-- restart() from the failed step runs the fixed code on the kept memos
CREATE FUNCTION stab_buggy(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM workflows.step('load', 'SELECT 21');
    RETURN workflows.step('compute', 'SELECT 1/0', NULL, '{"retries": {"limit": 0}}');
END $$;
CREATE FUNCTION stab_fixed(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('compute', 'SELECT $1::int * 2', workflows.step('load', 'SELECT 21'));
END $$;
SELECT workflows.register('stab-fix', 'stab_buggy(jsonb)') AS buggy \gset
SELECT workflows.create('stab-fix', '{}', 'fix-1');
SELECT wait_until($$SELECT status = 'errored' FROM workflows.instances WHERE id = 'fix-1'$$);
SELECT workflows.register('stab-fix', 'stab_fixed(jsonb)') AS fixed \gset
SELECT workflows.restart('fix-1', 'compute');
SELECT wait_until($$SELECT status = 'errored' FROM workflows.instances WHERE id = 'fix-1'$$);
SELECT version_id = :'buggy' AS still_the_buggy_version FROM workflows.instances WHERE id = 'fix-1';
SELECT workflows.set_version('fix-1') = :'fixed' AS moved_to_the_fix;
SELECT workflows.restart('fix-1', 'compute');
SELECT wait_until($$SELECT status = 'complete' FROM workflows.instances WHERE id = 'fix-1'$$);
SELECT output FROM workflows.instances WHERE id = 'fix-1';
SELECT action, details->>'version' = :'fixed' AS fixed FROM workflows.audit
 WHERE instance_id = 'fix-1' AND action = 'set_version';
-- not while it may run
BEGIN;
SELECT workflows.create('stab-fix', '{}', 'fix-2');
SELECT workflows.set_version('fix-2');
ROLLBACK;

-- (8) set_version() to a version whose replay no longer matches the kept
-- memos: restart() then fails the instance with WF005, running nothing new
CREATE FUNCTION stab_renamed(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM workflows.step('fetch',
        'INSERT INTO stab_effects VALUES ($1, $2) RETURNING 1',
        jsonb_build_array(event->>'instanceId', 'fetch'));
    RETURN workflows.step('compute', 'SELECT 2');
END $$;
SELECT workflows.register('stab-fix', 'stab_buggy(jsonb)') = :'buggy' AS buggy_again;
SELECT workflows.create('stab-fix', '{}', 'fix-3');
SELECT wait_until($$SELECT status = 'errored' FROM workflows.instances WHERE id = 'fix-3'$$);
SELECT workflows.register('stab-fix', 'stab_renamed(jsonb)') AS renamed \gset
SELECT workflows.set_version('fix-3') = :'renamed' AS moved;
SELECT workflows.restart('fix-3', 'compute');
SELECT wait_until($$SELECT status = 'errored' AND error->>'sqlstate' = 'WF005'
                      FROM workflows.instances WHERE id = 'fix-3'$$);
SELECT error->>'sqlstate' AS sqlstate, error->>'message' AS message
  FROM workflows.instances WHERE id = 'fix-3';
SELECT count(*) AS new_step_effects FROM stab_effects WHERE instance = 'fix-3';

-- (9) while a retry runs: status() says running, with the retry in flight
-- (attempt 2, no end, no nextAttempt), not "will retry at" a past time
CREATE SEQUENCE stab_tries;
CREATE FUNCTION stab_retry(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('flaky',
        $q$SELECT CASE WHEN nextval('public.stab_tries') = 1
                       THEN 1 / (currval('public.stab_tries') - 1)
                       ELSE (SELECT 2 FROM pg_advisory_xact_lock(4343)) END$q$,
        NULL, '{"retries": {"limit": 3, "delay": "100 ms"}}');
END $$;
SELECT workflows.register('stab-retry', 'stab_retry(jsonb)') IS NOT NULL AS registered;
SELECT pg_advisory_lock(4343);
SELECT workflows.create('stab-retry', '{}', 'stab-retry-1');
SELECT wait_until($$SELECT workflows.status('stab-retry-1')->>'status' = 'running'
                      AND workflows.status('stab-retry-1')->'steps'->0->>'status' = 'running'
                      AND jsonb_array_length(workflows.status('stab-retry-1')->'steps'->0->'attempts') = 2$$);
SELECT s->>'key' AS key, s->>'status' AS status, s ? 'nextAttempt' AS has_next_attempt,
       s ? 'end' AS has_end,
       (SELECT string_agg(format('%s:%s', a->>'attempt', COALESCE(a->>'success', 'in flight')), ' '
                          ORDER BY (a->>'attempt')::int)
          FROM jsonb_array_elements(s->'attempts') a) AS attempts
  FROM jsonb_array_elements(workflows.status('stab-retry-1')->'steps') s;
SELECT regexp_replace(line, 'since .*', 'since ...') AS line
  FROM workflows.describe('stab-retry-1') line WHERE line LIKE 'status%';
SELECT pg_advisory_unlock(4343);
SELECT wait_until($$SELECT status = 'complete' FROM workflows.instances WHERE id = 'stab-retry-1'$$);

-- (10) a wait for an event that times out, caught by the workflow, which
-- goes on and completes: the failed wait is marked handled
CREATE FUNCTION stab_handled(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        PERFORM workflows.wait_for_event('approval', 'approve', '200 ms');
    EXCEPTION WHEN SQLSTATE 'WF002' THEN
        NULL;
    END;
    RETURN workflows.step('fallback', 'SELECT ''rejected''::text');
END $$;
SELECT workflows.register('stab-handled', 'stab_handled(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('stab-handled', '{}', 'stab-handled-1');
SELECT wait_until($$SELECT status = 'complete' FROM workflows.instances WHERE id = 'stab-handled-1'$$);
SELECT s->>'key' AS key, s->>'type' AS type, s->>'status' AS status,
       s->'error'->>'sqlstate' AS sqlstate, s->'handled' AS handled
  FROM jsonb_array_elements(workflows.status('stab-handled-1')->'steps') s;
SELECT substring(line from '^ *[0-9]+  (\S+)') AS step,
       substring(line from '(?:✓|✗|↻|◷).*$') AS status
  FROM workflows.describe('stab-handled-1') line
 WHERE line ~ '^ *[0-9]+  ';

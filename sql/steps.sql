--
-- Time, events and retries: sleeps, event delivery and timeouts, retry
-- schedules, step timeouts, non-retryable errors, malformed configs.
--
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS workflows;
RESET client_min_messages;

-- one workflow that runs whatever its params ask for
CREATE FUNCTION run(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    p jsonb := event->'payload';
BEGIN
    CASE p->>'do'
    WHEN 'sleep' THEN
        PERFORM workflows.sleep('nap', (p->>'for')::interval);
        RETURN workflows.step('after', 'SELECT clock_timestamp()');
    WHEN 'sleep_until' THEN
        PERFORM workflows.sleep_until('nap', (p->>'until')::timestamptz);
        RETURN '"woke"';
    WHEN 'event' THEN
        RETURN workflows.wait_for_event('wait', p->>'type', COALESCE(p->>'timeout', '1 minute')::interval);
    WHEN 'two events' THEN
        RETURN jsonb_build_array(workflows.wait_for_event('first', 'item')->'payload',
                                 workflows.wait_for_event('second', 'item')->'payload');
    WHEN 'event timeout' THEN
        BEGIN
            RETURN workflows.wait_for_event('wait', 'never', '100 ms');
        EXCEPTION WHEN SQLSTATE 'WF002' THEN
            RETURN jsonb_build_object('caught', SQLERRM);
        END;
    WHEN 'step' THEN
        RETURN workflows.step('work', p->>'sql', p->'args', p->'config');
    END CASE;
END
$$;
SELECT workflows.register('run', 'run(jsonb)') IS NOT NULL AS registered;

-- sleeping: a memoized step; the instance waits without a process
SELECT workflows.create('run', '{"do": "sleep", "for": "300 ms"}', 'sleep-1');
SELECT wait_until($$SELECT status = 'waiting' FROM workflows.instances WHERE id = 'sleep-1'$$);
SELECT s->>'type' AS type, s->>'status' AS status,
       (s->>'end')::timestamptz - (s->>'start')::timestamptz AS planned
  FROM jsonb_array_elements(workflows.status('sleep-1')->'steps') s;
SELECT count(*) AS executors_busy_with_it FROM pg_stat_activity
 WHERE backend_type = 'workflows executor' AND state = 'active';
SELECT d->>'status' AS status, (d->>'output')::timestamptz >= (d->'steps'->0->>'end')::timestamptz AS woke_after_end
  FROM workflows.wait('sleep-1', '30 seconds') d;
SELECT s->>'key' AS key, s->>'type' AS type, s->>'status' AS status
  FROM jsonb_array_elements(workflows.status('sleep-1')->'steps') s;

-- zero and past sleeps return at once; negative ones are errors
SELECT workflows.create('run', '{"do": "sleep", "for": "0"}', 'sleep-0');
SELECT workflows.wait('sleep-0', '30 seconds')->>'status' AS status;
SELECT workflows.create('run', jsonb_build_object('do', 'sleep_until', 'until', now() - interval '1 day'), 'sleep-past');
SELECT workflows.wait('sleep-past', '30 seconds')->'output' AS output;
SELECT workflows.create('run', '{"do": "sleep", "for": "-1 second"}', 'sleep-neg');
SELECT d->>'status' AS status, d->'error'->>'message' AS message
  FROM workflows.wait('sleep-neg', '30 seconds') d;

-- an event sent before the instance waits is kept and delivered
BEGIN;
SELECT workflows.create('run', '{"do": "event", "type": "approval"}', 'event-early');
SELECT workflows.send_event('event-early', 'approval', '{"by": "alice"}');
COMMIT;
SELECT d->>'status' AS status, d->'output'->>'type' AS type, d->'output'->'payload' AS payload,
       d->'output' ? 'timestamp' AS has_timestamp
  FROM workflows.wait('event-early', '30 seconds') d;

-- an event sent while the instance waits wakes it
SELECT workflows.create('run', '{"do": "event", "type": "approval"}', 'event-late');
SELECT wait_until($$SELECT waiting_for = 'approval' FROM workflows.instances WHERE id = 'event-late'$$);
SELECT s->>'type' AS type, s->>'status' AS status, s ? 'deadline' AS has_deadline
  FROM jsonb_array_elements(workflows.status('event-late')->'steps') s;
SELECT workflows.send_event('event-late', 'approval', '{"by": "bob"}');
SELECT d->>'status' AS status, d->'output'->'payload' AS payload
  FROM workflows.wait('event-late', '30 seconds') d;

-- a rolled-back send delivers nothing
SELECT workflows.create('run', '{"do": "event", "type": "approval", "timeout": "1 second"}', 'event-rollback');
BEGIN;
SELECT workflows.send_event('event-rollback', 'approval', '{"by": "nobody"}');
ROLLBACK;
SELECT d->>'status' AS status, d->'error'->>'sqlstate' AS sqlstate, d->'error'->>'message' AS message
  FROM workflows.wait('event-rollback', '30 seconds') d;
SELECT count(*) FROM workflows.events WHERE instance_id = 'event-rollback';

-- two waits on one type consume two events, in arrival order
SELECT workflows.create('run', '{"do": "two events"}', 'event-two');
BEGIN;
SELECT workflows.send_event('event-two', 'item', '1');
SELECT workflows.send_event('event-two', 'other', '2');
SELECT workflows.send_event('event-two', 'item', '3');
COMMIT;
SELECT workflows.wait('event-two', '30 seconds')->'output' AS output;
SELECT type, payload, consumed_by FROM workflows.events WHERE instance_id = 'event-two' ORDER BY seq;

-- a timeout is an error the workflow can catch
SELECT workflows.create('run', '{"do": "event timeout"}', 'event-timeout');
SELECT workflows.wait('event-timeout', '30 seconds')->'output' AS output;

-- sending to unknown or finished instances is an error
SELECT workflows.send_event('no-such-instance', 'x');
SELECT workflows.send_event('event-two', 'item', '4');
SELECT workflows.send_event('event-late', '', '4');

-- retries: a step failing twice, exponential backoff, every attempt recorded
CREATE TABLE flaky_calls (n serial);
CREATE FUNCTION flaky(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    -- attempts are committed one by one, so they count the earlier tries
    IF (SELECT count(*) FROM workflows.attempts WHERE instance_id = input->>'id') < 2 THEN
        INSERT INTO flaky_calls DEFAULT VALUES;   -- rolled back with the attempt
        RAISE EXCEPTION 'service unavailable' USING ERRCODE = 'connection_failure';
    END IF;
    INSERT INTO flaky_calls DEFAULT VALUES;
    RETURN '"sent"';
END
$$;
CREATE FUNCTION reminder(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('send email', 'flaky(jsonb)'::regprocedure,
        jsonb_build_object('id', event->>'instanceId'),
        '{"retries": {"limit": 5, "delay": "100 ms", "backoff": "exponential"}}');
END
$$;
SELECT workflows.register('reminder', 'reminder(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('reminder', '{}', 'retry-1');
SELECT d->>'status' AS status, d->'output' AS output FROM workflows.wait('retry-1', '30 seconds') d;
SELECT count(*) AS effects FROM flaky_calls;
SELECT a->>'attempt' AS attempt, a->>'success' AS success, a->'error'->>'message' AS message,
       a->'error'->>'sqlstate' AS sqlstate
  FROM jsonb_array_elements(workflows.status('retry-1')->'steps'->0->'attempts') a;
SELECT workflows.status('retry-1')->'steps'->0->'config' AS config;
-- the schedule: attempt n+1 starts no earlier than 100 ms * 2^(n-1) after attempt n ended
SELECT a.attempt, b.started_at - a.ended_at >= interval '100 ms' * 2 ^ (a.attempt - 1) AS waited
  FROM workflows.attempts a JOIN workflows.attempts b
    ON b.instance_id = a.instance_id AND b.step_key = a.step_key AND b.attempt = a.attempt + 1
 WHERE a.instance_id = 'retry-1' ORDER BY a.attempt;

-- limit 0 means one attempt; the failure is memoized and re-raised on replay
CREATE FUNCTION compensates(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    r jsonb;
BEGIN
    BEGIN
        r := workflows.step('charge', 'SELECT 1 / (SELECT count(*) - count(*) FROM flaky_calls)',
                            config => '{"retries": {"limit": 0}}');
    EXCEPTION WHEN division_by_zero THEN
        r := workflows.step('refund', 'SELECT ''"refunded"''::jsonb');
    END;
    PERFORM workflows.step('after', 'SELECT 1');
    RETURN r;
END
$$;
SELECT workflows.register('compensates', 'compensates(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('compensates', '{}', 'compensate-1');
SELECT d->>'status' AS status, d->'output' AS output FROM workflows.wait('compensate-1', '30 seconds') d;
SELECT key, status, attempts, error->>'sqlstate' AS sqlstate
  FROM workflows.steps WHERE instance_id = 'compensate-1' ORDER BY seq;

-- a non-retryable error fails the step after one attempt
SELECT workflows.create('run', $${"do": "step", "sql": "SELECT workflows.fail('card declined', 'do not retry')",
    "config": {"retries": {"limit": 5, "delay": 10}}}$$, 'fail-1');
SELECT d->>'status' AS status, d->'error'->>'message' AS message, d->'error'->>'sqlstate' AS sqlstate,
       jsonb_array_length(d->'steps'->0->'attempts') AS attempts
  FROM workflows.wait('fail-1', '30 seconds') d;

-- a step over its timeout is cancelled and retried
SELECT workflows.create('run', $${"do": "step", "sql": "SELECT pg_sleep(5)",
    "config": {"timeout": "100 ms", "retries": {"limit": 1, "delay": 0}}}$$, 'timeout-1');
SELECT d->>'status' AS status, d->'error'->>'sqlstate' AS sqlstate, d->'error'->>'message' AS message
  FROM workflows.wait('timeout-1', '30 seconds') d;
SELECT attempt, success, error->>'sqlstate' AS sqlstate, ended_at - started_at < interval '4 seconds' AS cut_short
  FROM workflows.attempts WHERE instance_id = 'timeout-1' ORDER BY attempt;

-- malformed configs are errors at the step call, naming the key
SELECT workflows.create('run', jsonb_build_object('do', 'step', 'sql', 'SELECT 1', 'config', c), 'config-' || n)
  FROM (VALUES (1, '{"retry": {}}'::jsonb),
               (2, '{"retries": {"limit": 1, "backof": "linear"}}'),
               (3, '{"retries": {"backoff": "sometimes"}}'),
               (4, '{"retries": {"delay": -5}}'),
               (5, '{"retries": {"delay": "soon"}}'),
               (6, '{"retries": {"limit": 1.5}}'),
               (7, '{"timeout": "-1 minute"}'),
               (8, '[1]')) AS c(n, c);
SELECT id, d->>'status' AS status, d->'error'->>'sqlstate' AS sqlstate, d->'error'->>'message' AS message
  FROM generate_series(1, 8) n, LATERAL (SELECT 'config-' || n AS id) i,
       LATERAL workflows.wait(i.id, '30 seconds') d
 ORDER BY n;
SELECT count(*) AS steps_recorded FROM workflows.steps WHERE instance_id LIKE 'config-%';

-- examples/retrying_service.sql: call an unreliable service.
--
-- The "service" is a function that fails its first N calls for a request,
-- and is slow on the first one.  The step that calls it has a timeout (an
-- attempt that takes longer fails with WF003) and retries with exponential
-- backoff.  One instance gets through on its fourth try; the other runs
-- out of tries and errors, and you can see why.  Run it again as often as
-- you like.
--
--   psql -h 127.0.0.1 -p 5499 -U postgres -f examples/retrying_service.sql

\set ON_ERROR_STOP on
CREATE EXTENSION IF NOT EXISTS workflows;

-- The service: one jsonb in, one jsonb out, so that the step can call it
-- by name: workflows.step(name, 'fn(jsonb)'::regprocedure, input, config)
-- (without the cast, the string would be taken for SQL to run).  It fails
-- the first input->'fail_times' calls of an instance's step; how many
-- calls came before is in workflows.attempts (every attempt is recorded,
-- even though a failed attempt's own writes are rolled back).
CREATE OR REPLACE FUNCTION unreliable_service(request jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    calls int;
BEGIN
    SELECT count(*) INTO calls FROM workflows.attempts
     WHERE instance_id = request->>'instance' AND step_key = 'call service';
    IF calls = 0 THEN
        PERFORM pg_sleep(1.5);      -- the first call hangs: the step's timeout ends it
    END IF;
    IF calls < (request->>'fail_times')::int THEN
        RAISE EXCEPTION 'HTTP 503 Service Unavailable (call %)', calls + 1
            USING DETAIL = 'upstream connect error', HINT = 'retry later';
    END IF;
    RETURN jsonb_build_object('status', 200, 'call', calls + 1,
                              'quote', jsonb_build_object('EURUSD', 1.0842));
END
$$;

CREATE OR REPLACE FUNCTION fetch_quote(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    response jsonb;
BEGIN
    response := workflows.step('call service', 'unreliable_service(jsonb)'::regprocedure,
        jsonb_build_object('instance', event->>'instanceId',
                           'fail_times', event->'payload'->'fail_times'),
        config => '{"timeout": "1 second",
                    "retries": {"limit": 4, "delay": "250 ms", "backoff": "exponential"}}');
    RETURN jsonb_build_object('quote', response->'quote', 'after_calls', response->'call');
END
$$;

SELECT workflows.register('fetch-quote', 'fetch_quote(jsonb)') AS version;

-- fails 3 times (a timeout, then two errors), succeeds on the 4th call
SELECT workflows.create('fetch-quote', '{"fail_times": 3}') AS lucky \gset
-- fails more often than 1 try + 4 retries allow
SELECT workflows.create('fetch-quote', '{"fail_times": 9}') AS unlucky \gset

SELECT d->>'status' AS status, d->'output' AS output
  FROM workflows.wait(:'lucky', '1 minute') d;
SELECT d->>'status' AS status, d->'error'->>'message' AS error
  FROM workflows.wait(:'unlucky', '1 minute') d;

-- every attempt: the first timed out (WF003), the waits between them
-- doubled (250 ms, 500 ms, 1 s, ...)
SELECT attempt, success, error->>'sqlstate' AS sqlstate, error->>'message' AS error,
       round(extract(epoch FROM ended_at - started_at), 2) AS took_s,
       round(extract(epoch FROM started_at - lag(ended_at) OVER (ORDER BY attempt)), 2) AS waited_s
  FROM workflows.attempts
 WHERE instance_id = :'lucky' AND step_key = 'call service'
 ORDER BY attempt;

SELECT * FROM workflows.describe(:'unlucky');

-- across instances: how often does the service fail?
SELECT step, runs, completed, failed, attempts, failures, failure_rate
  FROM workflows.step_metrics WHERE workflow = 'fetch-quote';

-- bench/workloads/soak.sql -- the workflow of the chaos soak, shared by the
-- short form (test/t/017_chaos_soak.pl) and the long form (bench/soak.sh),
-- both driven by test/t/WorkflowsSoak.pm.
--
-- One workflow, "soak", whose final state follows from its params alone:
--
--   {"steps": N,          N steps s1..sN, each writes one effects row
--    "nap": S,            (optional) step s1 sleeps S seconds first, so that
--                         faults find executors inside a step
--    "sleep": S,          (optional) a durable sleep of S seconds
--    "event": true,       (optional) waits for an event "go" (the driver
--                         sends it, payload {"n": ...})
--    "flaky": K,          (optional) step "flaky" fails its first K attempts
--                         (SQLSTATE SK001), then writes its effect
--    "doomed": true}      (optional) step "doomed" always fails (SK002) with
--                         a retry limit of 1: the instance ends errored
--
-- Output of a complete instance: {"steps": N, "event": <payload or null>,
-- "flaky": <K or null>}.  Effects are rows (instance, step) of "effects",
-- with no unique constraint, so that a step run twice shows as two rows
-- (test/t/WorkflowsInvariant.pm counts them).

CREATE TABLE effects (instance text NOT NULL, step text NOT NULL);

-- a step's effect, after an optional nap inside the step's transaction
CREATE FUNCTION soak_effect(instance text, step text, nap float8) RETURNS int
LANGUAGE plpgsql AS $$
BEGIN
    IF nap > 0 THEN
        PERFORM pg_sleep(nap);
    END IF;
    INSERT INTO public.effects VALUES (instance, step);
    RETURN 1;
END
$$;

-- Fails while fewer than k scripted failures of this step are recorded.
-- The failed attempts' own writes roll back, so the count is taken from
-- workflows.attempts, which records each failure in the transaction that
-- schedules the retry: the decision is as exactly-once as the step.
-- Interrupted attempts (WF008, 57P01) and cancels (57014) are not counted,
-- so faults do not change the outcome.
CREATE FUNCTION soak_flaky(instance text, step text, k int) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    failures int;
BEGIN
    SELECT count(*) INTO failures FROM workflows.attempts a
     WHERE a.instance_id = instance AND a.step_key = step
       AND a.error->>'sqlstate' = 'SK001';
    IF failures < k THEN
        RAISE EXCEPTION 'scripted failure % of %', failures + 1, k USING ERRCODE = 'SK001';
    END IF;
    INSERT INTO public.effects VALUES (instance, step);
    RETURN failures;
END
$$;

CREATE FUNCTION soak_doomed(instance text) RETURNS int
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'doomed instance %', instance USING ERRCODE = 'SK002';
END
$$;

CREATE FUNCTION soak(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    id text := event->>'instanceId';
    p jsonb := event->'payload';
    -- short constant retries: a cancelled attempt (57014) is charged to
    -- the retry limit, so the limits leave room for the driver's cancels
    cfg constant jsonb := '{"retries": {"limit": 20, "delay": 100, "backoff": "constant"}}';
    total int := 0;
    ev jsonb;
    tries jsonb;
BEGIN
    FOR i IN 1 .. (p->>'steps')::int LOOP
        total := total + (workflows.step('s' || i,
            'SELECT public.soak_effect($1::text, $2::text, $3::float8)',
            jsonb_build_array(id, 's' || i, CASE WHEN i = 1 THEN coalesce((p->>'nap')::float8, 0) ELSE 0 END),
            cfg))::int;
    END LOOP;
    IF p ? 'sleep' THEN
        PERFORM workflows.sleep('sleep', make_interval(secs => (p->>'sleep')::float8));
    END IF;
    IF (p->>'event')::boolean THEN
        ev := workflows.wait_for_event('event', 'go', '1 hour');
    END IF;
    IF p ? 'flaky' THEN
        tries := workflows.step('flaky', 'SELECT public.soak_flaky($1::text, $2::text, $3::int)',
            jsonb_build_array(id, 'flaky', (p->>'flaky')::int),
            jsonb_build_object('retries', jsonb_build_object(
                'limit', (p->>'flaky')::int + 20, 'delay', 100, 'backoff', 'constant')));
    END IF;
    IF (p->>'doomed')::boolean THEN
        PERFORM workflows.step('doomed', 'SELECT public.soak_doomed($1::text)',
            jsonb_build_array(id),
            '{"retries": {"limit": 1, "delay": 100, "backoff": "constant"}}');
    END IF;
    RETURN jsonb_build_object('steps', total, 'event', ev->'payload', 'flaky', tries);
END
$$;

SELECT workflows.register('soak', 'soak(jsonb)');

-- the role that tries to drop the database (and must fail, harming nothing)
CREATE ROLE soak_intruder LOGIN;

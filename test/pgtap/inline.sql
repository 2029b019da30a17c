--
-- Steps run in place: after the first step of a transaction, a replay runs
-- the steps that follow inside the workflow function (no replay per step)
-- and commits them together.  What a user relies on: every step's effect
-- exactly once, as the owner, whatever stops a run in place (a sleep, a
-- retry, a command, workflow code that writes); a failed attempt is never
-- run twice; "inline": false keeps a step out; nothing of the owner's runs
-- as the executor; the database's own portals and temporary tables work.
--
-- Not wrapped in a transaction: the executors only see committed rows.
--
\set QUIET 1
\set VERBOSITY terse
SET client_min_messages = warning;

SELECT plan(41);

\ir wait_until.psql

DROP ROLE IF EXISTS wf_inl_owner;
CREATE ROLE wf_inl_owner;
GRANT CREATE ON SCHEMA public TO wf_inl_owner;

SET ROLE wf_inl_owner;

CREATE TABLE fx (instance text, step text, n int, who text DEFAULT current_user);
CREATE SEQUENCE outside_calls;    -- stands for an effect outside the database
CREATE SEQUENCE flaky_calls;

-- n steps, each writing its effect; returns the sum of their outputs
CREATE FUNCTION chain(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    id text := event->>'instanceId';
    p jsonb := event->'payload';
    total int := 0;
BEGIN
    FOR i IN 1 .. (p->>'n')::int LOOP
        total := total + workflows.step('s',
            'INSERT INTO public.fx (instance, step, n) SELECT $1, ''s'', $2 FROM pg_sleep($3) RETURNING n',
            jsonb_build_array(id, i, coalesce(p->'nap', '0')))::int;
        IF p ? 'sleep_after' AND i = (p->>'sleep_after')::int THEN
            PERFORM workflows.sleep('nap', '200 milliseconds');
        END IF;
    END LOOP;
    RETURN to_jsonb(total);
END $$;
SELECT workflows.register('chain', 'chain(jsonb)') IS NOT NULL AS registered \gset

-- workflow code that writes between steps (against the rules of workflows)
CREATE FUNCTION writer(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE id text := event->>'instanceId';
BEGIN
    PERFORM workflows.step('a', 'INSERT INTO public.fx (instance, step) VALUES ($1, ''a'')', jsonb_build_array(id));
    PERFORM workflows.step('b', 'INSERT INTO public.fx (instance, step) VALUES ($1, ''b'')', jsonb_build_array(id));
    INSERT INTO public.fx (instance, step) VALUES (id, 'between');
    PERFORM workflows.step('c', 'INSERT INTO public.fx (instance, step) VALUES ($1, ''c'')', jsonb_build_array(id));
    RETURN '"done"';
END $$;
SELECT workflows.register('writer', 'writer(jsonb)') IS NOT NULL AS registered \gset

-- a step whose first attempt fails, after a step run in place
CREATE FUNCTION flaky(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE id text := event->>'instanceId';
BEGIN
    PERFORM workflows.step('one', 'INSERT INTO public.fx (instance, step) VALUES ($1, ''one'')', jsonb_build_array(id));
    PERFORM workflows.step('two', 'INSERT INTO public.fx (instance, step) VALUES ($1, ''two'')', jsonb_build_array(id));
    PERFORM workflows.step('flaky',
        'INSERT INTO public.fx (instance, step, n) SELECT $1, ''flaky'', 10 / (nextval(''public.flaky_calls'') - 1)::int RETURNING n',
        jsonb_build_array(id), '{"retries": {"limit": 3, "delay": "100 milliseconds"}}');
    RETURN workflows.step('four', 'INSERT INTO public.fx (instance, step) VALUES ($1, ''four'') RETURNING 4', jsonb_build_array(id));
END $$;
SELECT workflows.register('flaky', 'flaky(jsonb)') IS NOT NULL AS registered \gset

-- "inline": false for a step that acts outside the database, followed by a
-- step run in place and a sleep that stops the run
CREATE FUNCTION outside(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE id text := event->>'instanceId';
BEGIN
    PERFORM workflows.step('warm', 'INSERT INTO public.fx (instance, step) VALUES ($1, ''warm'')', jsonb_build_array(id));
    PERFORM workflows.step('call', 'SELECT nextval(''public.outside_calls'')', NULL, '{"inline": false}');
    PERFORM workflows.step('mid', 'INSERT INTO public.fx (instance, step) VALUES ($1, ''mid'')', jsonb_build_array(id));
    PERFORM workflows.sleep('nap', '200 milliseconds');
    RETURN workflows.step('end', 'INSERT INTO public.fx (instance, step) VALUES ($1, ''end'') RETURNING 1', jsonb_build_array(id));
END $$;
SELECT workflows.register('outside', 'outside(jsonb)') IS NOT NULL AS registered \gset

-- a step config with a bad "inline"
CREATE FUNCTION bad_inline(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('x', 'SELECT 1', NULL, '{"inline": "yes"}');
END $$;
SELECT workflows.register('bad-inline', 'bad_inline(jsonb)') IS NOT NULL AS registered \gset

-- a temporary table in a step run in place, and a FOR loop over a query
-- (a portal of the workflow function) around steps
CREATE FUNCTION scratch(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    id text := event->>'instanceId';
    r record;
    sums jsonb := '[]';
BEGIN
    PERFORM workflows.step('warm', 'SELECT 1');
    sums := sums || workflows.step('temp',
        'CREATE TEMP TABLE scratch (v int); INSERT INTO scratch VALUES (1), (2); SELECT sum(v) FROM scratch');
    FOR r IN SELECT g FROM generate_series(1, 20) g LOOP
        PERFORM workflows.step('row', 'INSERT INTO public.fx (instance, step, n) VALUES ($1, ''row'', $2)',
                               jsonb_build_array(id, r.g));
    END LOOP;
    RETURN sums || workflows.step('temp gone', 'SELECT to_regclass(''pg_temp.scratch'') IS NULL');
END $$;
SELECT workflows.register('scratch', 'scratch(jsonb)') IS NOT NULL AS registered \gset

-- escalation through steps run in place: code that PostgreSQL runs after a
-- step returned (deferred triggers made so by SET CONSTRAINTS, cursors WITH
-- HOLD) must run as the owner or not at all, never as the executor
CREATE TABLE esc_log (vector text, who text);
CREATE FUNCTION escalate(vector text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.esc_log VALUES (vector, current_user);
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        EXECUTE 'ALTER ROLE wf_inl_owner SUPERUSER';
    END IF;
END $$;
CREATE FUNCTION evil() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.escalate(TG_ARGV[0]);
    RETURN NULL;
END $$;
CREATE FUNCTION evil_value(vector text) RETURNS int LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM public.escalate(vector);
    RETURN 1;
END $$;
CREATE TABLE t_immediate (v int);
CREATE CONSTRAINT TRIGGER trap_immediate AFTER INSERT ON t_immediate
    DEFERRABLE INITIALLY IMMEDIATE FOR EACH ROW EXECUTE FUNCTION evil('set constraints deferred');
CREATE TABLE t_parent (id int PRIMARY KEY);
CREATE TABLE t_child (parent int REFERENCES t_parent ON DELETE CASCADE DEFERRABLE INITIALLY IMMEDIATE);
CREATE CONSTRAINT TRIGGER trap_cascade AFTER DELETE ON t_child
    DEFERRABLE INITIALLY IMMEDIATE FOR EACH ROW EXECUTE FUNCTION evil('fk cascade');
INSERT INTO t_parent VALUES (1);
INSERT INTO t_child VALUES (1);
CREATE FUNCTION vectors(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE refused text := 'no';
BEGIN
    PERFORM workflows.step('warm', 'SELECT 1');
    PERFORM workflows.step('set constraints', 'SET CONSTRAINTS ALL DEFERRED; INSERT INTO public.t_immediate VALUES (1)');
    PERFORM workflows.step('cascade', 'SET CONSTRAINTS ALL DEFERRED; DELETE FROM public.t_parent WHERE id = 1');
    PERFORM workflows.step('held', 'DECLARE held CURSOR WITH HOLD FOR SELECT public.evil_value(''held cursor'') FROM generate_series(1, 3)');
    -- workflow code between steps run in place is still security-restricted
    BEGIN
        EXECUTE 'DECLARE between_cur CURSOR WITH HOLD FOR SELECT public.evil_value(''between cursor'')';
    EXCEPTION WHEN OTHERS THEN
        refused := SQLSTATE;
    END;
    RETURN workflows.step('after', 'SELECT $1::text', to_jsonb(refused));
END $$;
SELECT workflows.register('vectors', 'vectors(jsonb)') IS NOT NULL AS registered \gset

SELECT workflows.create('vectors', '{}', 'vectors') IS NOT NULL AS c \gset
SELECT workflows.create('chain', '{"n": 300}', 'long') IS NOT NULL AS c \gset
SELECT workflows.create('writer', '{}', 'writes') IS NOT NULL AS c \gset
SELECT workflows.create('chain', '{"n": 10, "sleep_after": 5}', 'sleeps') IS NOT NULL AS c \gset
SELECT workflows.create('flaky', '{}', 'flaky') IS NOT NULL AS c \gset
SELECT workflows.create('outside', '{}', 'outside') IS NOT NULL AS c \gset
SELECT workflows.create('bad-inline', '{}', 'bad-inline') IS NOT NULL AS c \gset
SELECT workflows.create('scratch', '{}', 'scratch') IS NOT NULL AS c \gset
RESET ROLE;

SELECT ok(wait_until($$SELECT count(*) = 8 FROM workflows.instances WHERE status IN ('complete', 'errored')$$, 60),
          'every instance reached a final status');

SELECT is((SELECT rolsuper FROM pg_roles WHERE rolname = 'wf_inl_owner'), false,
          'vectors: the owner is still an ordinary role');
SELECT is((SELECT status || ' ' || output FROM workflows.instances WHERE id = 'vectors'), 'complete "42501"',
          'vectors: complete; a cursor WITH HOLD in workflow code between steps is refused');
-- (rows written by one run in place share the xmin of its subtransaction)
SELECT is((SELECT count(DISTINCT xmin::text) FROM workflows.steps WHERE instance_id = 'vectors' AND key <> 'warm')::int, 1,
          'vectors: the steps after the first ran in place, in one run');
SELECT is((SELECT string_agg(DISTINCT vector || ':' || who, ',') FROM esc_log),
          'fk cascade:wf_inl_owner,set constraints deferred:wf_inl_owner',
          'vectors: the deferred triggers fired, as the owner; the held cursor never ran');

-- a long instance: one run in place after its first step
SELECT is((SELECT status || ' ' || output FROM workflows.instances WHERE id = 'long'), 'complete 45150',
          'long: complete, with the sum of its 300 step outputs');
SELECT is((SELECT count(*) || '/' || count(DISTINCT n) FROM fx WHERE instance = 'long'), '300/300',
          'long: every step''s effect exactly once');
SELECT is((SELECT count(*) FROM workflows.attempts WHERE instance_id = 'long')::int, 300,
          'long: one attempt per step');
SELECT is((SELECT count(DISTINCT xmin::text) FROM workflows.steps WHERE instance_id = 'long' AND seq > 0)::int, 1,
          'long: the steps after the first ran in place, in one run');
SELECT is((SELECT count(*) FROM fx WHERE instance = 'long' AND who <> 'wf_inl_owner')::int, 0,
          'long: every step ran as the owner');

-- workflow code that writes: its write is rolled back, the steps are not lost
SELECT is((SELECT status FROM workflows.instances WHERE id = 'writes'), 'complete',
          'writes: complete');
SELECT is((SELECT string_agg(step, ',' ORDER BY step) FROM fx WHERE instance = 'writes'), 'a,b,c',
          'writes: each step once, the write between steps rolled back');

-- a sleep stops the run in place: the steps before it still happen once
SELECT is((SELECT status || ' ' || output FROM workflows.instances WHERE id = 'sleeps'), 'complete 55',
          'sleeps: complete with the sum of its steps');
SELECT is((SELECT count(*) || '/' || count(DISTINCT n) FROM fx WHERE instance = 'sleeps'), '10/10',
          'sleeps: every step''s effect exactly once');
SELECT is((SELECT status FROM workflows.steps WHERE instance_id = 'sleeps' AND key = 'nap'), 'complete',
          'sleeps: the sleep is memoized');
SELECT ok((SELECT s.ended_at - s.started_at >= interval '200 milliseconds'
             FROM workflows.steps s WHERE instance_id = 'sleeps' AND key = 'nap'),
          'sleeps: it slept its full time');

-- a failed attempt in place is recorded once, not run twice
SELECT is((SELECT status || ' ' || output FROM workflows.instances WHERE id = 'flaky'), 'complete 4',
          'flaky: complete');
SELECT is((SELECT string_agg(attempt || ':' || success || ':' || coalesce(error->>'sqlstate', '-'), ',' ORDER BY attempt)
             FROM workflows.attempts WHERE instance_id = 'flaky' AND step_key = 'flaky'),
          '1:false:22012,2:true:-', 'flaky: attempt 1 failed (division by zero), attempt 2 succeeded');
SELECT is((SELECT last_value FROM flaky_calls)::int, 2,
          'flaky: the step''s callback ran twice in all: the failed attempt ran once');
SELECT is((SELECT string_agg(step, ',' ORDER BY step) FROM fx WHERE instance = 'flaky'), 'flaky,four,one,two',
          'flaky: every step''s effect exactly once');

-- "inline": false: never part of a run in place that a later stop rolls back
SELECT is((SELECT status FROM workflows.instances WHERE id = 'outside'), 'complete',
          'outside: complete');
SELECT is((SELECT last_value FROM outside_calls)::int, 1,
          'outside: the step with "inline": false ran once, though a sleep stopped the run after it');
SELECT is((SELECT config->'inline' FROM workflows.steps WHERE instance_id = 'outside' AND key = 'call'), 'false'::jsonb,
          'outside: the step''s stored config says "inline": false');
SELECT is((SELECT string_agg(step, ',' ORDER BY step) FROM fx WHERE instance = 'outside'), 'end,mid,warm',
          'outside: every other step''s effect exactly once');

SELECT is((SELECT status FROM workflows.instances WHERE id = 'bad-inline'), 'errored',
          'a bad "inline" value: the instance errors');
SELECT is((SELECT error->>'message' FROM workflows.instances WHERE id = 'bad-inline'),
          'invalid step config: "inline" must be true or false', 'a bad "inline" value: the error names the key');

SELECT is((SELECT status || ' ' || output FROM workflows.instances WHERE id = 'scratch'), 'complete [3, true]',
          'scratch: a temporary table works within its step, and is gone after it');
SELECT is((SELECT count(*) || '/' || count(DISTINCT n) FROM fx WHERE instance = 'scratch'), '20/20',
          'scratch: steps inside a FOR loop over a query, each once');

------------------------------------------------------------------------------
-- commands stop a run in place at a step boundary
------------------------------------------------------------------------------
SET ROLE wf_inl_owner;
SELECT workflows.create('chain', '{"n": 2000, "nap": 0.001}', 'paused') IS NOT NULL AS c \gset
RESET ROLE;
SELECT ok(wait_until($$SELECT workflows.status('paused')->>'status' = 'running'$$),
          'paused: running');
SELECT pg_sleep(0.3);
SELECT ok(workflows.pause('paused') IN ('paused', 'waitingForPause'), 'paused: pause accepted');
SELECT ok(wait_until($$SELECT status = 'paused' FROM workflows.instances WHERE id = 'paused'$$),
          'paused: the instance pauses');
SELECT ok((SELECT count(*) < 2000 FROM workflows.steps WHERE instance_id = 'paused'),
          'paused: before its end');
SELECT is((SELECT count(*) FROM fx WHERE instance = 'paused') = (SELECT count(*) FROM workflows.steps WHERE instance_id = 'paused' AND status = 'complete'),
          true, 'paused: an effect for each memoized step and nothing else');
SELECT is(workflows.resume('paused'), 'running', 'paused: resumed');
SELECT ok(wait_until($$SELECT status = 'complete' FROM workflows.instances WHERE id = 'paused'$$, 60),
          'paused: completes after resume');
SELECT is((SELECT count(*) || '/' || count(DISTINCT n) FROM fx WHERE instance = 'paused'), '2000/2000',
          'paused: every step''s effect exactly once');

SET ROLE wf_inl_owner;
SELECT workflows.create('chain', '{"n": 2000, "nap": 0.001}', 'terminated') IS NOT NULL AS c \gset
RESET ROLE;
SELECT ok(wait_until($$SELECT workflows.status('terminated')->>'status' = 'running'$$),
          'terminated: running');
SELECT pg_sleep(0.3);
SELECT ok(workflows.terminate('terminated') IN ('terminated', 'terminating'), 'terminated: terminate accepted');
SELECT ok(wait_until($$SELECT status = 'terminated' FROM workflows.instances WHERE id = 'terminated'$$),
          'terminated: the instance is terminated');
SELECT is((SELECT count(*) FROM fx WHERE instance = 'terminated') = (SELECT count(*) FROM workflows.steps WHERE instance_id = 'terminated' AND status = 'complete'),
          true, 'terminated: an effect for each memoized step and nothing else');
SELECT ok((SELECT count(*) < 2000 FROM workflows.steps WHERE instance_id = 'terminated'),
          'terminated: before its end');

SELECT * FROM finish();

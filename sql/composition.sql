--
-- Composition: spawn, await, call, map, set_event/get_event, progress,
-- lineage (status, list, describe), cascading control, depth limit.
--
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS workflows;
DROP ROLE IF EXISTS wf_comp_owner;
DROP ROLE IF EXISTS wf_comp_other;
RESET client_min_messages;
CREATE ROLE wf_comp_owner;
CREATE ROLE wf_comp_other;

-- outside a workflow, the step functions refuse
SELECT workflows.spawn('s', 'x');
SELECT workflows.await('a', ARRAY['x']);
SELECT workflows.call('c', 'x');
SELECT workflows.map('m', 'x', '[1]');
SELECT workflows.set_event('k', '1');
SELECT workflows._spawn('{}');

-- a child: doubles its input, or fails when asked
CREATE FUNCTION comp_double(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF (event->'payload'->>'fail')::boolean THEN
        RAISE EXCEPTION 'child refuses' USING ERRCODE = '22012';
    END IF;
    RETURN to_jsonb(workflows.step('double', 'SELECT ($1::int * 2)::text::jsonb',
                                   jsonb_build_array(event->'payload'->>'n')));
END $$;
SELECT workflows.register('comp-double', 'comp_double(jsonb)') IS NOT NULL AS registered;

-- a parent: spawn + await, call, map, set_event
CREATE FUNCTION comp_parent(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    child text;
    r jsonb;
    c jsonb;
    m jsonb;
BEGIN
    child := workflows.spawn('one', 'comp-double', '{"n": 1}');
    PERFORM workflows.set_event('stage', '"spawned"');
    r := workflows.await('wait one', ARRAY[child]);
    c := workflows.call('two', 'comp-double', '{"n": 2}');
    m := workflows.map('many', 'comp-double',
                       '[{"n": 3}, {"n": 4}, {"n": 5}, {"n": 6}]', '{"concurrency": 2}');
    PERFORM workflows.set_event('stage', '"done"');
    RETURN jsonb_build_object('child', child, 'awaited', r->0->'output', 'called', c, 'mapped', m);
END $$;
SELECT workflows.register('comp-parent', 'comp_parent(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('comp-parent', '{}', id => 'cmp-p1');
SELECT wait_until($$SELECT status = 'complete' FROM workflows.instances WHERE id = 'cmp-p1'$$);
SELECT output FROM workflows.instances WHERE id = 'cmp-p1';
-- exactly one child per spawn step, with deterministic ids and the lineage
SELECT id, parent, root, depth, spawned_by, status, held
  FROM workflows.instances WHERE parent = 'cmp-p1' ORDER BY id;
SELECT workflows.status('cmp-p1')->'children';
SELECT workflows.status('cmp-p1/one') - ARRAY['queued', 'start', 'end', 'steps', 'versionId'];
SELECT id FROM workflows.list(parent => 'cmp-p1', page_size => 3);
SELECT id FROM workflows.list(parent => 'cmp-p1', page_size => 3, after_id => 'cmp-p1/many/1');
-- published values and the progress stream
SELECT workflows.get_event('cmp-p1', 'stage');
SELECT workflows.get_event('cmp-p1', 'nothing');
SELECT workflows.get_event('cmp-p1', 'nothing', '50 milliseconds');
SELECT seq, kind, key, status, value FROM workflows.progress('cmp-p1');
SELECT seq, kind, key FROM workflows.progress('cmp-p1', after => 5);
SELECT step_key, type FROM (SELECT key AS step_key, type, seq FROM workflows.steps
  WHERE instance_id = 'cmp-p1') s ORDER BY seq;

-- a restart forgets the spawn steps, but finds the same children again:
-- it adopts them (their ids derive from the parent's id and the step keys)
SELECT workflows.restart('cmp-p1');
SELECT wait_until($$SELECT status = 'complete' AND run = 2 FROM workflows.instances WHERE id = 'cmp-p1'$$);
SELECT count(*) AS children FROM workflows.instances WHERE parent = 'cmp-p1';
SELECT output FROM workflows.instances WHERE id = 'cmp-p1';

-- call raises the child's error with its SQLSTATE; the parent can catch it
CREATE FUNCTION comp_catch(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        PERFORM workflows.call('bad', 'comp-double', '{"fail": true}');
    EXCEPTION WHEN division_by_zero THEN
        RETURN jsonb_build_object('caught', SQLERRM, 'state', SQLSTATE);
    END;
    RETURN '"not caught"';
END $$;
SELECT workflows.register('comp-catch', 'comp_catch(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('comp-catch', '{}', id => 'cmp-c1');
SELECT wait_until($$SELECT status = 'complete' FROM workflows.instances WHERE id = 'cmp-c1'$$);
SELECT output FROM workflows.instances WHERE id = 'cmp-c1';

-- uncaught, a failed map child errors the parent with the child's code
CREATE FUNCTION comp_map_fail(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.map('m', 'comp-double', '[{"n": 1}, {"fail": true}]');
END $$;
SELECT workflows.register('comp-map-fail', 'comp_map_fail(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('comp-map-fail', '{}', id => 'cmp-mf');
SELECT wait_until($$SELECT status = 'errored' FROM workflows.instances WHERE id = 'cmp-mf'$$);
SELECT error->>'sqlstate' AS sqlstate, error->>'message' AS message, error->>'detail' AS detail
  FROM workflows.instances WHERE id = 'cmp-mf';

-- await: a timeout is WF011 (catchable); any; errors of the arguments
CREATE FUNCTION comp_sleeper(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM workflows.sleep('nap', (event->'payload'->>'nap')::interval);
    RETURN event->'payload';
END $$;
SELECT workflows.register('comp-sleeper', 'comp_sleeper(jsonb)') IS NOT NULL AS registered;
CREATE FUNCTION comp_await(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    slow text;
    fast text;
    r jsonb;
    timed_out text;
BEGIN
    slow := workflows.spawn('slow', 'comp-sleeper', '{"nap": "1 hour"}');
    fast := workflows.spawn('fast', 'comp-sleeper', '{"nap": "10 milliseconds"}');
    BEGIN
        PERFORM workflows.await('too short', ARRAY[slow], timeout => '100 milliseconds');
    EXCEPTION WHEN SQLSTATE 'WF011' THEN
        timed_out := SQLERRM;
    END;
    r := workflows.await('first', ARRAY[slow, fast], 'any');
    RETURN jsonb_build_object('timed_out', timed_out,
        'any', (SELECT jsonb_agg(e->>'status' ORDER BY e->>'id') FROM jsonb_array_elements(r) e));
END $$;
SELECT workflows.register('comp-await', 'comp_await(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('comp-await', '{}', id => 'cmp-aw');
SELECT wait_until($$SELECT status = 'complete' FROM workflows.instances WHERE id = 'cmp-aw'$$);
SELECT output FROM workflows.instances WHERE id = 'cmp-aw';
-- a child that outlives its parent's interest keeps sleeping; terminating
-- the (finished) parent is refused, terminating the child works
SELECT status FROM workflows.instances WHERE id = 'cmp-aw/slow';
SELECT workflows.terminate('cmp-aw/slow');

-- bad arguments
CREATE FUNCTION comp_bad(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    what text := event->'payload'->>'what';
BEGIN
    CASE what
    WHEN 'mode' THEN PERFORM workflows.await('a', ARRAY['x'], 'some');
    WHEN 'empty' THEN PERFORM workflows.await('a', ARRAY[]::text[]);
    WHEN 'missing' THEN PERFORM workflows.await('a', ARRAY['no such instance']);
    WHEN 'option' THEN PERFORM workflows.spawn('s', 'comp-double', '{}', '{"colour": "red"}');
    WHEN 'concurrency' THEN PERFORM workflows.map('m', 'comp-double', '[1]', '{"concurrency": 0}');
    WHEN 'inputs' THEN PERFORM workflows.map('m', 'comp-double', '{"a": 1}');
    WHEN 'workflow' THEN PERFORM workflows.spawn('s', 'no-such-workflow');
    WHEN 'taken' THEN PERFORM workflows.spawn('s', 'comp-double', '{}', '{"id": "cmp-p1"}');
    END CASE;
    RETURN '"returned"';
END $$;
SELECT workflows.register('comp-bad', 'comp_bad(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('comp-bad', jsonb_build_object('what', w), id => 'cmp-bad-' || w)
  FROM unnest(ARRAY['mode', 'empty', 'missing', 'option', 'concurrency', 'inputs', 'workflow', 'taken']) w;
SELECT wait_until($$SELECT bool_and(status = 'errored') FROM workflows.instances WHERE id LIKE 'cmp-bad-%'$$);
SELECT id, error->>'sqlstate' AS sqlstate, error->>'message' AS message
  FROM workflows.instances WHERE id LIKE 'cmp-bad-%' ORDER BY id;

-- the depth limit: a workflow that calls itself
CREATE FUNCTION comp_recurse(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.call('deeper', 'comp-recurse', '{}');
END $$;
SELECT workflows.register('comp-recurse', 'comp_recurse(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('comp-recurse', '{}', id => 'cmp-r');
SELECT wait_until($$SELECT count(*) = 17 AND bool_and(status = 'errored')
                    FROM workflows.instances WHERE id = 'cmp-r' OR root = 'cmp-r'$$);
SELECT max(depth) FROM workflows.instances WHERE root = 'cmp-r';
SELECT error->>'sqlstate' AS sqlstate, error->>'message' AS message
  FROM workflows.instances WHERE root = 'cmp-r' AND depth = 16;
SELECT error->>'sqlstate' AS sqlstate FROM workflows.instances WHERE id = 'cmp-r';

-- cascading control: pause, resume, terminate; terminate without cascade
CREATE FUNCTION comp_tree(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF (event->'payload'->>'level')::int > 0 THEN
        RETURN workflows.map('kids', 'comp-tree', jsonb_build_array(
            jsonb_build_object('level', (event->'payload'->>'level')::int - 1),
            jsonb_build_object('level', (event->'payload'->>'level')::int - 1)));
    END IF;
    PERFORM workflows.sleep('nap', '1 hour');
    RETURN '"leaf"';
END $$;
SELECT workflows.register('comp-tree', 'comp_tree(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('comp-tree', '{"level": 2}', id => 'cmp-t');
SELECT wait_until($$SELECT count(*) = 4 FROM workflows.instances
                    WHERE root = 'cmp-t' AND depth = 2 AND status = 'waiting'$$);
SELECT workflows.pause('cmp-t');
SELECT status, count(*) FROM workflows.instances WHERE id = 'cmp-t' OR root = 'cmp-t' GROUP BY 1;
SELECT workflows.resume('cmp-t');
SELECT wait_until($$SELECT bool_and(status = 'waiting') FROM workflows.instances
                    WHERE id = 'cmp-t' OR root = 'cmp-t'$$);
SELECT line FROM workflows.describe('cmp-t') line WHERE line ~ '└|^children';
SELECT workflows.terminate('cmp-t/kids/0', cascade => false);
SELECT id, status FROM workflows.instances WHERE id LIKE 'cmp-t/kids/0%' ORDER BY id;
SELECT workflows.terminate('cmp-t');
SELECT status, count(*) FROM workflows.instances WHERE id = 'cmp-t' OR root = 'cmp-t' GROUP BY 1 ORDER BY 1;

-- another role can neither read nor await these instances
GRANT EXECUTE ON FUNCTION comp_double(jsonb), comp_parent(jsonb) TO wf_comp_other;
SET ROLE wf_comp_other;
SELECT workflows.get_event('cmp-p1', 'stage');
SELECT * FROM workflows.progress('cmp-p1');
SELECT * FROM workflows.list(parent => 'cmp-p1');
RESET ROLE;
CREATE FUNCTION comp_snoop(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.await('peek', ARRAY['cmp-p1']);
END $$;
SELECT workflows.register('comp-snoop', 'comp_snoop(jsonb)') IS NOT NULL AS registered;
SET ROLE wf_comp_other;
SELECT workflows.create('comp-snoop', '{}', id => 'cmp-snoop');
RESET ROLE;
SELECT wait_until($$SELECT status = 'errored' FROM workflows.instances WHERE id = 'cmp-snoop'$$);
SELECT error->>'sqlstate' AS sqlstate, error->>'message' AS message
  FROM workflows.instances WHERE id = 'cmp-snoop';
-- a role cannot spawn a workflow whose function it may not run
CREATE FUNCTION comp_secret(event jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT '1'::jsonb $$;
REVOKE EXECUTE ON FUNCTION comp_secret(jsonb) FROM PUBLIC;
SELECT workflows.register('comp-secret', 'comp_secret(jsonb)') IS NOT NULL AS registered;
CREATE FUNCTION comp_spawn_secret(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN to_jsonb(workflows.spawn('s', 'comp-secret'));
END $$;
SELECT workflows.register('comp-spawn-secret', 'comp_spawn_secret(jsonb)') IS NOT NULL AS registered;
SET ROLE wf_comp_other;
SELECT workflows.create('comp-spawn-secret', '{}', id => 'cmp-secret');
RESET ROLE;
SELECT wait_until($$SELECT status = 'errored' FROM workflows.instances WHERE id = 'cmp-secret'$$);
SELECT error->>'sqlstate' AS sqlstate, error->>'message' AS message
  FROM workflows.instances WHERE id = 'cmp-secret';
SELECT count(*) FROM workflows.instances WHERE parent = 'cmp-secret';

-- rollback handlers (saga): an uncaught error runs the compensations of the
-- completed steps, latest first, each a durable step with its own retries
-- (here the refund fails twice before it works)
CREATE TABLE comp_undo (n serial, what text);
CREATE FUNCTION public.comp_refund(charge jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT count(*) FROM workflows.attempts
         WHERE instance_id = 'cmp-saga' AND step_key = 'rollback:charge') < 2 THEN
        RAISE EXCEPTION 'refund service unavailable';
    END IF;
    INSERT INTO public.comp_undo (what) VALUES ('refund ' || (charge->>'charge'));
    RETURN '"refunded"';
END $$;
CREATE FUNCTION comp_saga(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    r jsonb;
BEGIN
    PERFORM workflows.step('hotel', 'SELECT ''"h1"''::jsonb', NULL,
        '{"rollback": "INSERT INTO public.comp_undo (what) VALUES (''cancel hotel '' || $1) RETURNING 1"}');
    PERFORM workflows.step('charge', 'SELECT ''{"charge": "c9"}''::jsonb', NULL,
        '{"rollback": "public.comp_refund(jsonb)",
          "retries": {"limit": 3, "delay": 10, "backoff": "constant"}}');
    PERFORM workflows.step('log', 'SELECT 1');
    IF (event->'payload'->>'catch')::boolean THEN
        BEGIN
            PERFORM workflows.step('ship', 'SELECT 1/0', NULL, '{"retries": {"limit": 0}}');
        EXCEPTION WHEN division_by_zero THEN
            r := workflows.rollback();
            PERFORM workflows.step('after', 'SELECT 2');
            RETURN jsonb_build_object('rolled back', r);
        END;
    END IF;
    PERFORM workflows.step('ship', 'SELECT 1/0', NULL, '{"retries": {"limit": 0}}');
    RETURN '"shipped"';
END $$;
SELECT workflows.register('comp-saga', 'comp_saga(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('comp-saga', '{}', id => 'cmp-saga');
SELECT wait_until($$SELECT status = 'errored' FROM workflows.instances WHERE id = 'cmp-saga'$$);
SELECT what FROM comp_undo ORDER BY n;
SELECT error->>'message' AS message FROM workflows.instances WHERE id = 'cmp-saga';
SELECT s->>'key' AS key, s->>'status' AS status, jsonb_array_length(s->'attempts') AS attempts
  FROM jsonb_array_elements(workflows.status('cmp-saga')->'steps') s;
-- explicit: workflows.rollback() in an exception handler, then go on
TRUNCATE comp_undo;
SELECT workflows.create('comp-saga', '{"catch": true}', id => 'cmp-saga-2');
SELECT wait_until($$SELECT status = 'complete' FROM workflows.instances WHERE id = 'cmp-saga-2'$$);
SELECT output FROM workflows.instances WHERE id = 'cmp-saga-2';
SELECT what FROM comp_undo ORDER BY n;
-- a rollback must be SQL text or a function
CREATE FUNCTION comp_bad_rollback(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('x', 'SELECT 1', NULL, '{"rollback": 42}');
END $$;
SELECT workflows.register('comp-bad-rollback', 'comp_bad_rollback(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('comp-bad-rollback', '{}', id => 'cmp-bad-rollback');
SELECT wait_until($$SELECT status = 'errored' FROM workflows.instances WHERE id = 'cmp-bad-rollback'$$);
SELECT error->>'sqlstate' AS sqlstate, error->>'message' AS message
  FROM workflows.instances WHERE id = 'cmp-bad-rollback';

-- clean up the roles (their instances first: roles.c refuses otherwise)
SELECT count(workflows.erase(id)) FROM workflows.instances
 WHERE owner IN ('wf_comp_owner'::regrole, 'wf_comp_other'::regrole);
DROP OWNED BY wf_comp_owner, wf_comp_other;
DROP ROLE wf_comp_owner;
DROP ROLE wf_comp_other;

--
-- The engine: registration, instances, SQL and function steps, memoization,
-- dynamic steps, complete and errored instances.
--
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS workflows;
RESET client_min_messages;

-- registration refuses functions that cannot be workflows
CREATE FUNCTION two_args(a jsonb, b jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT a';
CREATE FUNCTION text_arg(a text) RETURNS jsonb LANGUAGE sql AS 'SELECT NULL::jsonb';
CREATE FUNCTION many(a jsonb) RETURNS SETOF jsonb LANGUAGE sql AS 'SELECT a';
CREATE PROCEDURE proc(a jsonb) LANGUAGE sql AS 'SELECT 1';
SELECT workflows.register('bad', 'two_args(jsonb,jsonb)');
SELECT workflows.register('bad', 'text_arg(text)');
SELECT workflows.register('bad', 'many(jsonb)');
SELECT workflows.register('bad', 'proc(jsonb)');
SELECT workflows.register('', 'jsonb_typeof(jsonb)');
SELECT workflows.register(NULL, 'jsonb_typeof(jsonb)');
SELECT count(*) FROM workflows.workflows;

-- step functions only work inside a running workflow
SELECT workflows.step('x', 'SELECT 1');
SELECT workflows.sleep('x', '1 second');
SELECT workflows.wait_for_event('x', 'y');

-- the file-processing shape: list, one step per file, summary
CREATE TABLE processed (instance text, file text);
CREATE SEQUENCE replays;
CREATE FUNCTION process_files(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    files jsonb;
    f text;
    n int := 0;
BEGIN
    PERFORM nextval('replays');   -- counts runs of the function: not memoized
    files := workflows.step('list files', 'SELECT $1::jsonb', jsonb_build_array(event->'payload'->'files'));
    FOR f IN SELECT jsonb_array_elements_text(files) LOOP
        PERFORM workflows.step('process file',
            'INSERT INTO processed VALUES ($1, $2) RETURNING file',
            jsonb_build_array(event->>'instanceId', f));
        n := n + 1;
    END LOOP;
    RETURN workflows.step('summary', 'SELECT jsonb_build_object(''files'', count(*)) FROM processed WHERE instance = $1',
                          jsonb_build_array(event->>'instanceId'));
END
$$;
SELECT workflows.register('process-files', 'process_files(jsonb)') ~ '^[0-9a-f-]{36}$' AS version_id;
-- registering the same function again returns the same version
SELECT workflows.register('process-files', 'process_files(jsonb)') =
       (SELECT version_id FROM workflows.versions WHERE workflow = 'process-files') AS same_version;

-- create refuses bad input and changes nothing
SELECT workflows.create('no-such-workflow', '{}');
SELECT workflows.create('process-files', NULL);
SELECT workflows.create('process-files', '{}', '');
SELECT workflows.create('process-files', '{}', repeat('x', 201));
SELECT count(*) FROM workflows.instances;

SELECT workflows.create('process-files', '{"files": ["a.pdf", "b.pdf", "c.pdf"]}', 'files-1');
SELECT workflows.create('process-files', '{}', 'files-1');
SELECT workflows.wait('files-1', '30 seconds')->>'status' AS status;

-- every file processed exactly once; the function ran twice: to find the
-- first step, then running the others in place (README "Steps run in place")
SELECT file, count(*) FROM processed WHERE instance = 'files-1' GROUP BY file ORDER BY file;
SELECT last_value AS runs FROM replays;
SELECT s->>'key' AS key, s->>'type' AS type, s->>'status' AS status,
       s->'output' AS output, jsonb_array_length(s->'attempts') AS attempts,
       s->'attempts'->0->>'success' AS first_attempt_ok
  FROM jsonb_array_elements(workflows.status('files-1')->'steps') s;
SELECT d->>'status' AS status, d->'success' AS success, d->'output' AS output,
       d->'params' AS params, d->'trigger' AS trigger, d->'error' AS error,
       d->>'queued' <= d->>'start' AND d->>'start' <= d->>'end' AS times_ordered,
       d->>'versionId' = (SELECT version_id FROM workflows.versions WHERE workflow = 'process-files') AS version
  FROM workflows.status('files-1') d;
SELECT workflows.status('no-such-instance');

-- a generated id is a uuid
SELECT workflows.create('process-files', '{"files": []}') ~ '^[0-9a-f-]{36}$' AS generated;
-- of version 7: its first 48 bits are the time of the create in
-- milliseconds, so that ids made later sort later (and new instances share
-- the right end of every index keyed by instance id)
SELECT workflows.create('process-files', '{"files": []}') AS id1 \gset
SELECT pg_sleep(0.002);
SELECT workflows.create('process-files', '{"files": []}') AS id2 \gset
SELECT :'id1'::uuid IS NOT NULL AS parses,
       substr(:'id1', 15, 1) = '7' AS version_7,
       substr(:'id1', 20, 1) IN ('8', '9', 'a', 'b') AS variant_rfc,
       :'id1' < :'id2' AS later_sorts_later,
       ('x' || lpad(replace(left(:'id1', 13), '-', ''), 16, '0'))::bit(64)::bigint
           - (SELECT extract(epoch FROM created_at) * 1000 FROM workflows.instances WHERE id = :'id1')
         BETWEEN -1 AND 1000 AS carries_created_at;

-- SQL step arguments: the statement decides their types; values stay data
CREATE FUNCTION arguments(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN jsonb_build_object(
        'int', workflows.step('int', 'SELECT $1 + 1', '[41]'),
        'cast', workflows.step('cast', 'SELECT $1::numeric * 2', '["1.5"]'),
        'text', workflows.step('text', 'SELECT $1 || ''!''', '["hi"]'),
        'null', workflows.step('null', 'SELECT $1::int IS NULL', '[null]'),
        'scalar', workflows.step('scalar', 'SELECT upper($1)', '"scalar"'),
        'object', workflows.step('object', 'SELECT $1::jsonb -> ''k''', '{"k": [1, 2]}'),
        'injection', workflows.step('injection', 'SELECT $1', '["x''); DROP TABLE processed; --"]'),
        'norow', workflows.step('norow', 'SELECT 1 WHERE false'),
        'record', workflows.step('record', 'SELECT row(1, ''a'')'),
        'multi', workflows.step('multi', 'SELECT 1; SELECT 2'));
END
$$;
SELECT workflows.register('arguments', 'arguments(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('arguments', '{}', 'args-1');
SELECT jsonb_pretty(workflows.wait('args-1', '30 seconds')->'output');
SELECT count(*) FROM processed;

-- function steps: any language, output converted to jsonb
CREATE FUNCTION double_it(input jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT to_jsonb((input->>'n')::int * 2) $$;
CREATE FUNCTION as_text(input jsonb) RETURNS text LANGUAGE sql
    AS $$ SELECT 'n=' || (input->>'n') $$;
CREATE FUNCTION fn_steps(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN jsonb_build_array(
        workflows.step('double', 'double_it(jsonb)'::regprocedure, '{"n": 21}'),
        workflows.step('text', 'as_text(jsonb)'::regprocedure, '{"n": 1}', config => '{"timeout": "1 minute"}'));
END
$$;
SELECT workflows.register('fn-steps', 'fn_steps(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('fn-steps', '{}', 'fn-1');
SELECT workflows.wait('fn-1', '30 seconds')->'output' AS output;

-- a step cannot commit: its writes commit with its memo
CREATE FUNCTION commits(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('commit', 'COMMIT', config => '{"retries": {"limit": 0}}');
END
$$;
SELECT workflows.register('commits', 'commits(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('commits', '{}', 'commit-1');
SELECT d->>'status' AS status, d->'error'->>'message' AS message, d->'error'->>'sqlstate' AS sqlstate
  FROM workflows.wait('commit-1', '30 seconds') d;

-- a raising workflow errors, with its message and SQLSTATE
CREATE FUNCTION raises(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM workflows.step('fine', 'SELECT 1');
    RAISE EXCEPTION 'cart % is gone', event->'payload'->>'cart'
        USING ERRCODE = 'no_data_found', DETAIL = 'It was deleted.';
END
$$;
SELECT workflows.register('raises', 'raises(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('raises', '{"cart": 7}', 'raise-1');
SELECT d->>'status' AS status, d->'success' AS success, d->'error'->>'message' AS message,
       d->'error'->>'sqlstate' AS sqlstate, d->'error'->>'detail' AS detail,
       jsonb_array_length(d->'steps') AS steps
  FROM workflows.wait('raise-1', '30 seconds') d;

-- a workflow that swallows the yield with EXCEPTION WHEN OTHERS still works
CREATE TABLE swallowed (n int);
CREATE FUNCTION swallows(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE r jsonb := '[]';
BEGIN
    BEGIN
        r := r || workflows.step('one', 'INSERT INTO swallowed VALUES (1) RETURNING n');
        r := r || workflows.step('two', 'INSERT INTO swallowed VALUES (2) RETURNING n');
    EXCEPTION WHEN OTHERS THEN
        r := r || '"caught"';
    END;
    r := r || workflows.step('three', 'INSERT INTO swallowed VALUES (3) RETURNING n');
    RETURN r;
END
$$;
SELECT workflows.register('swallows', 'swallows(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('swallows', '{}', 'swallow-1');
SELECT workflows.wait('swallow-1', '30 seconds')->'output' AS output;
SELECT n, count(*) FROM swallowed GROUP BY n ORDER BY n;

-- workflow code between steps cannot leave writes behind
CREATE TABLE between_steps (n int);
CREATE FUNCTION writes_between(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO between_steps VALUES (1);
    PERFORM workflows.step('a', 'SELECT 1');
    RETURN (SELECT to_jsonb(count(*)) FROM between_steps);
END
$$;
SELECT workflows.register('writes-between', 'writes_between(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('writes-between', '{}', 'between-1');
SELECT workflows.wait('between-1', '30 seconds')->'output' AS output;
SELECT count(*) FROM between_steps;

-- steps cannot be nested inside a step's callback
CREATE FUNCTION nested_inner(input jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT workflows.step('inner', 'SELECT 1') $$;
CREATE FUNCTION nests(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('outer', 'nested_inner(jsonb)'::regprocedure, '{}', '{"retries": {"limit": 0}}');
END
$$;
SELECT workflows.register('nests', 'nests(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('nests', '{}', 'nest-1');
SELECT d->>'status' AS status, d->'error'->>'message' AS message
  FROM workflows.wait('nest-1', '30 seconds') d;

-- a replay that asks for another step than the one it ran (here: workflow
-- code reading a table outside a step, against the rules) is detected, not
-- answered with a stale output
CREATE TABLE gate (open boolean);
INSERT INTO gate VALUES (false);
CREATE TABLE flavor (v int);
INSERT INTO flavor VALUES (1);
CREATE FUNCTION changes(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    f int;
BEGIN
    SELECT v INTO f FROM flavor;
    PERFORM workflows.step('a', 'SELECT ' || f);
    PERFORM workflows.step('wait for gate', 'SELECT CASE WHEN open THEN 1 ELSE 1 / 0 END FROM gate',
                           config => '{"retries": {"limit": 100, "delay": 50, "backoff": "constant"}}');
    RETURN '"done"';
END
$$;
SELECT workflows.register('changes', 'changes(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('changes', '{}', 'change-1');
SELECT wait_until($$SELECT EXISTS (SELECT 1 FROM workflows.steps
    WHERE instance_id = 'change-1' AND key = 'wait for gate' AND status = 'retrying')$$);
UPDATE flavor SET v = 2;
UPDATE gate SET open = true;
SELECT d->>'status' AS status, d->'error'->>'message' AS message, d->'error'->>'sqlstate' AS sqlstate
  FROM workflows.wait('change-1', '30 seconds') d;

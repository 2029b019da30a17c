--
-- Ownership: workflow functions and steps run as the role that created the
-- instance, cannot become anybody else, and leave nothing behind in the
-- executor for the next owner's steps; roles see and control only their own
-- instances (admins all); nobody writes the extension's tables directly;
-- search_path tricks and SQL in data do not work.
--
-- Not wrapped in a transaction: instances are run by the background
-- executors, which only see committed rows.  Roles are cluster-wide: their
-- names are unique to this file, and they are dropped at the end.
--
\set QUIET 1
\set VERBOSITY terse
SET client_min_messages = warning;

SELECT plan(86);

DROP ROLE IF EXISTS wf_tap_alice;
DROP ROLE IF EXISTS wf_tap_bob;
DROP ROLE IF EXISTS wf_tap_admin;
CREATE ROLE wf_tap_alice;
CREATE ROLE wf_tap_bob;
CREATE ROLE wf_tap_admin IN ROLE workflows_admin;
GRANT CREATE ON SCHEMA public TO wf_tap_alice, wf_tap_bob;

-- the superuser this test runs as, and this session's defaults
SELECT current_user AS su, current_setting('work_mem') AS default_work_mem \gset

\ir wait_until.psql

-- final status documents of the instances, by id
CREATE TABLE docs (id text PRIMARY KEY, doc jsonb);
CREATE TABLE created (id text);
GRANT SELECT, INSERT ON docs, created TO PUBLIC;

------------------------------------------------------------------------------
-- alice's workflow
------------------------------------------------------------------------------
SET ROLE wf_tap_alice;
CREATE TABLE alice_notes (note text);
CREATE SEQUENCE alice_seq;
-- bob may use alice's sequence, but must not see what her steps drew from it
GRANT SELECT, USAGE ON SEQUENCE alice_seq TO wf_tap_bob;
CREATE FUNCTION alice_who(input jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT to_jsonb(current_user::text) $$;
CREATE FUNCTION alice_flow(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    p jsonb := event->'payload';
    escalated text;
BEGIN
    CASE p->>'do'
    WHEN 'who' THEN
        BEGIN
            EXECUTE format('SET ROLE %I', p->>'su');
            escalated := current_user;
        EXCEPTION WHEN OTHERS THEN
            escalated := SQLSTATE;
        END;
        RETURN jsonb_build_object(
            'workflow', current_user,
            'escalated', escalated,
            'sql step', workflows.step('who sql', 'SELECT current_user'),
            'fn step', workflows.step('who fn', 'alice_who(jsonb)'::regprocedure, '{}'),
            'search_path', workflows.step('path', 'SELECT current_setting(''search_path'')'));
    WHEN 'sql' THEN
        -- the workflow function itself may take a session advisory lock
        IF p ? 'fn_lock' THEN
            PERFORM pg_try_advisory_lock((p->>'fn_lock')::bigint);
        END IF;
        -- whatever SQL alice asks for, once
        RETURN workflows.step('sql', p->>'sql', p->'args', '{"retries": {"limit": 0}, "timeout": "10 seconds"}');
    WHEN 'wait' THEN
        RETURN workflows.wait_for_event('w', 'go', '1 hour');
    WHEN 'note' THEN
        -- an event's payload goes into a step's args
        RETURN workflows.step('note', 'INSERT INTO alice_notes VALUES ($1) RETURNING note',
                              jsonb_build_array(workflows.wait_for_event('w', p->>'type', '1 hour')->'payload'->>'text'));
    END CASE;
END
$$;
REVOKE EXECUTE ON FUNCTION alice_flow(jsonb) FROM PUBLIC;
SELECT workflows.register('alice-flow', 'alice_flow(jsonb)') IS NOT NULL AS registered \gset
RESET ROLE;

------------------------------------------------------------------------------
-- bob's workflow: looks at the executor it runs on
------------------------------------------------------------------------------
SET ROLE wf_tap_bob;
-- lastval() of this session, or 'undefined'
CREATE FUNCTION bob_lastval() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN lastval()::text;
EXCEPTION WHEN object_not_in_prerequisite_state THEN
    RETURN 'undefined';
END
$$;
CREATE FUNCTION bob_flow(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN jsonb_build_object(
        'workflow', jsonb_build_object(
            'user', current_user,
            'work_mem', current_setting('work_mem'),
            'application_name', current_setting('application_name'),
            'alice_tmp', to_regclass('pg_temp.alice_tmp') IS NOT NULL,
            'prepared', (SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'alice%'),
            'lastval', public.bob_lastval(),
            'locks', (SELECT count(*) FROM pg_locks
                       WHERE pid = pg_backend_pid() AND locktype = 'advisory'
                         AND (objid = 98 AND objsubid = 1 OR classid = 99 AND objsubid = 2))),
        'step', workflows.step('look', $q$
            SELECT jsonb_build_object(
                'pid', pg_backend_pid(),
                'user', current_user,
                'work_mem', current_setting('work_mem'),
                'application_name', current_setting('application_name'),
                'alice_tmp', to_regclass('pg_temp.alice_tmp') IS NOT NULL,
                'lock_99', EXISTS (SELECT 1 FROM pg_locks
                                    WHERE pid = pg_backend_pid() AND locktype = 'advisory'
                                      AND classid = 99 AND objsubid = 2 AND granted),
                'lock_98', EXISTS (SELECT 1 FROM pg_locks
                                    WHERE pid = pg_backend_pid() AND locktype = 'advisory'
                                      AND objid = 98 AND objsubid = 1 AND granted),
                'prepared', (SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'alice%'),
                'lastval', public.bob_lastval(),
                'others_instances', (SELECT count(*) FROM workflows.instances
                                      WHERE owner <> current_user::regrole))$q$));
END
$$;
SELECT workflows.register('bob-flow', 'bob_flow(jsonb)') IS NOT NULL AS registered \gset
RESET ROLE;

------------------------------------------------------------------------------
-- instances run as their owner and cannot become anybody else
------------------------------------------------------------------------------
SET ROLE wf_tap_alice;
SELECT workflows.create('alice-flow', jsonb_build_object('do', 'who', 'su', :'su'), 'alice-who') AS id \gset
INSERT INTO docs VALUES ('alice-who', workflows.wait('alice-who', '30 seconds'));
RESET ROLE;
SELECT is((SELECT doc->>'status' FROM docs WHERE id = 'alice-who'), 'complete', 'alice-who completes');
SELECT is((SELECT doc->'output'->>'workflow' FROM docs WHERE id = 'alice-who'), 'wf_tap_alice',
    'the workflow function runs as the instance''s owner');
SELECT is((SELECT doc->'output'->>'sql step' FROM docs WHERE id = 'alice-who'), 'wf_tap_alice',
    'a SQL step runs as the instance''s owner');
SELECT is((SELECT doc->'output'->>'fn step' FROM docs WHERE id = 'alice-who'), 'wf_tap_alice',
    'a function step runs as the instance''s owner');
SELECT is((SELECT doc->'output'->>'escalated' FROM docs WHERE id = 'alice-who'), '42501',
    'SET ROLE to a superuser in the workflow function is refused');
SELECT is((SELECT doc->'output'->>'search_path' FROM docs WHERE id = 'alice-who'), 'pg_catalog, "$user", public',
    'steps run with the pinned search_path');
SELECT is((SELECT owner::text FROM workflows.instances WHERE id = 'alice-who'), 'wf_tap_alice',
    'the instance belongs to its creator');

-- escalation attempts inside steps: each fails its step
SET ROLE wf_tap_alice;
SELECT count(*) AS n FROM workflows.create_batch('alice-flow', jsonb_build_array(
    jsonb_build_object('id', 'esc-role', 'params', jsonb_build_object('do', 'sql', 'sql', format('SET ROLE %I', :'su'))),
    jsonb_build_object('id', 'esc-set-config', 'params', jsonb_build_object('do', 'sql', 'sql', 'SELECT set_config(''role'', $1, false)', 'args', jsonb_build_array(:'su'))),
    jsonb_build_object('id', 'esc-session', 'params', jsonb_build_object('do', 'sql', 'sql', format('SET SESSION AUTHORIZATION %I', :'su'))),
    jsonb_build_object('id', 'esc-authid', 'params', jsonb_build_object('do', 'sql', 'sql', 'SELECT count(*) FROM pg_authid')),
    jsonb_build_object('id', 'esc-reset', 'params', jsonb_build_object('do', 'sql', 'sql', 'RESET ROLE; SELECT current_user')))) \gset
INSERT INTO docs
    SELECT id, workflows.wait(id, '30 seconds')
      FROM unnest(ARRAY['esc-role', 'esc-set-config', 'esc-session', 'esc-authid', 'esc-reset']) AS id;
RESET ROLE;
SELECT results_eq(
    $$SELECT id, doc->>'status', doc->'error'->>'sqlstate' FROM docs
       WHERE id LIKE 'esc-%' ORDER BY id$$,
    $$VALUES ('esc-authid', 'errored', '42501'),
             ('esc-reset', 'errored', '42501'),
             ('esc-role', 'errored', '42501'),
             ('esc-session', 'errored', '42501'),
             ('esc-set-config', 'errored', '42501')$$,
    'SET ROLE, RESET ROLE, set_config(role), SET SESSION AUTHORIZATION and superuser-only reads fail in a step');
SELECT is((SELECT count(*) FROM workflows.steps WHERE instance_id LIKE 'esc-%' AND status = 'failed' AND output IS NULL), 5::bigint,
    '... each fails its step, leaving no output');

------------------------------------------------------------------------------
-- nothing of one owner's run or step stays in the executor for the next
-- owner's: alice's steps change settings, prepare a statement, draw from a
-- sequence, create a temp table and take a session advisory lock (99), and
-- her workflow function takes one too (98), on every executor of this
-- database; then bob's steps look around
------------------------------------------------------------------------------
CREATE TABLE executors AS
    SELECT pid FROM pg_stat_activity
     WHERE datname = current_database() AND backend_type = 'workflows executor';
SELECT count(*) AS nexec FROM executors \gset
SELECT cmp_ok(:nexec::bigint, '>=', 1::bigint, 'this database has executors');
GRANT SELECT ON executors TO PUBLIC;

-- one polluting instance per executor; each step waits (at most 8 seconds)
-- until every executor is in one of them: a busy executor cannot take
-- another instance, so each executor runs one
SET ROLE wf_tap_alice;
SELECT count(*) AS n FROM workflows.create_batch('alice-flow', (
    SELECT jsonb_agg(jsonb_build_object('id', 'pollute-' || n, 'params',
               jsonb_build_object('do', 'sql', 'fn_lock', 98, 'sql', format($q$
        SET application_name = 'leak';
        PREPARE alice_stmt_%1$s AS SELECT 'alice''s statement';
        SELECT nextval('public.alice_seq');
        SELECT set_config('work_mem', '1MB', false);
        CREATE TEMP TABLE IF NOT EXISTS alice_tmp (secret text);
        INSERT INTO alice_tmp VALUES ('alice was here');
        DO $b$
        DECLARE
            deadline timestamptz := clock_timestamp() + interval '8 seconds';
        BEGIN
            PERFORM pg_advisory_xact_lock_shared(97);
            WHILE (SELECT count(DISTINCT pid) FROM pg_locks
                    WHERE locktype = 'advisory' AND objid = 97 AND granted) < %2$s
                  AND clock_timestamp() < deadline LOOP
                PERFORM pg_sleep(0.01);
            END LOOP;
            -- stay a little, so that the others see everybody arrived
            PERFORM pg_sleep(0.3);
        END
        $b$;
        SELECT jsonb_build_object('pid', pg_backend_pid(),
                                  'locked', pg_try_advisory_lock(99, %1$s),
                                  'work_mem', current_setting('work_mem'),
                                  'application_name', current_setting('application_name'),
                                  'alice_tmp', to_regclass('pg_temp.alice_tmp') IS NOT NULL,
                                  'lock_99', EXISTS (SELECT 1 FROM pg_locks
                                                      WHERE pid = pg_backend_pid() AND locktype = 'advisory'
                                                        AND classid = 99 AND objsubid = 2 AND granted),
                                  'prepared', (SELECT count(*) FROM pg_prepared_statements
                                                WHERE name = 'alice_stmt_%1$s'))$q$, n, :nexec))))
      FROM generate_series(1, :nexec) n)) \gset
INSERT INTO docs
    SELECT 'pollute-' || n, workflows.wait('pollute-' || n, '60 seconds') FROM generate_series(1, :nexec) n;
RESET ROLE;
CREATE TABLE polluted AS
    SELECT DISTINCT (doc->'output'->>'pid')::int AS pid FROM docs WHERE id ~ '^pollute-[0-9]+$';

SELECT is((SELECT count(*) FROM (SELECT pid FROM executors EXCEPT SELECT pid FROM polluted) x), 0::bigint,
    'every executor of this database ran one of alice''s polluting steps');
SELECT is((SELECT count(*) FROM docs WHERE id LIKE 'pollute-%' AND doc->>'status' <> 'complete'), 0::bigint,
    'alice''s polluting instances complete');
SELECT ok((SELECT bool_and(doc->'output'->>'work_mem' = '1MB'
                           AND doc->'output'->>'application_name' = 'leak'
                           AND (doc->'output'->>'alice_tmp')::boolean)
             FROM docs WHERE id ~ '^pollute-[0-9]+$'),
    'inside alice''s step, the settings and the temp table were in effect');
SELECT ok((SELECT bool_and((doc->'output'->>'locked')::boolean AND (doc->'output'->>'lock_99')::boolean)
             FROM docs WHERE id ~ '^pollute-[0-9]+$'),
    'inside alice''s step, the advisory lock was taken');
SELECT ok((SELECT bool_and((doc->'output'->>'prepared')::int = 1)
             FROM docs WHERE id ~ '^pollute-[0-9]+$'),
    'inside alice''s step, the prepared statement was made');

-- bob's instances, one at a time
SET ROLE wf_tap_bob;
SELECT format('INSERT INTO created VALUES (workflows.create(''bob-flow'', ''{}'', ''bob-look-%s''))', n),
       format('INSERT INTO docs VALUES (''bob-look-%s'', workflows.wait(''bob-look-%s'', ''30 seconds''))', n, n)
  FROM generate_series(1, 6) n \gexec
-- and alternating with alice's
SELECT 'SET ROLE wf_tap_alice',
       format('INSERT INTO created VALUES (workflows.create(''alice-flow'', %L, ''pollute-again-%s''))',
              jsonb_build_object('do', 'sql', 'fn_lock', 98, 'sql', $q$
                  SELECT set_config('work_mem', '1MB', false);
                  CREATE TEMP TABLE IF NOT EXISTS alice_tmp (secret text);
                  SELECT pg_try_advisory_lock(99, 1000), pg_backend_pid()$q$), n),
       format('INSERT INTO docs VALUES (''pollute-again-%s'', workflows.wait(''pollute-again-%s'', ''30 seconds''))', n, n),
       'SET ROLE wf_tap_bob',
       format('INSERT INTO created VALUES (workflows.create(''bob-flow'', ''{}'', ''bob-look-%s''))', n),
       format('INSERT INTO docs VALUES (''bob-look-%s'', workflows.wait(''bob-look-%s'', ''30 seconds''))', n, n)
  FROM generate_series(7, 10) n \gexec
RESET ROLE;

SELECT is((SELECT count(*) FROM docs WHERE id LIKE 'bob-look-%' AND doc->>'status' = 'complete'), 10::bigint,
    'bob''s ten instances complete');
SELECT ok((SELECT count(*) FROM docs d JOIN polluted p ON p.pid = (d.doc->'output'->'step'->>'pid')::int
            WHERE d.id LIKE 'bob-look-%') >= 1,
    'bob''s steps ran on executors where alice''s had run');
SELECT is((SELECT count(*) FROM docs WHERE id LIKE 'bob-look-%'
             AND doc->'output'->'step'->>'user' = 'wf_tap_bob'
             AND doc->'output'->'workflow'->>'user' = 'wf_tap_bob'), 10::bigint,
    'bob''s workflow and steps run as bob');
SELECT is((SELECT count(*) FROM docs WHERE id LIKE 'bob-look-%'
             AND doc->'output'->'step'->>'work_mem' = :'default_work_mem'
             AND doc->'output'->'workflow'->>'work_mem' = :'default_work_mem'), 10::bigint,
    'a setting changed by alice''s step is back to its default in bob''s');
SELECT is((SELECT count(*) FROM docs WHERE id LIKE 'bob-look-%'
             AND doc->'output'->'step'->>'application_name' <> 'leak'
             AND doc->'output'->'workflow'->>'application_name' <> 'leak'), 10::bigint,
    'application_name set by alice''s step is not seen by bob''s');
SELECT is((SELECT count(*) FROM docs WHERE id LIKE 'bob-look-%'
             AND NOT (doc->'output'->'step'->>'alice_tmp')::boolean
             AND NOT (doc->'output'->'workflow'->>'alice_tmp')::boolean), 10::bigint,
    'a temp table created by alice''s step is not visible to bob''s');
SELECT is((SELECT count(*) FROM docs WHERE id LIKE 'bob-look-%'
             AND NOT (doc->'output'->'step'->>'lock_99')::boolean), 10::bigint,
    'a session advisory lock taken by alice''s step is not held while bob''s runs');
SELECT is((SELECT count(*) FROM docs WHERE id LIKE 'bob-look-%'
             AND NOT (doc->'output'->'step'->>'lock_98')::boolean
             AND (doc->'output'->'workflow'->>'locks')::int = 0), 10::bigint,
    'a session advisory lock taken by alice''s workflow function is not held while bob''s runs');
SELECT is((SELECT count(*) FROM pg_locks l JOIN executors e USING (pid)
            WHERE l.locktype = 'advisory' AND l.objid = 98 AND l.objsubid = 1), 0::bigint,
    'no executor still holds the lock alice''s workflow function took');
SELECT is((SELECT count(*) FROM docs WHERE id LIKE 'bob-look-%'
             AND (doc->'output'->'step'->>'prepared')::int = 0
             AND (doc->'output'->'workflow'->>'prepared')::int = 0), 10::bigint,
    'a statement prepared by alice''s step is not seen by bob''s');
SELECT is((SELECT count(*) FROM docs WHERE id LIKE 'bob-look-%'
             AND doc->'output'->'step'->>'lastval' = 'undefined'
             AND doc->'output'->'workflow'->>'lastval' = 'undefined'), 10::bigint,
    'lastval() in bob''s steps does not return what alice''s step drew');
SELECT is((SELECT count(*) FROM docs WHERE id LIKE 'bob-look-%'
             AND (doc->'output'->'step'->>'others_instances')::int = 0), 10::bigint,
    'bob''s step sees none of the others'' instances');
SELECT is((SELECT count(*) FROM pg_locks l JOIN executors e USING (pid)
            WHERE l.locktype = 'advisory' AND l.classid = 99 AND l.objsubid = 2), 0::bigint,
    'no executor still holds the session advisory locks of alice''s steps');

------------------------------------------------------------------------------
-- row-level isolation: bob cannot see or control alice's instances
------------------------------------------------------------------------------
SET ROLE wf_tap_alice;
SELECT count(*) AS n FROM workflows.create_batch('alice-flow', '[{"id": "alice-wait", "params": {"do": "wait"}},
                                                                {"id": "alice-wait-2", "params": {"do": "wait"}}]') \gset
RESET ROLE;
SELECT ok(wait_until($$SELECT count(*) = 2 FROM workflows.instances
                        WHERE id IN ('alice-wait', 'alice-wait-2') AND waiting_for = 'go'$$),
    'alice-wait and alice-wait-2 wait for an event');
SELECT count(*) AS alice_rows FROM workflows.instances WHERE owner = 'wf_tap_alice'::regrole \gset

SET ROLE wf_tap_bob;
SELECT is((SELECT count(*) FROM workflows.instances WHERE owner = 'wf_tap_alice'::regrole), 0::bigint,
    'bob sees none of alice''s instances');
SELECT is((SELECT count(*) FROM workflows.steps WHERE instance_id LIKE 'alice-%' OR instance_id LIKE 'pollute-%'), 0::bigint,
    'bob sees none of alice''s steps');
SELECT is((SELECT count(*) FROM workflows.attempts WHERE instance_id LIKE 'alice-%' OR instance_id LIKE 'pollute-%'), 0::bigint,
    'bob sees none of alice''s attempts');
SELECT is((SELECT count(*) FROM workflows.instances), 10::bigint,
    'bob sees his own ten instances');
SELECT throws_ok($$SELECT workflows.status('alice-wait')$$,
    '42501', 'permission denied for workflow instance "alice-wait"', 'bob: status of alice''s instance');
SELECT throws_ok($$SELECT * FROM workflows.list(after_id => 'alice-wait')$$,
    '42501', 'permission denied for workflow instance "alice-wait"', 'bob: page after alice''s instance');
SELECT throws_ok($$SELECT workflows.wait('alice-wait', '10 ms')$$,
    '42501', 'permission denied for workflow instance "alice-wait"', 'bob: wait for alice''s instance');
SELECT throws_ok($$SELECT workflows.send_event('alice-wait', 'go', '{"by": "bob"}')$$,
    '42501', 'permission denied for workflow instance "alice-wait"', 'bob: send an event to alice''s instance');
SELECT throws_ok($$SELECT workflows.pause('alice-wait')$$,
    '42501', 'permission denied for workflow instance "alice-wait"', 'bob: pause alice''s instance');
SELECT throws_ok($$SELECT workflows.resume('alice-wait')$$,
    '42501', 'permission denied for workflow instance "alice-wait"', 'bob: resume alice''s instance');
SELECT throws_ok($$SELECT workflows.terminate('alice-wait')$$,
    '42501', 'permission denied for workflow instance "alice-wait"', 'bob: terminate alice''s instance');
SELECT throws_ok($$SELECT workflows.restart('alice-wait')$$,
    '42501', 'permission denied for workflow instance "alice-wait"', 'bob: restart alice''s instance');
SELECT throws_ok($$SELECT workflows.restart('alice-wait', 'w')$$,
    '42501', 'permission denied for workflow instance "alice-wait"', 'bob: restart alice''s instance from a step');
SELECT throws_ok($$SELECT * FROM workflows.describe('alice-wait')$$,
    '42501', 'permission denied for workflow instance "alice-wait"', 'bob: describe alice''s instance');
SELECT throws_ok($$SELECT workflows.erase('alice-wait')$$,
    '42501', 'permission denied for workflow instance "alice-wait"', 'bob: erase alice''s instance');
SELECT throws_ok($$SELECT workflows.create('bob-flow', '{}', 'alice-wait')$$,
    '23505', 'workflow instance "alice-wait" already exists',
    'bob: the id is taken (ids are one namespace per database, and not secret)');
SELECT throws_ok($$SELECT * FROM workflows.create_batch('bob-flow', '[{"id": "alice-wait"}]', if_not_exists => true)$$,
    '23505', 'workflow instance "alice-wait" already exists and belongs to another role',
    'bob: an idempotent batch does not hand him alice''s instance');
SELECT throws_ok($$SELECT workflows.create('alice-flow', '{"do": "wait"}', 'bob-as-alice')$$,
    '42501', 'permission denied for function alice_flow',
    'bob: cannot create instances of a workflow whose function he cannot execute');
SELECT throws_ok($$SELECT workflows.register('alice-flow', 'bob_flow(jsonb)')$$,
    '42501', 'workflow "alice-flow" belongs to role wf_tap_alice',
    'bob: cannot register a version of alice''s workflow');
RESET ROLE;
SELECT results_eq(
    $$SELECT status, (SELECT count(*) FROM workflows.events e WHERE e.instance_id = i.id),
             (SELECT count(*) FROM workflows.requests r WHERE r.instance_id = i.id)
        FROM workflows.instances i WHERE id = 'alice-wait'$$,
    $$VALUES ('waiting', 0::bigint, 0::bigint)$$,
    'bob''s attempts left alice''s instance as it was');
SELECT is((SELECT count(*) FROM workflows.instances WHERE owner = 'wf_tap_alice'::regrole), :alice_rows::bigint,
    'bob created nothing for alice');
SELECT is((SELECT count(*) FROM workflows.versions WHERE workflow = 'alice-flow'), 1::bigint,
    'alice''s workflow has still one version');

------------------------------------------------------------------------------
-- an admin sees and controls every instance
------------------------------------------------------------------------------
SET ROLE wf_tap_admin;
SELECT cmp_ok((SELECT count(*) FROM workflows.instances WHERE owner = 'wf_tap_alice'::regrole), '>', 0::bigint,
    'admin sees alice''s instances');
SELECT is(workflows.status('alice-wait')->>'status', 'waiting', 'admin: status of alice''s instance');
SELECT is(workflows.pause('alice-wait'), 'paused', 'admin: pause alice''s instance');
SELECT is(workflows.resume('alice-wait'), 'running', 'admin: resume alice''s instance');
SELECT is(workflows.restart('alice-wait'), 'queued', 'admin: restart alice''s instance');
SELECT ok(wait_until($$SELECT waiting_for = 'go' FROM workflows.instances WHERE id = 'alice-wait'$$),
    'admin: the restarted instance waits for an event again');
SELECT ok(workflows.terminate('alice-wait') IN ('terminated', 'terminating'), 'admin: terminate alice''s instance');
SELECT is(workflows.wait('alice-wait', '30 seconds')->>'status', 'terminated', 'admin: alice''s instance is terminated');
SELECT lives_ok($$SELECT workflows.send_event('alice-wait-2', 'go', '{"by": "admin"}')$$,
    'admin: send an event to alice''s instance');
SELECT results_eq(
    $$SELECT d->>'status', d->'output'->'payload' FROM workflows.wait('alice-wait-2', '30 seconds') d$$,
    $$VALUES ('complete', '{"by": "admin"}'::jsonb)$$,
    'admin: wait for alice''s instance, which got the event');
RESET ROLE;
SELECT is((SELECT owner::text FROM workflows.instances WHERE id = 'alice-wait'), 'wf_tap_alice',
    'the admin''s commands did not change the owner');

------------------------------------------------------------------------------
-- nobody but the extension writes its tables
------------------------------------------------------------------------------
SET ROLE wf_tap_alice;
SELECT throws_ok($$UPDATE workflows.instances SET status = 'complete' WHERE id = 'alice-who'$$,
    '42501', 'permission denied for table instances', 'alice: UPDATE her own instance');
SELECT throws_ok($$DELETE FROM workflows.instances WHERE id = 'alice-who'$$,
    '42501', 'permission denied for table instances', 'alice: DELETE her own instance');
SELECT throws_ok($$INSERT INTO workflows.instances (id, workflow, version_id, owner, params)
                   SELECT 'forged', workflow, version_id, 'wf_tap_bob', '{}' FROM workflows.versions LIMIT 1$$,
    '42501', 'permission denied for table instances', 'alice: INSERT an instance owned by bob');
SELECT throws_ok($$UPDATE workflows.steps SET output = '"forged"' WHERE instance_id = 'alice-who'$$,
    '42501', 'permission denied for table steps', 'alice: UPDATE a memoized step');
SELECT throws_ok($$INSERT INTO workflows.events (instance_id, type) VALUES ('alice-who', 'go')$$,
    '42501', 'permission denied for table events', 'alice: INSERT an event');
SELECT throws_ok($$DELETE FROM workflows.attempts$$,
    '42501', 'permission denied for view attempts', 'alice: DELETE attempts');
SELECT throws_ok($$DELETE FROM workflows.attempt_log$$,
    '42501', 'permission denied for table attempt_log', 'alice: DELETE the attempt log');
SELECT throws_ok($$UPDATE workflows.attempts SET success = true WHERE instance_id = 'alice-who'$$,
    '42501', 'permission denied for view attempts', 'alice: UPDATE attempts');
SELECT throws_ok($$INSERT INTO workflows.requests (instance_id, command, requested_by) VALUES ('alice-who', 'restart', 'wf_tap_alice')$$,
    '42501', 'permission denied for table requests', 'alice: INSERT a request');
SELECT throws_ok($$UPDATE workflows.versions SET fn = 'alice_who(jsonb)'$$,
    '42501', 'permission denied for table versions', 'alice: UPDATE versions');
SELECT throws_ok($$UPDATE workflows.workflows SET owner = 'wf_tap_bob'$$,
    '42501', 'permission denied for table workflows', 'alice: UPDATE workflows');
SELECT throws_ok($$TRUNCATE workflows.instances CASCADE$$,
    '42501', 'permission denied for table instances', 'alice: TRUNCATE instances');
SELECT throws_ok($$SELECT workflows._apply('alice-who', 'restart', NULL, true)$$,
    '42501', 'permission denied for function _apply', 'alice: call the internal _apply()');
RESET ROLE;
SET ROLE wf_tap_bob;
SELECT throws_ok($$DELETE FROM workflows.steps$$,
    '42501', 'permission denied for table steps', 'bob: DELETE steps');
SELECT throws_ok($$UPDATE workflows.instances SET owner = 'wf_tap_bob'$$,
    '42501', 'permission denied for table instances', 'bob: UPDATE instances to take them');
RESET ROLE;
SET ROLE wf_tap_admin;
SELECT throws_ok($$UPDATE workflows.instances SET status = 'complete'$$,
    '42501', 'permission denied for table instances', 'admin: UPDATE instances directly');
RESET ROLE;
SELECT results_eq(
    $$SELECT status, owner::text FROM workflows.instances WHERE id = 'alice-who'$$,
    $$VALUES ('complete', 'wf_tap_alice')$$,
    'the refused writes changed nothing');

------------------------------------------------------------------------------
-- search_path: a function bob puts in public does not capture alice's call
------------------------------------------------------------------------------
SET ROLE wf_tap_bob;
CREATE FUNCTION public.lower(text) RETURNS text LANGUAGE sql AS $$ SELECT 'pwned' $$;
RESET ROLE;
SET ROLE wf_tap_alice;
SELECT workflows.create('alice-flow', '{"do": "sql", "sql": "SELECT lower($1)", "args": ["SAFE"]}', 'alice-lower') AS id \gset
SELECT is(workflows.wait('alice-lower', '30 seconds')->'output', '"safe"'::jsonb,
    'alice''s step calls pg_catalog.lower, not bob''s public.lower');
RESET ROLE;

------------------------------------------------------------------------------
-- SQL in args, params, events, ids and names stays data
------------------------------------------------------------------------------
SET ROLE wf_tap_alice;
SELECT workflows.create('alice-flow', jsonb_build_object('do', 'sql',
           'sql', 'INSERT INTO alice_notes VALUES ($1) RETURNING note',
           'args', jsonb_build_array($$x'); DROP TABLE alice_notes; --$$)), 'inject-args') AS id \gset
SELECT is(workflows.wait('inject-args', '30 seconds')->'output', to_jsonb($$x'); DROP TABLE alice_notes; --$$::text),
    'SQL in a step''s args is stored as data');
SELECT workflows.create('alice-flow', '{"do": "note", "type": "n''); DROP TABLE alice_notes; --"}',
                        $$inject'); DROP TABLE alice_notes; --$$) AS id \gset
SELECT ok(wait_until($$SELECT waiting_for IS NOT NULL FROM workflows.instances WHERE id = 'inject''); DROP TABLE alice_notes; --'$$),
    'an instance whose id and event type contain SQL waits for its event');
SELECT lives_ok($$SELECT workflows.send_event('inject''); DROP TABLE alice_notes; --', 'n''); DROP TABLE alice_notes; --',
                                             '{"text": "''); DELETE FROM alice_notes; --"}')$$,
    'send an event whose id, type and payload contain SQL');
SELECT is(workflows.wait($$inject'); DROP TABLE alice_notes; --$$, '30 seconds')->'output',
    to_jsonb($$'); DELETE FROM alice_notes; --$$::text),
    'SQL in an event payload is stored as data');
SELECT results_eq($$SELECT note FROM alice_notes ORDER BY note$$,
    $$VALUES ($n$'); DELETE FROM alice_notes; --$n$), ($n$x'); DROP TABLE alice_notes; --$n$)$$,
    'alice_notes holds both texts, verbatim');
RESET ROLE;

------------------------------------------------------------------------------
-- clean up the cluster-wide roles
------------------------------------------------------------------------------
SELECT is((SELECT count(*) FROM workflows.instances WHERE status NOT IN ('complete', 'errored', 'terminated')), 0::bigint,
    'no instance is left running');
DROP OWNED BY wf_tap_alice, wf_tap_bob, wf_tap_admin CASCADE;
DROP ROLE wf_tap_alice;
DROP ROLE wf_tap_bob;
DROP ROLE wf_tap_admin;

SELECT * FROM finish();

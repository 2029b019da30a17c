--
-- workflows.attempts: every attempt of every step, whether it has a row of
-- its own (workflows.attempt_log: failed, retried, interrupted attempts and
-- those of replaced runs) or is kept in its step's row (a first attempt that
-- succeeded).  What a user relies on: the view lists each attempt once, with
-- its run, start, end and outcome; a restart keeps the attempts of the run
-- it replaces; an instance's attempts go with it; the view is read-only and
-- follows row-level security.
--
-- Not wrapped in a transaction: the executors only see committed rows.
--
\set QUIET 1
\set VERBOSITY terse
SET client_min_messages = warning;

SELECT plan(18);

\ir wait_until.psql

DROP ROLE IF EXISTS wf_att_owner;
DROP ROLE IF EXISTS wf_att_other;
CREATE ROLE wf_att_owner;
CREATE ROLE wf_att_other;
GRANT CREATE ON SCHEMA public TO wf_att_owner;

SET ROLE wf_att_owner;
CREATE SEQUENCE att_tries;
-- three steps: two that succeed at once, and one that fails its first try
CREATE FUNCTION att_flow(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM workflows.step('first', 'SELECT 1');
    PERFORM workflows.step('flaky',
        $q$SELECT 10 / (nextval('public.att_tries') - 1)$q$,
        config => '{"retries": {"limit": 3, "delay": "10 milliseconds"}}');
    PERFORM workflows.step('last', 'SELECT 3');
    RETURN '"done"';
END
$$;
SELECT workflows.register('att_flow', 'att_flow(jsonb)') IS NOT NULL AS registered \gset
SELECT workflows.create('att_flow', '{}', 'att-1') \gset
RESET ROLE;

SELECT ok(wait_until($$SELECT status = 'complete' FROM workflows.instances WHERE id = 'att-1'$$),
    'the instance completes');

-- one row per attempt, in the view
SELECT results_eq(
    $$SELECT step_key, attempt, success, run FROM workflows.attempts
       WHERE instance_id = 'att-1' ORDER BY step_key, attempt$$,
    $$VALUES ('first', 1, true, 1), ('flaky', 1, false, 1), ('flaky', 2, true, 1), ('last', 1, true, 1)$$,
    'the view lists every attempt once, with its outcome and run');
SELECT is((SELECT count(*) FROM workflows.attempt_log WHERE instance_id = 'att-1'), 2::bigint,
    'only the retried step''s attempts have rows of their own');
SELECT ok((SELECT bool_and(a.started_at = s.started_at AND a.ended_at = s.ended_at
                           AND a.ended_at >= a.started_at)
             FROM workflows.attempts a JOIN workflows.steps s
                  ON s.instance_id = a.instance_id AND s.key = a.step_key
            WHERE a.instance_id = 'att-1' AND a.step_key IN ('first', 'last')),
    'a first attempt kept in its step''s row has the step''s start and end');
SELECT is((SELECT jsonb_agg(jsonb_array_length(st->'attempts') ORDER BY st->>'name')
             FROM jsonb_array_elements(workflows.status('att-1')->'steps') st),
    '[1, 2, 1]'::jsonb, 'status() shows the attempts of every step');
SELECT results_eq(
    $$SELECT step, attempts, failures FROM workflows.step_metrics WHERE workflow = 'att_flow' ORDER BY step$$,
    $$VALUES ('first', 1::bigint, 0::bigint), ('flaky', 2, 1), ('last', 1, 0)$$,
    'step_metrics counts them');

-- a restart keeps the attempts of the run it replaces, under that run
SET ROLE wf_att_owner;
SELECT workflows.restart('att-1', 'flaky') IS NOT NULL AS restarted \gset
RESET ROLE;
SELECT ok(wait_until($$SELECT status = 'complete' AND run = 2 FROM workflows.instances WHERE id = 'att-1'$$),
    'the restarted instance completes its second run');
SELECT results_eq(
    $$SELECT step_key, attempt, success, run FROM workflows.attempts
       WHERE instance_id = 'att-1' ORDER BY run, step_key, attempt$$,
    $$VALUES ('first', 1, true, 1), ('flaky', 1, false, 1), ('flaky', 2, true, 1), ('last', 1, true, 1),
             ('flaky', 1, true, 2), ('last', 1, true, 2)$$,
    'the replaced run''s attempts stay under run 1; the steps run again are run 2');
SELECT is((SELECT count(*) FROM workflows.attempt_log WHERE instance_id = 'att-1' AND run = 1), 3::bigint,
    'the replaced run''s first attempt of "last" got a row of its own');
SELECT is((SELECT jsonb_agg(jsonb_array_length(st->'attempts') ORDER BY st->>'name')
             FROM jsonb_array_elements(workflows.status('att-1')->'steps') st),
    '[1, 1, 1]'::jsonb, 'status() shows the attempts of the run that made each memo');

-- row-level security: another role sees none of them
SET ROLE wf_att_other;
SELECT is((SELECT count(*) FROM workflows.attempts WHERE instance_id = 'att-1'), 0::bigint,
    'another role sees none of the instance''s attempts');
SELECT throws_ok($$DELETE FROM workflows.attempts$$, '42501', NULL,
    'another role cannot delete attempts');
RESET ROLE;

-- read-only, even for a superuser
SELECT throws_ok($$DELETE FROM workflows.attempts WHERE instance_id = 'att-1'$$, '0A000', NULL,
    'the view cannot be changed');
SELECT throws_ok($$UPDATE workflows.attempts SET success = false WHERE instance_id = 'att-1'$$, '0A000', NULL,
    'nor updated');

-- an instance's attempts go with it
SET ROLE wf_att_owner;
SELECT lives_ok($$SELECT workflows.erase('att-1')$$, 'the owner erases the instance');
RESET ROLE;
SELECT is((SELECT count(*) FROM workflows.attempts WHERE instance_id = 'att-1'), 0::bigint,
    'erase() leaves no attempt');
SELECT is((SELECT count(*) FROM workflows.attempt_log WHERE instance_id = 'att-1'), 0::bigint,
    'and no row in the attempt log');
SELECT is((SELECT count(*) FROM workflows.steps WHERE instance_id = 'att-1'), 0::bigint,
    'and no step row');

SELECT * FROM finish();

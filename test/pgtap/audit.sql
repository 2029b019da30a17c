--
-- The audit trail (one row per control action, sizes and hashes instead of
-- payloads, visible like instances, kept for workflows.audit_retention),
-- restarts that keep the attempts of earlier runs, retention per workflow,
-- and roles that own instances: DROP ROLE refuses, REASSIGN OWNED moves,
-- DROP OWNED erases; an instance whose owner was dropped elsewhere fails
-- with WF009.
--
-- Not wrapped in a transaction: instances are run by the background
-- executors, which only see committed rows.  Roles are cluster-wide: their
-- names are unique to this file, and they are dropped at the end.
--
\set QUIET 1
\set VERBOSITY terse
SET client_min_messages = warning;

SELECT plan(56);

DROP ROLE IF EXISTS wf_aud_alice;
DROP ROLE IF EXISTS wf_aud_bob;
DROP ROLE IF EXISTS wf_aud_carol;
DROP ROLE IF EXISTS wf_aud_admin;
CREATE ROLE wf_aud_alice;
CREATE ROLE wf_aud_bob;
CREATE ROLE wf_aud_carol;
CREATE ROLE wf_aud_admin IN ROLE workflows_admin;
GRANT CREATE ON SCHEMA public TO wf_aud_alice, wf_aud_bob, wf_aud_carol;

\ir wait_until.psql

-- a workflow for everybody: with params {"seq": ...}, a step that fails on
-- its first attempt in each run (a sequence of the instance's own counts its
-- attempts: nextval() survives the attempt's rollback); with {"wait": true},
-- then a wait for an event
CREATE FUNCTION aud_flow(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    e jsonb;
BEGIN
    PERFORM workflows.step('first', 'SELECT 1');
    IF event->'payload' ? 'seq' THEN
        PERFORM workflows.step('flaky', 'SELECT 1 / (nextval($1::regclass) % 2 - 1)',
                               jsonb_build_array(event->'payload'->>'seq'),
                               '{"retries": {"limit": 3, "delay": 10, "backoff": "constant"}}');
    END IF;
    IF (event->'payload'->>'wait')::boolean THEN
        e := workflows.wait_for_event('go', 'go', '1 hour');
    END IF;
    RETURN e;
END
$$;
CREATE SEQUENCE aud_seq_1;
GRANT USAGE ON SEQUENCE aud_seq_1 TO PUBLIC;

------------------------------------------------------------------------------
-- one audit row per action, with sizes and hashes, never payloads
------------------------------------------------------------------------------
SET ROLE wf_aud_alice;
CREATE FUNCTION alice_flow(event jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT aud_flow(event) $$;
SELECT workflows.register('aud-alice', 'alice_flow(jsonb)') IS NOT NULL AS registered \gset
SELECT workflows.create('aud-alice', '{"wait": true, "seq": "aud_seq_1", "secret": "PAYLOAD-91c2"}', 'aud-1') AS id \gset
SELECT count(*) AS n FROM workflows.create_batch('aud-alice',
    '[{"id": "aud-b1", "params": {"wait": false}}, {"id": "aud-b2", "params": {"wait": false}}]') \gset
RESET ROLE;
SELECT ok(wait_until($$SELECT waiting_for = 'go' FROM workflows.instances WHERE id = 'aud-1'$$),
    'aud-1 waits for its event');
SET ROLE wf_aud_alice;
SELECT workflows.pause('aud-1') AS s \gset
SELECT workflows.resume('aud-1') AS s \gset
SELECT workflows.send_event('aud-1', 'go', '{"secret": "PAYLOAD-91c2"}') AS s \gset
RESET ROLE;
SELECT is(workflows.wait('aud-1', '30 seconds')->>'status', 'complete', 'aud-1 completes');

SELECT results_eq(
    $$SELECT action, instance_id, workflow, owner::text FROM workflows.audit
       WHERE workflow = 'aud-alice' ORDER BY id$$,
    $$VALUES ('register', NULL, 'aud-alice', 'wf_aud_alice'),
             ('create', 'aud-1', 'aud-alice', 'wf_aud_alice'),
             ('create', 'aud-b1', 'aud-alice', 'wf_aud_alice'),
             ('create', 'aud-b2', 'aud-alice', 'wf_aud_alice'),
             ('pause', 'aud-1', 'aud-alice', 'wf_aud_alice'),
             ('resume', 'aud-1', 'aud-alice', 'wf_aud_alice'),
             ('send_event', 'aud-1', 'aud-alice', 'wf_aud_alice')$$,
    'register, create, each instance of a batch, pause, resume and send_event are recorded');
SELECT ok(bool_and(acting_role = 'wf_aud_alice' AND session_role = current_user),
    'rows name the acting role and the session''s role')
  FROM workflows.audit WHERE workflow = 'aud-alice';
SELECT is((SELECT count(*) FROM workflows.audit WHERE strpos(details::text, 'PAYLOAD-91c2') > 0),
    0::bigint, 'no payload content is recorded');
SELECT is((SELECT details - 'params_md5' FROM workflows.audit WHERE action = 'create' AND instance_id = 'aud-1'),
    jsonb_build_object('source', 'api', 'params_bytes',
                       octet_length('{"wait": true, "seq": "aud_seq_1", "secret": "PAYLOAD-91c2"}'::jsonb::text)),
    'create records the source and the size of the params');
SELECT is((SELECT details->>'params_md5' FROM workflows.audit WHERE action = 'create' AND instance_id = 'aud-1'),
    md5('{"wait": true, "seq": "aud_seq_1", "secret": "PAYLOAD-91c2"}'::jsonb::text),
    '... and their hash');
SELECT is((SELECT details FROM workflows.audit WHERE action = 'send_event'),
    jsonb_build_object('type', 'go', 'payload_bytes', octet_length('{"secret": "PAYLOAD-91c2"}'),
                       'payload_md5', md5('{"secret": "PAYLOAD-91c2"}')),
    'send_event records the type, the size and the hash of the payload');
SELECT is((SELECT details->>'result' FROM workflows.audit WHERE action = 'pause'), 'paused',
    'a command records its result');

------------------------------------------------------------------------------
-- restart keeps the attempts of the runs it replaces
------------------------------------------------------------------------------
SELECT results_eq(
    $$SELECT run, step_key, attempt, success FROM workflows.attempts
       WHERE instance_id = 'aud-1' ORDER BY run, step_key, attempt$$,
    $$VALUES (1, 'first', 1, true), (1, 'flaky', 1, false), (1, 'flaky', 2, true)$$,
    'run 1: flaky failed once, then succeeded');
SET ROLE wf_aud_alice;
SELECT workflows.restart('aud-1', 'flaky') AS s \gset
RESET ROLE;
SELECT is(workflows.wait('aud-1', '30 seconds')->>'status', 'complete',
    'restarted from flaky, aud-1 completes again (taking its event again)');
SELECT results_eq(
    $$SELECT run, step_key, attempt, success, error->>'sqlstate' FROM workflows.attempts
       WHERE instance_id = 'aud-1' ORDER BY run, step_key, attempt$$,
    $$VALUES (1, 'first', 1, true, NULL), (1, 'flaky', 1, false, '22012'), (1, 'flaky', 2, true, NULL),
             (2, 'flaky', 1, false, '22012'), (2, 'flaky', 2, true, NULL)$$,
    'the attempts of run 1, with their errors, are kept next to those of run 2');
SELECT is(workflows.status('aud-1')->'run', '2'::jsonb, 'status says the run');
SELECT is((SELECT jsonb_agg(jsonb_build_object(s->>'key', jsonb_array_length(s->'attempts')) ORDER BY s->>'key')
             FROM jsonb_array_elements(workflows.status('aud-1')->'steps') s WHERE s->>'type' = 'step'),
    '[{"first": 1}, {"flaky": 2}]'::jsonb,
    'status shows the attempts that made each step''s memo: flaky''s of run 2, first''s kept from run 1');
SELECT ok(EXISTS (SELECT 1 FROM workflows.describe('aud-1') l WHERE l ~ '^run +2'),
    'describe says the run');
SELECT is((SELECT details FROM workflows.audit WHERE action = 'restart'),
    '{"result": "running", "from_step": "flaky"}'::jsonb, 'restart records from_step');

------------------------------------------------------------------------------
-- who reads and writes the audit trail
------------------------------------------------------------------------------
SET ROLE wf_aud_bob;
CREATE FUNCTION bob_flow(event jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT aud_flow(event) $$;
SELECT workflows.register('aud-bob', 'bob_flow(jsonb)') IS NOT NULL AS registered \gset
SELECT workflows.create('aud-bob', '{"wait": false}', 'aud-bob-1') AS id \gset
SELECT is((SELECT array_agg(DISTINCT owner::text) FROM workflows.audit), ARRAY['wf_aud_bob'],
    'bob reads only the rows of his own instances and workflows');
SELECT throws_ok($$INSERT INTO workflows.audit (acting_role, action) VALUES ('wf_aud_alice', 'erase')$$,
    '42501', NULL, 'nobody inserts audit rows directly');
SELECT throws_ok($$UPDATE workflows.audit SET acting_role = 'nobody'$$,
    '42501', NULL, 'nobody updates audit rows');
SELECT throws_ok($$SELECT workflows._audit_schedule('schedule', 'nope', 'aud-bob', NULL)$$,
    '42P01', NULL, 'a schedule row needs pg_cron (and a schedule that is there)');
RESET ROLE;
SET ROLE wf_aud_admin;
SELECT ok((SELECT count(DISTINCT owner) FROM workflows.audit) >= 2, 'an admin reads every row');
RESET ROLE;

------------------------------------------------------------------------------
-- retention per workflow
------------------------------------------------------------------------------
SET ROLE wf_aud_bob;
SELECT throws_ok($$SELECT workflows.set_retention('aud-alice', '1 day')$$,
    '42501', 'permission denied for workflow "aud-alice"', 'bob cannot set the retention of alice''s workflow');
SELECT throws_ok($$SELECT workflows.set_retention('no-such-workflow', '1 day')$$,
    '42704', 'workflow "no-such-workflow" does not exist', 'set_retention: unknown workflow');
SELECT throws_ok($$SELECT workflows.set_retention('aud-bob', '-1 day')$$,
    '22023', 'retention must not be negative', 'set_retention: negative');
SELECT throws_ok($$SELECT workflows.set_retention(NULL, '1 day')$$,
    '22004', 'workflow name must not be null', 'set_retention: null workflow');
SELECT lives_ok($$SELECT workflows.set_retention('aud-bob', '1 millisecond')$$,
    'bob sets a retention of 1 ms for his workflow');
RESET ROLE;
SELECT is(workflows.wait('aud-bob-1', '30 seconds')->>'status', 'complete', 'aud-bob-1 completes');
SELECT is(workflows.wait('aud-b1', '30 seconds')->>'status', 'complete', 'aud-b1 completes');
SELECT pg_sleep(0.01);
SELECT is(workflows.purge('1 year'), 1::bigint,
    'purge(''1 year'') deletes bob''s finished instance, by its workflow''s retention');
SELECT results_eq($$SELECT id FROM workflows.instances WHERE id IN ('aud-bob-1', 'aud-b1', 'aud-1') ORDER BY id$$,
    $$VALUES ('aud-1'), ('aud-b1')$$, '... and keeps alice''s, by the global one');
SET ROLE wf_aud_alice;
SELECT lives_ok($$SELECT workflows.set_retention('aud-alice', '0')$$, 'alice keeps her instances forever');
RESET ROLE;
SELECT is(workflows.purge('0'), 0::bigint, 'purge(''0'') keeps them');
SET ROLE wf_aud_alice;
SELECT lives_ok($$SELECT workflows.set_retention('aud-alice', NULL)$$, 'alice goes back to the global retention');
RESET ROLE;
SELECT results_eq($$SELECT details->>'retention' FROM workflows.audit WHERE action = 'set_retention' ORDER BY id$$,
    $$VALUES ('00:00:00.001'), ('00:00:00'), (NULL)$$, 'set_retention is recorded');

-- audit rows older than workflows.audit_retention (30 days) go with purge()
UPDATE workflows.audit SET at = now() - interval '31 days' WHERE action = 'register';
SELECT is(workflows.purge('1 year'), 0::bigint, 'purge() deletes no instance here');
SELECT is((SELECT count(*) FROM workflows.audit WHERE action = 'register'), 0::bigint,
    '... but the audit rows older than workflows.audit_retention');

------------------------------------------------------------------------------
-- roles that own instances
------------------------------------------------------------------------------
SET ROLE wf_aud_carol;
CREATE FUNCTION carol_flow(event jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT aud_flow(event) $$;
SELECT workflows.register('aud-carol', 'carol_flow(jsonb)') IS NOT NULL AS registered \gset
SELECT workflows.create('aud-carol', '{"wait": true}', 'aud-carol-1') AS id \gset
RESET ROLE;
SELECT throws_ok($$DROP ROLE wf_aud_carol$$, '2BP01',
    'role "wf_aud_carol" cannot be dropped because some objects depend on it',
    'DROP ROLE refuses while the role owns instances here');
REASSIGN OWNED BY wf_aud_carol TO wf_aud_alice;
SELECT results_eq($$SELECT owner::text FROM workflows.instances WHERE id = 'aud-carol-1'
                    UNION ALL SELECT owner::text FROM workflows.workflows WHERE name = 'aud-carol'$$,
    $$VALUES ('wf_aud_alice'), ('wf_aud_alice')$$,
    'REASSIGN OWNED moves its instances and workflows');
SELECT is((SELECT details FROM workflows.audit WHERE action = 'reassign'),
    '{"from": "wf_aud_carol", "to": "wf_aud_alice", "instances": 1, "workflows": 1}'::jsonb,
    '... and is recorded');
REVOKE CREATE ON SCHEMA public FROM wf_aud_carol;
SELECT lives_ok($$DROP ROLE wf_aud_carol$$, 'then DROP ROLE succeeds');
SELECT ok(wait_until($$SELECT waiting_for = 'go' FROM workflows.instances WHERE id = 'aud-carol-1'$$),
    'the reassigned instance runs as its new owner');

SELECT count(*) AS n FROM workflows.instances WHERE owner = 'wf_aud_bob'::regrole \gset
DROP OWNED BY wf_aud_bob;
SELECT is((SELECT count(*) FROM workflows.instances WHERE owner = 'wf_aud_bob'::regrole)
          + (SELECT count(*) FROM workflows.workflows WHERE owner = 'wf_aud_bob'::regrole), 0::bigint,
    'DROP OWNED erases the role''s instances and deletes its workflows');
SELECT lives_ok($$DROP ROLE wf_aud_bob$$, 'then DROP ROLE succeeds');

-- a role dropped from another database: its instances here fail with WF009
CREATE ROLE wf_aud_gone;
SELECT 'wf_aud_gone'::regrole::oid AS gone \gset
DROP ROLE wf_aud_gone;
BEGIN;
SET LOCAL ROLE wf_aud_alice;
SELECT workflows.create('aud-alice', '{"wait": false}', 'aud-orphan') AS id \gset
RESET ROLE;
UPDATE workflows.instances SET owner = :gone::oid::regrole WHERE id = 'aud-orphan';
COMMIT;
SELECT is(workflows.wait('aud-orphan', '30 seconds')->'error'->>'sqlstate', 'WF009',
    'an instance whose owner no longer exists fails with WF009');

------------------------------------------------------------------------------
-- more actions: terminate, set_version, set_flow_control, purge,
-- start_on_insert and stop_on_insert, commands cascaded to children, and
-- a singleton "cancel" (which terminates the older instance for the caller)
------------------------------------------------------------------------------
SET ROLE wf_aud_alice;
CREATE FUNCTION aud_parent(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.call('kid', 'aud-alice', '{"wait": true}');
END $$;
SELECT workflows.register('aud-parent', 'aud_parent(jsonb)') IS NOT NULL AS registered \gset
SELECT workflows.create('aud-parent', '{}', 'aud-p') AS id \gset
RESET ROLE;
SELECT ok(wait_until($$SELECT waiting_for = 'go' FROM workflows.instances WHERE id = 'aud-p/kid'$$),
    'a parent''s child waits for its event');
SET ROLE wf_aud_alice;
SELECT workflows.pause('aud-p') AS s \gset
SELECT workflows.terminate('aud-p') AS s \gset
SELECT workflows.set_version('aud-p') IS NOT NULL AS s \gset
RESET ROLE;
SELECT results_eq(
    $$SELECT action, instance_id, acting_role::text COLLATE "default", details FROM workflows.audit
       WHERE instance_id LIKE 'aud-p%' AND action <> 'create' ORDER BY id$$,
    $$VALUES ('pause', 'aud-p/kid', 'wf_aud_alice', '{"result": "paused", "cascadedFrom": "aud-p"}'::jsonb),
             ('pause', 'aud-p', 'wf_aud_alice', '{"result": "paused"}'::jsonb),
             ('terminate', 'aud-p/kid', 'wf_aud_alice', '{"result": "terminated", "cascadedFrom": "aud-p"}'::jsonb),
             ('terminate', 'aud-p', 'wf_aud_alice', '{"result": "terminated"}'::jsonb),
             ('set_version', 'aud-p', 'wf_aud_alice',
              jsonb_build_object('version', (SELECT version_id FROM workflows.instances WHERE id = 'aud-p')))$$,
    'terminate and set_version are recorded; so is each child a command cascaded to, with the acting role');

SET ROLE wf_aud_alice;
SELECT workflows.set_flow_control('aud-alice', '{"singleton": {"key": "$.k", "mode": "cancel"}}') IS NULL AS s \gset
SELECT workflows.create('aud-alice', '{"wait": true, "k": "one"}', 'aud-s1') AS id \gset
RESET ROLE;
SET ROLE wf_aud_admin;
SELECT workflows.create('aud-alice', '{"wait": true, "k": "one"}', 'aud-s2') AS id \gset
SELECT workflows.terminate('aud-s2') AS s \gset
RESET ROLE;
SET ROLE wf_aud_alice;
SELECT workflows.set_flow_control('aud-alice', NULL) IS NULL AS s \gset
RESET ROLE;
SELECT is((SELECT status FROM workflows.instances WHERE id = 'aud-s1'), 'terminated',
    'singleton cancel: the newer create terminated the older instance');
SELECT is((SELECT acting_role::text FROM workflows.audit WHERE action = 'terminate' AND instance_id = 'aud-s1'),
    'wf_aud_admin', '... recorded as done by the role that called create(), not by the extension''s owner');
SELECT results_eq(
    $$SELECT acting_role::text COLLATE "default", workflow, owner::text, details FROM workflows.audit
       WHERE action = 'set_flow_control' ORDER BY id$$,
    $$VALUES ('wf_aud_alice', 'aud-alice', 'wf_aud_alice',
              '{"config": {"singleton": {"key": "$.k", "mode": "cancel"}}}'::jsonb),
             ('wf_aud_alice', 'aud-alice', 'wf_aud_alice', '{"config": null}'::jsonb)$$,
    'set_flow_control is recorded with the config (limits and paths, no params)');

SET ROLE wf_aud_alice;
CREATE TABLE aud_rows (k text);
SELECT workflows.start_on_insert('aud_rows', 'aud-alice') AS trg \gset
SELECT workflows.stop_on_insert('aud_rows', 'aud-alice') AS s \gset
SELECT throws_ok($$SELECT workflows._audit_sql('start_on_insert', 'aud-alice', 'aud_rows', NULL)$$,
    '55000', 'cannot record start_on_insert: it did not happen', 'a start_on_insert row cannot be forged');
SELECT throws_ok($$SELECT workflows._audit_sql('purge', NULL, NULL, NULL)$$,
    '42501', 'permission denied to record a purge', 'nor a purge row');
RESET ROLE;
SELECT results_eq(
    $$SELECT action, acting_role::text COLLATE "default", workflow, owner::text, details FROM workflows.audit
       WHERE action IN ('start_on_insert', 'stop_on_insert') ORDER BY id$$,
    $$VALUES ('start_on_insert', 'wf_aud_alice', 'aud-alice', 'wf_aud_alice',
              jsonb_build_object('table', 'public.aud_rows', 'trigger', 'workflows_start_aud-alice')),
             ('stop_on_insert', 'wf_aud_alice', 'aud-alice', 'wf_aud_alice',
              jsonb_build_object('table', 'public.aud_rows', 'trigger', 'workflows_start_aud-alice'))$$,
    'start_on_insert and stop_on_insert are recorded');

SET ROLE wf_aud_admin;
SELECT workflows.purge('1 year') AS n \gset
SELECT is((SELECT details FROM workflows.audit WHERE action = 'purge' ORDER BY id DESC LIMIT 1),
    '{"older_than": "1 year", "instances": 0}'::jsonb, 'purge is recorded, with what it deleted');
SELECT is((SELECT acting_role::text FROM workflows.audit WHERE action = 'purge' ORDER BY id DESC LIMIT 1),
    'wf_aud_admin', '... and who purged');
RESET ROLE;
SET ROLE wf_aud_alice;
SELECT is((SELECT count(*) FROM workflows.audit WHERE action = 'purge'), 0::bigint,
    'purge rows are for admins only (they concern no one role)');
RESET ROLE;

-- clean up
SELECT workflows.erase('aud-orphan') AS s \gset
SET ROLE wf_aud_alice;
SELECT workflows.terminate('aud-carol-1') AS s \gset
RESET ROLE;
DROP OWNED BY wf_aud_alice, wf_aud_admin CASCADE;
DROP ROLE wf_aud_alice;
DROP ROLE wf_aud_admin;
SELECT is((SELECT count(*) FROM workflows.instances), 0::bigint,
    'DROP OWNED erased every instance of the roles');

SELECT * FROM finish();

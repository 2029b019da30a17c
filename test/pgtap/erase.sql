--
-- Erasure: workflows.erase() removes a finished instance from every table of
-- the extension (audit trail included, but for one row saying that it was
-- erased), only for its owner or an admin, and never a live instance.
--
-- Not wrapped in a transaction: instances are run by the background
-- executors, which only see committed rows.  Roles are cluster-wide: their
-- names are unique to this file, and they are dropped at the end.
--
\set QUIET 1
\set VERBOSITY terse
SET client_min_messages = warning;

SELECT plan(38);

DROP ROLE IF EXISTS wf_erase_alice;
DROP ROLE IF EXISTS wf_erase_bob;
DROP ROLE IF EXISTS wf_erase_admin;
CREATE ROLE wf_erase_alice;
CREATE ROLE wf_erase_bob;
CREATE ROLE wf_erase_admin IN ROLE workflows_admin;
GRANT CREATE ON SCHEMA public TO wf_erase_alice, wf_erase_bob;

\ir wait_until.psql

-- how many rows of the extension's tables mention a string anywhere
CREATE FUNCTION marker_hits(marker text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    t regclass;
    n bigint;
    total bigint := 0;
BEGIN
    FOR t IN SELECT c.oid::regclass
               FROM pg_depend d
               JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'workflows'
               JOIN pg_class c ON c.oid = d.objid
              WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e'
                AND c.relkind IN ('r', 'p')
    LOOP
        EXECUTE format('SELECT count(*) FROM %s x WHERE strpos(x::text, $1) > 0', t)
            INTO n USING marker;
        total := total + n;
    END LOOP;
    RETURN total;
END
$$;

SET ROLE wf_erase_alice;
CREATE SEQUENCE erase_seq;
CREATE FUNCTION erase_boom(m text) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    -- (only the marked instance draws from the sequence)
    IF m LIKE 'MARKER%' THEN
        IF nextval('erase_seq') = 1 THEN
            RAISE EXCEPTION 'first attempt fails: %', m;
        END IF;
    END IF;
    RETURN 1;
END
$$;
-- the marker goes into the params, a step's output, an event's payload,
-- a failed attempt's error, and the instance's output
CREATE FUNCTION erase_flow(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    m text := event->'payload'->>'m';
    x jsonb;
    e jsonb;
BEGIN
    x := workflows.step('echo', 'SELECT $1::text', jsonb_build_array(m));
    -- the first attempt fails with the marker in its error
    PERFORM workflows.step('flaky', 'SELECT erase_boom($1)',
                           jsonb_build_array(m), '{"retries": {"limit": 2, "delay": 10}}');
    e := workflows.wait_for_event('go', 'go', '1 hour');
    RETURN jsonb_build_object('echo', x, 'event', e->'payload');
END
$$;
SELECT workflows.register('erase-flow', 'erase_flow(jsonb)') IS NOT NULL AS registered \gset
SELECT workflows.create('erase-flow', '{"m": "MARKER-7f3a9c"}', 'erase-1') AS id \gset
SELECT workflows.create('erase-flow', '{"m": "keep-me"}', 'erase-keep') AS id \gset
RESET ROLE;

SELECT ok(wait_until($$SELECT count(*) = 2 FROM workflows.instances
                        WHERE id IN ('erase-1', 'erase-keep') AND waiting_for = 'go'$$),
    'erase-1 and erase-keep wait for their event');

SET ROLE wf_erase_alice;
SELECT throws_ok($$SELECT workflows.erase('erase-1')$$,
    '55000', 'cannot erase workflow instance "erase-1": it is waiting',
    'a live instance cannot be erased');
SELECT is((SELECT count(*) FROM workflows.instances WHERE id = 'erase-1'), 1::bigint,
    '... and it is still there');
SELECT lives_ok($$SELECT workflows.send_event('erase-1', 'go', '{"secret": "MARKER-7f3a9c"}')$$,
    'send the event');
RESET ROLE;
SELECT is(workflows.wait('erase-1', '30 seconds')->>'status', 'complete', 'erase-1 completes');
SELECT is(workflows.wait('erase-keep', '1 second')->>'status', 'waiting', 'erase-keep waits');
SELECT ok(marker_hits('MARKER-7f3a9c') >= 5,
    'before: the marker is in params, step output, an attempt''s error, event payload and output');

-- others cannot erase it: the id exists, but is not theirs
SET ROLE wf_erase_bob;
SELECT throws_ok($$SELECT workflows.erase('erase-1')$$,
    '42501', 'permission denied for workflow instance "erase-1"',
    'bob cannot erase alice''s instance');
SELECT throws_ok($$SELECT workflows.erase('no-such-instance')$$,
    '42704', 'workflow instance "no-such-instance" does not exist',
    'an unknown id does not exist');
SELECT throws_ok($$DELETE FROM workflows.audit$$, '42501', NULL,
    'nobody deletes audit rows directly');
RESET ROLE;

SET ROLE wf_erase_alice;
SELECT throws_ok($$SELECT workflows.erase(NULL)$$, '22004', 'instance id must not be null',
    'erase(NULL)');
SELECT lives_ok($$SELECT workflows.erase('erase-1')$$, 'alice erases her finished instance');
SELECT throws_ok($$SELECT workflows.status('erase-1')$$,
    '42704', 'workflow instance "erase-1" does not exist', 'it no longer exists');
RESET ROLE;

SELECT is(marker_hits('MARKER-7f3a9c'), 0::bigint,
    'after: no row of any table of the extension mentions the marker');
SELECT is((SELECT jsonb_agg(jsonb_build_object('action', action, 'session_role', session_role,
                                              'acting_role', acting_role, 'owner', owner,
                                              'details', details))
             FROM workflows.audit WHERE instance_id = 'erase-1'),
          jsonb_build_array(jsonb_build_object('action', 'erase', 'session_role', current_user,
                                               'acting_role', 'wf_erase_alice', 'owner', 'wf_erase_alice',
                                               'details', '{"status": "complete"}'::jsonb)),
    'the audit trail keeps only that it was erased, when and by whom');
SELECT is((SELECT count(*) FROM workflows.attempts WHERE instance_id = 'erase-1')
          + (SELECT count(*) FROM workflows.steps WHERE instance_id = 'erase-1')
          + (SELECT count(*) FROM workflows.events WHERE instance_id = 'erase-1'), 0::bigint,
    'no step, attempt or event of it is left');
SELECT ok(marker_hits('keep-me') > 0, 'the other instance is untouched');

-- an admin may erase any finished instance; a terminated one is finished
SET ROLE wf_erase_alice;
SELECT workflows.terminate('erase-keep') AS t \gset
RESET ROLE;
SET ROLE wf_erase_admin;
SELECT lives_ok($$SELECT workflows.erase('erase-keep')$$, 'an admin erases a terminated instance');
RESET ROLE;
SELECT is(marker_hits('keep-me'), 0::bigint, '... and it is gone everywhere too');

------------------------------------------------------------------------------
-- flow control keyed by a params value: the workflow's throttle and
-- concurrency, debounce (a create collapsed into the instance), and a
-- step's concurrency and throttle keyed by it too
------------------------------------------------------------------------------
SET ROLE wf_erase_alice;
CREATE FUNCTION erase_fc(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    k text := event->'payload'->>'cust';
BEGIN
    RETURN workflows.step('s', 'SELECT 1', NULL,
        jsonb_build_object('concurrency', jsonb_build_object('limit', 2, 'key', 'step-' || k),
                           'throttle', jsonb_build_object('limit', 100, 'period', 60000,
                                                          'key', 'step-' || k)));
END
$$;
SELECT workflows.register('erase-fc', 'erase_fc(jsonb)') IS NOT NULL AS registered \gset
SELECT workflows.set_flow_control('erase-fc',
    '{"concurrency": {"limit": 1, "key": "$.cust"},
      "throttle": {"limit": 10, "period": "1 hour", "key": "$.cust"},
      "debounce": {"period": "200 milliseconds", "key": "$.cust"}}') IS NULL AS set \gset
SELECT workflows.create('erase-fc', '{"cust": "FLOWKEY-51d7"}', 'erase-fc-1') AS id \gset
SELECT workflows.create('erase-fc', '{"cust": "FLOWKEY-51d7", "n": 2}', 'erase-fc-1b') AS collapsed \gset
-- another key, that stays
SELECT workflows.create('erase-fc', '{"cust": "other-cust"}', 'erase-fc-2') AS id \gset
RESET ROLE;
SELECT is(:'collapsed'::text, 'erase-fc-1', 'a second create with the key collapsed into the first (debounce)');
SELECT is(workflows.wait('erase-fc-1', '30 seconds')->>'status', 'complete', 'erase-fc-1 completes');
SELECT is(workflows.wait('erase-fc-2', '30 seconds')->>'status', 'complete', 'erase-fc-2 completes');
SELECT ok((SELECT count(*) FROM workflows.flow_throttles WHERE key = 'FLOWKEY-51d7') = 1
          AND (SELECT count(*) FROM workflows.flow_step_slots WHERE key = 'step-FLOWKEY-51d7') = 2
          AND (SELECT count(*) FROM workflows.flow_step_throttles WHERE key = 'step-FLOWKEY-51d7') = 1
          AND (SELECT count(*) FROM workflows.audit WHERE details->>'collapsedInto' = 'erase-fc-1') = 1,
    'before: the key is in the throttles (workflow and step), the step slots, and a collapsed create''s audit row');
SET ROLE wf_erase_alice;
SELECT lives_ok($$SELECT workflows.erase('erase-fc-1')$$, 'alice erases the instance with flow control');
RESET ROLE;
SELECT is(marker_hits('FLOWKEY-51d7'), 0::bigint,
    'after: no row of any table of the extension mentions its key');
SELECT is((SELECT count(*) FROM workflows.audit WHERE instance_id IN ('erase-fc-1', 'erase-fc-1b')
            AND action <> 'erase'), 0::bigint,
    'the audit rows of its create and of the create collapsed into it are gone');
SELECT ok(marker_hits('other-cust') > 0 AND
          (SELECT count(*) FROM workflows.flow_throttles WHERE key = 'other-cust') = 1,
    'the other key''s rows stay');

------------------------------------------------------------------------------
-- composition: erasing an instance erases its descendants; a live one is
-- refused; a child may be erased alone, its parent keeping what it returned
------------------------------------------------------------------------------
SET ROLE wf_erase_alice;
CREATE FUNCTION erase_leaf(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF (event->'payload'->>'wait')::boolean THEN
        PERFORM workflows.wait_for_event('go', 'go', '1 hour');
    END IF;
    RETURN workflows.step('echo', 'SELECT $1::jsonb', jsonb_build_array(event->'payload'));
END
$$;
SELECT workflows.register('erase-leaf', 'erase_leaf(jsonb)') IS NOT NULL AS registered \gset
CREATE FUNCTION erase_tree(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    m text := event->'payload'->>'m';
BEGIN
    IF (event->'payload'->>'detach')::boolean THEN
        -- a child it does not wait for
        RETURN to_jsonb(workflows.spawn('bg', 'erase-leaf', jsonb_build_object('m', m, 'wait', true)));
    END IF;
    RETURN jsonb_build_object(
        'call', workflows.call('c', 'erase-leaf', jsonb_build_object('m', m)),
        'map', workflows.map('m', 'erase-leaf', jsonb_build_array(jsonb_build_object('m', m),
                                                                   jsonb_build_object('m', m))));
END
$$;
SELECT workflows.register('erase-tree', 'erase_tree(jsonb)') IS NOT NULL AS registered \gset
SELECT workflows.create('erase-tree', '{"m": "TREEMARK-0c4e"}', 'erase-tree-1') AS id \gset
SELECT workflows.create('erase-tree', '{"m": "TREEMARK-77aa", "detach": true}', 'erase-tree-2') AS id \gset
RESET ROLE;
SELECT is(workflows.wait('erase-tree-1', '30 seconds')->>'status', 'complete', 'the parent with children completes');
SELECT is(workflows.wait('erase-tree-2', '30 seconds')->>'status', 'complete', 'the parent with a detached child completes');
SELECT ok(wait_until($$SELECT waiting_for = 'go' FROM workflows.instances WHERE id = 'erase-tree-2/bg'$$),
    'its child waits');

SET ROLE wf_erase_alice;
SELECT throws_ok($$SELECT workflows.erase('erase-tree-2')$$, '55000',
    'cannot erase workflow instance "erase-tree-2": its descendant "erase-tree-2/bg" is waiting',
    'an instance with a live descendant is not erased, and the error names it');
SELECT workflows.terminate('erase-tree-2/bg') AS t \gset
SELECT lives_ok($$SELECT workflows.erase('erase-tree-2')$$, '... once the descendant is terminated, it is');
RESET ROLE;
SELECT is(marker_hits('TREEMARK-77aa'), 0::bigint, '... with its descendant');
SET ROLE wf_erase_alice;

-- a child alone: its parent keeps its memos (what the child returned)
SELECT lives_ok($$SELECT workflows.erase('erase-tree-1/m/0')$$, 'a child may be erased alone');
RESET ROLE;
SELECT is((SELECT output->0 FROM workflows.steps WHERE instance_id = 'erase-tree-1' AND key = 'm/await'),
          '{"id": "erase-tree-1/m/0", "error": null, "output": {"m": "TREEMARK-0c4e"}, "status": "complete"}'::jsonb,
    '... its parent''s map memo keeps what it returned');
SELECT is((SELECT count(*) FROM workflows.events WHERE payload->>'id' = 'erase-tree-1/m/0'), 0::bigint,
    '... and no child event of the parent names it any more');
SET ROLE wf_erase_alice;
SELECT lives_ok($$SELECT workflows.erase('erase-tree-1')$$, 'the parent is erased, with its other children');
RESET ROLE;
SELECT is(marker_hits('TREEMARK-0c4e'), 0::bigint,
    'after: no row of any table of the extension mentions the tree''s payload');

DROP OWNED BY wf_erase_alice, wf_erase_bob, wf_erase_admin CASCADE;
DROP ROLE wf_erase_alice;
DROP ROLE wf_erase_bob;
DROP ROLE wf_erase_admin;

SELECT * FROM finish();

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

SELECT plan(19);

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

DROP OWNED BY wf_erase_alice, wf_erase_bob, wf_erase_admin CASCADE;
DROP ROLE wf_erase_alice;
DROP ROLE wf_erase_bob;
DROP ROLE wf_erase_admin;

SELECT * FROM finish();

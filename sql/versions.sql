--
-- Versions: a new function registered under a workflow's name is the
-- version new instances run; running instances keep theirs.
--
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS workflows;
RESET client_min_messages;

CREATE FUNCTION order_v1(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM workflows.wait_for_event('go', 'go', '1 minute');
    RETURN workflows.step('which', 'SELECT ''"v1"''::jsonb');
END
$$;
CREATE FUNCTION order_v2(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM workflows.wait_for_event('go', 'go', '1 minute');
    RETURN workflows.step('which', 'SELECT ''"v2"''::jsonb');
END
$$;
SELECT workflows.register('order', 'order_v1(jsonb)') AS v1 \gset
SELECT workflows.create('order', '{}', 'order-old');
SELECT workflows.register('order', 'order_v2(jsonb)') AS v2 \gset
SELECT :'v1' <> :'v2' AS new_version;
SELECT workflows.create('order', '{}', 'order-new');
SELECT id, version_id = :'v1' AS runs_v1, version_id = :'v2' AS runs_v2
  FROM workflows.instances WHERE id LIKE 'order-%' ORDER BY id;
SELECT workflows.send_event('order-old', 'go');
SELECT workflows.send_event('order-new', 'go');
SELECT workflows.wait('order-old', '30 seconds')->'output' AS old_output;
SELECT workflows.wait('order-new', '30 seconds')->'output' AS new_output;

-- registering v1 again makes it the newest version again, under a new id
SELECT workflows.register('order', 'order_v1(jsonb)') NOT IN (:'v1', :'v2') AS third_version;
-- a changed definition under the same signature is a new version too
CREATE OR REPLACE FUNCTION order_v1(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN '"v1 changed"';
END
$$;
SELECT count(DISTINCT workflows.register('order', 'order_v1(jsonb)')) AS one_id_for_two_calls
  FROM generate_series(1, 2);
SELECT count(*) AS versions FROM workflows.versions WHERE workflow = 'order';

-- pinning across CREATE OR REPLACE: an instance that started on the old
-- definition keeps running it; new instances run the new one
CREATE FUNCTION pinned(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM workflows.wait_for_event('go', 'go', '1 minute');
    RETURN workflows.step('which', 'SELECT ''"old code"''::jsonb');
END
$$;
SELECT workflows.register('pinned', 'pinned(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('pinned', '{}', 'pin-old');
SELECT wait_until($$SELECT waiting_for = 'go' FROM workflows.instances WHERE id = 'pin-old'$$);
CREATE OR REPLACE FUNCTION pinned(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM workflows.wait_for_event('go', 'go', '1 minute');
    RETURN workflows.step('which', 'SELECT ''"new code"''::jsonb');
END
$$;
SELECT workflows.register('pinned', 'pinned(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('pinned', '{}', 'pin-new');
SELECT workflows.send_event('pin-old', 'go');
SELECT workflows.send_event('pin-new', 'go');
SELECT workflows.wait('pin-old', '30 seconds')->'output' AS old_output;
SELECT workflows.wait('pin-new', '30 seconds')->'output' AS new_output;
SELECT p.proname LIKE 'v\_%' AS named_by_version, r.rolname AS owner,
       d.deptype AS extension_member
  FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
  LEFT JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                       AND d.refclassid = 'pg_extension'::regclass
 WHERE p.pronamespace = 'workflows_code'::regnamespace;

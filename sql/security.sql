--
-- Ownership and isolation: instances run as the role that created them;
-- roles see and control only their own instances; nobody writes the
-- extension's tables directly.
--
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS workflows;
DROP ROLE IF EXISTS wf_alice;
DROP ROLE IF EXISTS wf_bob;
DROP ROLE IF EXISTS wf_carol;
DROP ROLE IF EXISTS wf_admin;
RESET client_min_messages;
CREATE ROLE wf_alice;
CREATE ROLE wf_bob;
CREATE ROLE wf_carol;
CREATE ROLE wf_admin IN ROLE workflows_admin;
GRANT CREATE ON SCHEMA public TO wf_alice, wf_bob;

-- alice's workflow: who runs it, with which search_path, and can it escalate?
SET ROLE wf_alice;
CREATE TABLE alice_log (who text);
CREATE FUNCTION alice_flow(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    escalate jsonb;
BEGIN
    BEGIN
        escalate := workflows.step('escalate', 'SET ROLE postgres', config => '{"retries": {"limit": 0}}');
    EXCEPTION WHEN OTHERS THEN
        escalate := to_jsonb(SQLERRM);
    END;
    RETURN jsonb_build_object(
        'workflow_user', current_user,
        'step_user', workflows.step('who', 'INSERT INTO alice_log VALUES (current_user) RETURNING who'),
        'search_path', workflows.step('path', 'SELECT current_setting(''search_path'')'),
        'escalate', escalate,
        'event', event->'payload');
END
$$;
REVOKE EXECUTE ON FUNCTION alice_flow(jsonb) FROM PUBLIC;
SELECT workflows.register('alice-flow', 'alice_flow(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('alice-flow', '{"secret": 1}', 'alice-1');
SELECT jsonb_pretty(workflows.wait('alice-1', '30 seconds')->'output');
SELECT owner, status FROM workflows.instances;

-- a step sees the owner's rights, not the executor's
CREATE FUNCTION alice_reads(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('read authid', 'SELECT count(*) FROM pg_authid', config => '{"retries": {"limit": 0}}');
END
$$;
SELECT workflows.register('alice-reads', 'alice_reads(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('alice-reads', '{}', 'alice-2');
SELECT d->>'status' AS status, d->'error'->>'message' AS message
  FROM workflows.wait('alice-2', '30 seconds') d;

-- bob cannot see or touch alice's instances, nor use her workflow
SET ROLE wf_bob;
SELECT count(*) FROM workflows.instances;
SELECT count(*) FROM workflows.steps;
SELECT count(*) FROM workflows.attempts;
SELECT workflows.status('alice-1');
SELECT workflows.wait('alice-1', '1 second');
SELECT workflows.send_event('alice-1', 'x');
SELECT workflows.create('alice-flow', '{}', 'bob-1');
-- nor re-register her workflow name with his own function
CREATE FUNCTION bob_flow(event jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT '"bob"'::jsonb $$;
SELECT workflows.register('alice-flow', 'bob_flow(jsonb)');
-- nor write the tables to forge an instance
INSERT INTO workflows.instances (id, workflow, version_id, owner, params)
    SELECT 'forged', 'alice-flow', version_id, 'wf_alice', '{}' FROM workflows.versions;
UPDATE workflows.instances SET status = 'complete';
DELETE FROM workflows.steps;
INSERT INTO workflows.events (instance_id, type) VALUES ('alice-1', 'x');
-- his own instance is his
SELECT workflows.register('bob-flow', 'bob_flow(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('bob-flow', '{}', 'bob-2');
SELECT workflows.wait('bob-2', '30 seconds')->'output' AS output;
SELECT id, owner FROM workflows.instances ORDER BY id;

-- a role without EXECUTE on the workflow function cannot create instances
SET ROLE wf_carol;
SELECT workflows.create('alice-flow', '{}', 'carol-1');

-- an admin sees everything
SET ROLE wf_admin;
SELECT id, owner FROM workflows.instances WHERE id IN ('alice-1', 'alice-2', 'bob-2', 'files-1') ORDER BY id;
SELECT workflows.status('alice-1')->>'status' AS status;
RESET ROLE;

-- a hostile function in public that shadows a built-in is never used
SET ROLE wf_bob;
CREATE FUNCTION public.upper(text) RETURNS text LANGUAGE sql AS $$ SELECT 'pwned' $$;
RESET ROLE;
SET ROLE wf_alice;
CREATE FUNCTION alice_upper(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('upper', 'SELECT upper($1)', '["safe"]');
END
$$;
SELECT workflows.register('alice-upper', 'alice_upper(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('alice-upper', '{}', 'alice-3');
SELECT workflows.wait('alice-3', '30 seconds')->'output' AS output;
RESET ROLE;

-- every function of the extension pins its search_path, but the step calls
-- (C functions that look nothing up by name; see sql/install/20_api.sql)
SELECT p.proname, l.lanname = 'c' AS is_c
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_language l ON l.oid = p.prolang
 WHERE n.nspname = 'workflows'
   AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%')
 ORDER BY 1;

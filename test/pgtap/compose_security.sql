--
-- Composition and the security boundary: children run as their parent's
-- owner, rollback handlers run as the owner, and a child id taken first by
-- another role makes the parent's spawn fail with a clear error (child ids
-- are predictable: "parent/step").
--
-- Not wrapped in a transaction: instances are run by the background
-- executors, which only see committed rows.  Roles are cluster-wide: their
-- names are unique to this file, and they are dropped at the end.
--
\set QUIET 1
\set VERBOSITY terse
SET client_min_messages = warning;

SELECT plan(9);

DROP ROLE IF EXISTS wf_cs_alice;
DROP ROLE IF EXISTS wf_cs_bob;
CREATE ROLE wf_cs_alice;
CREATE ROLE wf_cs_bob;
GRANT CREATE ON SCHEMA public TO wf_cs_alice, wf_cs_bob;

\ir wait_until.psql

CREATE TABLE cs_log (what text, who text);
GRANT INSERT ON cs_log TO PUBLIC;

SET ROLE wf_cs_alice;
-- the child: one step that says who runs it
CREATE FUNCTION cs_child(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('who', 'SELECT to_jsonb(current_user::text)');
END $$;
SELECT workflows.register('cs-child', 'cs_child(jsonb)') IS NOT NULL AS r \gset
-- the parent: a call, a step with a rollback handler, then (with "fail") an error
CREATE FUNCTION cs_undo(x jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.cs_log VALUES ('rollback', current_user);
    RETURN x;
END $$;
CREATE FUNCTION cs_parent(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    who jsonb;
BEGIN
    who := workflows.call('c', 'cs-child', '{}');
    PERFORM workflows.step('charge', 'SELECT 1', NULL, '{"rollback": "public.cs_undo(jsonb)"}');
    IF (event->'payload'->>'fail')::boolean THEN
        PERFORM workflows.fail('failed after the charge');
    END IF;
    RETURN who;
END $$;
SELECT workflows.register('cs-parent', 'cs_parent(jsonb)') IS NOT NULL AS r \gset
GRANT EXECUTE ON FUNCTION cs_child(jsonb), cs_parent(jsonb) TO wf_cs_bob;
SELECT workflows.create('cs-parent', '{"fail": false}', 'cs-1') IS NOT NULL AS c \gset
SELECT workflows.create('cs-parent', '{"fail": true}', 'cs-2') IS NOT NULL AS c \gset
RESET ROLE;

SELECT is(workflows.wait('cs-1', '30 seconds')->>'status', 'complete', 'the parent completes');
SELECT is((SELECT output #>> '{}' FROM workflows.instances WHERE id = 'cs-1'), 'wf_cs_alice',
    'a child runs as its parent''s owner');
SELECT is((SELECT owner::text FROM workflows.instances WHERE id = 'cs-1/c'), 'wf_cs_alice',
    '... and belongs to it');
SELECT is(workflows.wait('cs-2', '30 seconds')->>'status', 'errored', 'the failing parent errors');
SELECT is((SELECT string_agg(who, ',') FROM cs_log WHERE what = 'rollback'), 'wf_cs_alice',
    'its rollback handler ran once, as the owner');

-- bob takes the id alice's next parent will give its child
SET ROLE wf_cs_bob;
SELECT workflows.create('cs-child', '{}', 'cs-3/c') IS NOT NULL AS c \gset
RESET ROLE;
SET ROLE wf_cs_alice;
SELECT workflows.create('cs-parent', '{"fail": false}', 'cs-3') IS NOT NULL AS c \gset
RESET ROLE;
SELECT is(workflows.wait('cs-3', '30 seconds')->>'status', 'errored',
    'a parent whose child id another role took first errors');
SELECT is((SELECT error->>'sqlstate' || ' ' || (error->>'message')
             FROM workflows.steps WHERE instance_id = 'cs-3' AND key = 'c'),
    '23505 workflow instance "cs-3/c" already exists',
    '... its spawn step failed with a clear error naming the id');
SELECT is((SELECT owner::text FROM workflows.instances WHERE id = 'cs-3/c'), 'wf_cs_bob',
    '... and bob''s instance is untouched');
SELECT is((SELECT count(*) FROM workflows.instances WHERE parent = 'cs-3')::int, 0,
    '... and the parent has no child');

SET ROLE wf_cs_alice;
SELECT workflows.erase(id) FROM workflows.instances WHERE parent IS NULL AND owner = 'wf_cs_alice'::regrole;
RESET ROLE;
DROP OWNED BY wf_cs_alice, wf_cs_bob CASCADE;
DROP ROLE wf_cs_alice;
DROP ROLE wf_cs_bob;

SELECT * FROM finish();

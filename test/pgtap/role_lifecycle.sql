--
-- Roles that own more than instances: the pinned copies of their replaced
-- workflow functions (members of the extension, in workflows_code) and
-- their secrets.  The README's sequence -- REASSIGN OWNED or DROP OWNED,
-- then DROP ROLE -- must work for both.
--
-- Not wrapped in a transaction: instances are run by the background
-- executors, which only see committed rows.  Roles are cluster-wide: their
-- names are unique to this file, and they are dropped at the end.
--
\set QUIET 1
\set VERBOSITY terse
SET client_min_messages = warning;

SELECT plan(16);

DROP ROLE IF EXISTS wf_rl_alice;
DROP ROLE IF EXISTS wf_rl_bob;
DROP ROLE IF EXISTS wf_rl_carol;
CREATE ROLE wf_rl_alice;
CREATE ROLE wf_rl_bob;
CREATE ROLE wf_rl_carol;
GRANT CREATE ON SCHEMA public TO wf_rl_alice, wf_rl_bob;

\ir wait_until.psql

-- pinned(role): the pinned copies of a role, as members of the extension
CREATE FUNCTION pinned(r text) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM pg_proc p
     WHERE p.pronamespace = 'workflows_code'::regnamespace AND p.proowner = r::regrole
$$;

-- each role: a workflow whose function is replaced while an instance of
-- it waits, so that the instance finishes on a pinned copy
SET ROLE wf_rl_alice;
CREATE FUNCTION rl_alice(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN PERFORM workflows.wait_for_event('go', 'go', '1 hour'); RETURN '"old"'; END $$;
SELECT workflows.register('rl-alice', 'rl_alice(jsonb)') IS NOT NULL AS r \gset
SELECT workflows.create('rl-alice', '{}', 'rl-a') IS NOT NULL AS c \gset
SELECT workflows.set_secret('api', 'alice-secret') IS NULL AS s \gset
SET ROLE wf_rl_bob;
CREATE FUNCTION rl_bob(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN PERFORM workflows.wait_for_event('go', 'go', '1 hour'); RETURN '"old"'; END $$;
SELECT workflows.register('rl-bob', 'rl_bob(jsonb)') IS NOT NULL AS r \gset
SELECT workflows.create('rl-bob', '{}', 'rl-b') IS NOT NULL AS c \gset
SELECT workflows.set_secret('api', 'bob-secret') IS NULL AS s \gset
SELECT workflows.set_secret('other', 'bob-other') IS NULL AS s \gset
RESET ROLE;
SET ROLE wf_rl_carol;
SELECT workflows.set_secret('api', 'carol-secret') IS NULL AS s \gset
RESET ROLE;
SELECT ok(wait_until($$SELECT count(*) = 2 FROM workflows.instances WHERE waiting_for = 'go'$$),
    'both instances wait for their event');
SET ROLE wf_rl_alice;
CREATE OR REPLACE FUNCTION rl_alice(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$ BEGIN RETURN '"new"'; END $$;
SELECT workflows.send_event('rl-a', 'go') IS NULL AS e \gset
SET ROLE wf_rl_bob;
CREATE OR REPLACE FUNCTION rl_bob(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$ BEGIN RETURN '"new"'; END $$;
SELECT workflows.send_event('rl-b', 'go') IS NULL AS e \gset
RESET ROLE;
SELECT is(workflows.wait('rl-a', '30 seconds')->>'output', 'old', 'alice''s instance finished on its pinned copy');
SELECT is(workflows.wait('rl-b', '30 seconds')->>'output', 'old', 'bob''s instance finished on its pinned copy');
SELECT is(pinned('wf_rl_alice') + pinned('wf_rl_bob'), 2::bigint, 'each role owns a pinned copy');

------------------------------------------------------------------------------
-- DROP ROLE refuses while the role has secrets here
------------------------------------------------------------------------------
SELECT throws_ok($$DROP ROLE wf_rl_carol$$, '2BP01',
    'role "wf_rl_carol" cannot be dropped because some objects depend on it',
    'DROP ROLE refuses while the role has secrets here');

------------------------------------------------------------------------------
-- DROP OWNED: the pinned copies go with the role's functions, the secrets
-- are deleted; then DROP ROLE works
------------------------------------------------------------------------------
SELECT lives_ok($$DROP OWNED BY wf_rl_alice$$, 'DROP OWNED BY a role that owns a pinned copy works');
SELECT is(pinned('wf_rl_alice'), 0::bigint, '... its pinned copy is gone');
SELECT is((SELECT count(*) FROM workflows._secrets WHERE owner = 'wf_rl_alice'::regrole), 0::bigint,
    '... and its secrets');
SELECT is((SELECT details FROM workflows.audit WHERE action = 'drop_secret'
            AND owner = 'wf_rl_alice'::regrole),
    '{"name": "api", "drop_owned": true}'::jsonb, '... which the audit trail records by name');
REVOKE CREATE ON SCHEMA public FROM wf_rl_alice;
SELECT lives_ok($$DROP ROLE wf_rl_alice$$, 'then DROP ROLE works');

------------------------------------------------------------------------------
-- REASSIGN OWNED: the pinned copy and the secrets move; a secret name the
-- new role has already is refused, with nothing moved
------------------------------------------------------------------------------
SELECT throws_ok($$REASSIGN OWNED BY wf_rl_bob TO wf_rl_carol$$, '42710',
    'role "wf_rl_carol" already has a secret named "api"',
    'REASSIGN OWNED refuses to merge two secrets of the same name');
SET ROLE wf_rl_carol;
SELECT workflows.drop_secret('api') AS d \gset
RESET ROLE;
SELECT lives_ok($$REASSIGN OWNED BY wf_rl_bob TO wf_rl_carol$$, 'REASSIGN OWNED of a role with a pinned copy works');
SELECT is(pinned('wf_rl_carol'), 1::bigint, '... the pinned copy moved');
SELECT results_eq($$SELECT name FROM workflows._secrets WHERE owner = 'wf_rl_carol'::regrole ORDER BY name$$,
    $$VALUES ('api'), ('other')$$, '... and the secrets');
SELECT is((SELECT details FROM workflows.audit WHERE action = 'reassign'),
    '{"from": "wf_rl_bob", "to": "wf_rl_carol", "instances": 1, "workflows": 1, "secrets": 2}'::jsonb,
    '... which the audit trail records');
REVOKE CREATE ON SCHEMA public FROM wf_rl_bob;
SELECT lives_ok($$DROP ROLE wf_rl_bob$$, 'then DROP ROLE works');

DROP OWNED BY wf_rl_carol;
DROP ROLE wf_rl_carol;
SELECT * FROM finish();

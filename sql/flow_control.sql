--
-- Flow control (issue 14): set_flow_control() for every key, every bad
-- config (a clear error naming the key, nothing changed), create options,
-- concurrency held back and promoted, singleton, debounce, throttle,
-- pause and terminate releasing a slot.
--
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS workflows;
RESET client_min_messages;

CREATE FUNCTION fc_gate(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM workflows.wait_for_event('gate', 'go', '1 hour');
    RETURN workflows.step('done', 'SELECT ''"ok"''::jsonb');
END
$$;
SELECT workflows.register('fc', 'fc_gate(jsonb)') IS NOT NULL AS registered;

-- every key, accepted
SELECT workflows.set_flow_control('fc', '{"concurrency": {"limit": 2}}');
SELECT workflows.set_flow_control('fc', '{"concurrency": [{"limit": 100}, {"limit": 2, "key": "$.customer"}]}');
SELECT workflows.set_flow_control('fc', '{"throttle": {"limit": 10, "period": "1 minute", "key": "$.customer"}}');
SELECT workflows.set_flow_control('fc', '{"priority": 5}');
SELECT workflows.set_flow_control('fc', '{"priority": {"key": "$.prio", "default": 1}}');
SELECT workflows.set_flow_control('fc', '{"debounce": {"period": "10 seconds", "key": "$.customer"}}');
SELECT workflows.set_flow_control('fc', '{"singleton": {"key": "$.customer", "mode": "cancel"}}');
SELECT workflows.set_flow_control('fc', NULL);
SELECT flow_control FROM workflows.workflows WHERE name = 'fc';

-- bad configs: each an error naming the key; nothing changes
SELECT workflows.set_flow_control('fc', '{"concurrency": {"limit": 3}}');
SELECT workflows.set_flow_control('fc', '[]');
SELECT workflows.set_flow_control('fc', '{"concurency": {"limit": 2}}');
SELECT workflows.set_flow_control('fc', '{"concurrency": {"limit": 0}}');
SELECT workflows.set_flow_control('fc', '{"concurrency": {"limit": 1.5}}');
SELECT workflows.set_flow_control('fc', '{"concurrency": {"key": "$.a"}}');
SELECT workflows.set_flow_control('fc', '{"concurrency": {"limit": 2, "key": "$$$"}}');
SELECT workflows.set_flow_control('fc', '{"concurrency": {"limit": 2, "key": 7}}');
SELECT workflows.set_flow_control('fc', '{"concurrency": {"limit": 2, "size": 7}}');
SELECT workflows.set_flow_control('fc', '{"concurrency": [{"limit": 1}, {"limit": 2}, {"limit": 3}]}');
SELECT workflows.set_flow_control('fc', '{"concurrency": [{"limit": 1}, {"limit": "x"}]}');
SELECT workflows.set_flow_control('fc', '{"throttle": {"limit": 10}}');
SELECT workflows.set_flow_control('fc', '{"throttle": {"limit": 10, "period": "soon"}}');
SELECT workflows.set_flow_control('fc', '{"throttle": {"limit": 10, "period": "-1 minute"}}');
SELECT workflows.set_flow_control('fc', '{"throttle": {"limit": 100000, "period": "1 minute"}}');
SELECT workflows.set_flow_control('fc', '{"priority": "high"}');
SELECT workflows.set_flow_control('fc', '{"priority": {"default": 1}}');
SELECT workflows.set_flow_control('fc', '{"debounce": {"key": "$.a"}}');
SELECT workflows.set_flow_control('fc', '{"singleton": {"mode": "replace"}}');
SELECT workflows.set_flow_control('nope', '{}');
SELECT flow_control FROM workflows.workflows WHERE name = 'fc';

-- only the owner or an admin
CREATE ROLE fc_other;
SET ROLE fc_other;
SELECT workflows.set_flow_control('fc', '{"concurrency": {"limit": 1}}');
RESET ROLE;
DROP ROLE fc_other;

-- bad create options
SELECT workflows.create('fc', '{}', 'fc-bad', options => '{"priority": "x"}');
SELECT workflows.create('fc', '{}', 'fc-bad', options => '{"delay": "5 minutes", "startAt": "2030-01-01"}');
SELECT workflows.create('fc', '{}', 'fc-bad', options => '{"later": true}');
SELECT workflows.create('fc', '{}', 'fc-bad', options => '{"startAt": "whenever"}');
SELECT count(*) FROM workflows.instances WHERE id = 'fc-bad';

-- delay and startAt: a later wake time, no flow control needed
SELECT workflows.create('fc', '{}', 'fc-delayed', options => '{"delay": "1 hour"}');
SELECT workflows.create('fc', '{}', 'fc-at', options => '{"startAt": "2099-01-01T00:00:00Z"}');
SELECT id, wake_at > now() + interval '59 minutes' AS later, status
  FROM workflows.instances WHERE id IN ('fc-delayed', 'fc-at') ORDER BY id;
SELECT workflows.terminate('fc-delayed'), workflows.terminate('fc-at');

-- concurrency: a step that blocks until its customer's gate opens, so
-- that a running instance really holds its slot (and an executor)
CREATE TABLE fc_open (k text);
CREATE TABLE fc_log (id text, started timestamptz, ended timestamptz);
CREATE FUNCTION fc_block(a jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fc_log VALUES (a->>'id', clock_timestamp(), NULL);
    WHILE NOT (a ? 'quick') AND NOT EXISTS (SELECT 1 FROM fc_open WHERE k = a->>'customer') LOOP
        PERFORM pg_sleep(0.02);
    END LOOP;
    UPDATE fc_log SET ended = clock_timestamp() WHERE id = a->>'id';
    RETURN '1';
END
$$;
CREATE FUNCTION fc_work(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM workflows.step('work', 'fc_block(jsonb)'::regprocedure,
                           event->'payload' || jsonb_build_object('id', event->>'instanceId'));
    RETURN workflows.step('after', 'SELECT ''"ok"''::jsonb');
END
$$;
SELECT workflows.register('fw', 'fc_work(jsonb)') IS NOT NULL AS registered;
SELECT workflows.set_flow_control('fw', '{"concurrency": {"limit": 1, "key": "$.customer"}}');
SELECT workflows.create('fw', '{"customer": "acme"}', 'acme-1');
SELECT wait_until($$SELECT state = 'holds' FROM workflows.flow_members WHERE instance_id = 'acme-1'$$);
SELECT workflows.create('fw', '{"customer": "acme"}', 'acme-2', options => '{"priority": 1}');
SELECT workflows.create('fw', '{"customer": "acme"}', 'acme-3', options => '{"priority": 9}');
SELECT workflows.create('fw', '{"customer": "globex", "quick": true}', 'globex-1');
SELECT wait_until($$SELECT count(*) = 2 FROM workflows.flow_members WHERE state = 'held'$$);
-- another key is not held back by acme's
SELECT wait_until($$SELECT status = 'complete' FROM workflows.instances WHERE id = 'globex-1'$$);
SELECT id, status, wake_at IS NULL AS not_polled FROM workflows.instances
 WHERE id IN ('acme-2', 'acme-3') ORDER BY id;
SELECT workflows.status('acme-2')->>'heldBack' AS why;
SELECT string_agg(d, E'\n') LIKE '%queued: waiting for a concurrency slot — key "acme": 1 of 1 running%' AS describe_says
  FROM workflows.describe('acme-2') d;
SELECT workflow, entry, key, running, held_back FROM workflows.flow_backlog WHERE workflow = 'fw' ORDER BY key;
-- a pause releases the slot (at the step boundary): the highest priority runs next
SELECT workflows.pause('acme-1');
INSERT INTO fc_open VALUES ('acme');
SELECT wait_until($$SELECT count(*) = 2 FROM workflows.instances WHERE id IN ('acme-2', 'acme-3') AND status = 'complete'$$);
SELECT id, status FROM workflows.instances WHERE id LIKE 'acme-%' ORDER BY id;
-- one at a time, priority first
SELECT string_agg(id, ', ' ORDER BY started) AS start_order FROM fc_log WHERE id LIKE 'acme-%';
SELECT count(*) AS overlaps FROM fc_log a JOIN fc_log b ON a.id < b.id
 WHERE a.id LIKE 'acme-%' AND b.id LIKE 'acme-%' AND a.started < b.ended AND b.started < a.ended;
-- the resumed one takes a slot again and finishes
SELECT workflows.resume('acme-1');
SELECT wait_until($$SELECT status = 'complete' FROM workflows.instances WHERE id = 'acme-1'$$);
-- terminate frees a held-back instance from its queue
DELETE FROM fc_open;
SELECT workflows.create('fw', '{"customer": "acme"}', 'acme-5');
SELECT wait_until($$SELECT state = 'holds' FROM workflows.flow_members WHERE instance_id = 'acme-5'$$);
SELECT workflows.create('fw', '{"customer": "acme"}', 'acme-6');
SELECT wait_until($$SELECT state = 'held' FROM workflows.flow_members WHERE instance_id = 'acme-6'$$);
SELECT workflows.terminate('acme-6');
SELECT state FROM workflows.flow_members WHERE instance_id = 'acme-6';
INSERT INTO fc_open VALUES ('acme');
SELECT wait_until($$SELECT status = 'complete' FROM workflows.instances WHERE id = 'acme-5'$$);

-- a rolled-back create takes no slot
SELECT workflows.set_flow_control('fc', '{"concurrency": {"limit": 1}}');
BEGIN;
SELECT workflows.create('fc', '{}', 'rolled-back');
ROLLBACK;
SELECT workflows.create('fc', '{}', 'after-rollback');
SELECT wait_until($$SELECT status = 'waiting' FROM workflows.instances WHERE id = 'after-rollback'$$);
SELECT workflows.terminate('after-rollback');

-- singleton skip: the live instance's id, nothing created
SELECT workflows.set_flow_control('fc', '{"singleton": {"key": "$.customer"}}');
SELECT workflows.create('fc', '{"customer": "s"}', 'single-1');
SELECT workflows.create('fc', '{"customer": "s"}', 'single-2');
SELECT workflows.create('fc', '{"customer": "t"}', 'single-3');
SELECT id FROM workflows.instances WHERE id LIKE 'single-%' ORDER BY id;
-- singleton cancel: the live one is terminated, the new one starts
SELECT workflows.set_flow_control('fc', '{"singleton": {"key": "$.customer", "mode": "cancel"}}');
SELECT workflows.create('fc', '{"customer": "s"}', 'single-4');
SELECT wait_until($$SELECT status = 'terminated' FROM workflows.instances WHERE id = 'single-1'$$);
SELECT id, status IN ('terminated') AS terminated FROM workflows.instances WHERE id LIKE 'single-%' ORDER BY id;
SELECT workflows.terminate('single-3') IS NOT NULL, workflows.terminate('single-4') IS NOT NULL;

-- debounce: creates within the period collapse into one, with the last params
SELECT workflows.set_flow_control('fc', '{"debounce": {"period": "1 hour", "key": "$.customer"}}');
SELECT workflows.create('fc', '{"customer": "d", "n": 1}', 'deb-1');
SELECT workflows.create('fc', '{"customer": "d", "n": 2}', 'deb-2');
SELECT workflows.create('fc', '{"customer": "e", "n": 3}', 'deb-3');
SELECT id, params, wake_at > now() + interval '59 minutes' AS later
  FROM workflows.instances WHERE id LIKE 'deb-%' ORDER BY id;
SELECT workflows.status('deb-1')->>'heldBack' LIKE 'debounced until %' AS debounced;
SELECT details->>'collapsedInto' FROM workflows.audit WHERE instance_id = 'deb-2';
SELECT workflows.terminate('deb-1'), workflows.terminate('deb-3');

-- throttle 2 per hour: the third start is delayed an hour, never dropped
SELECT workflows.set_flow_control('fc', '{"throttle": {"limit": 2, "period": "1 hour"}}');
SELECT workflows.create('fc', '{}', 'thr-' || g) FROM generate_series(1, 3) g;
SELECT wait_until($$SELECT count(*) = 2 FROM workflows.instances WHERE id LIKE 'thr-%' AND status = 'waiting'$$);
SELECT wait_until($$SELECT count(*) = 1 FROM workflows.flow_members f JOIN workflows.instances i ON i.id = f.instance_id
                      WHERE f.instance_id LIKE 'thr-%' AND f.throttled_at > now() + interval '59 minutes'
                        AND i.wake_at = f.throttled_at AND i.status = 'queued'$$);
SELECT workflows.status(instance_id)->>'heldBack' LIKE 'throttled until %' AS throttled
  FROM workflows.flow_members WHERE instance_id LIKE 'thr-%' AND throttled_at > now() + interval '59 minutes';
SELECT workflows.terminate(id) FROM workflows.instances
 WHERE id LIKE 'thr-%' ORDER BY id;

-- create_batch: options per element
SELECT workflows.set_flow_control('fc', NULL);
SELECT * FROM workflows.create_batch('fc', '[{"id": "fcb-1", "options": {"delay": "1 hour"}}, {"id": "fcb-2", "options": {"startAt": "2099-01-01T00:00:00Z"}}, {"id": "fcb-4"}]');
SELECT * FROM workflows.create_batch('fc', '[{"id": "fcb-3", "options": {"delay": 5}}]');
SELECT id, status, wake_at > now() + interval '59 minutes' AS later FROM workflows.instances WHERE id IN ('fcb-1', 'fcb-2') ORDER BY id;
SELECT workflows.terminate(id) FROM workflows.instances WHERE id LIKE 'fcb-%' ORDER BY id;

-- create_batch without options: every instance a member at once, its
-- priority from params; with a singleton, admitted one by one (the second
-- of a key collapses into the first)
SELECT workflows.set_flow_control('fc', '{"concurrency": {"limit": 1}, "priority": {"key": "$.prio", "default": 3}}');
SELECT * FROM workflows.create_batch('fc', '[{"id": "fcp-1", "params": {"prio": 7}}, {"id": "fcp-2"}]');
SELECT instance_id, priority, state IN ('ready', 'holds', 'held') AS member
  FROM workflows.flow_members WHERE instance_id LIKE 'fcp-%' ORDER BY 1;
SELECT workflows.set_flow_control('fc', '{"singleton": {"key": "$.customer"}}');
SELECT * FROM workflows.create_batch('fc', '[{"id": "fcs-1", "params": {"customer": "a"}}, {"id": "fcs-2", "params": {"customer": "a"}}, {"id": "fcs-3", "params": {"customer": "b"}}]');
SELECT id FROM workflows.instances WHERE id LIKE 'fcs-%' ORDER BY id;
SELECT wait_until($$SELECT count(*) = 4 FROM workflows.instances
                     WHERE (id LIKE 'fcp-%' OR id LIKE 'fcs-%') AND status = 'waiting'$$);
SELECT workflows.terminate(id) FROM workflows.instances
 WHERE id LIKE 'fcp-%' OR id LIKE 'fcs-%' ORDER BY id;
SELECT workflows.set_flow_control('fc', NULL);

-- step-level limits: bad step configs name the key
CREATE FUNCTION fc_stepcfg(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('s', 'SELECT 1', config => event->'payload');
END
$$;
SELECT workflows.register('fsc', 'fc_stepcfg(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('fsc', c, 'fsc-' || n)
  FROM (VALUES (1, '{"concurrency": {"limit": 0, "key": "api"}}'::jsonb),
               (2, '{"concurrency": {"limit": 2}}'),
               (3, '{"concurrency": {"limit": 2, "key": "api", "size": 1}}'),
               (4, '{"throttle": {"limit": 5, "key": "api"}}'),
               (5, '{"throttle": {"limit": 5, "period": "soon", "key": "api"}}'),
               (6, '{"concurrency": "api"}')) v(n, c) ORDER BY n;
SELECT wait_until($$SELECT count(*) = 6 FROM workflows.instances WHERE id LIKE 'fsc-%' AND status = 'errored'$$);
SELECT id, error->>'message' FROM workflows.instances WHERE id LIKE 'fsc-%' ORDER BY id;

-- step concurrency 1 on key "api", shared by two workflows: one at a time,
-- the others wait without an executor and say so
CREATE TABLE fc_api (id text, started timestamptz, ended timestamptz);
CREATE TABLE fc_api_open (o boolean);
CREATE FUNCTION fc_call(a jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fc_api VALUES (a->>'id', clock_timestamp(), NULL);
    WHILE NOT EXISTS (SELECT 1 FROM fc_api_open) LOOP
        PERFORM pg_sleep(0.02);
    END LOOP;
    UPDATE fc_api SET ended = clock_timestamp() WHERE id = a->>'id';
    RETURN '1';
END
$$;
CREATE FUNCTION fc_api_user(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('call', 'fc_call(jsonb)'::regprocedure,
                          jsonb_build_object('id', event->>'instanceId'),
                          '{"concurrency": {"limit": 1, "key": "api"}}');
END
$$;
SELECT workflows.register('api-a', 'fc_api_user(jsonb)') IS NOT NULL AS registered;
SELECT workflows.register('api-b', 'fc_api_user(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('api-a', '{}', 'api-1');
SELECT wait_until($$SELECT count(*) = 1 FROM workflows.executors WHERE instance = 'api-1' AND step = 'call'$$);
SELECT workflows.create('api-b', '{}', 'api-2');
SELECT workflows.create('api-a', '{}', 'api-3');
SELECT wait_until($$SELECT count(*) = 2 FROM workflows.flow_step_waiters$$);
SELECT id, status, wake_at IS NULL AS not_polled FROM workflows.instances WHERE id IN ('api-2', 'api-3') ORDER BY id;
SELECT workflows.status('api-2')->>'heldBack' AS why;
INSERT INTO fc_api_open VALUES (true);
SELECT wait_until($$SELECT count(*) = 3 FROM workflows.instances WHERE id LIKE 'api-%' AND status = 'complete'$$);
SELECT count(*) AS overlaps FROM fc_api a JOIN fc_api b ON a.id < b.id
 WHERE a.started < b.ended AND b.started < a.ended;
SELECT string_agg(id, ', ' ORDER BY started) AS call_order FROM fc_api;
SELECT workflows.status('api-1')->'steps'->0->'config'->'concurrency' AS step_config;

-- step throttle 2 per hour on key "mail": the third call waits an hour
CREATE FUNCTION fc_mail(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('send', 'SELECT 1',
                          config => '{"throttle": {"limit": 2, "period": "1 hour", "key": "mail"}}');
END
$$;
SELECT workflows.register('mail', 'fc_mail(jsonb)') IS NOT NULL AS registered;
SELECT workflows.create('mail', '{}', 'mail-' || g) FROM generate_series(1, 3) g;
SELECT wait_until($$SELECT count(*) = 2 FROM workflows.instances WHERE id LIKE 'mail-%' AND status = 'complete'$$);
SELECT wait_until($$SELECT count(*) = 1 FROM workflows.instances WHERE id LIKE 'mail-%' AND status = 'waiting'
                      AND wake_at > now() + interval '59 minutes'$$);
SELECT workflows.status(id)->>'heldBack' LIKE 'step throttled until %' AS throttled
  FROM workflows.instances WHERE id LIKE 'mail-%' AND status = 'waiting';
SELECT workflows.terminate(id) FROM workflows.instances WHERE id LIKE 'mail-%' AND status = 'waiting';

--
-- Control commands on every status, batches, idempotent creation.
--
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS workflows;
RESET client_min_messages;

CREATE TABLE ctl_effects (instance text, step text);
-- step "locked" blocks while this session holds advisory lock 4242; it never
-- runs in place ("inline": false), so a command sent while it blocks finds
-- it running alone, and it commits before the command applies
CREATE FUNCTION ctl(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    p jsonb := event->'payload';
BEGIN
    PERFORM workflows.step('first', 'INSERT INTO ctl_effects VALUES ($1, ''first'')',
                           jsonb_build_array(event->>'instanceId'));
    IF p ? 'lock' THEN
        PERFORM workflows.step('locked',
            'WITH l AS (SELECT pg_advisory_xact_lock(4242)) INSERT INTO ctl_effects SELECT $1, ''locked'' FROM l',
            jsonb_build_array(event->>'instanceId'), '{"inline": false}');
    END IF;
    IF p ? 'nap' THEN
        PERFORM workflows.sleep('nap', (p->>'nap')::interval);
    END IF;
    PERFORM workflows.step('last', 'INSERT INTO ctl_effects VALUES ($1, ''last'')',
                           jsonb_build_array(event->>'instanceId'));
    RETURN '"done"';
END
$$;
SELECT workflows.register('ctl', 'ctl(jsonb)') IS NOT NULL AS registered;

-- batches: all or nothing, ids in order, duplicates refused
SELECT * FROM workflows.create_batch('ctl', '[{"id": "b-1", "params": {"nap": "1 hour"}},
                                             {"id": "b-2", "params": {"nap": "1 hour"}},
                                             {"params": {}}]') WITH ORDINALITY
 WHERE ordinality < 3;
SELECT * FROM workflows.create_batch('ctl', '[{"id": "b-3"}, {"id": "b-1"}, {"id": "b-4"}]');
SELECT * FROM workflows.create_batch('ctl', '[{"id": "b-3"}, {"id": "b-3"}]');
SELECT * FROM workflows.create_batch('ctl', '[{"id": "b-3", "param": {}}]');
SELECT * FROM workflows.create_batch('ctl', '[{"id": 3}]');
SELECT * FROM workflows.create_batch('ctl', '{"id": "b-3"}');
SELECT * FROM workflows.create_batch('nope', '[]');
SELECT count(*) FROM workflows.instances WHERE id IN ('b-3', 'b-4');
-- idempotent: existing ids come back as if created
SELECT * FROM workflows.create_batch('ctl', '[{"id": "b-3", "params": {"nap": "1 hour"}}, {"id": "b-1"}, {"id": "b-3"}]',
                                     if_not_exists => true);
SELECT * FROM workflows.create_batch('ctl', '[]');

-- a sleeping (waiting) instance
SELECT wait_until($$SELECT count(*) = 3 FROM workflows.instances
    WHERE id IN ('b-1', 'b-2', 'b-3') AND status = 'waiting'$$);
SELECT workflows.resume('b-1');
SELECT workflows.pause('b-1');
SELECT status, wake_at IS NULL AS parked FROM workflows.instances WHERE id = 'b-1';
SELECT workflows.pause('b-1');
SELECT workflows.status('b-1')->>'status' AS status;
-- resume: the sleep still has an hour to go, so it waits again
SELECT workflows.resume('b-1');
SELECT wait_until($$SELECT status = 'waiting' FROM workflows.instances WHERE id = 'b-1'$$);
SELECT workflows.terminate('b-1');
SELECT workflows.terminate('b-1');
SELECT workflows.pause('b-1');
SELECT workflows.resume('b-1');
SELECT d->>'status' AS status, d->'success' AS success, d->>'end' IS NOT NULL AS ended
  FROM workflows.wait('b-1', '1 second') d;
-- terminate a paused instance
SELECT workflows.pause('b-2');
SELECT workflows.terminate('b-2');
-- a queued instance can be paused before it starts
BEGIN;
SELECT workflows.create('ctl', '{}', 'q-1');
SELECT workflows.pause('q-1');
COMMIT;
SELECT status, started_at IS NULL AS never_started FROM workflows.instances WHERE id = 'q-1';
SELECT workflows.resume('q-1');
SELECT workflows.wait('q-1', '30 seconds')->>'status' AS status;
-- complete instances: only restart is allowed
SELECT workflows.pause('q-1');
SELECT workflows.resume('q-1');
SELECT workflows.terminate('q-1');
SELECT workflows.restart('q-1');
SELECT workflows.wait('q-1', '30 seconds')->>'status' AS status;
SELECT step, count(*) FROM ctl_effects WHERE instance = 'q-1' GROUP BY step ORDER BY step;

-- restart from a named step keeps the memos before it
SELECT workflows.create('ctl', '{"nap": "0"}', 'r-1');
SELECT workflows.wait('r-1', '30 seconds')->>'status' AS status;
SELECT workflows.restart('r-1', 'no such step');
SELECT workflows.restart('r-1', 'nap');
SELECT workflows.wait('r-1', '30 seconds')->>'status' AS status;
SELECT step, count(*) FROM ctl_effects WHERE instance = 'r-1' GROUP BY step ORDER BY step;
SELECT key, attempts FROM workflows.steps WHERE instance_id = 'r-1' ORDER BY seq;

-- pause while a step runs: the step finishes, nothing new starts
SELECT pg_advisory_lock(4242);
SELECT workflows.create('ctl', '{"lock": true}', 'p-1');
SELECT wait_until($$SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
    AND objid = 4242 AND NOT granted)$$);
SELECT workflows.pause('p-1');
SELECT workflows.status('p-1')->>'status' AS status;
SELECT workflows.resume('p-1');
SELECT pg_advisory_unlock(4242);
SELECT wait_until($$SELECT status = 'paused' FROM workflows.instances WHERE id = 'p-1'$$);
SELECT step, count(*) FROM ctl_effects WHERE instance = 'p-1' GROUP BY step ORDER BY step;
SELECT workflows.resume('p-1');
SELECT workflows.wait('p-1', '30 seconds')->>'status' AS status;
SELECT step, count(*) FROM ctl_effects WHERE instance = 'p-1' GROUP BY step ORDER BY step;

-- terminate while a step runs: it ends at the step boundary
SELECT pg_advisory_lock(4242);
SELECT workflows.create('ctl', '{"lock": true}', 't-1');
SELECT wait_until($$SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
    AND objid = 4242 AND NOT granted)$$);
SELECT workflows.terminate('t-1');
SELECT pg_advisory_unlock(4242);
SELECT d->>'status' AS status FROM workflows.wait('t-1', '30 seconds') d;
SELECT step, count(*) FROM ctl_effects WHERE instance = 't-1' GROUP BY step ORDER BY step;

-- unknown ids
SELECT workflows.pause('nope');
SELECT workflows.resume('nope');
SELECT workflows.terminate('nope');
SELECT workflows.restart('nope');

-- retention: only finished instances older than the limit go, with their rows
SELECT workflows.create('ctl', '{"nap": "1 hour"}', 'old-waiting');
SELECT wait_until($$SELECT status = 'waiting' FROM workflows.instances WHERE id = 'old-waiting'$$);
UPDATE workflows.instances SET ended_at = now() - interval '2 days'
 WHERE id IN ('q-1', 'b-1');
UPDATE workflows.instances SET created_at = now() - interval '2 days'
 WHERE id = 'old-waiting';
SELECT workflows.purge('1 day');
SELECT id FROM workflows.instances WHERE id IN ('q-1', 'b-1', 'b-2', 'old-waiting', 'r-1') ORDER BY id;
SELECT count(*) AS orphans FROM workflows.steps s
 WHERE NOT EXISTS (SELECT 1 FROM workflows.instances i WHERE i.id = s.instance_id);
SELECT workflows.purge('-1 day');

--
-- describe(): an instance for people, one line per row.
--
-- Times, durations and generated ids differ from run to run: show() masks
-- them (T: a time, D: a duration, UUID) and squeezes the padding, whose
-- width follows the masked values.
--
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS workflows;
DROP ROLE IF EXISTS wf_desc_owner;
DROP ROLE IF EXISTS wf_desc_other;
DROP ROLE IF EXISTS wf_desc_admin;
RESET client_min_messages;
CREATE ROLE wf_desc_owner;
CREATE ROLE wf_desc_other;
CREATE ROLE wf_desc_admin IN ROLE workflows_admin;
SET TimeZone = 'UTC';

CREATE FUNCTION show(id text) RETURNS SETOF text LANGUAGE sql AS $$
    SELECT regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(line,
               '(\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d\.\d{3}( UTC)?', 'T', 'g'),
               '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', 'UUID', 'g'),
               '\m(\d+ms|\d+\.\ds|\d+[mhd] \d\d[smh])\M', 'D', 'g'),
               '\s{2,}', ' ', 'g'),
               '\s+$', '')
      FROM workflows.describe(id) line
$$;
GRANT EXECUTE ON FUNCTION show(text) TO PUBLIC;

-- desc_demo: a step, a short sleep, a step that fails twice before it
-- succeeds; as the params ask, also: after the first step, a step that
-- waits for advisory lock 4343 (held by this session); at the end, a step
-- that fails for good, a wait for an event, a long sleep.  desc_flaky: a
-- step that keeps failing, an hour between attempts.
CREATE FUNCTION desc_unreliable(id text, always boolean) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    n int;
BEGIN
    SELECT count(*) INTO n FROM workflows.attempts WHERE instance_id = id AND step_key = 'call service';
    IF always OR n < 2 THEN
        RAISE EXCEPTION 'service unavailable'
            USING DETAIL = format('attempt %s', n + 1);
    END IF;
    RETURN jsonb_build_object('attempts', n + 1);
END
$$;
CREATE FUNCTION desc_demo(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    p jsonb := event->'payload';
    r jsonb;
BEGIN
    PERFORM workflows.step('load cart', 'SELECT ''{"items": 3}''::jsonb');
    IF p ? 'lock' THEN
        -- (never in place: it commits alone, whenever a command comes)
        PERFORM workflows.step('locked', 'SELECT pg_advisory_xact_lock(4343)', NULL, '{"inline": false}');
    END IF;
    PERFORM workflows.sleep('short nap', '50 milliseconds');
    r := workflows.step('call service', 'SELECT desc_unreliable($1, $2)',
                        jsonb_build_array(event->>'instanceId', p ? 'flaky'),
                        '{"retries": {"limit": 5, "delay": "10 milliseconds", "backoff": "constant"}}');
    IF p ? 'fail' THEN
        PERFORM workflows.step('validate', $q$SELECT workflows.fail('invalid cart', 'item 2 is out of stock')$q$);
    END IF;
    IF p ? 'approval' THEN
        PERFORM workflows.wait_for_event('wait for approval', 'approval', '1 hour');
    END IF;
    IF p ? 'nap' THEN
        PERFORM workflows.sleep('long nap', '1 hour');
    END IF;
    RETURN jsonb_build_object('service', r, 'note', repeat('abcdefghij', 30));
END
$$;
CREATE FUNCTION desc_flaky_demo(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('call service', 'SELECT desc_unreliable($1, true)',
                          jsonb_build_array(event->>'instanceId'),
                          '{"retries": {"limit": 3, "delay": "1 hour"}}');
END
$$;
SELECT workflows.register('desc_demo', 'desc_demo(jsonb)') IS NOT NULL AS registered;
SELECT workflows.register('desc_flaky', 'desc_flaky_demo(jsonb)') IS NOT NULL AS registered;

-- complete: every step succeeded; the output is cut to 200 characters
SELECT workflows.create('desc_demo', '{"customer": 42}', 'desc-ok');
SELECT workflows.wait('desc-ok', '30 seconds')->>'status' AS status;
SELECT * FROM show('desc-ok');
SELECT length(line) AS output_line_length, right(line, 3) AS output_end
  FROM workflows.describe('desc-ok') line WHERE line LIKE 'output%';

-- errored: a step failed for good
SELECT workflows.create('desc_demo', '{"fail": true}', 'desc-fail');
SELECT workflows.wait('desc-fail', '30 seconds')->>'status' AS status;
SELECT * FROM show('desc-fail');

-- waiting for an event (another type was sent meanwhile)
SELECT workflows.create('desc_demo', '{"approval": true}', 'desc-event');
SELECT wait_until($$SELECT status = 'waiting' AND waiting_for = 'approval'
                      FROM workflows.instances WHERE id = 'desc-event'$$);
SELECT workflows.send_event('desc-event', 'comment', '{"text": "looks good"}');
SELECT * FROM show('desc-event');

-- sleeping
SELECT workflows.create('desc_demo', '{"nap": true}', 'desc-nap');
SELECT wait_until($$SELECT status = 'waiting' AND EXISTS (SELECT 1 FROM workflows.steps
                      WHERE instance_id = 'desc-nap' AND key = 'long nap')
                      FROM workflows.instances WHERE id = 'desc-nap'$$);
SELECT * FROM show('desc-nap');

-- waiting for the next attempt of a failing step
SELECT workflows.create('desc_flaky', '{}', 'desc-retry');
SELECT wait_until($$SELECT status = 'waiting' FROM workflows.instances WHERE id = 'desc-retry'$$);
SELECT * FROM show('desc-retry');

-- running, with a pause requested; then paused
SELECT pg_advisory_lock(4343);
SELECT workflows.create('desc_demo', '{"lock": true}', 'desc-running');
SELECT wait_until($$SELECT EXISTS (SELECT 1 FROM pg_locks
                      WHERE locktype = 'advisory' AND objid = 4343 AND NOT granted)$$);
SELECT workflows.pause('desc-running');
SELECT * FROM show('desc-running');
SELECT pg_advisory_unlock(4343);
SELECT wait_until($$SELECT status = 'paused' FROM workflows.instances WHERE id = 'desc-running'$$);
SELECT line FROM show('desc-running') line WHERE line ~ '^(status|ended|duration|last step|steps)';

-- queued and paused before it ever ran; terminated before it ever ran
BEGIN;
SELECT workflows.create('desc_demo', '{}', 'desc-paused');
SELECT workflows.pause('desc-paused');
COMMIT;
SELECT * FROM show('desc-paused');
BEGIN;
SELECT workflows.create('desc_demo', '{}', 'desc-terminated');
SELECT workflows.terminate('desc-terminated');
COMMIT;
SELECT * FROM show('desc-terminated');

-- triggers
BEGIN;
SELECT workflows.create('desc_demo', '{}', 'desc-cron', trigger => '{"source": "cron", "schedule": "nightly"}');
SELECT workflows.create('desc_demo', '{}', 'desc-insert',
                        trigger => '{"source": "trigger", "table": "public.orders", "operation": "INSERT"}');
SELECT workflows.create('desc_demo', '{}', 'desc-custom', trigger => '{"source": "webhook", "path": "/hooks/1"}');
SELECT workflows.pause(id) FROM unnest(ARRAY['desc-cron', 'desc-insert', 'desc-custom']) id;
COMMIT;
SELECT d.id, line FROM unnest(ARRAY['desc-ok', 'desc-cron', 'desc-insert', 'desc-custom']) d(id),
                       show(d.id) line
 WHERE line LIKE 'trigger%';

-- who may describe what: the owner and workflows_admin, nobody else
SET ROLE wf_desc_owner;
BEGIN;
SELECT workflows.create('desc_flaky', '{}', 'desc-owned');
SELECT workflows.pause('desc-owned');
COMMIT;
SELECT line FROM show('desc-owned') line WHERE line LIKE 'id%';
SET ROLE wf_desc_other;
SELECT * FROM show('desc-owned');
SET ROLE wf_desc_admin;
SELECT line FROM show('desc-owned') line WHERE line LIKE 'id%';
RESET ROLE;
SELECT * FROM workflows.describe('no-such-instance');
SELECT * FROM workflows.describe(NULL);

-- durations
SELECT d AS duration, workflows._fmt_interval(d::interval) AS shown
  FROM unnest(ARRAY['0', '0.0004 s', '12 ms', '999 ms', '1.25 s', '59.9 s', '61 s', '3599 s',
                    '2 hours 5 minutes', '1 day 3 hours', '40 days', '-5 s', NULL]) d;
SELECT workflows._fmt_json('{"a": "bcdefghij"}', 10), workflows._fmt_line(E'two\n  lines', 200);

-- clean up: nothing of ours keeps running
SELECT count(*) > 0 AS terminated FROM (
    SELECT workflows.terminate(id) FROM workflows.instances
     WHERE workflow LIKE 'desc%' AND status NOT IN ('complete', 'errored', 'terminated')) t;

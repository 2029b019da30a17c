--
-- Operations: cron schedules (pg_cron), starting instances from table
-- inserts, metrics views.
--
-- The schedules here use '0 0 31 2 *' (February 31st: never) so that the
-- pg_cron worker of the test server never runs them by itself; the test
-- runs each job's command directly, as pg_cron would.
--
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS workflows;
CREATE EXTENSION IF NOT EXISTS pg_cron;
DROP ROLE IF EXISTS wf_ops_user;
DROP ROLE IF EXISTS wf_ops_other;
RESET client_min_messages;
CREATE ROLE wf_ops_user;
CREATE ROLE wf_ops_other;
GRANT CREATE ON SCHEMA public TO wf_ops_user;

-- run a schedule's pg_cron job now, as pg_cron would: its command, as the
-- current role (the job's owner)
CREATE FUNCTION run_job(schedule_name text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    cmd text;
    result text;
BEGIN
    SELECT command INTO STRICT cmd FROM cron.job
     WHERE jobname = 'workflows:' || schedule_name AND username = current_user;
    EXECUTE cmd INTO result;
    RETURN result;
END
$$;
GRANT EXECUTE ON FUNCTION run_job(text) TO PUBLIC;

-- ops_quick echoes its params; ops_nap sleeps an hour; ops_flaky's step
-- fails twice, then succeeds
CREATE FUNCTION ops_quick(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('echo', 'SELECT $1::jsonb', jsonb_build_array(event->'payload'));
END
$$;
CREATE FUNCTION ops_nap(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM workflows.sleep('nap', '1 hour');
    RETURN '"rested"';
END
$$;
CREATE FUNCTION ops_unreliable(id text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    n int;
BEGIN
    SELECT count(*) INTO n FROM workflows.attempts WHERE instance_id = id AND step_key = 'call';
    IF n < 2 THEN
        RAISE EXCEPTION 'unavailable';
    END IF;
    RETURN '"ok"';
END
$$;
CREATE FUNCTION ops_flaky(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('call', 'SELECT ops_unreliable($1)', jsonb_build_array(event->>'instanceId'),
                          '{"retries": {"limit": 5, "delay": "10 ms", "backoff": "constant"}}');
END
$$;
CREATE FUNCTION ops_private(event jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT '1'::jsonb $$;
REVOKE EXECUTE ON FUNCTION ops_private(jsonb) FROM PUBLIC;
SELECT workflows.register('ops_quick', 'ops_quick(jsonb)') IS NOT NULL AS registered;
SELECT workflows.register('ops_nap', 'ops_nap(jsonb)') IS NOT NULL AS registered;
SELECT workflows.register('ops_flaky', 'ops_flaky(jsonb)') IS NOT NULL AS registered;
SELECT workflows.register('ops_private', 'ops_private(jsonb)') IS NOT NULL AS registered;

--
-- Schedules
--
SELECT workflows.schedule('ops-every', '0 0 31 2 *', 'ops_quick', '{"n": 1}') > 0 AS scheduled;
SELECT workflows.schedule('ops-single', '0 0 31 2 *', 'ops_nap', overlap => 'skip') > 0 AS scheduled;
SELECT jobname, schedule, command, username = current_user AS mine, database = current_database() AS here
  FROM cron.job WHERE jobname LIKE 'workflows:%' ORDER BY jobname;
SELECT schedule_name, cron, workflow, params, overlap, active, owner = current_user AS mine,
       database = current_database() AS here, jobid IS NOT NULL AS has_job,
       last_run_at, last_instance
  FROM workflows.schedules ORDER BY schedule_name;
-- the same name again replaces the schedule
SELECT workflows.schedule('ops-every', '*/5 * * * *', 'ops_quick', '{"n": 2}') > 0 AS scheduled;
SELECT workflows.schedule('ops-every', '0 0 31 2 *', 'ops_quick', '{"n": 3}') > 0 AS scheduled;
SELECT schedule_name, cron, params FROM workflows.schedules ORDER BY schedule_name;
SELECT count(*) FROM cron.job WHERE jobname = 'workflows:ops-every';

-- a JSON document holding the dollar-quote tag is quoted with another tag
SELECT workflows.schedule('ops-dollar', '0 0 31 2 *', 'ops_quick', '{"s": "$wf$ x $wfx$"}') > 0 AS scheduled;
SELECT command FROM cron.job WHERE jobname = 'workflows:ops-dollar';
SELECT params FROM workflows.schedules WHERE schedule_name = 'ops-dollar';
SELECT workflows.unschedule('ops-dollar');

-- the job's command: an instance with a cron trigger, every time (allow)
SELECT run_job('ops-every') AS first_id \gset
SELECT run_job('ops-every') AS second_id \gset
SELECT :'first_id' <> :'second_id' AS two_instances;
SELECT (workflows.wait(:'first_id', '30 seconds'))->>'status' AS status;
SELECT (workflows.wait(:'second_id', '30 seconds'))->>'status' AS status;
SELECT workflow, trigger, params, output, owner = current_user::regrole AS mine
  FROM workflows.instances WHERE id IN (:'first_id', :'second_id');
SELECT last_instance = :'second_id' AS last_is_second, last_instance_status
  FROM workflows.schedules WHERE schedule_name = 'ops-every';
SELECT workflows.status(:'first_id')->'trigger' AS trigger;

-- overlap skip: not while the schedule's previous instance is unfinished
-- (a skipped run says why in a notice naming the unfinished instance)
SET client_min_messages = warning;
SELECT run_job('ops-single') AS nap_id \gset
SELECT run_job('ops-single') IS NULL AS skipped;
SELECT wait_until($$SELECT status = 'waiting' FROM workflows.instances WHERE id = '$$ || :'nap_id' || $$'$$);
SELECT run_job('ops-single') IS NULL AS skipped;
SELECT workflows.pause(:'nap_id');
SELECT run_job('ops-single') IS NULL AS skipped;
RESET client_min_messages;
SELECT workflows.terminate(:'nap_id');
SELECT run_job('ops-single') AS nap_id2 \gset
SELECT :'nap_id2' <> :'nap_id' AS new_instance;
SELECT count(*) FROM workflows.instances WHERE trigger->>'schedule' = 'ops-single';
-- instances of another schedule (or from the API) do not count
SELECT workflows.terminate(:'nap_id2');
SELECT workflows.create('ops_nap', '{}', 'ops-nap-api') AS api_id;
SELECT run_job('ops-single') IS NOT NULL AS created;
SELECT count(*) FROM workflows.instances WHERE trigger->>'schedule' = 'ops-single';

-- bad inputs
SELECT workflows.schedule('ops-bad', '0 0 31 2', 'ops_quick');
SELECT workflows.schedule('ops-bad', 'every day', 'ops_quick');
-- the SQLSTATE of a bad cron expression (pg_cron's), which terse hides
DO $$
BEGIN
    PERFORM workflows.schedule('ops-bad', 'every day', 'ops_quick');
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'bad cron: %', SQLSTATE;
END $$;
SELECT workflows.schedule('ops-bad', NULL, 'ops_quick');
SELECT workflows.schedule('ops-bad', '0 3 * * *', 'no_such_workflow');
SELECT workflows.schedule('ops-bad', '0 3 * * *', 'ops_quick', overlap => 'queue');
SELECT workflows.schedule('ops-bad', '0 3 * * *', 'ops_quick', overlap => NULL);
SELECT workflows.schedule('ops-bad', '0 3 * * *', 'ops_quick', NULL);
SELECT workflows.schedule('', '0 3 * * *', 'ops_quick');
SELECT workflows.schedule(NULL, '0 3 * * *', 'ops_quick');
SELECT workflows.schedule(repeat('x', 54), '0 3 * * *', 'ops_quick');
SELECT workflows.schedule(repeat('x', 53), '0 0 31 2 *', 'ops_quick') > 0 AS scheduled;
SELECT workflows.unschedule(repeat('x', 53));
SELECT workflows.unschedule('ops-bad');
SELECT workflows.unschedule(NULL);
SELECT workflows._scheduled('{"workflow": "ops_quick"}');
SELECT workflows._scheduled('[]');
SELECT count(*) FROM cron.job WHERE jobname = 'workflows:ops-bad';

-- other roles: they need USAGE on schema cron, see only their own
-- schedules, and their instances are their own
SET ROLE wf_ops_user;
SELECT count(*) FROM workflows.schedules;
SELECT workflows.schedule('ops-user', '0 0 31 2 *', 'ops_quick');
RESET ROLE;
GRANT USAGE ON SCHEMA cron TO wf_ops_user;
SET ROLE wf_ops_user;
SELECT workflows.schedule('ops-user', '0 0 31 2 *', 'ops_private');
SELECT workflows.schedule('ops-user', '0 0 31 2 *', 'ops_quick', '{"who": "user"}') > 0 AS scheduled;
SELECT schedule_name, owner FROM workflows.schedules;
SELECT workflows.unschedule('ops-every');
SELECT run_job('ops-user') AS user_id \gset
SELECT (workflows.wait(:'user_id', '30 seconds'))->>'status' AS status;
SELECT owner, trigger, output FROM workflows.instances WHERE id = :'user_id';
RESET ROLE;
SELECT schedule_name, owner FROM workflows.schedules WHERE owner = 'wf_ops_user';
SET ROLE wf_ops_user;
SELECT workflows.unschedule('ops-user');
RESET ROLE;
REVOKE USAGE ON SCHEMA cron FROM wf_ops_user;

SELECT workflows.unschedule('ops-every');
SELECT workflows.unschedule('ops-single');
SELECT workflows.unschedule('ops-every');
SELECT count(*) FROM cron.job WHERE jobname LIKE 'workflows:ops%';
SELECT count(*) FROM workflows.schedules;
-- unscheduling leaves the instances alone
SELECT count(*) FROM workflows.instances WHERE trigger->>'schedule' IN ('ops-every', 'ops-single');
-- every schedule() and unschedule() that took effect is in the audit trail,
-- with the acting role; params only as their size and hash
SELECT action, acting_role, owner, workflow, details->>'schedule' AS schedule,
       details->>'cron' AS cron, details->>'overlap' AS overlap,
       details->>'params_bytes' AS params_bytes, details ? 'params_md5' AS params_md5
  FROM workflows.audit WHERE action IN ('schedule', 'unschedule') ORDER BY id;
-- and a row cannot be made up: only a change that is there is recorded
SELECT workflows._audit_schedule('schedule', 'ops-every', 'ops_quick', NULL);
SELECT workflows._audit_schedule('create', 'ops-every', NULL, NULL);

--
-- Starting instances from table inserts
--
CREATE TABLE ops_orders (id int PRIMARY KEY, item text, qty int);
SELECT workflows.start_on_insert('ops_orders', 'ops_quick');
SELECT tgname, tgenabled, pg_get_triggerdef(t.oid)
  FROM pg_trigger t WHERE tgrelid = 'ops_orders'::regclass;
-- idempotent
SELECT workflows.start_on_insert('ops_orders', 'ops_quick');
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'ops_orders'::regclass;

-- a rolled-back insert starts nothing
BEGIN;
INSERT INTO ops_orders VALUES (1, 'book', 1);
SELECT count(*) FROM workflows.instances WHERE trigger->>'table' = 'public.ops_orders';
ROLLBACK;
SELECT count(*) FROM workflows.instances WHERE trigger->>'table' = 'public.ops_orders';
-- a committed one starts an instance with the row as params
INSERT INTO ops_orders VALUES (2, 'pen', 3);
SELECT id AS order_id FROM workflows.instances WHERE trigger->>'table' = 'public.ops_orders' \gset
SELECT (workflows.wait(:'order_id', '30 seconds'))->>'status' AS status;
SELECT workflow, trigger, params, output FROM workflows.instances WHERE id = :'order_id';
-- one instance per row
INSERT INTO ops_orders VALUES (3, 'ink', 1), (4, 'pad', 2);
SELECT params->>'item' AS item FROM workflows.instances
 WHERE trigger->>'table' = 'public.ops_orders' ORDER BY (params->>'id')::int;
-- the inserting role owns the instance, and must be allowed to run the workflow
GRANT INSERT ON ops_orders TO wf_ops_user;
SET ROLE wf_ops_user;
INSERT INTO ops_orders VALUES (5, 'cup', 1);
RESET ROLE;
SELECT owner FROM workflows.instances WHERE trigger->>'table' = 'public.ops_orders' AND params->>'id' = '5';
CREATE TABLE ops_private_rows (id int);
GRANT INSERT ON ops_private_rows TO wf_ops_user;
SELECT workflows.start_on_insert('ops_private_rows', 'ops_private');
SET ROLE wf_ops_user;
INSERT INTO ops_private_rows VALUES (1);
RESET ROLE;
SELECT count(*) FROM ops_private_rows;
-- only who may create triggers on the table may start workflows from it
SET ROLE wf_ops_user;
SELECT workflows.start_on_insert('ops_orders', 'ops_nap');
SELECT workflows.stop_on_insert('ops_orders', 'ops_quick');
CREATE TABLE ops_user_rows (id int);
SELECT workflows.start_on_insert('ops_user_rows', 'ops_quick');
INSERT INTO ops_user_rows VALUES (7);
SELECT owner, params FROM workflows.instances WHERE trigger->>'table' = 'public.ops_user_rows';
DROP TABLE ops_user_rows;
RESET ROLE;

-- a partitioned table: the trigger names the table and the partition
CREATE TABLE ops_events (id int, kind text) PARTITION BY LIST (kind);
CREATE TABLE ops_events_click PARTITION OF ops_events FOR VALUES IN ('click');
SELECT workflows.start_on_insert('ops_events', 'ops_quick');
INSERT INTO ops_events VALUES (1, 'click');
SELECT trigger, params FROM workflows.instances WHERE trigger->>'table' = 'public.ops_events';
SELECT workflows.stop_on_insert('ops_events', 'ops_quick');
DROP TABLE ops_events;

-- bad inputs
SELECT workflows.start_on_insert('ops_orders', 'no_such_workflow');
SELECT workflows.start_on_insert('no_such_table', 'ops_quick');
CREATE VIEW ops_orders_v AS SELECT * FROM ops_orders;
SELECT workflows.start_on_insert('ops_orders_v', 'ops_quick');
SELECT workflows.start_on_insert(NULL, 'ops_quick');
SELECT workflows.stop_on_insert('ops_orders', 'ops_nap');
SELECT workflows.stop_on_insert('ops_orders_v', 'ops_quick');
-- the trigger function is for triggers only
SELECT workflows._start_from_row();
CREATE TABLE ops_misused (id int);
CREATE TRIGGER misused AFTER INSERT ON ops_misused FOR EACH STATEMENT
    EXECUTE FUNCTION workflows._start_from_row('ops_quick');
INSERT INTO ops_misused VALUES (1);
DROP TABLE ops_misused;

-- trigger names: any workflow name, cut to fit an identifier
SELECT workflows._start_trigger_name('Ops Flow-2'),
       workflows._start_trigger_name(repeat('a', 47)),
       workflows._start_trigger_name(repeat('a', 48)),
       workflows._start_trigger_name(repeat('é', 30));
SELECT workflows.register(repeat('w', 60), 'ops_quick(jsonb)') IS NOT NULL AS registered;
SELECT workflows.register('Ops Flow-2', 'ops_quick(jsonb)') IS NOT NULL AS registered;
SELECT workflows.start_on_insert('ops_orders', repeat('w', 60));
SELECT workflows.start_on_insert('ops_orders', 'Ops Flow-2');
INSERT INTO ops_orders VALUES (6, 'mug', 1);
SELECT workflow FROM workflows.instances
 WHERE trigger->>'table' = 'public.ops_orders' AND params->>'id' = '6' ORDER BY workflow;
SELECT workflows.stop_on_insert('ops_orders', repeat('w', 60));
SELECT workflows.stop_on_insert('ops_orders', 'Ops Flow-2');
SELECT workflows.stop_on_insert('ops_orders', 'ops_quick');
SELECT workflows.stop_on_insert('ops_orders', 'ops_quick');
INSERT INTO ops_orders VALUES (8, 'tape', 1);
SELECT count(*) FROM workflows.instances WHERE trigger->>'table' = 'public.ops_orders';
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'ops_orders'::regclass;

--
-- Metrics
--
SELECT workflows.create('ops_flaky', '{}', 'ops-flaky-1');
SELECT workflows.create('ops_flaky', '{}', 'ops-flaky-2');
SELECT (workflows.wait('ops-flaky-1', '30 seconds'))->>'status' AS status;
SELECT (workflows.wait('ops-flaky-2', '30 seconds'))->>'status' AS status;
SELECT workflows.create('ops_nap', '{}', 'ops-nap-paused');
SELECT wait_until($$SELECT status = 'waiting' FROM workflows.instances WHERE id = 'ops-nap-paused'$$);
SELECT workflows.pause('ops-nap-paused');
SELECT wait_until($$SELECT count(*) = 0 FROM workflows.instances
    WHERE workflow LIKE 'ops%' AND status IN ('queued', 'running')$$);

-- sums over the hours: a test running across an hour has two rows
SELECT workflow, sum(created) AS created, sum(completed) AS completed, sum(errored) AS errored,
       sum(terminated) AS terminated, sum(unfinished) AS unfinished,
       bool_and(p50_seconds >= 0 AND p50_seconds <= p95_seconds AND p95_seconds <= p99_seconds
                AND p99_seconds < 60) AS sane_percentiles
  FROM workflows.metrics_hourly WHERE workflow LIKE 'ops%' GROUP BY workflow ORDER BY workflow;
SELECT bool_and(hour = date_trunc('hour', hour)) AS whole_hours
  FROM workflows.metrics_hourly WHERE workflow LIKE 'ops%';
SELECT workflow, sum(created) AS created, sum(completed) AS completed
  FROM workflows.metrics('1 day', now() - interval '1 hour')
 WHERE workflow LIKE 'ops%' GROUP BY workflow ORDER BY workflow;
SELECT count(*) FROM workflows.metrics(since => now() + interval '1 hour');
SELECT bool_and(bucket_start = date_bin('15 minutes', bucket_start, timestamptz '2000-01-01 00:00:00+00'))
  AS aligned FROM workflows.metrics('15 minutes');
SELECT count(*) FROM workflows.metrics('1 month');
SELECT count(*) FROM workflows.metrics('0 seconds');

SELECT workflow, step, runs, completed, failed, retrying, attempts, failures, failure_rate,
       p50_seconds >= 0 AND p50_seconds <= p95_seconds AS sane
  FROM workflows.step_metrics WHERE workflow = 'ops_flaky';

SELECT workflow, queued, running, waiting, paused, runnable, oldest_queued_seconds
  FROM workflows.backlog WHERE workflow LIKE 'ops%' ORDER BY workflow;
SELECT workflows.resume('ops-nap-paused');
SELECT runnable >= 0 AS has_runnable, oldest_runnable_seconds IS NULL OR oldest_runnable_seconds >= 0 AS age_ok
  FROM workflows.backlog WHERE workflow = 'ops_nap';

-- the views obey row-level security: other roles see nothing of ours
SET ROLE wf_ops_other;
SELECT (SELECT count(*) FROM workflows.metrics_hourly WHERE workflow LIKE 'ops%') AS hourly,
       (SELECT count(*) FROM workflows.step_metrics WHERE workflow LIKE 'ops%') AS steps,
       (SELECT count(*) FROM workflows.backlog WHERE workflow LIKE 'ops%') AS backlog,
       (SELECT count(*) FROM workflows.metrics() WHERE workflow LIKE 'ops%') AS metrics;
RESET ROLE;
SET ROLE wf_ops_user;
SELECT workflow, sum(created) AS created FROM workflows.metrics_hourly
 WHERE workflow LIKE 'ops%' GROUP BY workflow ORDER BY workflow;
RESET ROLE;
GRANT workflows_admin TO wf_ops_other;
SET ROLE wf_ops_other;
SELECT count(*) > 0 AS admin_sees FROM workflows.metrics_hourly WHERE workflow LIKE 'ops%';
RESET ROLE;
REVOKE workflows_admin FROM wf_ops_other;

-- clean up: nothing of ours keeps running
SELECT count(*) > 0 AS terminated FROM (
    SELECT workflows.terminate(id) FROM workflows.instances
     WHERE workflow LIKE 'ops%' AND status NOT IN ('complete', 'errored', 'terminated')) t;
DROP TABLE ops_orders CASCADE;
DROP TABLE ops_private_rows;
REVOKE CREATE ON SCHEMA public FROM wf_ops_user;

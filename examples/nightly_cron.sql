-- examples/nightly_cron.sql: a nightly report on a cron schedule.
--
-- workflows.schedule() makes a pg_cron job that starts an instance of the
-- workflow every night at 03:00 GMT (pg_cron 1.4, Debian 12's, reads
-- schedules in GMT, to the minute).  The script then runs the job once
-- right away, exactly as pg_cron will, shows the result, and removes the
-- schedule again.  Run it again as often as you like.
--
-- It needs pg_cron in this database: in postgresql.conf,
--     shared_preload_libraries = 'workflows,pg_cron'
--     cron.database_name = 'postgres'       (the database you run this in)
-- then a restart.  (tools/quickstart.sh sets the demo server up so.)
--
--   psql -h 127.0.0.1 -p 5499 -U postgres -f examples/nightly_cron.sql

\set ON_ERROR_STOP on
CREATE EXTENSION IF NOT EXISTS workflows;
CREATE EXTENSION IF NOT EXISTS pg_cron;

CREATE TABLE IF NOT EXISTS shop_orders (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    placed_at timestamptz NOT NULL,
    amount    numeric NOT NULL
);
INSERT INTO shop_orders (placed_at, amount)
SELECT now() - interval '1 day' * (g % 3) - interval '1 minute' * g, 10 + g % 7
  FROM generate_series(1, 30) g
 WHERE NOT EXISTS (SELECT 1 FROM shop_orders);

CREATE TABLE IF NOT EXISTS daily_reports (
    day      date PRIMARY KEY,
    orders   int NOT NULL,
    revenue  numeric NOT NULL,
    instance text NOT NULL
);

-- The report for the day before the instance was created.  The day is
-- computed in a step, so that a replay (or a retry the next morning)
-- reports on the same day.
CREATE OR REPLACE FUNCTION nightly_report(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    day jsonb;
    report jsonb;
BEGIN
    day := workflows.step('pick day', 'SELECT to_jsonb((now() - interval ''1 day'')::date)');
    report := workflows.step('aggregate',
        'INSERT INTO daily_reports AS r (day, orders, revenue, instance)
         SELECT $1::date, count(*), COALESCE(sum(amount), 0), $2
           FROM shop_orders WHERE placed_at::date = $1::date
         ON CONFLICT (day) DO UPDATE
            SET orders = EXCLUDED.orders, revenue = EXCLUDED.revenue, instance = EXCLUDED.instance
         RETURNING jsonb_build_object(''day'', r.day, ''orders'', r.orders, ''revenue'', r.revenue)',
        jsonb_build_array(day #>> '{}', event->>'instanceId'));
    PERFORM workflows.step('prune old orders',
        'DELETE FROM shop_orders WHERE placed_at < now() - make_interval(days => $1::int)',
        jsonb_build_array(COALESCE(event->'payload'->>'keep_days', '90')));
    RETURN report;
END
$$;

SELECT workflows.register('nightly-report', 'nightly_report(jsonb)') AS version;

-- every night at 03:00; skip a night if last night's run is still going
SELECT workflows.schedule('nightly-report', '0 3 * * *', 'nightly-report',
                          params => '{"keep_days": 30}', overlap => 'skip') AS jobid;

SELECT schedule_name, cron, workflow, params, overlap, active, owner
  FROM workflows.schedules;
-- it is an ordinary pg_cron job
SELECT jobid, jobname, schedule, command FROM cron.job WHERE jobname = 'workflows:nightly-report';

-- Do not wait for 03:00: run the job's command now, as pg_cron will
SELECT command FROM cron.job WHERE jobname = 'workflows:nightly-report' \gexec

SELECT last_instance AS id FROM workflows.schedules WHERE schedule_name = 'nightly-report' \gset
SELECT d->>'status' AS status, d->'trigger' AS trigger, d->'output' AS output
  FROM workflows.wait(:'id', '1 minute') d;
SELECT * FROM daily_reports ORDER BY day;
SELECT * FROM workflows.describe(:'id');

-- the schedule's last run and instance
SELECT schedule_name, last_run_at, last_run_status, last_instance, last_instance_status
  FROM workflows.schedules;

-- and gone again (its instances stay)
SELECT workflows.unschedule('nightly-report');
SELECT count(*) AS schedules_left FROM workflows.schedules;

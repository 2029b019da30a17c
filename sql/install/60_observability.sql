-- observability: describe(), metrics views

/*
 * Formatting helpers for describe().  They are used by invoker-rights
 * functions and only format their arguments, so they stay executable.
 */
CREATE FUNCTION workflows._fmt_interval(d interval)
    RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE WHEN x.neg THEN '-' ELSE '' END || CASE
        WHEN x.s < 1 THEN round(x.s * 1000)::bigint || 'ms'
        WHEN x.s < 60 THEN to_char(x.s, 'FM990.0') || 's'
        WHEN x.s < 3600 THEN floor(x.s / 60)::bigint || 'm '
                             || lpad(floor(mod(x.s, 60))::bigint::text, 2, '0') || 's'
        WHEN x.s < 86400 THEN floor(x.s / 3600)::bigint || 'h '
                              || lpad(floor(mod(x.s, 3600) / 60)::bigint::text, 2, '0') || 'm'
        ELSE floor(x.s / 86400)::bigint || 'd '
             || lpad(floor(mod(x.s, 86400) / 3600)::bigint::text, 2, '0') || 'h'
        END
      FROM (SELECT abs(extract(epoch FROM d)) AS s, extract(epoch FROM d) < 0 AS neg) x
     WHERE d IS NOT NULL
    $$;
GRANT EXECUTE ON FUNCTION workflows._fmt_interval(interval) TO PUBLIC;

-- JSON on one line, cut to at most n characters
CREATE FUNCTION workflows._fmt_json(j jsonb, n integer DEFAULT 200)
    RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE WHEN length(t) > n THEN left(t, n - 1) || '…' ELSE t END
      FROM (SELECT j::text AS t) x
    $$;
GRANT EXECUTE ON FUNCTION workflows._fmt_json(jsonb, integer) TO PUBLIC;

-- text on one line (newlines and tabs become spaces), cut to n characters
CREATE FUNCTION workflows._fmt_line(t text, n integer DEFAULT 200)
    RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE WHEN length(u) > n THEN left(u, n - 1) || '…' ELSE u END
      FROM (SELECT regexp_replace(t, '\s+', ' ', 'g') AS u) x
    $$;
GRANT EXECUTE ON FUNCTION workflows._fmt_line(text, integer) TO PUBLIC;

/*
 * describe(id): an instance for people, one line per row, in the shape of
 * the "describe" commands of hosted workflow products: a header (workflow,
 * id, version, status, trigger, times, last successful step, params,
 * output, error), then a table of the steps.  Readable in psql without \x:
 *
 *     SELECT * FROM workflows.describe('order-1234');
 */
CREATE FUNCTION workflows.describe(id text)
    RETURNS SETOF text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
DECLARE
    i workflows.instances;
    st workflows.steps;
    cur workflows.steps;
    ok workflows.steps;
    req workflows.requests;
    label_width constant integer := 11;
    state text;
    trg text;
    nsteps integer := 0;
    ncomplete integer := 0;
    nevents integer;
    npending integer;
    -- the steps table, by column
    c_n text[] := ARRAY['#'];
    c_key text[] := ARRAY['step'];
    c_type text[] := ARRAY['type'];
    c_start text[] := ARRAY['start'];
    c_end text[] := ARRAY['end'];
    c_dur text[] := ARRAY['duration'];
    c_att text[] := ARRAY['attempts'];
    c_status text[] := ARRAY['status'];
    w integer[];
    k integer;
    s_status text;
    s_end timestamptz;
    f_step text;
    f_since timestamptz;
    day date;
BEGIN
    SELECT * INTO i FROM workflows.instances WHERE instances.id = describe.id;
    IF NOT FOUND THEN
        PERFORM workflows._instance_unusable(describe.id);
    END IF;
    SELECT * INTO req FROM workflows.requests r WHERE r.instance_id = i.id;
    -- the step the instance waits in, if any
    SELECT * INTO cur FROM workflows.steps s
     WHERE s.instance_id = i.id AND s.status IN ('waiting', 'retrying')
     ORDER BY s.seq DESC LIMIT 1;
    SELECT * INTO ok FROM workflows.steps s
     WHERE s.instance_id = i.id AND s.status = 'complete'
     ORDER BY s.seq DESC LIMIT 1;
    day := (i.created_at)::date;

    state := CASE i.status
        WHEN 'complete' THEN '✓ complete'
        WHEN 'errored' THEN '✗ errored'
        WHEN 'terminated' THEN '■ terminated'
        WHEN 'paused' THEN '⏸ paused'
        WHEN 'waiting' THEN '◷ waiting'
        WHEN 'running' THEN '▶ running'
        WHEN 'queued' THEN '… queued'
        ELSE i.status END;
    IF i.status = 'waiting' AND cur.key IS NOT NULL THEN
        state := state || CASE
            WHEN cur.type = 'event' THEN format(': for event "%s" in step "%s", until %s',
                COALESCE(i.waiting_for, '?'), cur.key,
                to_char(cur.wake_at, 'YYYY-MM-DD HH24:MI:SS.MS TZ'))
            WHEN cur.type = 'sleep' THEN format(': sleeping in step "%s" until %s',
                cur.key, to_char(cur.wake_at, 'YYYY-MM-DD HH24:MI:SS.MS TZ'))
            WHEN cur.type = 'await' THEN format(': awaiting instances in step "%s"', cur.key)
                || CASE WHEN cur.wake_at < 'infinity' THEN ' until '
                        || to_char(cur.wake_at, 'YYYY-MM-DD HH24:MI:SS.MS TZ') ELSE '' END
            ELSE format(': step "%s" will retry at %s (attempt %s failed)',
                cur.key, to_char(cur.wake_at, 'YYYY-MM-DD HH24:MI:SS.MS TZ'), cur.attempts)
            END;
    END IF;
    -- flow control: why it is held back (sql/install/45_flow_control.sql)
    IF i.status IN ('queued', 'running', 'waiting') AND workflows._flow_reason(i.id) IS NOT NULL THEN
        state := state || ': ' || workflows._flow_reason(i.id);
    END IF;
    -- what an executor is doing right now (not committed yet)
    SELECT x.step, x.since INTO f_step, f_since FROM workflows._in_flight() x WHERE x.instance = i.id;
    IF FOUND AND i.status IN ('queued', 'running', 'waiting') THEN
        state := '▶ running' || CASE WHEN f_step IS NULL THEN ''
            ELSE format(': step "%s" since %s', f_step, to_char(f_since, 'YYYY-MM-DD HH24:MI:SS.MS TZ')) END;
    END IF;
    IF req.command IS NOT NULL AND i.status NOT IN ('complete', 'errored', 'terminated') THEN
        state := state || format(' (%s requested)', req.command);
    END IF;

    trg := CASE i.trigger->>'source'
        WHEN 'api' THEN 'api'
        WHEN 'cron' THEN format('cron, schedule "%s"', i.trigger->>'schedule')
        WHEN 'trigger' THEN format('%s on table %s', i.trigger->>'operation', i.trigger->>'table')
        ELSE NULL END;
    IF trg IS NULL OR (i.trigger - ARRAY['source', 'schedule', 'operation', 'table']) <> '{}' THEN
        trg := workflows._fmt_json(i.trigger);
    END IF;

    RETURN NEXT rpad('workflow', label_width) || i.workflow;
    RETURN NEXT rpad('id', label_width) || i.id;
    RETURN NEXT rpad('version', label_width) || i.version_id;
    IF i.run > 1 THEN
        RETURN NEXT rpad('run', label_width) || format('%s (restarted %s times)', i.run, i.run - 1);
    END IF;
    RETURN NEXT rpad('status', label_width) || state;
    RETURN NEXT rpad('trigger', label_width) || trg;
    RETURN NEXT rpad('queued', label_width) || to_char(i.created_at, 'YYYY-MM-DD HH24:MI:SS.MS TZ');
    RETURN NEXT rpad('started', label_width)
                || COALESCE(to_char(i.started_at, 'YYYY-MM-DD HH24:MI:SS.MS TZ'), '-');
    RETURN NEXT rpad('ended', label_width)
                || COALESCE(to_char(i.ended_at, 'YYYY-MM-DD HH24:MI:SS.MS TZ'), '-');
    RETURN NEXT rpad('duration', label_width) || CASE
        WHEN i.started_at IS NULL THEN '-'
        WHEN i.ended_at IS NOT NULL THEN workflows._fmt_interval(i.ended_at - i.started_at)
        ELSE workflows._fmt_interval(clock_timestamp() - i.started_at) || ' so far' END;
    RETURN NEXT rpad('last step', label_width) || CASE
        WHEN ok.key IS NULL THEN '-'
        ELSE format('%s (%s)', ok.key, to_char(COALESCE(ok.ended_at, ok.wake_at),
                                                  'YYYY-MM-DD HH24:MI:SS.MS TZ')) END;
    SELECT count(*), count(*) FILTER (WHERE e.consumed_by IS NULL) INTO nevents, npending
      FROM workflows.events e WHERE e.instance_id = i.id;
    IF nevents > 0 THEN
        RETURN NEXT rpad('events', label_width) || format('%s received, %s pending', nevents, npending);
    END IF;
    RETURN NEXT rpad('params', label_width) || workflows._fmt_json(i.params);
    RETURN NEXT rpad('output', label_width) || COALESCE(workflows._fmt_json(i.output), '-');
    IF i.error IS NULL THEN
        RETURN NEXT rpad('error', label_width) || '-';
    ELSE
        RETURN NEXT rpad('error', label_width)
                    || COALESCE(i.error->>'sqlstate' || ': ', '')
                    || workflows._fmt_line(COALESCE(i.error->>'message', i.error::text));
        IF i.error->>'detail' IS NOT NULL THEN
            RETURN NEXT rpad('  detail', label_width) || workflows._fmt_line(i.error->>'detail');
        END IF;
        IF i.error->>'hint' IS NOT NULL THEN
            RETURN NEXT rpad('  hint', label_width) || workflows._fmt_line(i.error->>'hint');
        END IF;
    END IF;

    -- lineage: the parent, and the tree of descendants (the first 100)
    IF i.parent IS NOT NULL THEN
        RETURN NEXT rpad('parent', label_width) || i.parent
                    || format(' (root %s, depth %s)', i.root, i.depth);
    END IF;
    FOR trg IN
        WITH RECURSIVE t(id, workflow, status, lvl, path) AS (
            SELECT c.id, c.workflow, c.status, 1, ARRAY[c.created_at::text || c.id]
              FROM workflows.instances c WHERE c.parent = i.id
            UNION ALL
            SELECT c.id, c.workflow, c.status, t.lvl + 1, t.path || (c.created_at::text || c.id)
              FROM workflows.instances c JOIN t ON c.parent = t.id
             WHERE t.lvl < 20)
        SELECT repeat('  ', t.lvl - 1) || '└ ' || t.id || '  ' || t.workflow || '  ' || t.status
          FROM t ORDER BY t.path LIMIT 100
    LOOP
        IF nsteps = 0 THEN
            RETURN NEXT 'children';
            nsteps := -1;
        END IF;
        RETURN NEXT '  ' || trg;
    END LOOP;
    nsteps := 0;

    -- the steps
    FOR st IN SELECT * FROM workflows.steps s WHERE s.instance_id = i.id
               ORDER BY s.seq < 0, s.seq, s.started_at LOOP
        nsteps := nsteps + 1;
        IF st.status = 'complete' THEN
            ncomplete := ncomplete + 1;
        END IF;
        -- a sleep ends at its wake time
        s_end := CASE WHEN st.type = 'sleep' AND st.status = 'complete' THEN st.wake_at
                      ELSE st.ended_at END;
        s_status := CASE
            WHEN st.status = 'complete' THEN '✓ complete'
            WHEN st.status = 'failed' THEN '✗ failed'
                 -- caught by the workflow, which went on and completed
                 || CASE WHEN i.status = 'complete' THEN ' (handled)' ELSE '' END || ': '
                 || COALESCE(st.error->>'sqlstate' || ': ', '')
                 || workflows._fmt_line(COALESCE(st.error->>'message', st.error::text), 80)
            WHEN st.status = 'retrying' THEN format('↻ retry at %s after: %s',
                 to_char(st.wake_at, CASE WHEN st.wake_at::date = day THEN 'HH24:MI:SS.MS'
                                          ELSE 'YYYY-MM-DD HH24:MI:SS.MS' END),
                 workflows._fmt_line(COALESCE(st.error->>'message', st.error::text), 60))
            WHEN st.type = 'sleep' THEN '◷ until ' || to_char(st.wake_at,
                 CASE WHEN st.wake_at::date = day THEN 'HH24:MI:SS.MS' ELSE 'YYYY-MM-DD HH24:MI:SS.MS' END)
            WHEN st.type = 'event' THEN '◷ event'
                 || COALESCE(' "' || CASE WHEN cur.key = st.key THEN i.waiting_for END || '"', '')
                 || ' until ' || to_char(st.wake_at,
                 CASE WHEN st.wake_at::date = day THEN 'HH24:MI:SS.MS' ELSE 'YYYY-MM-DD HH24:MI:SS.MS' END)
            ELSE st.status END;
        c_n := c_n || CASE WHEN st.seq < 0 THEN '-' ELSE (st.seq + 1)::text END;
        c_key := c_key || workflows._fmt_line(st.key, 40);
        c_type := c_type || CASE st.type WHEN 'event' THEN 'waitForEvent' ELSE st.type END;
        c_start := c_start || to_char(st.started_at,
            CASE WHEN st.started_at::date = day THEN 'HH24:MI:SS.MS' ELSE 'YYYY-MM-DD HH24:MI:SS.MS' END);
        c_end := c_end || COALESCE(to_char(s_end,
            CASE WHEN s_end::date = day THEN 'HH24:MI:SS.MS' ELSE 'YYYY-MM-DD HH24:MI:SS.MS' END), '-');
        c_dur := c_dur || COALESCE(workflows._fmt_interval(s_end - st.started_at), '-');
        c_att := c_att || CASE WHEN st.type = 'step' THEN st.attempts::text ELSE '-' END;
        c_status := c_status || s_status;
    END LOOP;

    RETURN NEXT '';
    IF nsteps = 0 THEN
        RETURN NEXT 'steps: none yet';
        RETURN;
    END IF;
    RETURN NEXT format('steps: %s (%s complete)', nsteps, ncomplete);
    w := ARRAY[(SELECT max(length(x)) FROM unnest(c_n) x),
               (SELECT max(length(x)) FROM unnest(c_key) x),
               (SELECT max(length(x)) FROM unnest(c_type) x),
               (SELECT max(length(x)) FROM unnest(c_start) x),
               (SELECT max(length(x)) FROM unnest(c_end) x),
               (SELECT max(length(x)) FROM unnest(c_dur) x),
               (SELECT max(length(x)) FROM unnest(c_att) x)];
    FOR k IN 1 .. nsteps + 1 LOOP
        RETURN NEXT lpad(c_n[k], w[1]) || '  ' || rpad(c_key[k], w[2]) || '  '
                    || rpad(c_type[k], w[3]) || '  ' || rpad(c_start[k], w[4]) || '  '
                    || rpad(c_end[k], w[5]) || '  ' || lpad(c_dur[k], w[6]) || '  '
                    || lpad(c_att[k], w[7]) || '  ' || c_status[k];
    END LOOP;
END
$$;
COMMENT ON FUNCTION workflows.describe(text) IS
    'an instance for people, one line per row: status, trigger, times, output, error, then a table of its steps';

/*
 * Metrics.  Every view runs with the querying role's rights
 * (security_invoker), so row-level security applies: a role counts its own
 * instances, members of workflows_admin count all.  Durations are in
 * seconds (double precision, to the microsecond), ready for scraping.
 */

-- per workflow and time bucket of created_at
CREATE FUNCTION workflows.metrics(bucket interval DEFAULT '1 hour',
                                  since timestamptz DEFAULT now() - interval '1 day')
    RETURNS TABLE (bucket_start timestamptz, workflow text, created bigint, completed bigint,
                   errored bigint, terminated bigint, unfinished bigint,
                   p50_seconds double precision, p95_seconds double precision,
                   p99_seconds double precision)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
    SELECT date_bin($1, i.created_at, timestamptz '2000-01-01 00:00:00+00') AS bucket_start,
           i.workflow,
           count(*),
           count(*) FILTER (WHERE i.status = 'complete'),
           count(*) FILTER (WHERE i.status = 'errored'),
           count(*) FILTER (WHERE i.status = 'terminated'),
           count(*) FILTER (WHERE i.status NOT IN ('complete', 'errored', 'terminated')),
           round((percentile_cont(0.50) WITHIN GROUP (ORDER BY extract(epoch FROM i.ended_at - i.started_at)))::numeric, 6)::float8,
           round((percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM i.ended_at - i.started_at)))::numeric, 6)::float8,
           round((percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM i.ended_at - i.started_at)))::numeric, 6)::float8
      FROM workflows.instances i
     WHERE i.created_at >= $2
     GROUP BY 1, 2
     ORDER BY 1, 2
    $$;
COMMENT ON FUNCTION workflows.metrics(interval, timestamptz) IS
    'instances created per workflow and time bucket since a time: counts by outcome, run time p50/p95/p99 in seconds';

CREATE VIEW workflows.metrics_hourly WITH (security_invoker = true) AS
    SELECT i.workflow,
           date_trunc('hour', i.created_at) AS hour,
           count(*) AS created,
           count(*) FILTER (WHERE i.status = 'complete') AS completed,
           count(*) FILTER (WHERE i.status = 'errored') AS errored,
           count(*) FILTER (WHERE i.status = 'terminated') AS terminated,
           count(*) FILTER (WHERE i.status NOT IN ('complete', 'errored', 'terminated')) AS unfinished,
           round((percentile_cont(0.50) WITHIN GROUP (ORDER BY extract(epoch FROM i.ended_at - i.started_at)))::numeric, 6)::float8 AS p50_seconds,
           round((percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM i.ended_at - i.started_at)))::numeric, 6)::float8 AS p95_seconds,
           round((percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM i.ended_at - i.started_at)))::numeric, 6)::float8 AS p99_seconds
      FROM workflows.instances i
     GROUP BY 1, 2;
COMMENT ON VIEW workflows.metrics_hourly IS
    'instances per workflow and hour of creation: counts by outcome, run time (start to end) p50/p95/p99 in seconds';

CREATE VIEW workflows.step_metrics WITH (security_invoker = true) AS
    WITH st AS (
        SELECT i.workflow, s.name,
               count(*) AS runs,
               count(*) FILTER (WHERE s.status = 'complete') AS completed,
               count(*) FILTER (WHERE s.status = 'failed') AS failed,
               count(*) FILTER (WHERE s.status = 'retrying') AS retrying
          FROM workflows.steps s JOIN workflows.instances i ON i.id = s.instance_id
         WHERE s.type = 'step'
         GROUP BY 1, 2),
    att AS (
        SELECT i.workflow, s.name,
               count(*) AS attempts,
               count(*) FILTER (WHERE NOT a.success) AS failures,
               round((percentile_cont(0.50) WITHIN GROUP (ORDER BY extract(epoch FROM a.ended_at - a.started_at)))::numeric, 6)::float8 AS p50_seconds,
               round((percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM a.ended_at - a.started_at)))::numeric, 6)::float8 AS p95_seconds
          FROM workflows.attempts a
          JOIN workflows.steps s ON s.instance_id = a.instance_id AND s.key = a.step_key
          JOIN workflows.instances i ON i.id = a.instance_id
         GROUP BY 1, 2)
    SELECT st.workflow, st.name AS step, st.runs, st.completed, st.failed, st.retrying,
           COALESCE(att.attempts, 0) AS attempts,
           COALESCE(att.failures, 0) AS failures,
           round(COALESCE(att.failures, 0)::numeric / NULLIF(att.attempts, 0), 4) AS failure_rate,
           att.p50_seconds, att.p95_seconds
      FROM st LEFT JOIN att ON att.workflow = st.workflow AND att.name = st.name;
COMMENT ON VIEW workflows.step_metrics IS
    'per workflow and step name: runs by status, attempts, failed attempts, failure rate, attempt duration p50/p95 in seconds';

CREATE VIEW workflows.backlog WITH (security_invoker = true) AS
    SELECT i.workflow,
           count(*) FILTER (WHERE i.status = 'queued' AND f.instance IS NULL) AS queued,
           count(*) FILTER (WHERE i.status = 'running' OR (f.instance IS NOT NULL AND i.status <> 'paused')) AS running,
           count(*) FILTER (WHERE i.status = 'waiting' AND f.instance IS NULL) AS waiting,
           count(*) FILTER (WHERE i.status = 'paused') AS paused,
           -- due and not held by an executor: waiting for one to take it
           count(*) FILTER (WHERE i.wake_at <= now() AND f.instance IS NULL) AS runnable,
           extract(epoch FROM now() - min(i.wake_at) FILTER (WHERE i.wake_at <= now() AND f.instance IS NULL))::float8
               AS oldest_runnable_seconds,
           extract(epoch FROM now() - min(i.created_at) FILTER (WHERE i.status = 'queued' AND f.instance IS NULL))::float8
               AS oldest_queued_seconds
      FROM workflows.instances i
      -- held by an executor right now: running, whatever was last committed
      LEFT JOIN workflows._in_flight() f ON f.instance = i.id
     WHERE i.status IN ('queued', 'running', 'waiting', 'paused')
     GROUP BY 1;
COMMENT ON VIEW workflows.backlog IS
    'unfinished instances per workflow: counts by status, how many are due to run, and how long the oldest due one has waited (seconds)';

GRANT SELECT ON workflows.metrics_hourly, workflows.step_metrics, workflows.backlog TO PUBLIC;


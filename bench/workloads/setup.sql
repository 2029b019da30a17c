-- bench/workloads/setup.sql -- objects the benchmark needs in database "bench".
-- Run once per fresh cluster by bench/run.sh (as the superuser "postgres").

CREATE EXTENSION IF NOT EXISTS workflows;

-- W1, W2, W6: n trivial steps in a loop (keys s, s#2, s#3, ...)
CREATE FUNCTION public.bench_steps(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    n int := COALESCE((event->'payload'->>'steps')::int, 1);
    r jsonb;
BEGIN
    FOR i IN 1..n LOOP
        r := workflows.step('s', 'SELECT 1');
    END LOOP;
    RETURN r;
END
$$;

-- W4: sleep until params.at, then one step
CREATE FUNCTION public.bench_sleeper(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM workflows.sleep_until('nap', (event->'payload'->>'at')::timestamptz);
    PERFORM workflows.step('after', 'SELECT 1');
    RETURN NULL;
END
$$;

-- W5: wait for an event "go", then one step
CREATE FUNCTION public.bench_waiter(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    e jsonb;
BEGIN
    e := workflows.wait_for_event('ev', 'go', '1 hour');
    PERFORM workflows.step('after', 'SELECT 1');
    RETURN NULL;
END
$$;

-- W7: n steps, each returning the stored payload of params.size bytes
CREATE FUNCTION public.bench_payload_steps(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    n int := (event->'payload'->>'steps')::int;
    sz int := (event->'payload'->>'size')::int;
    r jsonb;
BEGIN
    FOR i IN 1..n LOOP
        r := workflows.step('p', 'SELECT j FROM public.bench_payload WHERE n = $1',
                            jsonb_build_array(sz));
    END LOOP;
    RETURN jsonb_build_object('last_size', octet_length(r #>> '{}'));
END
$$;

SELECT workflows.register('bench_steps', 'public.bench_steps(jsonb)');
SELECT workflows.register('bench_sleeper', 'public.bench_sleeper(jsonb)');
SELECT workflows.register('bench_waiter', 'public.bench_waiter(jsonb)');
SELECT workflows.register('bench_payload_steps', 'public.bench_payload_steps(jsonb)');

-- W7 payloads: a JSON string of exactly n bytes of incompressible text
-- (base64 of random bytes), so neither TOAST compression nor WAL
-- compression can make the large ones look cheap.
CREATE TABLE public.bench_payload (n int PRIMARY KEY, j jsonb NOT NULL);
ALTER TABLE public.bench_payload ALTER COLUMN j SET STORAGE EXTERNAL;
INSERT INTO public.bench_payload
SELECT sz, to_jsonb(left(translate(encode(
           (SELECT string_agg(decode(md5(random()::text || g::text), 'hex'), ''::bytea)
              FROM generate_series(1, sz / 16 + 2) g),
           'base64'), E'\n', ''), sz))
  FROM unnest(ARRAY[1, 1024, 65536, 1048576]) sz;

-- the ceiling: pgbench inserting one row with a jsonb per transaction
CREATE TABLE public.bench_ceiling (id bigint GENERATED ALWAYS AS IDENTITY, v jsonb);

-- Wait (polling, server side) until no instance is queued, running or
-- waiting; ok = false on timeout.  A procedure that commits between looks:
-- a function would hold its statement's snapshot for the whole wait, and
-- with it the xmin horizon, so that no dead row version could be pruned
-- while the workload runs (the executors' index scans would then wade
-- through every old version of every instance).
CREATE PROCEDURE public.bench_wait_done(INOUT ok boolean, timeout_s float8,
                                        poll_s float8 DEFAULT 0.02)
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => timeout_s);
BEGIN
    LOOP
        IF NOT EXISTS (SELECT 1 FROM workflows.instances
                        WHERE status IN ('queued', 'running', 'waiting')) THEN
            ok := true;
            RETURN;
        END IF;
        IF clock_timestamp() > deadline THEN
            ok := false;
            RETURN;
        END IF;
        COMMIT;
        PERFORM pg_sleep(poll_s);
    END LOOP;
END
$$;

-- The same, until no instance is queued or running (all are waiting or final).
CREATE PROCEDURE public.bench_wait_parked(INOUT ok boolean, timeout_s float8,
                                          poll_s float8 DEFAULT 0.02)
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => timeout_s);
BEGIN
    LOOP
        IF NOT EXISTS (SELECT 1 FROM workflows.instances
                        WHERE status IN ('queued', 'running')) THEN
            ok := true;
            RETURN;
        END IF;
        IF clock_timestamp() > deadline THEN
            ok := false;
            RETURN;
        END IF;
        COMMIT;
        PERFORM pg_sleep(poll_s);
    END LOOP;
END
$$;

-- Percentiles of a set of milliseconds, as one row
CREATE FUNCTION public.bench_pct(ms float8[], OUT p50 float8, OUT p95 float8,
                                 OUT p99 float8, OUT pmax float8, OUT n int)
LANGUAGE sql IMMUTABLE AS $$
    SELECT percentile_cont(0.50) WITHIN GROUP (ORDER BY x),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY x),
           percentile_cont(0.99) WITHIN GROUP (ORDER BY x),
           max(x), count(*)::int
      FROM unnest(ms) x
$$;

-- W2: create -> wait, one at a time; client-side end-to-end times are kept
-- in memory and written once at the end (no extra commits in the loop)
CREATE TABLE public.bench_lat (id text PRIMARY KEY, e2e_ms float8 NOT NULL);

CREATE PROCEDURE public.bench_latency(n int, steps int)
LANGUAGE plpgsql AS $$
DECLARE
    iid text;
    t0 timestamptz;
    ids text[] := '{}';
    ms float8[] := '{}';
BEGIN
    FOR i IN 1..n LOOP
        t0 := clock_timestamp();
        iid := workflows.create('bench_steps', jsonb_build_object('steps', steps));
        COMMIT;
        PERFORM workflows.wait(iid, '1 minute');
        ms := ms || (extract(epoch FROM clock_timestamp() - t0) * 1000)::float8;
        ids := ids || iid;
        -- a fresh transaction for the next create, so that its created_at
        -- (now()) is when it is called
        COMMIT;
    END LOOP;
    INSERT INTO public.bench_lat SELECT * FROM unnest(ids, ms);
    COMMIT;
END
$$;

-- W5: send "go" to every waiting instance, one event per transaction,
-- gap_s apart (so that the executors are not saturated)
CREATE PROCEDURE public.bench_send_events(gap_s float8)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT id FROM workflows.instances WHERE status = 'waiting'
              ORDER BY created_at, id LOOP
        PERFORM workflows.send_event(r.id, 'go', '{"x": 1}');
        COMMIT;
        PERFORM pg_sleep(gap_s);
    END LOOP;
END
$$;

-- empty the engine's tables between runs
CREATE FUNCTION public.bench_reset() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- CASCADE: whatever else the engine keys by instance goes too; the
    -- attempts' table is attempt_log since 0.2 (bench/run.sh --ref may
    -- measure an older build)
    EXECUTE format('TRUNCATE workflows.instances, workflows.steps, %s, workflows.events, '
                   'public.bench_ceiling, public.bench_lat CASCADE',
                   COALESCE(to_regclass('workflows.attempt_log'), to_regclass('workflows.attempts')));
END
$$;

-- intervals between consecutive step starts of the same instance (ms):
-- the marginal cost of one step, commit included
CREATE FUNCTION public.bench_step_intervals() RETURNS float8[]
LANGUAGE sql AS $$
    SELECT array_agg(ms) FROM (
        SELECT extract(epoch FROM started_at - lag(started_at)
                   OVER (PARTITION BY instance_id ORDER BY seq)) * 1000 AS ms
          FROM workflows.steps WHERE type = 'step') s
     WHERE ms IS NOT NULL
$$;

-- Profile: sample the executors' wait events every every_s seconds until no
-- instance is queued or running (or the timeout), into bench_waits.  "CPU" =
-- no wait event reported (running, or in an uninstrumented system call).
-- Commits between samples (see bench_wait_done); the samples are kept in a
-- variable and written once at the end.
CREATE UNLOGGED TABLE public.bench_waits (w text);
CREATE PROCEDURE public.bench_sample_waits(timeout_s float8, every_s float8 DEFAULT 0.005)
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => timeout_s);
    started boolean := false;
    samples text[] := '{}';
BEGIN
    LOOP
        PERFORM pg_stat_clear_snapshot();
        IF EXISTS (SELECT 1 FROM workflows.instances WHERE status IN ('queued', 'running')) THEN
            started := true;
            samples := samples || ARRAY(
                SELECT COALESCE(wait_event_type || ':' || wait_event, 'CPU')
                  FROM pg_stat_activity
                 WHERE backend_type = 'workflows executor' AND datname = current_database());
        ELSIF started THEN
            EXIT;
        END IF;
        EXIT WHEN clock_timestamp() > deadline;
        COMMIT;
        PERFORM pg_sleep(every_s);
    END LOOP;
    TRUNCATE public.bench_waits;
    INSERT INTO public.bench_waits SELECT unnest(samples);
END
$$;

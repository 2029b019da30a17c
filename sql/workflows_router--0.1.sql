/*
 * workflows_router--0.1.sql
 *
 * The workflows API of a router database, for instances kept on shards.
 *
 * Shards are databases with the workflows extension and their own
 * executors; an instance, its steps, attempts and events live in one of
 * them.  The router database has no tables of the extension: every function
 * here is a PL/Proxy function (or a small wrapper around one) that sends the
 * call to the shard of the instance, chosen by a hash of its id, or to every
 * shard for calls that concern them all (register, list, metrics).
 *
 * The shards are the partitions of the PL/Proxy cluster "workflows_shards",
 * configured with SQL/MED (see README.md, "Running in production"):
 *
 *   CREATE SERVER workflows_shards FOREIGN DATA WRAPPER plproxy
 *       OPTIONS (p0 'host=10.0.0.1 dbname=wf_p0', p1 'host=10.0.0.1 dbname=wf_p1', ...);
 *   CREATE USER MAPPING FOR PUBLIC SERVER workflows_shards;
 *   GRANT USAGE ON FOREIGN SERVER workflows_shards TO PUBLIC;
 *
 * The number of partitions is a power of 2 and fixed for the life of the
 * cluster (an instance's partition is hashtext(id) & (partitions - 1)); a
 * partition is one database, and a server holds several of them, so
 * growing means moving partitions to new servers, never rehashing.
 *
 * search_path: every function pins it (SET search_path = pg_catalog,
 * pg_temp; PL/Proxy functions accept the clause like any other), and every
 * name in a body is schema-qualified anyway.  The SQL that PL/Proxy sends to
 * a shard (its SELECT statements below) is schema-qualified throughout,
 * because it runs under the shard session's own search_path.
 *
 * Calls through the router run on the shards in autocommit: each shard
 * commits its part when the call returns, whatever the router's
 * transaction does afterwards.
 */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION workflows_router" to load this file. \quit

/*
 * Partitions
 */

-- how many partitions the cluster has: the p<n> options of workflows_shards
CREATE FUNCTION workflows.partitions()
    RETURNS integer
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT count(*)::integer
      FROM pg_catalog.pg_foreign_server s,
           LATERAL pg_catalog.unnest(s.srvoptions) o
     WHERE s.srvname = 'workflows_shards' AND o OPERATOR(pg_catalog.~) '^p[0-9]+='
    $$;
COMMENT ON FUNCTION workflows.partitions() IS
    'the number of partitions of the cluster workflows_shards (a power of 2)';

-- the partition of an instance id: what PL/Proxy's RUN ON hashtext(id) picks
CREATE FUNCTION workflows.partition_of(id text)
    RETURNS integer
    LANGUAGE sql STABLE STRICT
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT pg_catalog.hashtext($1) OPERATOR(pg_catalog.&) (workflows.partitions() OPERATOR(pg_catalog.-) 1)
    $$;
COMMENT ON FUNCTION workflows.partition_of(text) IS
    'the partition (p<n> of workflows_shards) that holds the instance with this id';

/*
 * Registration: on every shard
 */
CREATE FUNCTION workflows._register(name text, fn text)
    RETURNS SETOF text
    LANGUAGE plproxy VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON ALL;
    SELECT workflows.register(name, fn::pg_catalog.regprocedure) AS _register;
$$;

CREATE FUNCTION workflows.register(name text, fn text)
    RETURNS text
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT pg_catalog.string_agg(DISTINCT v, ',' ORDER BY v) FROM workflows._register($1, $2) v
    $$;
COMMENT ON FUNCTION workflows.register(text, text) IS
    'register fn(jsonb) as the newest version of workflow "name" on every shard; returns the shards'' version ids';

/*
 * Instances: on the shard of their id
 */
CREATE FUNCTION workflows._create(workflow text, params jsonb, id text, trigger jsonb)
    RETURNS text
    LANGUAGE plproxy VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON pg_catalog.hashtext(id);
    SELECT workflows.create(workflow, params, id, trigger) AS _create;
$$;

-- the id is made here when the caller gives none: it decides the shard
CREATE FUNCTION workflows.create(workflow text, params jsonb DEFAULT '{}', id text DEFAULT NULL,
                                 trigger jsonb DEFAULT NULL)
    RETURNS text
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT workflows._create($1, $2, COALESCE($3, pg_catalog.gen_random_uuid()::text), $4)
    $$;
COMMENT ON FUNCTION workflows.create(text, jsonb, text, jsonb) IS
    'create an instance on the shard of its id (generated here when null); returns its id';

-- one call per shard, with the elements of the batch that belong to it
CREATE FUNCTION workflows._create_batch(workflow text, items jsonb[], ids text[], if_not_exists boolean)
    RETURNS SETOF text
    LANGUAGE plproxy VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    SPLIT items, ids;
    RUN ON pg_catalog.hashtext(ids);
    SELECT b AS _create_batch
      FROM workflows.create_batch(workflow, pg_catalog.to_jsonb(items), if_not_exists) b;
$$;

CREATE FUNCTION workflows.create_batch(workflow text, instances jsonb, if_not_exists boolean DEFAULT false)
    RETURNS SETOF text
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    items jsonb[] := '{}';
    ids text[] := '{}';
    e jsonb;
    k text;
    n integer := 0;
    x text;
BEGIN
    IF instances IS NULL THEN
        RAISE EXCEPTION 'instances must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF pg_catalog.jsonb_typeof(instances) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'instances must be a JSON array' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- the shape is checked here, so that a bad element fails the whole call
    -- before any shard has created anything, and the element number is right
    FOR e IN SELECT v FROM pg_catalog.jsonb_array_elements(instances) v
    LOOP
        n := n + 1;
        IF pg_catalog.jsonb_typeof(e) IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'invalid instance % in batch: not a JSON object', n
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A batch is a JSON array of objects such as {"id": "order-1", "params": {}}; id is optional.';
        END IF;
        FOR k IN SELECT pg_catalog.jsonb_object_keys(e)
        LOOP
            IF k NOT IN ('id', 'params') THEN
                RAISE EXCEPTION 'invalid instance % in batch: only the keys "id" and "params" are allowed', n
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'A batch is a JSON array of objects such as {"id": "order-1", "params": {}}; id is optional.';
            END IF;
        END LOOP;
        IF e->'id' IS NULL OR pg_catalog.jsonb_typeof(e->'id') = 'null' THEN
            x := pg_catalog.gen_random_uuid()::text;
            e := e OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('id', x);
        ELSIF pg_catalog.jsonb_typeof(e->'id') <> 'string' OR e->>'id' = ''
              OR pg_catalog.octet_length(e->>'id') > 200 THEN
            RAISE EXCEPTION 'invalid instance % in batch: "id" must be a string of 1 to 200 bytes', n
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A batch is a JSON array of objects such as {"id": "order-1", "params": {}}; id is optional.';
        ELSE
            x := e->>'id';
        END IF;
        items := items OPERATOR(pg_catalog.||) e;
        ids := ids OPERATOR(pg_catalog.||) x;
    END LOOP;
    IF n = 0 THEN
        RETURN;
    END IF;
    PERFORM pg_catalog.count(*) FROM workflows._create_batch(workflow, items, ids, if_not_exists);
    -- the ids in the order given (each shard answered for its own part)
    RETURN QUERY SELECT u.id FROM pg_catalog.unnest(ids) WITH ORDINALITY u(id, n) ORDER BY u.n;
END
$$;
COMMENT ON FUNCTION workflows.create_batch(text, jsonb, boolean) IS
    'create a batch of instances, split by shard: all or none on each shard; returns the ids in the order given';

CREATE FUNCTION workflows.status(id text)
    RETURNS jsonb
    LANGUAGE plproxy VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON pg_catalog.hashtext(id);
$$;
COMMENT ON FUNCTION workflows.status(text) IS
    'the instance as one JSON document, from its shard';

CREATE FUNCTION workflows.wait(id text, timeout interval DEFAULT '1 minute')
    RETURNS jsonb
    LANGUAGE plproxy VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON pg_catalog.hashtext(id);
$$;
COMMENT ON FUNCTION workflows.wait(text, interval) IS
    'wait on its shard until the instance ends or the timeout passes; returns its status document';

CREATE FUNCTION workflows.send_event(instance text, type text, payload jsonb DEFAULT NULL)
    RETURNS void
    LANGUAGE plproxy VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON pg_catalog.hashtext(instance);
$$;
COMMENT ON FUNCTION workflows.send_event(text, text, jsonb) IS
    'deliver an event to an instance on its shard';

CREATE FUNCTION workflows.describe(id text)
    RETURNS SETOF text
    LANGUAGE plproxy VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON pg_catalog.hashtext(id);
$$;
COMMENT ON FUNCTION workflows.describe(text) IS
    'the instance for people, one line per row, from its shard';

/*
 * Control commands: on the shard of the instance
 */
CREATE FUNCTION workflows.pause(id text)
    RETURNS text
    LANGUAGE plproxy VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON pg_catalog.hashtext(id);
$$;
COMMENT ON FUNCTION workflows.pause(text) IS
    'pause an instance on its shard; returns its new status';

CREATE FUNCTION workflows.resume(id text)
    RETURNS text
    LANGUAGE plproxy VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON pg_catalog.hashtext(id);
$$;
COMMENT ON FUNCTION workflows.resume(text) IS
    'resume a paused instance on its shard; returns its new status';

CREATE FUNCTION workflows.terminate(id text)
    RETURNS text
    LANGUAGE plproxy VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON pg_catalog.hashtext(id);
$$;
COMMENT ON FUNCTION workflows.terminate(text) IS
    'terminate an instance on its shard; returns its new status';

CREATE FUNCTION workflows.restart(id text, from_step text DEFAULT NULL)
    RETURNS text
    LANGUAGE plproxy VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON pg_catalog.hashtext(id);
$$;
COMMENT ON FUNCTION workflows.restart(text, text) IS
    'run an instance again on its shard, from the start or from a step; returns its new status';

CREATE FUNCTION workflows.set_version(id text, version text DEFAULT NULL)
    RETURNS text
    LANGUAGE plproxy VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON pg_catalog.hashtext(id);
$$;
COMMENT ON FUNCTION workflows.set_version(text, text) IS
    'move an instance to a version of its workflow on its shard (version ids are per shard; NULL: the newest)';

CREATE FUNCTION workflows.erase(id text)
    RETURNS void
    LANGUAGE plproxy VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON pg_catalog.hashtext(id);
$$;
COMMENT ON FUNCTION workflows.erase(text) IS
    'delete a finished instance and everything it has, on its shard';

/*
 * Flow control: a setting per workflow, on every shard (like register() and
 * set_retention()).  Limits are per shard: a concurrency limit of N allows N
 * running instances on each shard.
 */
CREATE FUNCTION workflows._set_flow_control(workflow text, config jsonb)
    RETURNS SETOF integer
    LANGUAGE plproxy VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON ALL;
    SELECT 1 AS _set_flow_control FROM workflows.set_flow_control(workflow, config);
$$;

CREATE FUNCTION workflows.set_flow_control(workflow text, config jsonb)
    RETURNS void
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT FROM (SELECT pg_catalog.count(*) FROM workflows._set_flow_control($1, $2)) c $$;
COMMENT ON FUNCTION workflows.set_flow_control(text, jsonb) IS
    'set (or with NULL clear) the flow control of a workflow, on every shard (limits apply per shard)';

/*
 * Secrets: a role's secret on every shard (HTTP steps run on the shard of
 * their instance)
 */
CREATE FUNCTION workflows._set_secret(name text, value text)
    RETURNS SETOF integer
    LANGUAGE plproxy VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON ALL;
    SELECT 1 AS _set_secret FROM workflows.set_secret(name, value);
$$;

CREATE FUNCTION workflows.set_secret(name text, value text)
    RETURNS void
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT FROM (SELECT pg_catalog.count(*) FROM workflows._set_secret($1, $2)) c $$;
COMMENT ON FUNCTION workflows.set_secret(text, text) IS
    'store a secret of the current role on every shard';

/*
 * Retention: on every shard
 */
CREATE FUNCTION workflows._purge(older_than interval)
    RETURNS SETOF bigint
    LANGUAGE plproxy VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON ALL;
    SELECT workflows.purge(older_than) AS _purge;
$$;

CREATE FUNCTION workflows.purge(older_than interval)
    RETURNS bigint
    LANGUAGE sql VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT COALESCE(pg_catalog.sum(n), 0)::bigint FROM workflows._purge($1) n $$;
COMMENT ON FUNCTION workflows.purge(interval) IS
    'delete finished instances older than older_than on every shard; returns how many';

CREATE FUNCTION workflows._set_retention(workflow text, retention interval)
    RETURNS SETOF integer
    LANGUAGE plproxy VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON ALL;
    SELECT 1 AS _set_retention FROM workflows.set_retention(workflow, retention);
$$;

CREATE FUNCTION workflows.set_retention(workflow text, retention interval)
    RETURNS void
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT FROM (SELECT pg_catalog.count(*) FROM workflows._set_retention($1, $2)) c $$;
COMMENT ON FUNCTION workflows.set_retention(text, interval) IS
    'how long finished instances of a workflow are kept, on every shard';

/*
 * Listing: every shard's page, merged
 */
-- the columns of workflows.instances on the shards (owner as its role name)
CREATE TYPE workflows.instances AS (
    id          text,
    workflow    text,
    version_id  text,
    owner       text,
    status      text,
    params      jsonb,
    output      jsonb,
    error       jsonb,
    trigger     jsonb,
    created_at  timestamptz,
    started_at  timestamptz,
    ended_at    timestamptz,
    wake_at     timestamptz,
    waiting_for text,
    revision    bigint,
    run         integer
);

-- where a page ends: the creation time of after_id, from its shard (42704 /
-- 42501 as in status(), which the shard raises)
CREATE FUNCTION workflows._created_at(id text)
    RETURNS timestamptz
    LANGUAGE plproxy VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON pg_catalog.hashtext(id);
    SELECT (workflows.status(id)->>'queued')::pg_catalog.timestamptz AS _created_at;
$$;

-- each shard's first page_size instances after (after_created, after_id):
-- the same rows as the shard's list(), row-level security included
CREATE FUNCTION workflows._list(workflow text, status text, created_after timestamptz,
                                created_before timestamptz, page_size integer,
                                after_created timestamptz, after_id text)
    RETURNS SETOF workflows.instances
    LANGUAGE plproxy VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON ALL;
    SELECT i.id, i.workflow, i.version_id, i.owner::pg_catalog.text AS owner, i.status, i.params,
           i.output, i.error, i.trigger, i.created_at, i.started_at, i.ended_at, i.wake_at,
           i.waiting_for, i.revision, i.run
      FROM workflows.instances i
     WHERE (workflow IS NULL OR i.workflow = workflow)
       AND (status IS NULL OR i.status = status)
       AND (created_after IS NULL OR i.created_at >= created_after)
       AND (created_before IS NULL OR i.created_at < created_before)
       AND (after_id IS NULL OR (i.created_at, i.id) > (after_created, after_id))
     ORDER BY i.created_at, i.id
     LIMIT page_size;
$$;

CREATE FUNCTION workflows.list(workflow text DEFAULT NULL, status text DEFAULT NULL,
                               created_after timestamptz DEFAULT NULL,
                               created_before timestamptz DEFAULT NULL,
                               page_size integer DEFAULT 50, after_id text DEFAULT NULL)
    RETURNS SETOF workflows.instances
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    after_created timestamptz;
BEGIN
    IF page_size IS NULL OR page_size < 1 OR page_size > 10000 THEN
        RAISE EXCEPTION 'page_size must be from 1 to 10000' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF list.status IS NOT NULL AND list.status NOT IN
           ('queued', 'running', 'paused', 'waiting', 'errored', 'terminated', 'complete') THEN
        RAISE EXCEPTION 'invalid instance status "%"', list.status
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use queued, running, paused, waiting, errored, terminated or complete.';
    END IF;
    IF after_id IS NOT NULL THEN
        after_created := workflows._created_at(after_id);
    END IF;
    RETURN QUERY
        SELECT l.*
          FROM workflows._list(list.workflow, list.status, created_after, created_before,
                               page_size, after_created, after_id) l
         ORDER BY l.created_at, l.id
         LIMIT page_size;
END
$$;
COMMENT ON FUNCTION workflows.list(text, text, timestamptz, timestamptz, integer, text) IS
    'list instances of every shard by workflow, status and creation time, oldest first; page with after_id => the last id of the previous page';

/*
 * Executors: every shard's
 */
CREATE FUNCTION workflows.executor_status(OUT datname text, OUT configured integer,
                                          OUT running integer, OUT failed_starts bigint,
                                          OUT problem text)
    RETURNS SETOF record
    LANGUAGE plproxy VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON ALL;
    SELECT e.datname, e.configured, e.running, e.failed_starts, e.problem
      FROM workflows.executor_status() e
     WHERE e.datname = pg_catalog.current_database();
$$;
COMMENT ON FUNCTION workflows.executor_status() IS
    'the executors of every shard database: configured, running, failed starts, why fewer run than configured';

CREATE FUNCTION workflows._executors(OUT pid integer, OUT datname text, OUT executor integer,
                                     OUT instance text, OUT step text, OUT since timestamptz)
    RETURNS SETOF record
    LANGUAGE plproxy VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON ALL;
    SELECT e.pid, e.datname::pg_catalog.text AS datname, e.executor, e.instance, e.step, e.since
      FROM workflows.executors e
     WHERE e.datname = pg_catalog.current_database();
$$;

CREATE VIEW workflows.executors AS
    SELECT * FROM workflows._executors();
COMMENT ON VIEW workflows.executors IS
    'the running executors of every shard database';

/*
 * Metrics: counts are summed over the shards; percentiles are computed here
 * from every shard's durations (exact, at the price of shipping one number
 * per ended instance or attempt in the window)
 */
CREATE FUNCTION workflows._metrics(bucket interval, since timestamptz,
                                   OUT bucket_start timestamptz, OUT workflow text,
                                   OUT created bigint, OUT completed bigint, OUT errored bigint,
                                   OUT terminated bigint, OUT unfinished bigint,
                                   OUT durations double precision[])
    RETURNS SETOF record
    LANGUAGE plproxy VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON ALL;
    SELECT pg_catalog.date_bin(bucket, i.created_at, '2000-01-01 00:00:00+00'::pg_catalog.timestamptz) AS bucket_start,
           i.workflow,
           pg_catalog.count(*) AS created,
           pg_catalog.count(*) FILTER (WHERE i.status = 'complete') AS completed,
           pg_catalog.count(*) FILTER (WHERE i.status = 'errored') AS errored,
           pg_catalog.count(*) FILTER (WHERE i.status = 'terminated') AS terminated,
           pg_catalog.count(*) FILTER (WHERE i.status NOT IN ('complete', 'errored', 'terminated')) AS unfinished,
           pg_catalog.array_agg(pg_catalog.date_part('epoch', i.ended_at OPERATOR(pg_catalog.-) i.started_at))
               FILTER (WHERE i.ended_at IS NOT NULL AND i.started_at IS NOT NULL) AS durations
      FROM workflows.instances i
     WHERE i.created_at >= since
     GROUP BY 1, 2;
$$;

-- merge per-shard rows (bucket, workflow, counts, durations)
CREATE FUNCTION workflows.metrics(bucket interval DEFAULT '1 hour',
                                  since timestamptz DEFAULT now() - interval '1 day')
    RETURNS TABLE (bucket_start timestamptz, workflow text, created bigint, completed bigint,
                   errored bigint, terminated bigint, unfinished bigint,
                   p50_seconds double precision, p95_seconds double precision,
                   p99_seconds double precision)
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    WITH p AS (SELECT * FROM workflows._metrics($1, $2)),
    c AS (SELECT p.bucket_start, p.workflow,
                 sum(p.created)::bigint AS created, sum(p.completed)::bigint AS completed,
                 sum(p.errored)::bigint AS errored, sum(p.terminated)::bigint AS terminated,
                 sum(p.unfinished)::bigint AS unfinished
            FROM p GROUP BY 1, 2),
    d AS (SELECT p.bucket_start, p.workflow,
                 round((percentile_cont(0.50) WITHIN GROUP (ORDER BY x))::numeric, 6)::float8 AS p50,
                 round((percentile_cont(0.95) WITHIN GROUP (ORDER BY x))::numeric, 6)::float8 AS p95,
                 round((percentile_cont(0.99) WITHIN GROUP (ORDER BY x))::numeric, 6)::float8 AS p99
            FROM p, unnest(p.durations) x GROUP BY 1, 2)
    SELECT c.bucket_start, c.workflow, c.created, c.completed, c.errored, c.terminated,
           c.unfinished, d.p50, d.p95, d.p99
      FROM c LEFT JOIN d ON d.bucket_start = c.bucket_start AND d.workflow = c.workflow
     ORDER BY 1, 2
    $$;
COMMENT ON FUNCTION workflows.metrics(interval, timestamptz) IS
    'instances created per workflow and time bucket since a time, over every shard: counts by outcome, run time p50/p95/p99 in seconds';

-- hours of the router session's time zone (tz), computed on the shards
CREATE FUNCTION workflows._metrics_hourly(tz text,
                                          OUT workflow text, OUT hour timestamptz,
                                          OUT created bigint, OUT completed bigint, OUT errored bigint,
                                          OUT terminated bigint, OUT unfinished bigint,
                                          OUT durations double precision[])
    RETURNS SETOF record
    LANGUAGE plproxy VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON ALL;
    SELECT i.workflow,
           pg_catalog.date_trunc('hour', i.created_at, tz) AS hour,
           pg_catalog.count(*) AS created,
           pg_catalog.count(*) FILTER (WHERE i.status = 'complete') AS completed,
           pg_catalog.count(*) FILTER (WHERE i.status = 'errored') AS errored,
           pg_catalog.count(*) FILTER (WHERE i.status = 'terminated') AS terminated,
           pg_catalog.count(*) FILTER (WHERE i.status NOT IN ('complete', 'errored', 'terminated')) AS unfinished,
           pg_catalog.array_agg(pg_catalog.date_part('epoch', i.ended_at OPERATOR(pg_catalog.-) i.started_at))
               FILTER (WHERE i.ended_at IS NOT NULL AND i.started_at IS NOT NULL) AS durations
      FROM workflows.instances i
     GROUP BY 1, 2;
$$;

CREATE VIEW workflows.metrics_hourly AS
    WITH p AS (SELECT * FROM workflows._metrics_hourly(pg_catalog.current_setting('TimeZone'))),
    c AS (SELECT p.workflow, p.hour,
                 pg_catalog.sum(p.created)::bigint AS created, pg_catalog.sum(p.completed)::bigint AS completed,
                 pg_catalog.sum(p.errored)::bigint AS errored, pg_catalog.sum(p.terminated)::bigint AS terminated,
                 pg_catalog.sum(p.unfinished)::bigint AS unfinished
            FROM p GROUP BY 1, 2),
    d AS (SELECT p.workflow, p.hour,
                 pg_catalog.round((pg_catalog.percentile_cont(0.50) WITHIN GROUP (ORDER BY x))::numeric, 6)::float8 AS p50,
                 pg_catalog.round((pg_catalog.percentile_cont(0.95) WITHIN GROUP (ORDER BY x))::numeric, 6)::float8 AS p95,
                 pg_catalog.round((pg_catalog.percentile_cont(0.99) WITHIN GROUP (ORDER BY x))::numeric, 6)::float8 AS p99
            FROM p, pg_catalog.unnest(p.durations) x GROUP BY 1, 2)
    SELECT c.workflow, c.hour, c.created, c.completed, c.errored, c.terminated, c.unfinished,
           d.p50 AS p50_seconds, d.p95 AS p95_seconds, d.p99 AS p99_seconds
      FROM c LEFT JOIN d ON d.workflow = c.workflow AND d.hour = c.hour;
COMMENT ON VIEW workflows.metrics_hourly IS
    'instances per workflow and hour of creation over every shard: counts by outcome, run time p50/p95/p99 in seconds';

CREATE FUNCTION workflows._step_metrics(OUT workflow text, OUT step text,
                                        OUT runs bigint, OUT completed bigint, OUT failed bigint,
                                        OUT retrying bigint, OUT attempts bigint, OUT failures bigint,
                                        OUT durations double precision[])
    RETURNS SETOF record
    LANGUAGE plproxy VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON ALL;
    -- (PL/Proxy sends only statements that begin with SELECT: no WITH)
    SELECT st.workflow, st.name AS step, st.runs, st.completed, st.failed, st.retrying,
           COALESCE(att.attempts, 0) AS attempts, COALESCE(att.failures, 0) AS failures,
           att.durations
      FROM (SELECT i.workflow, s.name,
                   pg_catalog.count(*) AS runs,
                   pg_catalog.count(*) FILTER (WHERE s.status = 'complete') AS completed,
                   pg_catalog.count(*) FILTER (WHERE s.status = 'failed') AS failed,
                   pg_catalog.count(*) FILTER (WHERE s.status = 'retrying') AS retrying
              FROM workflows.steps s JOIN workflows.instances i ON i.id = s.instance_id
             WHERE s.type = 'step'
             GROUP BY 1, 2) st
      LEFT JOIN (SELECT i.workflow, s.name,
                        pg_catalog.count(*) AS attempts,
                        pg_catalog.count(*) FILTER (WHERE NOT a.success) AS failures,
                        pg_catalog.array_agg(pg_catalog.date_part('epoch', a.ended_at OPERATOR(pg_catalog.-) a.started_at))
                            FILTER (WHERE a.ended_at IS NOT NULL) AS durations
                   FROM workflows.attempts a
                   JOIN workflows.steps s ON s.instance_id = a.instance_id AND s.key = a.step_key
                   JOIN workflows.instances i ON i.id = a.instance_id
                  GROUP BY 1, 2) att
        ON att.workflow = st.workflow AND att.name = st.name;
$$;

CREATE VIEW workflows.step_metrics AS
    WITH p AS (SELECT * FROM workflows._step_metrics()),
    c AS (SELECT p.workflow, p.step,
                 pg_catalog.sum(p.runs)::bigint AS runs, pg_catalog.sum(p.completed)::bigint AS completed,
                 pg_catalog.sum(p.failed)::bigint AS failed, pg_catalog.sum(p.retrying)::bigint AS retrying,
                 pg_catalog.sum(p.attempts)::bigint AS attempts, pg_catalog.sum(p.failures)::bigint AS failures
            FROM p GROUP BY 1, 2),
    d AS (SELECT p.workflow, p.step,
                 pg_catalog.round((pg_catalog.percentile_cont(0.50) WITHIN GROUP (ORDER BY x))::numeric, 6)::float8 AS p50,
                 pg_catalog.round((pg_catalog.percentile_cont(0.95) WITHIN GROUP (ORDER BY x))::numeric, 6)::float8 AS p95
            FROM p, pg_catalog.unnest(p.durations) x GROUP BY 1, 2)
    SELECT c.workflow, c.step, c.runs, c.completed, c.failed, c.retrying, c.attempts, c.failures,
           pg_catalog.round(c.failures::numeric OPERATOR(pg_catalog./) NULLIF(c.attempts, 0), 4) AS failure_rate,
           d.p50 AS p50_seconds, d.p95 AS p95_seconds
      FROM c LEFT JOIN d ON d.workflow = c.workflow AND d.step = c.step;
COMMENT ON VIEW workflows.step_metrics IS
    'per workflow and step name over every shard: runs by status, attempts, failed attempts, failure rate, attempt duration p50/p95 in seconds';

CREATE FUNCTION workflows._backlog(OUT workflow text, OUT queued bigint, OUT running bigint,
                                   OUT waiting bigint, OUT paused bigint, OUT runnable bigint,
                                   OUT oldest_runnable_seconds double precision,
                                   OUT oldest_queued_seconds double precision)
    RETURNS SETOF record
    LANGUAGE plproxy VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    CLUSTER 'workflows_shards';
    RUN ON ALL;
    SELECT b.workflow, b.queued, b.running, b.waiting, b.paused, b.runnable,
           b.oldest_runnable_seconds, b.oldest_queued_seconds
      FROM workflows.backlog b;
$$;

CREATE VIEW workflows.backlog AS
    SELECT b.workflow,
           pg_catalog.sum(b.queued)::bigint AS queued, pg_catalog.sum(b.running)::bigint AS running,
           pg_catalog.sum(b.waiting)::bigint AS waiting, pg_catalog.sum(b.paused)::bigint AS paused,
           pg_catalog.sum(b.runnable)::bigint AS runnable,
           pg_catalog.max(b.oldest_runnable_seconds) AS oldest_runnable_seconds,
           pg_catalog.max(b.oldest_queued_seconds) AS oldest_queued_seconds
      FROM workflows._backlog() b
     GROUP BY 1;
COMMENT ON VIEW workflows.backlog IS
    'unfinished instances per workflow over every shard: counts by status, due to run, oldest due and oldest queued (seconds)';

GRANT USAGE ON SCHEMA workflows TO PUBLIC;
GRANT SELECT ON workflows.executors, workflows.metrics_hourly, workflows.step_metrics,
                workflows.backlog TO PUBLIC;

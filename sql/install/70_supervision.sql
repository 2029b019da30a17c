-- supervision (executor status)

/*
 * executor_status(): per database with the extension, the executors
 * configured (workflows.max_workers) and running, the worker starts that
 * failed, and in plain words why fewer run than configured (NULL when all
 * run).  The current database always has a row.  Readable by everyone, like
 * pg_stat_activity: it shows database names and counts only.
 */
CREATE FUNCTION workflows.executor_status(OUT datname text, OUT configured integer,
                                          OUT running integer, OUT failed_starts bigint,
                                          OUT problem text)
    RETURNS SETOF record
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_executor_status';
COMMENT ON FUNCTION workflows.executor_status() IS
    'per database with the extension: executors configured and running, failed worker starts, and why fewer run than configured';
GRANT EXECUTE ON FUNCTION workflows.executor_status() TO PUBLIC;

/*
 * Ticks of an instance that failed outside its steps and workflow function
 * (the engine's own bookkeeping; src/executor.c, safe_tick()), counted per
 * instance whichever executor ran them, so that the instance is parked as
 * errored (WF009) after three failures in a row however many executors the
 * database has.  "In a row": the count starts again when the instance's
 * revision moved on since the last failure (it advanced, or was restarted).
 * Written by the executors only; rows go with their instance.  Not dumped:
 * a restored instance starts counting afresh.
 */
CREATE TABLE workflows.tick_failures (
    instance_id text PRIMARY KEY REFERENCES workflows.instances (id) ON DELETE CASCADE,
    failures    integer NOT NULL,
    -- the instance's revision after the last failure
    revision    bigint NOT NULL,
    failed_at   timestamptz NOT NULL
);
ALTER TABLE workflows.tick_failures ENABLE ROW LEVEL SECURITY;
CREATE POLICY tick_failures_visible ON workflows.tick_failures FOR SELECT
    USING (EXISTS (SELECT 1 FROM workflows.instances i WHERE i.id = instance_id));
REVOKE ALL ON workflows.tick_failures FROM PUBLIC;
GRANT SELECT ON workflows.tick_failures TO PUBLIC;

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

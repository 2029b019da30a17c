-- last: start this database's executors when CREATE EXTENSION commits

/*
 * Internal: tell the launcher that this database now has the extension, so
 * that its executors start without a server restart.  Takes effect at commit.
 */
CREATE FUNCTION workflows._launch()
    RETURNS void
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_launch';
REVOKE ALL ON FUNCTION workflows._launch() FROM PUBLIC;

SELECT workflows._launch();


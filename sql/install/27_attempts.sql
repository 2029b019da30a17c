/*
 * Every attempt of every step, in one view.  A step whose first attempt
 * succeeded (most steps) keeps that attempt in its own row: its start and
 * end are the step's, and steps.attempt_run says which run it belongs to.
 * Every other attempt -- failed, retried, interrupted, of an HTTP step (it
 * has a detail), or of a run a restart replaced -- has a row in
 * workflows.attempt_log.  One row less per step, with its index entry,
 * than an attempt row each: the executors' most frequent write.
 *
 * security_invoker: the caller's privileges and row-level security apply to
 * the tables underneath, as they did to the table this view replaces.
 */
ALTER TABLE workflows.steps ADD COLUMN attempt_run integer;
COMMENT ON COLUMN workflows.steps.attempt_run IS
    'the run of the step''s one attempt, when it succeeded the first time and has no row in workflows.attempt_log';

CREATE VIEW workflows.attempts WITH (security_invoker = true) AS
    SELECT a.instance_id, a.step_key, a.attempt, a.started_at, a.ended_at, a.success,
           a.error, a.run, a.detail
      FROM workflows.attempt_log a
    UNION ALL
    SELECT s.instance_id, s.key, 1, s.started_at, s.ended_at, true,
           NULL::jsonb, s.attempt_run, NULL::jsonb
      FROM workflows.steps s
     WHERE s.attempt_run IS NOT NULL;
COMMENT ON VIEW workflows.attempts IS
    'every attempt of every step: start, end, success, error, run, detail (what a step kind reported)';
GRANT SELECT ON workflows.attempts TO PUBLIC;

/*
 * The view is read-only.  INSTEAD OF triggers make a write to it a matter of
 * privileges, as a write to the table it replaces was: a role without them
 * gets "permission denied" (42501), and one with them an error, not a
 * silent write to nothing.
 */
CREATE FUNCTION workflows._attempts_read_only()
    RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, workflows, pg_temp
    AS $$
BEGIN
    RAISE EXCEPTION 'workflows.attempts is a view of attempts the extension records; it cannot be changed'
        USING ERRCODE = 'feature_not_supported';
END
$$;
REVOKE ALL ON FUNCTION workflows._attempts_read_only() FROM PUBLIC;
CREATE TRIGGER attempts_read_only INSTEAD OF INSERT OR UPDATE OR DELETE ON workflows.attempts
    FOR EACH ROW EXECUTE FUNCTION workflows._attempts_read_only();

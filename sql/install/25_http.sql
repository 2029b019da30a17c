-- step kinds outside the transaction: HTTP steps, secrets

/*
 * Members of workflows_http may make HTTP steps (a superuser or the
 * extension's owner grants it).  Cluster-wide, like workflows_admin.
 */
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'workflows_http') THEN
        CREATE ROLE workflows_http NOLOGIN;
    END IF;
END
$$;

-- what a step of a plugin kind (HTTP) asked for; secrets appear only by name
ALTER TABLE workflows.steps ADD COLUMN request jsonb;
-- the steps whose call is in flight (few): counted by step-level flow control
CREATE INDEX steps_calling ON workflows.steps (instance_id) WHERE status = 'calling';
-- what the kind reported about the attempt (HTTP: {"httpStatus": 200})
ALTER TABLE workflows.attempt_log ADD COLUMN detail jsonb;

/*
 * Secrets, per role: write-only (no grants; set_secret() and drop_secret()
 * write, only executors read a value, for the owner of the instance whose
 * step names it).  Dumped with the database, like the instances.
 */
CREATE TABLE workflows._secrets (
    owner       oid NOT NULL,
    name        text NOT NULL,
    value       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, name)
);
REVOKE ALL ON workflows._secrets FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('workflows._secrets', '');

CREATE VIEW workflows.secrets AS
    SELECT s.name, s.owner::regrole AS owner, s.created_at, s.updated_at
      FROM workflows._secrets s
     WHERE pg_catalog.pg_has_role(s.owner, 'USAGE');
COMMENT ON VIEW workflows.secrets IS
    'the names of the secrets of the roles you are a member of (never their values)';
GRANT SELECT ON workflows.secrets TO PUBLIC;

CREATE FUNCTION workflows.set_secret(name text, value text)
    RETURNS void
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_set_secret';
COMMENT ON FUNCTION workflows.set_secret(text, text) IS
    'store (or replace) a secret of the current role, for HTTP step headers such as {"Authorization": {"secret": "name"}}';

CREATE FUNCTION workflows.drop_secret(name text)
    RETURNS boolean
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_drop_secret';
COMMENT ON FUNCTION workflows.drop_secret(text) IS
    'delete a secret of the current role; false if it did not exist';

CREATE FUNCTION workflows.http(name text, request jsonb, config jsonb DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_http';
COMMENT ON FUNCTION workflows.http(text, jsonb, jsonb) IS
    'make an HTTP request as a durable step, outside any transaction; returns {status, headers, body}';

CREATE FUNCTION workflows.plugin_step(name text, kind text, request jsonb, config jsonb DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, workflows, pg_temp
    AS 'MODULE_PATHNAME', 'wf_plugin_step';
COMMENT ON FUNCTION workflows.plugin_step(text, text, jsonb, jsonb) IS
    'run a step of a kind a plugin registered (workflows_step_kind.h) as a durable step';

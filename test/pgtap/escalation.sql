--
-- Escalation: an ordinary role tries every known way to make code of its
-- own run with the executor's identity (the bootstrap superuser) -- code
-- that PostgreSQL runs after the step's callback returned: at the end of the
-- step's subtransaction, at the tick's commit, or in the executor's own
-- bookkeeping.  Each attempt must fail (the role stays an ordinary role,
-- nothing is written as another role), and each legitimate neighbour of a
-- vector must keep working, as the owner.
--
-- The trap: evil() records who runs it and, when that is a superuser, makes
-- the attacker a superuser.  Every vector below arranges for evil() to run
-- at some later point of the executor's transaction.
--
-- Not wrapped in a transaction: the executors only see committed rows.
--
\set QUIET 1
\set VERBOSITY terse
SET client_min_messages = warning;

SELECT plan(50);

DROP ROLE IF EXISTS wf_esc_mallory;
DROP ROLE IF EXISTS wf_esc_victim;
CREATE ROLE wf_esc_mallory;
-- a second ordinary role whose instances run on the same executors, in
-- between mallory's: nothing of mallory's may run as the victim either
CREATE ROLE wf_esc_victim;
GRANT CREATE ON SCHEMA public TO wf_esc_mallory, wf_esc_victim;
SELECT current_user AS su, current_database() AS db \gset

\ir wait_until.psql

-- who created the pinned copies of replaced workflow functions
CREATE TABLE ddl_log (who text, command text, object text);
GRANT INSERT ON ddl_log TO PUBLIC;
CREATE FUNCTION log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
        INSERT INTO public.ddl_log VALUES (current_user, r.command_tag, r.object_identity);
    END LOOP;
END $$;
CREATE EVENT TRIGGER wf_esc_ddl ON ddl_command_end WHEN TAG IN ('CREATE FUNCTION')
    EXECUTE FUNCTION log_ddl();

SET ROLE wf_esc_victim;
CREATE TABLE victim_log (n int, who text);
CREATE FUNCTION victim_flow(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM workflows.step('one', 'INSERT INTO public.victim_log VALUES (1, current_user)');
    RETURN workflows.step('two', 'INSERT INTO public.victim_log VALUES (2, current_user) RETURNING 2');
END $$;
SELECT workflows.register('victim', 'victim_flow(jsonb)') IS NOT NULL AS registered \gset
RESET ROLE;

------------------------------------------------------------------------------
-- mallory's tables, traps and workflow
------------------------------------------------------------------------------
SET ROLE wf_esc_mallory;

CREATE TABLE esc_log (vector text, who text, at timestamptz DEFAULT clock_timestamp());
GRANT INSERT ON esc_log TO PUBLIC;

CREATE FUNCTION escalate(vector text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.esc_log (vector, who) VALUES (vector, current_user);
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        EXECUTE 'ALTER ROLE wf_esc_mallory SUPERUSER';
    END IF;
END $$;
CREATE FUNCTION evil() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.escalate(TG_ARGV[0]);
    RETURN NULL;
END $$;
CREATE FUNCTION evil_value(vector text) RETURNS int LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM public.escalate(vector);
    RETURN 1;
END $$;

-- (1) a constraint trigger INITIALLY DEFERRED
CREATE TABLE t_deferred (v int);
CREATE CONSTRAINT TRIGGER trap_deferred AFTER INSERT ON t_deferred
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION evil('deferred trigger');

-- (2) INITIALLY IMMEDIATE, made deferred by SET CONSTRAINTS in the step
CREATE TABLE t_immediate (v int);
CREATE CONSTRAINT TRIGGER trap_immediate AFTER INSERT ON t_immediate
    DEFERRABLE INITIALLY IMMEDIATE FOR EACH ROW EXECUTE FUNCTION evil('set constraints deferred');

-- (3) a deferred foreign key whose ON DELETE CASCADE fires a deferred
--     trigger on the referencing table
CREATE TABLE t_parent (id int PRIMARY KEY);
CREATE TABLE t_child (parent int REFERENCES t_parent ON DELETE CASCADE
                                 DEFERRABLE INITIALLY DEFERRED);
CREATE CONSTRAINT TRIGGER trap_cascade AFTER DELETE ON t_child
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION evil('fk cascade');
INSERT INTO t_parent VALUES (1), (2);
INSERT INTO t_child VALUES (1), (2);

-- (3b) the same with ON DELETE SET NULL: the action's UPDATE of the
--      referencing table fires a deferred trigger there
CREATE TABLE t_parent2 (id int PRIMARY KEY);
CREATE TABLE t_child2 (parent int REFERENCES t_parent2 ON DELETE SET NULL
                                  DEFERRABLE INITIALLY DEFERRED);
CREATE CONSTRAINT TRIGGER trap_set_null AFTER UPDATE ON t_child2
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION evil('fk set null');
INSERT INTO t_parent2 VALUES (1), (2);
INSERT INTO t_child2 VALUES (1), (2);

-- (4) a deferred uniqueness check whose index expression runs evil
CREATE FUNCTION evil_key(v int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF v > 100 THEN PERFORM public.escalate('deferred unique index expression'); END IF;
    RETURN v;
END $$;
CREATE TABLE t_unique (v int, CONSTRAINT t_unique_v EXCLUDE USING btree ((public.evil_key(v)) WITH =)
                                  DEFERRABLE INITIALLY DEFERRED);

-- legitimate neighbours: a deferred foreign key checked at the end of the
-- step, an ordinary trigger, a temporary table used within one step
CREATE TABLE t_order (id int PRIMARY KEY);
CREATE TABLE t_line (order_id int REFERENCES t_order DEFERRABLE INITIALLY DEFERRED, n int);
CREATE TABLE t_audited (v int);
CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.esc_log (vector, who) VALUES ('ordinary trigger', current_user);
    RETURN NEW;
END $$;
CREATE TRIGGER audited AFTER INSERT ON t_audited FOR EACH ROW EXECUTE FUNCTION audit_row();
CREATE FUNCTION log_step(input jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.esc_log (vector, who) VALUES (input->>'vector', current_user);
    RETURN input;
END $$;

CREATE FUNCTION mallory_flow(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    p jsonb := event->'payload';
    r jsonb;
    refused text;
BEGIN
    CASE p->>'do'
    WHEN 'sql' THEN
        r := workflows.step('sql', p->>'sql', NULL, '{"retries": {"limit": 0}}');
        -- a second step, in the next transaction of the same executor
        IF p ? 'check' THEN
            RETURN workflows.step('check', p->>'check');
        END IF;
        RETURN r;
    WHEN 'between' THEN
        -- workflow code between steps queues the same things: each must be
        -- refused or discarded, never run by the executor
        BEGIN
            INSERT INTO public.t_deferred VALUES (1);
        EXCEPTION WHEN OTHERS THEN
            refused := SQLSTATE;
        END;
        BEGIN
            EXECUTE 'DECLARE between_cur CURSOR WITH HOLD FOR SELECT public.evil_value(''between cursor'')';
            refused := refused || ' no';
        EXCEPTION WHEN OTHERS THEN
            refused := refused || ' ' || SQLSTATE;
        END;
        RETURN workflows.step('after', 'SELECT $1::text', to_jsonb(refused));
    WHEN 'pinned' THEN
        PERFORM workflows.wait_for_event('go', 'go', '1 hour');
        RETURN to_jsonb('old code'::text);
    END CASE;
END $$;
SELECT workflows.register('mallory', 'mallory_flow(jsonb)') IS NOT NULL AS registered \gset

SELECT workflows.create('mallory', '{"do": "sql", "sql": "INSERT INTO t_deferred VALUES (1)", "check": "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"}', 'esc-deferred') IS NOT NULL AS c1 \gset
SELECT workflows.create('mallory', '{"do": "sql", "sql": "SET CONSTRAINTS ALL DEFERRED; INSERT INTO t_immediate VALUES (1)", "check": "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"}', 'esc-set-constraints') IS NOT NULL AS c2 \gset
SELECT workflows.create('mallory', '{"do": "sql", "sql": "DELETE FROM t_parent WHERE id = 1", "check": "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"}', 'esc-cascade') IS NOT NULL AS c3 \gset
SELECT workflows.create('mallory', '{"do": "sql", "sql": "INSERT INTO t_unique VALUES (101); DELETE FROM t_unique; INSERT INTO t_unique VALUES (101)", "check": "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"}', 'esc-unique') IS NOT NULL AS c4 \gset
SELECT workflows.create('mallory', '{"do": "sql", "sql": "DELETE FROM t_parent2 WHERE id = 1", "check": "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"}', 'esc-set-null') IS NOT NULL AS c3b \gset
SELECT workflows.create('mallory', '{"do": "sql", "sql": "DECLARE held CURSOR WITH HOLD FOR SELECT evil_value(''held cursor'') FROM generate_series(1, 3)", "check": "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"}', 'esc-cursor') IS NOT NULL AS c5 \gset
SELECT workflows.create('mallory', '{"do": "sql", "sql": "LISTEN wf_esc_channel"}', 'esc-listen') IS NOT NULL AS c6 \gset
SELECT workflows.create('mallory', '{"do": "between"}', 'esc-between') IS NOT NULL AS c7 \gset
-- neighbours
SELECT workflows.create('mallory', '{"do": "sql", "sql": "INSERT INTO t_line VALUES (7, 1); INSERT INTO t_order VALUES (7); SELECT count(*) FROM t_line"}', 'ok-deferred-fk') IS NOT NULL AS n1 \gset
SELECT workflows.create('mallory', '{"do": "sql", "sql": "INSERT INTO t_line VALUES (8, 1)"}', 'bad-deferred-fk') IS NOT NULL AS n2 \gset
SELECT workflows.create('mallory', '{"do": "sql", "sql": "INSERT INTO t_audited VALUES (1)"}', 'ok-trigger') IS NOT NULL AS n3 \gset
SELECT workflows.create('mallory', '{"do": "sql", "sql": "CREATE TEMP TABLE scratch (v int); INSERT INTO scratch VALUES (1), (2); SELECT sum(v) FROM scratch", "check": "SELECT to_regclass(''pg_temp.scratch'') IS NULL"}', 'ok-temp') IS NOT NULL AS n4 \gset
SELECT workflows.create('mallory', '{"do": "sql", "sql": "INSERT INTO t_deferred VALUES (2); SELECT 2"}', 'ok-deferred-trigger') IS NOT NULL AS n5 \gset
SELECT workflows.create('mallory', '{"do": "pinned"}', 'esc-pinned') IS NOT NULL AS c8 \gset
SET ROLE wf_esc_victim;
SELECT count(*) AS victims FROM workflows.create_batch('victim',
    (SELECT jsonb_agg(jsonb_build_object('id', 'victim-' || i)) FROM generate_series(1, 20) i)) \gset
RESET ROLE;

SELECT ok(wait_until($$SELECT count(*) = 13 FROM workflows.instances
                       WHERE id <> 'esc-pinned' AND id NOT LIKE 'victim-%'
                         AND status IN ('complete', 'errored')$$),
          'every attempt ran to a final status');
SELECT ok(wait_until($$SELECT status = 'waiting' FROM workflows.instances WHERE id = 'esc-pinned'$$),
          'the instance to be pinned waits for its event');

-- (5) the pinned copy of a replaced function: created by its owner
SET ROLE wf_esc_mallory;
CREATE OR REPLACE FUNCTION mallory_flow(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN to_jsonb('new code'::text);
END $$;
SELECT workflows.send_event('esc-pinned', 'go');
RESET ROLE;
SELECT ok(wait_until($$SELECT status = 'complete' FROM workflows.instances WHERE id = 'esc-pinned'$$),
          'the instance of the replaced function completed');

------------------------------------------------------------------------------
-- nobody became anybody else
------------------------------------------------------------------------------
SELECT is((SELECT rolsuper FROM pg_roles WHERE rolname = 'wf_esc_mallory'), false,
          'mallory is still an ordinary role');
SELECT is((SELECT count(*) FROM esc_log WHERE who <> 'wf_esc_mallory')::int, 0,
          'no trap ever ran as anybody but mallory');
SELECT ok(wait_until($$SELECT count(*) = 20 FROM workflows.instances WHERE id LIKE 'victim-%' AND status = 'complete'$$),
          'the victim''s instances, run in between, completed');
SELECT is((SELECT count(*) FILTER (WHERE who = 'wf_esc_victim') || '/' || count(*) FROM victim_log), '40/40',
          'every row the victim''s steps wrote was written as the victim');
SELECT is((SELECT rolsuper FROM pg_roles WHERE rolname = 'wf_esc_victim'), false,
          'the victim is still an ordinary role');

SELECT is((SELECT status FROM workflows.instances WHERE id = 'esc-deferred'), 'complete',
          'deferred constraint trigger: the step completed');
SELECT is((SELECT who FROM esc_log WHERE vector = 'deferred trigger' LIMIT 1), 'wf_esc_mallory',
          'deferred constraint trigger: fired as the owner');
SELECT ok(EXISTS (SELECT 1 FROM esc_log l, workflows.steps s
                  WHERE l.vector = 'deferred trigger' AND s.instance_id = 'esc-deferred' AND s.key = 'sql'
                    AND l.at BETWEEN s.started_at AND s.ended_at),
          'deferred constraint trigger: fired before the step ended');

SELECT is((SELECT status FROM workflows.instances WHERE id = 'esc-set-constraints'), 'complete',
          'SET CONSTRAINTS ALL DEFERRED in a step: the step completed');
SELECT is((SELECT who FROM esc_log WHERE vector = 'set constraints deferred'), 'wf_esc_mallory',
          'SET CONSTRAINTS ALL DEFERRED in a step: the trigger fired as the owner');

SELECT is((SELECT status FROM workflows.instances WHERE id = 'esc-cascade'), 'complete',
          'deferred foreign key cascade: the step completed');
SELECT is((SELECT who FROM esc_log WHERE vector = 'fk cascade'), 'wf_esc_mallory',
          'deferred foreign key cascade: the referencing table''s trigger fired as the owner');
SELECT is((SELECT count(*) FROM t_child WHERE parent = 1)::int, 0,
          'deferred foreign key cascade: the cascade happened');

SELECT is((SELECT status FROM workflows.instances WHERE id = 'esc-set-null'), 'complete',
          'deferred foreign key SET NULL: the step completed');
SELECT is((SELECT who FROM esc_log WHERE vector = 'fk set null'), 'wf_esc_mallory',
          'deferred foreign key SET NULL: the referencing table''s trigger fired as the owner');
SELECT is((SELECT count(*) FROM t_child2 WHERE parent IS NULL)::int, 1,
          'deferred foreign key SET NULL: the action happened');

SELECT is((SELECT status FROM workflows.instances WHERE id = 'esc-unique'), 'complete',
          'deferred exclusion recheck: the step completed');
SELECT ok((SELECT bool_and(who = 'wf_esc_mallory') FROM esc_log
           WHERE vector = 'deferred unique index expression'),
          'deferred exclusion recheck: the index expression ran as the owner');

SELECT is((SELECT status FROM workflows.instances WHERE id = 'esc-cursor'), 'complete',
          'cursor WITH HOLD: the step completed');
SELECT is((SELECT count(*) FROM esc_log WHERE vector = 'held cursor')::int, 0,
          'cursor WITH HOLD: closed at the end of the step, never materialized');

-- PostgreSQL refuses LISTEN in a background worker (which an executor is)
SELECT is((SELECT status FROM workflows.instances WHERE id = 'esc-listen'), 'errored',
          'LISTEN in a step: refused');
SELECT is((SELECT error->>'sqlstate' FROM workflows.steps WHERE instance_id = 'esc-listen' AND key = 'sql'),
          '0A000', 'LISTEN in a step: refused as not supported');

SELECT is((SELECT status FROM workflows.instances WHERE id = 'esc-between'), 'complete',
          'workflow code between steps: the instance completed');
SELECT is((SELECT output FROM workflows.instances WHERE id = 'esc-between'), '"42501 42501"'::jsonb,
          'workflow code between steps: a deferred trigger and a cursor WITH HOLD are refused (security-restricted)');

SELECT is((SELECT proowner::regrole::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = 'workflows_code'), 'wf_esc_mallory',
          'pinned copy: owned by the function''s owner');
SELECT is((SELECT who FROM ddl_log WHERE object LIKE 'workflows_code.%'), 'wf_esc_mallory',
          'pinned copy: created by the function''s owner, not by the executor');
SELECT is((SELECT output FROM workflows.instances WHERE id = 'esc-pinned'), '"old code"'::jsonb,
          'pinned copy: the instance finished with the code it started with');
SELECT is((SELECT count(*) FROM pg_namespace n, aclexplode(n.nspacl) a
           WHERE n.nspname = 'workflows_code' AND a.grantee = 'wf_esc_mallory'::regrole)::int, 0,
          'pinned copy: the owner keeps no privilege on workflows_code');

-- each vector, right after its own commit: the next step of the same
-- instance (the next transaction) found mallory still an ordinary role
SELECT is((SELECT output FROM workflows.instances WHERE id = v), 'false'::jsonb,
          v || ': mallory is still an ordinary role right after it')
  FROM unnest(ARRAY['esc-deferred', 'esc-set-constraints', 'esc-cascade', 'esc-set-null',
                    'esc-unique', 'esc-cursor']) v;

-- the legitimate neighbours
SELECT is((SELECT output FROM workflows.instances WHERE id = 'ok-deferred-trigger'), '2'::jsonb,
          'a deferred constraint trigger in step SQL works: the step completed with its result');
SELECT is((SELECT count(*) FILTER (WHERE who = 'wf_esc_mallory') || '/' || count(*) FROM esc_log
            WHERE vector = 'deferred trigger'), '2/2',
          '... its trigger fired for its row too, as the owner');
SELECT is((SELECT status FROM workflows.instances WHERE id = 'ok-deferred-fk'), 'complete',
          'a deferred foreign key satisfied by the step''s end works');
SELECT is((SELECT status FROM workflows.instances WHERE id = 'bad-deferred-fk'), 'errored',
          'a deferred foreign key violated by the step fails the step');
SELECT is((SELECT error->>'sqlstate' FROM workflows.steps WHERE instance_id = 'bad-deferred-fk' AND key = 'sql'),
          '23503', 'the violation is the step''s error, with its SQLSTATE');
SELECT is((SELECT count(*) FROM t_line WHERE order_id = 8)::int, 0,
          'the violating step''s writes were rolled back');
SELECT is((SELECT who FROM esc_log WHERE vector = 'ordinary trigger'), 'wf_esc_mallory',
          'an ordinary trigger fires as the owner');
SELECT is((SELECT output FROM workflows.steps WHERE instance_id = 'ok-temp' AND key = 'sql'), '3'::jsonb,
          'a temporary table used within one step works');
SELECT is((SELECT output FROM workflows.instances WHERE id = 'ok-temp'), 'true'::jsonb,
          'the temporary table is gone for the next step');

------------------------------------------------------------------------------
-- (6) the owner of the database attaches a search_path to it, naming a
-- schema of theirs first, with an operator = (text, text) that would be
-- picked by the executor's own queries
------------------------------------------------------------------------------
ALTER DATABASE :"db" OWNER TO wf_esc_mallory;
SET ROLE wf_esc_mallory;
CREATE SCHEMA mal;
CREATE FUNCTION mal.texteq(a text, b text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.escalate('operator');
    RETURN pg_catalog.texteq(a, b);
END $$;
CREATE OPERATOR mal.= (LEFTARG = text, RIGHTARG = text, FUNCTION = mal.texteq);
ALTER DATABASE :"db" SET search_path = mal, pg_catalog, public;
RESET ROLE;
-- new executors, which apply the database's settings when they connect
SELECT count(*) > 0 AS terminated FROM (
    SELECT pg_terminate_backend(pid) FROM pg_stat_activity
    WHERE application_name = 'workflows executor' AND datname = :'db') t \gset
CREATE FUNCTION executors_here() RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_stat_clear_snapshot();
    RETURN (SELECT count(*) FROM pg_stat_activity
            WHERE application_name = 'workflows executor' AND datname = current_database());
END $$;
SELECT ok(wait_until($$SELECT executors_here() > 0$$),
          'database search_path: executors are back');
SET ROLE wf_esc_mallory;
SELECT workflows.create('mallory', '{"do": "sql", "sql": "SELECT 1"}', 'esc-operator') IS NOT NULL AS c9 \gset
RESET ROLE;
SELECT ok(wait_until($$SELECT status = 'complete' FROM workflows.instances WHERE id = 'esc-operator'$$),
          'database search_path: the instance completed');
SELECT is((SELECT count(*) FROM esc_log WHERE vector = 'operator' AND who <> 'wf_esc_mallory')::int, 0,
          'database search_path: the executor never used the database owner''s operator');
SELECT is((SELECT rolsuper FROM pg_roles WHERE rolname = 'wf_esc_mallory'), false,
          'database search_path: mallory is still an ordinary role');
ALTER DATABASE :"db" RESET search_path;
ALTER DATABASE :"db" OWNER TO :"su";

DROP EVENT TRIGGER wf_esc_ddl;
SELECT * FROM finish();

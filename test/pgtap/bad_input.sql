--
-- The bad input table: every malformed or out-of-range input to the API is
-- refused with a clear error and its own SQLSTATE, and changes nothing.
--
-- Not wrapped in a transaction: instances are run by the background
-- executors, which only see committed rows.
--
\set QUIET 1
\set VERBOSITY terse
SET client_min_messages = warning;

SELECT plan(117);

-- Everything the extension stores, counted: "nothing changed" compares two
-- of these.
CREATE FUNCTION tap_counts() RETURNS text LANGUAGE sql AS $$
    SELECT format('workflows=%s versions=%s instances=%s steps=%s attempts=%s events=%s requests=%s',
                  (SELECT count(*) FROM workflows.workflows),
                  (SELECT count(*) FROM workflows.versions),
                  (SELECT count(*) FROM workflows.instances),
                  (SELECT count(*) FROM workflows.steps),
                  (SELECT count(*) FROM workflows.attempts),
                  (SELECT count(*) FROM workflows.events),
                  (SELECT count(*) FROM workflows.requests))
$$;

-- the effects of steps that must not happen
CREATE TABLE bad_effects (n int);

-- one workflow that does whatever its params ask for
CREATE FUNCTION bad_run(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    p jsonb := event->'payload';
BEGIN
    CASE p->>'do'
    WHEN 'noop' THEN
        RETURN '"ok"';
    WHEN 'wait' THEN
        RETURN workflows.wait_for_event('w', 'go', '1 hour');
    WHEN 'config' THEN
        RETURN workflows.step('cfg', 'INSERT INTO bad_effects VALUES (1) RETURNING n', NULL, p->'config');
    WHEN 'sleep' THEN
        PERFORM workflows.sleep('nap', (p->>'for')::interval);
        RETURN '"slept"';
    WHEN 'event' THEN
        RETURN workflows.wait_for_event('w', 'go', (p->>'timeout')::interval);
    WHEN 'nested' THEN
        RETURN workflows.step('outer', 'SELECT workflows.step(''inner'', ''SELECT 1'')', NULL,
                              '{"retries": {"limit": 0}}');
    WHEN 'big output' THEN
        -- retries allowed, but a limit error is final: one attempt only
        RETURN workflows.step('big', 'INSERT INTO bad_effects VALUES (2) RETURNING repeat(''x'', 5000)',
                              NULL, '{"retries": {"limit": 3, "delay": 0}}');
    WHEN 'big result' THEN
        RETURN to_jsonb(repeat('y', 5000));
    WHEN 'many steps' THEN
        FOR i IN 1..10 LOOP
            PERFORM workflows.step('s', 'SELECT $1::int', to_jsonb(i));
        END LOOP;
        RETURN '"all ten"';
    WHEN 'step name' THEN
        RETURN workflows.step(p->>'name', 'INSERT INTO bad_effects VALUES (4) RETURNING n');
    WHEN 'step fn' THEN
        RETURN workflows.step('fn', (p->>'fn')::regprocedure, '{}');
    WHEN 'step fn oid' THEN
        RETURN workflows.step('fn', (p->>'oid')::oid::regprocedure, '{}');
    WHEN 'step null sql' THEN
        RETURN workflows.step('null sql', NULL::text);
    WHEN 'event type' THEN
        RETURN workflows.wait_for_event('w', p->>'type', '1 minute');
    WHEN 'null sleep' THEN
        PERFORM workflows.sleep('nap', NULL);
        RETURN '"slept"';
    WHEN 'probe' THEN
        RETURN workflows.step('probe', 'SELECT jsonb_build_array(current_setting(''workflows.max_output_size''),
                                                                 current_setting(''workflows.max_steps''))');
    END CASE;
END
$$;
SELECT workflows.register('bad-run', 'bad_run(jsonb)') IS NOT NULL AS registered \gset

-- functions that cannot be workflows
CREATE FUNCTION no_args() RETURNS jsonb LANGUAGE sql AS $$ SELECT '1'::jsonb $$;
CREATE FUNCTION two_args(a jsonb, b jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT a';
CREATE FUNCTION text_arg(a text) RETURNS jsonb LANGUAGE sql AS 'SELECT NULL::jsonb';
CREATE FUNCTION many(a jsonb) RETURNS SETOF jsonb LANGUAGE sql AS 'SELECT a';
CREATE FUNCTION anyrec(a jsonb) RETURNS record LANGUAGE sql AS 'SELECT 1, 2';
CREATE PROCEDURE proc(a jsonb) LANGUAGE sql AS 'SELECT 1';

------------------------------------------------------------------------------
-- register()
------------------------------------------------------------------------------
SELECT tap_counts() AS before \gset
SELECT throws_ok($$SELECT workflows.register('bad', 'no_such_fn(jsonb)')$$,
    '42883', 'function "no_such_fn(jsonb)" does not exist',
    'register: a function that does not exist');
SELECT throws_ok($$SELECT workflows.register('bad', 0::oid::regprocedure)$$,
    '42883', 'function with OID 0 does not exist',
    'register: an OID that is no function');
SELECT throws_ok($$SELECT workflows.register('bad', NULL)$$,
    '22004', 'workflow function must not be null',
    'register: null function');
SELECT throws_ok($$SELECT workflows.register(NULL, 'bad_run(jsonb)')$$,
    '22004', 'workflow name must not be null',
    'register: null name');
SELECT throws_ok($$SELECT workflows.register('', 'bad_run(jsonb)')$$,
    '22023', 'workflow name must be 1 to 200 bytes long',
    'register: empty name');
SELECT throws_ok($$SELECT workflows.register(repeat('n', 201), 'bad_run(jsonb)')$$,
    '22023', 'workflow name must be 1 to 200 bytes long',
    'register: a name of 201 bytes');
SELECT throws_ok($$SELECT workflows.register(repeat('é', 101), 'bad_run(jsonb)')$$,
    '22023', 'workflow name must be 1 to 200 bytes long',
    'register: a name of 101 characters but 202 bytes');
SELECT throws_ok($$SELECT workflows.register('bad', 'no_args()')$$,
    '42P13', 'workflow function public.no_args() must take exactly one argument of type jsonb',
    'register: a function without arguments');
SELECT throws_ok($$SELECT workflows.register('bad', 'two_args(jsonb,jsonb)')$$,
    '42P13', 'workflow function public.two_args(jsonb,jsonb) must take exactly one argument of type jsonb',
    'register: a function of two arguments');
SELECT throws_ok($$SELECT workflows.register('bad', 'text_arg(text)')$$,
    '42P13', 'workflow function public.text_arg(text) must take exactly one argument of type jsonb',
    'register: a function of a text argument');
SELECT throws_ok($$SELECT workflows.register('bad', 'many(jsonb)')$$,
    '42P13', 'workflow function public.many(jsonb) must return a single value, such as jsonb',
    'register: a set-returning function');
SELECT throws_ok($$SELECT workflows.register('bad', 'anyrec(jsonb)')$$,
    '42P13', 'workflow function public.anyrec(jsonb) must return a single value, such as jsonb',
    'register: a function returning the pseudo-type record');
SELECT throws_ok($$SELECT workflows.register('bad', 'proc(jsonb)')$$,
    '42P13', 'public.proc(jsonb) is not a function',
    'register: a procedure');
SELECT throws_ok($$SELECT workflows.register('bad', 'sum(int4)')$$,
    '42P13', 'sum(integer) is not a function',
    'register: an aggregate');
SELECT is(tap_counts(), :'before', 'register: refused registrations changed nothing');
SELECT is((SELECT count(*) FROM workflows.workflows WHERE name <> 'bad-run'), 0::bigint,
    'register: no workflow but bad-run exists');

------------------------------------------------------------------------------
-- create()
------------------------------------------------------------------------------
SELECT tap_counts() AS before \gset
SELECT throws_ok($$SELECT workflows.create('no-such-workflow')$$,
    '42704', 'workflow "no-such-workflow" does not exist',
    'create: unknown workflow');
SELECT throws_ok($$SELECT workflows.create(NULL)$$,
    '22004', 'workflow name must not be null',
    'create: null workflow');
SELECT throws_ok($$SELECT workflows.create('bad-run', NULL)$$,
    '22004', 'instance params must not be null',
    'create: null params');
SELECT throws_ok($$SELECT workflows.create('bad-run', '{"do": "noop"}', '')$$,
    '22023', 'instance id must be 1 to 200 bytes long',
    'create: empty id');
SELECT throws_ok($$SELECT workflows.create('bad-run', '{"do": "noop"}', repeat('i', 201))$$,
    '22023', 'instance id must be 1 to 200 bytes long',
    'create: an id of 201 bytes');
SELECT throws_ok($$SELECT workflows.create('bad-run', '{"do": "noop"}', repeat('é', 101))$$,
    '22023', 'instance id must be 1 to 200 bytes long',
    'create: an id of 101 characters but 202 bytes');
SELECT throws_ok($$SELECT workflows.create('bad-run', '{"do": "noop"}', NULL, '{"src": "api"}')$$,
    '22023', 'trigger must be a JSON object with a "source" string',
    'create: a trigger without "source"');
SELECT throws_ok($$SELECT workflows.create('bad-run', '{"do": "noop"}', NULL, '"api"')$$,
    '22023', 'trigger must be a JSON object with a "source" string',
    'create: a trigger that is not an object');
SELECT throws_ok($$SELECT workflows.create('bad-run', '{"do": "noop"}', NULL,
                                           jsonb_build_object('source', repeat('t', 5000)))$$,
    'WF007', NULL,
    'create: a trigger of more than 4096 bytes');
SET workflows.max_payload_size = 1024;
SELECT throws_ok($$SELECT workflows.create('bad-run', jsonb_build_object('do', 'noop', 'pad', repeat('p', 2000)))$$,
    'WF007', NULL,
    'create: params larger than workflows.max_payload_size');
SELECT throws_like($$SELECT workflows.create('bad-run', jsonb_build_object('do', 'noop', 'pad', repeat('p', 2000)))$$,
    'instance params is % bytes, more than workflows.max_payload_size (1024)',
    'create: the error says how large the params are and what the limit is');
SELECT is(tap_counts(), :'before', 'create: refused creations changed nothing');
-- the limits are inclusive of what fits: a 200-byte id and small params are fine
SELECT lives_ok($$SELECT workflows.create('bad-run', '{"do": "noop"}', repeat('é', 100))$$,
    'create: an id of exactly 200 bytes is accepted');
RESET workflows.max_payload_size;
SELECT lives_ok($$SELECT workflows.create('bad-run', jsonb_build_object('do', 'noop', 'pad', repeat('p', 2000)), 'big-params-ok')$$,
    'create: the same params are accepted under the default limit');
SELECT is(workflows.wait(repeat('é', 100), '30 seconds')->>'status', 'complete',
    'create: the instance with a 200-byte id runs');

-- an id that exists already
SELECT workflows.create('bad-run', '{"do": "noop"}', 'done-1') AS id \gset
SELECT is(workflows.wait('done-1', '30 seconds')->>'status', 'complete', 'done-1 completes');
SELECT tap_counts() AS before \gset
SELECT throws_ok($$SELECT workflows.create('bad-run', '{"do": "wait"}', 'done-1')$$,
    '23505', 'workflow instance "done-1" already exists',
    'create: an id that exists');
SELECT is(tap_counts(), :'before', 'create: a duplicate id changed nothing');
SELECT is((SELECT params FROM workflows.instances WHERE id = 'done-1'), '{"do": "noop"}'::jsonb,
    'create: the existing instance keeps its params');

------------------------------------------------------------------------------
-- create_batch()
------------------------------------------------------------------------------
SELECT tap_counts() AS before \gset
SELECT throws_ok($$SELECT * FROM workflows.create_batch('no-such-workflow', '[{"id": "nb-1"}]')$$,
    '42704', 'workflow "no-such-workflow" does not exist',
    'create_batch: unknown workflow');
SELECT throws_ok($$SELECT * FROM workflows.create_batch(NULL, '[{"id": "nb-1"}]')$$,
    '22004', 'workflow name must not be null',
    'create_batch: null workflow');
SELECT throws_ok($$SELECT * FROM workflows.create_batch('bad-run', NULL)$$,
    '22004', 'instances must not be null',
    'create_batch: null instances');
SELECT throws_ok($$SELECT * FROM workflows.create_batch('bad-run', '{"id": "nb-1"}')$$,
    '22023', 'instances must be a JSON array',
    'create_batch: an object instead of an array');
SELECT throws_ok($$SELECT * FROM workflows.create_batch('bad-run', '"nb-1"')$$,
    '22023', 'instances must be a JSON array',
    'create_batch: a scalar instead of an array');
SELECT throws_ok($$SELECT * FROM workflows.create_batch('bad-run', '[{"id": "nb-1"}, 7]')$$,
    '22023', 'invalid instance 2 in batch: not a JSON object',
    'create_batch: an element that is not an object');
SELECT throws_ok($$SELECT * FROM workflows.create_batch('bad-run', '[{"id": "nb-1", "param": {}}]')$$,
    '22023', 'invalid instance 1 in batch: only the keys "id", "params" and "options" are allowed',
    'create_batch: an unknown key');
SELECT throws_ok($$SELECT * FROM workflows.create_batch('bad-run', '[{"id": 1}]')$$,
    '22023', 'invalid instance 1 in batch: "id" must be a string of 1 to 200 bytes',
    'create_batch: a numeric id');
SELECT throws_ok($$SELECT * FROM workflows.create_batch('bad-run', '[{"id": ""}]')$$,
    '22023', 'invalid instance 1 in batch: "id" must be a string of 1 to 200 bytes',
    'create_batch: an empty id');
SELECT throws_ok($$SELECT * FROM workflows.create_batch('bad-run', jsonb_build_array(jsonb_build_object('id', repeat('i', 201))))$$,
    '22023', 'invalid instance 1 in batch: "id" must be a string of 1 to 200 bytes',
    'create_batch: an id of 201 bytes');
SELECT throws_ok($$SELECT * FROM workflows.create_batch('bad-run', '[{"id": "nb-1"}, {"id": "nb-2"}, {"id": "nb-1"}]')$$,
    '23505', 'instance id "nb-1" appears twice in the batch',
    'create_batch: an id given twice');
SELECT throws_ok($$SELECT * FROM workflows.create_batch('bad-run', '[{"id": "nb-1"}, {"id": "done-1"}, {"id": "nb-2"}]')$$,
    '23505', 'workflow instance "done-1" already exists',
    'create_batch: an id that exists: all or nothing');
SET workflows.max_payload_size = 1024;
SELECT throws_ok($$SELECT * FROM workflows.create_batch('bad-run',
                       jsonb_build_array(jsonb_build_object('id', 'nb-1'),
                                         jsonb_build_object('id', 'nb-2', 'params', jsonb_build_object('pad', repeat('p', 2000)))))$$,
    'WF007', NULL,
    'create_batch: params larger than workflows.max_payload_size');
RESET workflows.max_payload_size;
SELECT is(tap_counts(), :'before', 'create_batch: refused batches changed nothing');
SELECT is((SELECT count(*) FROM workflows.instances WHERE id IN ('nb-1', 'nb-2')), 0::bigint,
    'create_batch: none of the valid ids of a refused batch was created');

------------------------------------------------------------------------------
-- commands on unknown ids: 42704 (an instance one may not see is 42501: see ownership.sql)
------------------------------------------------------------------------------
SELECT tap_counts() AS before \gset
SELECT throws_ok($$SELECT workflows.status('no-such-id')$$,
    '42704', 'workflow instance "no-such-id" does not exist', 'status: unknown id');
SELECT throws_ok($$SELECT workflows.wait('no-such-id', '1 second')$$,
    '42704', 'workflow instance "no-such-id" does not exist', 'wait: unknown id');
SELECT throws_ok($$SELECT workflows.send_event('no-such-id', 'go', '{}')$$,
    '42704', 'workflow instance "no-such-id" does not exist', 'send_event: unknown id');
SELECT throws_ok($$SELECT workflows.pause('no-such-id')$$,
    '42704', 'workflow instance "no-such-id" does not exist', 'pause: unknown id');
SELECT throws_ok($$SELECT workflows.resume('no-such-id')$$,
    '42704', 'workflow instance "no-such-id" does not exist', 'resume: unknown id');
SELECT throws_ok($$SELECT workflows.terminate('no-such-id')$$,
    '42704', 'workflow instance "no-such-id" does not exist', 'terminate: unknown id');
SELECT throws_ok($$SELECT workflows.restart('no-such-id')$$,
    '42704', 'workflow instance "no-such-id" does not exist', 'restart: unknown id');
SELECT throws_ok($$SELECT workflows.restart('done-1', 'no-such-step')$$,
    '42704', 'workflow instance "done-1" has no step "no-such-step"', 'restart: unknown step');
SELECT throws_ok($$SELECT workflows.wait(NULL, '1 second')$$,
    '22004', 'instance id must not be null', 'wait: null id');
SELECT throws_ok($$SELECT workflows.wait('done-1', NULL)$$,
    '22004', 'wait timeout must not be null', 'wait: null timeout');
SELECT throws_ok($$SELECT workflows.restart(NULL)$$,
    '22004', 'instance id must not be null', 'restart: null id');
SELECT is(workflows.pause(NULL), NULL, 'pause: null id is null (strict)');
SELECT is(tap_counts(), :'before', 'commands on unknown ids changed nothing');

-- wait() needs to see other transactions commit
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT throws_ok($$SELECT workflows.wait('done-1', '1 second')$$,
    '25001', 'workflows.wait() cannot run in a REPEATABLE READ or SERIALIZABLE transaction',
    'wait: refused in a REPEATABLE READ transaction');
COMMIT;

------------------------------------------------------------------------------
-- send_event()
------------------------------------------------------------------------------
SELECT workflows.create('bad-run', '{"do": "wait"}', 'waiting-1') AS id \gset
\ir wait_until.psql
SELECT ok(wait_until($$SELECT waiting_for = 'go' FROM workflows.instances WHERE id = 'waiting-1'$$),
    'waiting-1 waits for an event');
SELECT tap_counts() AS before \gset
SET workflows.max_payload_size = 1024;
SELECT throws_ok($$SELECT workflows.send_event('waiting-1', 'go', jsonb_build_object('pad', repeat('p', 2000)))$$,
    'WF007', NULL, 'send_event: a payload larger than workflows.max_payload_size');
SELECT throws_like($$SELECT workflows.send_event('waiting-1', 'go', jsonb_build_object('pad', repeat('p', 2000)))$$,
    'event payload is % bytes, more than workflows.max_payload_size (1024)',
    'send_event: the error says how large the payload is and what the limit is');
RESET workflows.max_payload_size;
SELECT throws_ok($$SELECT workflows.send_event('waiting-1', '', '{}')$$,
    '22023', 'event type must be 1 to 200 bytes long', 'send_event: empty type');
SELECT throws_ok($$SELECT workflows.send_event('waiting-1', repeat('t', 201), '{}')$$,
    '22023', 'event type must be 1 to 200 bytes long', 'send_event: a type of 201 bytes');
SELECT throws_ok($$SELECT workflows.send_event('waiting-1', NULL, '{}')$$,
    '22004', 'event type must not be null', 'send_event: null type');
SELECT throws_ok($$SELECT workflows.send_event(NULL, 'go', '{}')$$,
    '22004', 'instance id must not be null', 'send_event: null instance');
SELECT throws_ok($$SELECT workflows.send_event('done-1', 'go', '{}')$$,
    'WF006', 'cannot send an event to workflow instance "done-1": it is complete',
    'send_event: to a complete instance');
SELECT is(tap_counts(), :'before', 'send_event: refused events changed nothing');
SELECT is(workflows.status('waiting-1')->>'status', 'waiting', 'send_event: waiting-1 still waits');

------------------------------------------------------------------------------
-- commands not allowed in the instance's status: WF006
------------------------------------------------------------------------------
SELECT tap_counts() AS before \gset
SELECT throws_ok($$SELECT workflows.resume('waiting-1')$$,
    'WF006', 'cannot resume workflow instance "waiting-1": it is waiting',
    'resume: a waiting instance');
SELECT throws_ok($$SELECT workflows.pause('done-1')$$,
    'WF006', 'cannot pause workflow instance "done-1": it is complete',
    'pause: a complete instance');
SELECT throws_ok($$SELECT workflows.resume('done-1')$$,
    'WF006', 'cannot resume workflow instance "done-1": it is complete',
    'resume: a complete instance');
SELECT throws_ok($$SELECT workflows.terminate('done-1')$$,
    'WF006', 'cannot terminate workflow instance "done-1": it is complete',
    'terminate: a complete instance');
SELECT is(tap_counts(), :'before', 'refused commands changed nothing');

SELECT is(workflows.pause('waiting-1'), 'paused', 'pause: a waiting instance is paused');
SELECT throws_ok($$SELECT workflows.pause('waiting-1')$$,
    'WF006', 'cannot pause workflow instance "waiting-1": it is paused',
    'pause: a paused instance');
SELECT is(workflows.terminate('waiting-1'), 'terminated', 'terminate: a paused instance');
SELECT tap_counts() AS before \gset
SELECT throws_ok($$SELECT workflows.terminate('waiting-1')$$,
    'WF006', 'cannot terminate workflow instance "waiting-1": it is terminated',
    'terminate: a terminated instance');
SELECT throws_ok($$SELECT workflows.pause('waiting-1')$$,
    'WF006', 'cannot pause workflow instance "waiting-1": it is terminated',
    'pause: a terminated instance');
SELECT throws_ok($$SELECT workflows.resume('waiting-1')$$,
    'WF006', 'cannot resume workflow instance "waiting-1": it is terminated',
    'resume: a terminated instance');
SELECT throws_ok($$SELECT workflows.send_event('waiting-1', 'go', '{}')$$,
    'WF006', 'cannot send an event to workflow instance "waiting-1": it is terminated',
    'send_event: to a terminated instance');
SELECT is(tap_counts(), :'before', 'refused commands on a terminated instance changed nothing');

------------------------------------------------------------------------------
-- step functions outside a workflow: WF004
------------------------------------------------------------------------------
SELECT throws_ok($$SELECT workflows.step('x', 'INSERT INTO bad_effects VALUES (3)')$$,
    'WF004', 'workflows.step() can only be called by a workflow function run by an executor',
    'step (SQL) outside a workflow');
SELECT throws_ok($$SELECT workflows.step('x', 'no_args()'::regprocedure, '{}')$$,
    'WF004', 'workflows.step() can only be called by a workflow function run by an executor',
    'step (function) outside a workflow');
SELECT throws_ok($$SELECT workflows.sleep('x', '1 second')$$,
    'WF004', 'workflows.sleep() can only be called by a workflow function run by an executor',
    'sleep outside a workflow');
SELECT throws_ok($$SELECT workflows.sleep_until('x', now())$$,
    'WF004', 'workflows.sleep_until() can only be called by a workflow function run by an executor',
    'sleep_until outside a workflow');
SELECT throws_ok($$SELECT workflows.wait_for_event('x', 'go')$$,
    'WF004', 'workflows.wait_for_event() can only be called by a workflow function run by an executor',
    'wait_for_event outside a workflow');
SELECT throws_ok($$SELECT bad_run('{"payload": {"do": "config"}}')$$,
    'WF004', 'workflows.step() can only be called by a workflow function run by an executor',
    'a workflow function called directly');
SELECT is((SELECT count(*) FROM bad_effects), 0::bigint, 'no step ran outside a workflow');
-- fail() raises its error anywhere
SELECT throws_ok($$SELECT workflows.fail('card declined')$$,
    'WF001', 'card declined', 'fail raises WF001');

------------------------------------------------------------------------------
-- bad input inside a workflow: the instance errors, naming the problem
------------------------------------------------------------------------------
SELECT count(*) AS n FROM workflows.create_batch('bad-run', '[
    {"id": "cfg-key",     "params": {"do": "config", "config": {"retrys": 1}}},
    {"id": "cfg-nested",  "params": {"do": "config", "config": {"retries": {"limit": 1, "dela": "1 s"}}}},
    {"id": "cfg-limit",   "params": {"do": "config", "config": {"retries": {"limit": -1}}}},
    {"id": "cfg-backoff", "params": {"do": "config", "config": {"retries": {"backoff": "random"}}}},
    {"id": "cfg-timeout", "params": {"do": "config", "config": {"timeout": "soon"}}},
    {"id": "cfg-neg",     "params": {"do": "config", "config": {"timeout": -5}}},
    {"id": "cfg-array",   "params": {"do": "config", "config": [1, 2]}},
    {"id": "sleep-neg",   "params": {"do": "sleep", "for": "-1 second"}},
    {"id": "event-neg",   "params": {"do": "event", "timeout": "-1 minute"}},
    {"id": "nested",      "params": {"do": "nested"}},
    {"id": "name-empty",  "params": {"do": "step name", "name": ""}},
    {"id": "name-long",   "params": {"do": "step name", "name": "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn"}},
    {"id": "fn-two-args", "params": {"do": "step fn", "fn": "two_args(jsonb,jsonb)"}},
    {"id": "fn-setof",    "params": {"do": "step fn", "fn": "many(jsonb)"}},
    {"id": "fn-proc",     "params": {"do": "step fn", "fn": "proc(jsonb)"}},
    {"id": "fn-oid-0",    "params": {"do": "step fn oid", "oid": 0}},
    {"id": "sql-null",    "params": {"do": "step null sql"}},
    {"id": "type-empty",  "params": {"do": "event type", "type": ""}},
    {"id": "sleep-null",  "params": {"do": "null sleep"}}]') \gset

CREATE TABLE docs AS
    SELECT id, workflows.wait(id, '30 seconds') AS doc
      FROM unnest(ARRAY['cfg-key', 'cfg-nested', 'cfg-limit', 'cfg-backoff', 'cfg-timeout',
                        'cfg-neg', 'cfg-array', 'sleep-neg', 'event-neg', 'nested',
                        'name-empty', 'name-long', 'fn-two-args', 'fn-setof', 'fn-proc', 'fn-oid-0',
                        'sql-null', 'type-empty', 'sleep-null']) AS id;

SELECT results_eq(
    $$SELECT id, doc->>'status', doc->'error'->>'sqlstate', doc->'error'->>'message'
        FROM docs WHERE id LIKE 'cfg-%' AND id <> 'cfg-timeout' ORDER BY id$$,
    $$VALUES ('cfg-array',   'errored', '22023', 'invalid step config: "config" must be a JSON object'),
             ('cfg-backoff', 'errored', '22023', 'invalid step config: "retries.backoff" must be "constant", "linear" or "exponential"'),
             ('cfg-key',     'errored', '22023', 'invalid step config: "retrys" is not a known key'),
             ('cfg-limit',   'errored', '22023', 'invalid step config: "retries.limit" must be a whole number from 0 to 10000'),
             ('cfg-neg',     'errored', '22023', 'invalid step config: "timeout" must be a non-negative number of milliseconds or an interval'),
             ('cfg-nested',  'errored', '22023', 'invalid step config: "retries.dela" is not a known key')$$,
    'a malformed step config errors the instance with 22023, naming the key');
SELECT is((SELECT doc->'error'->>'sqlstate' FROM docs WHERE id = 'cfg-timeout'), '22023',
    'a step timeout that is no interval errors the instance with 22023');
SELECT matches((SELECT doc->'error'->>'message' FROM docs WHERE id = 'cfg-timeout'),
    'invalid step config: "timeout" is not a duration',
    '... and the message names the key');
SELECT is((SELECT count(*) FROM workflows.steps WHERE instance_id LIKE 'cfg-%'), 0::bigint,
    'a step with a malformed config is not recorded');
SELECT is((SELECT count(*) FROM bad_effects), 0::bigint, 'a step with a malformed config does not run');

SELECT results_eq(
    $$SELECT id, doc->>'status', doc->'error'->>'sqlstate', doc->'error'->>'message'
        FROM docs WHERE id IN ('sleep-neg', 'event-neg') ORDER BY id$$,
    $$VALUES ('event-neg', 'errored', '22023', 'event timeout must not be negative'),
             ('sleep-neg', 'errored', '22023', 'sleep duration must not be negative')$$,
    'a negative sleep or event timeout errors the instance with 22023');
SELECT is((SELECT count(*) FROM workflows.steps WHERE instance_id IN ('sleep-neg', 'event-neg')), 0::bigint,
    'a negative sleep or event wait is not recorded');

SELECT results_eq(
    -- (whether the function's name is schema-qualified depends on the search_path)
    $$SELECT id, doc->>'status', doc->'error'->>'sqlstate', replace(doc->'error'->>'message', 'public.', '')
        FROM docs WHERE id IN ('name-empty', 'name-long', 'fn-two-args', 'fn-setof', 'fn-proc', 'fn-oid-0',
                               'sql-null', 'type-empty', 'sleep-null') ORDER BY id$$,
    $$VALUES ('fn-oid-0',    'errored', '42883', 'function with OID 0 does not exist'),
             ('fn-proc',     'errored', '42P13', 'step function proc(jsonb) must take one jsonb argument and return one value'),
             ('fn-setof',    'errored', '42P13', 'step function many(jsonb) must take one jsonb argument and return one value'),
             ('fn-two-args', 'errored', '42P13', 'step function two_args(jsonb,jsonb) must take one jsonb argument and return one value'),
             ('name-empty',  'errored', '22023', 'step name must be 1 to 200 bytes long'),
             ('name-long',   'errored', '22023', 'step name must be 1 to 200 bytes long'),
             ('sleep-null',  'errored', '22004', 'sleep duration must not be null'),
             ('sql-null',    'errored', '22004', 'step SQL must not be null'),
             ('type-empty',  'errored', '22023', 'event type must be 1 to 200 bytes long')$$,
    'bad step names, step functions, SQL, event types and durations error the instance');
SELECT is((SELECT count(*) FROM workflows.steps
            WHERE instance_id IN ('name-empty', 'name-long', 'fn-two-args', 'fn-setof', 'fn-proc', 'fn-oid-0',
                                  'sql-null', 'type-empty', 'sleep-null')), 0::bigint,
    '... and record no step');
SELECT is((SELECT count(*) FROM bad_effects), 0::bigint, '... and run nothing');
SELECT is((SELECT doc->>'status' FROM docs WHERE id = 'nested'), 'errored',
    'a step that calls a step errors');
SELECT results_eq(
    $$SELECT status, attempts, error->>'sqlstate', error->>'message'
        FROM workflows.steps WHERE instance_id = 'nested'$$,
    $$VALUES ('failed', 1, 'WF004', 'workflows.step() cannot be called inside a step')$$,
    'a step that calls a step fails with WF004');

------------------------------------------------------------------------------
-- limits enforced by the executors: they read the server's configuration,
-- so these need ALTER SYSTEM; reset at once, the server is shared
------------------------------------------------------------------------------
ALTER SYSTEM SET workflows.max_output_size = 1024;
ALTER SYSTEM SET workflows.max_steps = 5;
-- nothing between here and the RESET may stop the script: errors become
-- warnings (and failed assertions below)
-- Running executors read the changed file when they get round to it, which
-- no fixed pause makes sure of on a loaded machine; executors started after
-- the postmaster reloaded it have it from the start.  So the reload (the
-- postmaster's SIGHUP, sent first, is handled before the launcher's request
-- to start workers), then this database's executors are replaced, and the
-- probes below check what the new ones see.
DO $$
DECLARE
    old int[];
    deadline timestamptz := clock_timestamp() + interval '60 seconds';
BEGIN
    PERFORM pg_reload_conf();
    SELECT array_agg(pid) INTO old FROM pg_stat_activity
     WHERE backend_type = 'workflows executor' AND datname = current_database();
    PERFORM pg_terminate_backend(pid) FROM unnest(old) pid;
    LOOP
        -- pg_stat_activity is read once per transaction unless cleared
        PERFORM pg_stat_clear_snapshot();
        EXIT WHEN (SELECT count(*) FILTER (WHERE pid <> ALL (old)) = current_setting('workflows.max_workers')::int
                          AND count(*) FILTER (WHERE pid = ANY (old)) = 0
                     FROM pg_stat_activity
                    WHERE backend_type = 'workflows executor' AND datname = current_database());
        IF clock_timestamp() > deadline THEN
            RAISE WARNING 'bad_input: the executors were not replaced within 60 s';
            EXIT;
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
    PERFORM workflows.create_batch('bad-run', '[
        {"id": "probe-1",    "params": {"do": "probe"}},
        {"id": "probe-2",    "params": {"do": "probe"}},
        {"id": "big-output", "params": {"do": "big output"}},
        {"id": "big-result", "params": {"do": "big result"}},
        {"id": "many-steps", "params": {"do": "many steps"}}]');
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'bad_input: %', SQLERRM;
END
$$;
DO $$
BEGIN
    INSERT INTO docs
        SELECT id, workflows.wait(id, '30 seconds')
          FROM unnest(ARRAY['probe-1', 'probe-2', 'big-output', 'big-result', 'many-steps']) AS id;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'bad_input: %', SQLERRM;
END
$$;
ALTER SYSTEM RESET workflows.max_output_size;
ALTER SYSTEM RESET workflows.max_steps;
DO $$ BEGIN PERFORM pg_reload_conf(); PERFORM pg_sleep(0.3); END $$;

SELECT results_eq(
    $$SELECT doc->'output' FROM docs WHERE id LIKE 'probe-%'$$,
    $$VALUES ('["1kB", "5"]'::jsonb), ('["1kB", "5"]'::jsonb)$$,
    'precondition: the executors run with the lowered limits');

SELECT results_eq(
    $$SELECT doc->>'status', doc->'error'->>'sqlstate' FROM docs WHERE id = 'big-output'$$,
    $$VALUES ('errored', 'WF007')$$,
    'a step output larger than workflows.max_output_size errors the instance with WF007');
SELECT results_eq(
    $$SELECT status, output IS NULL, attempts, error->>'sqlstate' FROM workflows.steps WHERE instance_id = 'big-output'$$,
    $$VALUES ('failed', true, 1, 'WF007')$$,
    '... the step failed at its first attempt, without retries, and stored no output');
SELECT matches((SELECT error->>'message' FROM workflows.steps WHERE instance_id = 'big-output'),
    '^step output is [0-9]+ bytes, more than workflows.max_output_size \(1024\)$',
    '... the error says how large the output was and what the limit is');
SELECT results_eq(
    $$SELECT attempt, success, error->>'sqlstate' FROM workflows.attempts WHERE instance_id = 'big-output'$$,
    $$VALUES (1, false, 'WF007')$$,
    '... the failed attempt is recorded');
SELECT is((SELECT count(*) FROM bad_effects), 0::bigint,
    '... and the writes of the step were rolled back');
SELECT ok((SELECT octet_length(i.error::text) < 1024 AND i.output IS NULL
             FROM workflows.instances i WHERE id = 'big-output'),
    '... and nothing large was stored with the instance');

SELECT results_eq(
    $$SELECT doc->>'status', doc->'error'->>'sqlstate', i.output IS NULL
        FROM docs JOIN workflows.instances i USING (id) WHERE id = 'big-result'$$,
    $$VALUES ('errored', 'WF007', true)$$,
    'a workflow result larger than workflows.max_output_size errors the instance with WF007');

SELECT results_eq(
    $$SELECT doc->>'status', doc->'error'->>'sqlstate', doc->'error'->>'message' FROM docs WHERE id = 'many-steps'$$,
    $$VALUES ('errored', 'WF007', 'instance has reached workflows.max_steps (5)')$$,
    'more steps than workflows.max_steps errors the instance with WF007');
SELECT is((SELECT count(*) FROM workflows.steps WHERE instance_id = 'many-steps'), 5::bigint,
    '... after exactly max_steps steps');

SELECT * FROM finish();

--
-- Flow control: every bad set_flow_control() config and create() option is
-- refused with SQLSTATE 22023 and a message naming the key, and changes
-- nothing; only the workflow's owner or an admin may set it (42501); an
-- unknown workflow is 42704; a good config is stored as given.
--
\set QUIET 1
\set VERBOSITY terse
SET client_min_messages = warning;

SELECT plan(82);

CREATE FUNCTION ftap_counts() RETURNS text LANGUAGE sql AS $$
    SELECT format('instances=%s members=%s config=%s',
                  (SELECT count(*) FROM workflows.instances),
                  (SELECT count(*) FROM workflows.flow_members),
                  (SELECT flow_control::text FROM workflows.workflows WHERE name = 'ftap'))
$$;
CREATE FUNCTION ftap_wf(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.wait_for_event('w', 'go', '1 hour');
END
$$;
SELECT workflows.register('ftap', 'ftap_wf(jsonb)') IS NOT NULL AS registered \gset
SELECT workflows.set_flow_control('ftap', '{"concurrency": {"limit": 3, "key": "$.k"}}');
SELECT ftap_counts() AS before \gset

SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '[]')$q$, '22023', 'flow control config must be a JSON object', 'set_flow_control: not an object');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"concurency": {"limit": 2}}')$q$, '22023', 'unknown flow control key "config.concurency"', 'set_flow_control: an unknown key');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"concurrency": {"limit": 0}}')$q$, '22023', 'flow control key "concurrency.limit" must be an integer from 1 to 1000000', 'set_flow_control: concurrency.limit 0');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"concurrency": {"limit": 1.5}}')$q$, '22023', 'flow control key "concurrency.limit" must be an integer from 1 to 1000000', 'set_flow_control: concurrency.limit not an integer');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"concurrency": {"limit": 2000000}}')$q$, '22023', 'flow control key "concurrency.limit" must be an integer from 1 to 1000000', 'set_flow_control: concurrency.limit too big');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"concurrency": {"key": "$.a"}}')$q$, '22023', 'flow control key "concurrency.limit" is required', 'set_flow_control: concurrency without limit');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"concurrency": {"limit": 2, "key": "$$$"}}')$q$, '22023', 'flow control key "concurrency.key" is not a valid jsonpath: $$$', 'set_flow_control: concurrency.key not a jsonpath');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"concurrency": {"limit": 2, "key": 7}}')$q$, '22023', 'flow control key "concurrency.key" must be a jsonpath string such as "$.customerId"', 'set_flow_control: concurrency.key not a string');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"concurrency": {"limit": 2, "size": 7}}')$q$, '22023', 'unknown flow control key "concurrency.size"', 'set_flow_control: concurrency unknown key');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"concurrency": []}')$q$, '22023', 'flow control key "concurrency" takes one or two entries', 'set_flow_control: concurrency empty array');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"concurrency": [{"limit": 1}, {"limit": 2}, {"limit": 3}]}')$q$, '22023', 'flow control key "concurrency" takes one or two entries', 'set_flow_control: three concurrency entries');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"concurrency": [{"limit": 1}, {"limit": "x"}]}')$q$, '22023', 'flow control key "concurrency[1].limit" must be an integer from 1 to 1000000', 'set_flow_control: the limit of the second entry');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"concurrency": 5}')$q$, '22023', 'flow control key "concurrency" must be a JSON object', 'set_flow_control: concurrency a number');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"throttle": {"limit": 10}}')$q$, '22023', 'flow control key "throttle.period" is required', 'set_flow_control: throttle without period');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"throttle": {"period": "1 minute"}}')$q$, '22023', 'flow control key "throttle.limit" is required', 'set_flow_control: throttle without limit');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"throttle": {"limit": 10, "period": "soon"}}')$q$, '22023', 'flow control key "throttle.period" is not a valid interval: soon', 'set_flow_control: throttle.period not an interval');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"throttle": {"limit": 10, "period": "-1 minute"}}')$q$, '22023', 'flow control key "throttle.period" must be a positive interval', 'set_flow_control: throttle.period negative');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"throttle": {"limit": 10, "period": 60}}')$q$, '22023', 'flow control key "throttle.period" must be an interval string such as "1 minute"', 'set_flow_control: throttle.period a number');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"throttle": {"limit": 100000, "period": "1 minute"}}')$q$, '22023', 'flow control key "throttle.limit" must be an integer from 1 to 10000', 'set_flow_control: throttle.limit too big');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"throttle": {"limit": 1, "period": "1 minute", "burst": 2}}')$q$, '22023', 'unknown flow control key "throttle.burst"', 'set_flow_control: throttle unknown key');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"priority": "high"}')$q$, '22023', 'flow control key "priority" must be a JSON object', 'set_flow_control: priority a string');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"priority": 1.5}')$q$, '22023', 'flow control key "priority" must be an integer from -1000000 to 1000000', 'set_flow_control: priority not an integer');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"priority": {"default": 1}}')$q$, '22023', 'flow control key "priority.key" is required', 'set_flow_control: priority without key');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"priority": {"key": "$.p", "default": "x"}}')$q$, '22023', 'flow control key "priority.default" must be an integer from -1000000 to 1000000', 'set_flow_control: priority.default not an integer');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"debounce": {"key": "$.a"}}')$q$, '22023', 'flow control key "debounce.period" is required', 'set_flow_control: debounce without period');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"debounce": {"period": "0 seconds"}}')$q$, '22023', 'flow control key "debounce.period" must be a positive interval', 'set_flow_control: debounce.period zero');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"debounce": {"period": "1 minute", "key": "nope("}}')$q$, '22023', 'flow control key "debounce.key" is not a valid jsonpath: nope(', 'set_flow_control: debounce.key not a jsonpath');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"singleton": {"mode": "replace"}}')$q$, '22023', 'flow control key "singleton.mode" must be "skip" or "cancel"', 'set_flow_control: singleton.mode unknown');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"singleton": {"key": "$.a", "when": 1}}')$q$, '22023', 'unknown flow control key "singleton.when"', 'set_flow_control: singleton unknown key');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"singleton": true}')$q$, '22023', 'flow control key "singleton" must be a JSON object', 'set_flow_control: singleton not an object');
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SELECT throws_ok($q$SELECT workflows.create('ftap', '{}', 'ftap-bad', options => '{"priority": "x"}')$q$, '22023', 'flow control key "options.priority" must be an integer from -1000000 to 1000000', 'create: options.priority not an integer');
SELECT is(ftap_counts(), :'before', '... and nothing was created');
SELECT throws_ok($q$SELECT workflows.create('ftap', '{}', 'ftap-bad', options => '{"delay": "5 minutes", "startAt": "2030-01-01"}')$q$, '22023', 'create options "delay" and "startAt" exclude each other', 'create: delay and startAt');
SELECT is(ftap_counts(), :'before', '... and nothing was created');
SELECT throws_ok($q$SELECT workflows.create('ftap', '{}', 'ftap-bad', options => '{"later": true}')$q$, '22023', 'unknown flow control key "options.later"', 'create: unknown option');
SELECT is(ftap_counts(), :'before', '... and nothing was created');
SELECT throws_ok($q$SELECT workflows.create('ftap', '{}', 'ftap-bad', options => '{"startAt": "whenever"}')$q$, '22023', 'create option "startAt" must be a timestamp such as "2030-01-01T00:00:00Z"', 'create: startAt not a timestamp');
SELECT is(ftap_counts(), :'before', '... and nothing was created');
SELECT throws_ok($q$SELECT workflows.create('ftap', '{}', 'ftap-bad', options => '{"delay": "soon"}')$q$, '22023', 'flow control key "options.delay" is not a valid interval: soon', 'create: delay not an interval');
SELECT is(ftap_counts(), :'before', '... and nothing was created');
SELECT throws_ok($q$SELECT workflows.create('ftap', '{}', 'ftap-bad', options => '[1]')$q$, '22023', 'create options must be a JSON object', 'create: options not an object');
SELECT is(ftap_counts(), :'before', '... and nothing was created');
SELECT throws_ok($q$SELECT * FROM workflows.create_batch('ftap', '[{"id": "ftap-b", "options": {"later": 1}}]')$q$,
    '22023', 'unknown flow control key "options.later"', 'create_batch: a bad option in an element');
SELECT is(ftap_counts(), :'before', '... and nothing was created');

-- unknown workflow, null name, other role, admin
SELECT throws_ok($q$SELECT workflows.set_flow_control('no-such-workflow', '{}')$q$, '42704',
    'workflow "no-such-workflow" does not exist', 'set_flow_control: an unknown workflow');
SELECT throws_ok($q$SELECT workflows.set_flow_control(NULL, '{}')$q$, '22004',
    'workflow name must not be null', 'set_flow_control: a null name');
CREATE ROLE ftap_other;
CREATE ROLE ftap_admin IN ROLE workflows_admin;
SET ROLE ftap_other;
SELECT throws_ok($q$SELECT workflows.set_flow_control('ftap', '{"concurrency": {"limit": 1}}')$q$, '42501',
    'permission denied for workflow "ftap"', 'set_flow_control: not its owner');
RESET ROLE;
SELECT is(ftap_counts(), :'before', '... and nothing changed');
SET ROLE ftap_admin;
SELECT lives_ok($q$SELECT workflows.set_flow_control('ftap', '{"concurrency": {"limit": 4, "key": "$.k"}}')$q$,
    'set_flow_control: a member of workflows_admin may');
RESET ROLE;

-- good configs are stored as given; NULL clears
SELECT lives_ok($q$SELECT workflows.set_flow_control('ftap', '{"concurrency": [{"limit": 100}, {"limit": 2, "key": "$.customer"}], "throttle": {"limit": 10, "period": "1 minute"}, "priority": {"key": "$.p", "default": 1}, "debounce": {"period": "5 seconds"}, "singleton": {"key": "$.customer", "mode": "cancel"}}')$q$,
    'set_flow_control: every key at once');
SELECT is((SELECT flow_control->'singleton'->>'mode' FROM workflows.workflows WHERE name = 'ftap'), 'cancel',
    '... stored as given');
SELECT lives_ok($q$SELECT workflows.set_flow_control('ftap', NULL)$q$, 'set_flow_control: NULL clears');
DROP ROLE ftap_other;
DROP ROLE ftap_admin;

SELECT * FROM finish();

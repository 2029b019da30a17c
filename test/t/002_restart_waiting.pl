# 002_restart_waiting.pl
#
# Instances that wait -- in a durable sleep, for an event, between two
# attempts of a failing step -- hold no process: their state is in the
# tables.  Stop the server with "immediate" (no shutdown checkpoint, like a
# crash) while all three wait, start it again, and every one of them must
# carry on where it was and complete, with its effects written exactly once.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Time::HiRes qw(time);

my $started = time;

my $node = PostgreSQL::Test::Cluster->new('restart_waiting');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 2
max_worker_processes = 16
});
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION workflows');

$node->safe_psql(
	'postgres', q{
CREATE TABLE effects (instance text NOT NULL, step text NOT NULL);

-- (a) a durable sleep, then a step
CREATE FUNCTION napper(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    id text := event->>'instanceId';
    r jsonb;
BEGIN
    PERFORM workflows.sleep('nap', '3 seconds');
    r := workflows.step('record',
        'INSERT INTO public.effects VALUES ($1::text, ''record'') RETURNING ''recorded''::text',
        jsonb_build_array(id));
    RETURN jsonb_build_object('slept', true, 'record', r);
END
$$;

-- (b) wait for an event, then a step that records its payload
CREATE FUNCTION listener(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    id text := event->>'instanceId';
    ev jsonb;
    r jsonb;
BEGIN
    ev := workflows.wait_for_event('go', 'go', '1 minute');
    r := workflows.step('after_go',
        'INSERT INTO public.effects VALUES ($1::text, ''after_go'') RETURNING $2::jsonb',
        jsonb_build_array(id, ev->'payload'));
    RETURN jsonb_build_object('got', r, 'type', ev->'type');
END
$$;

-- (c) a step that fails its first two attempts.  The counter is the number
-- of attempts the extension recorded for the step: every attempt is
-- committed with the instance's state, whatever becomes of the step's own
-- writes (rolled back when it fails).
CREATE FUNCTION flaky(id text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    n int;
BEGIN
    SELECT count(*) INTO n FROM workflows.attempts
     WHERE instance_id = id AND step_key = 'flaky';
    INSERT INTO public.effects VALUES (id, 'flaky');
    IF n < 2 THEN
        RAISE EXCEPTION 'flaky failure %', n + 1;
    END IF;
    RETURN jsonb_build_object('attempt', n + 1);
END
$$;

CREATE FUNCTION retrier(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    r jsonb;
BEGIN
    r := workflows.step('flaky', 'SELECT public.flaky($1)',
        jsonb_build_array(event->>'instanceId'),
        '{"retries": {"limit": 5, "delay": "2 seconds", "backoff": "constant"}}');
    RETURN jsonb_build_object('flaky', r);
END
$$;

SELECT workflows.register('napper', 'napper(jsonb)');
SELECT workflows.register('listener', 'listener(jsonb)');
SELECT workflows.register('retrier', 'retrier(jsonb)');
});

# Create the three together, so that all of them are waiting soon; the
# retrier waits 2 s after each failure and the napper 3 s.
$node->safe_psql(
	'postgres', q{
BEGIN;
SELECT workflows.create('retrier', '{}', 'c-retry');
SELECT workflows.create('listener', '{}', 'b-event');
SELECT workflows.create('napper', '{}', 'a-sleep');
COMMIT;
});

# Wait until each waits where it should, and take the state we stop in in
# the same snapshot: c-retry is between two attempts for 2 s at a time, and
# a second query could find it running its next one.  Its next attempt must
# also be at least half a second away, for the stop to land before it (an
# attempt cut short by the stop is recorded as interrupted, and the
# attempts checked below would not be the scripted ones).
my $state_sql = q{
SELECT
  (SELECT count(*) FROM workflows.instances i JOIN workflows.steps s ON s.instance_id = i.id
    WHERE i.id = 'a-sleep' AND i.status = 'waiting' AND i.wake_at IS NOT NULL
      AND s.key = 'nap' AND s.type = 'sleep' AND s.status = 'waiting')
+ (SELECT count(*) FROM workflows.instances i JOIN workflows.steps s ON s.instance_id = i.id
    WHERE i.id = 'b-event' AND i.status = 'waiting' AND i.waiting_for = 'go'
      AND s.key = 'go' AND s.type = 'event' AND s.status = 'waiting')
+ (SELECT count(*) FROM workflows.instances i JOIN workflows.steps s ON s.instance_id = i.id
    WHERE i.id = 'c-retry' AND i.status = 'waiting' AND i.wake_at > now() + interval '0.5 seconds'
      AND s.key = 'flaky' AND s.type = 'step' AND s.status = 'retrying'),
  (SELECT string_agg(x, E'\n' ORDER BY x) FROM (
     SELECT i.id || ':' || i.status || ':' || string_agg(s.key || '=' || s.status, ',' ORDER BY s.seq) AS x
       FROM workflows.instances i JOIN workflows.steps s ON s.instance_id = i.id
      GROUP BY i.id, i.status) st),
  (SELECT count(*) FROM workflows.attempts WHERE instance_id = 'c-retry' AND NOT success),
  (SELECT count(*) FROM effects)
};
my ($ready, $before, $failed_before, $effects_before);
my $deadline = time + 180;
while (time < $deadline)
{
	($ready, $before, $failed_before, $effects_before) =
	  split /\|/, $node->safe_psql('postgres', $state_sql);
	last if $ready eq '3';
	select(undef, undef, undef, 0.05);
}
$ready eq '3' or die 'the instances did not all reach their waiting states';

# The state we stop in.
is( $before,
	"a-sleep:waiting:nap=waiting\nb-event:waiting:go=waiting\nc-retry:waiting:flaky=retrying",
	'before the stop: a sleeps, b waits for "go", c waits for its next attempt');
ok($failed_before >= 1 && $failed_before <= 2,
	"before the stop: c-retry has $failed_before failed attempt(s), no success yet");
is($effects_before, '0', 'before the stop: no effect is visible (the failed attempts rolled back)');

$node->stop('immediate');
$node->start;

# The event comes after the restart.
$node->safe_psql('postgres',
	q{SELECT workflows.send_event('b-event', 'go', '{"k": "v"}')});

$node->poll_query_until(
	'postgres', q{
SELECT count(*) FROM workflows.instances
 WHERE status IN ('complete', 'errored', 'terminated')
}, '3')
  or die 'the instances did not finish after the restart';

is( $node->safe_psql(
		'postgres', 'SELECT id, status FROM workflows.instances ORDER BY id'),
	"a-sleep|complete\nb-event|complete\nc-retry|complete",
	'all three complete after the restart');

# Effects exactly once (the flaky step's failed attempts rolled back theirs).
is( $node->safe_psql(
		'postgres', q{
SELECT instance, step, count(*) FROM effects GROUP BY instance, step ORDER BY instance
}),
	"a-sleep|record|1\nb-event|after_go|1\nc-retry|flaky|1",
	'each step wrote exactly once');

# Did the waits really span the restart?  (Timing-dependent, so only noted.)
note 'postmaster started at ',
  $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');
note 'nap ended at ',
  $node->safe_psql('postgres',
	"SELECT wake_at FROM workflows.steps WHERE instance_id = 'a-sleep' AND key = 'nap'");
note 'c-retry attempts started at ',
  $node->safe_psql('postgres',
	"SELECT string_agg(started_at::text, ', ' ORDER BY attempt) FROM workflows.attempts WHERE instance_id = 'c-retry'");

# (a)
my $a = decode_json(
	$node->safe_psql('postgres', "SELECT workflows.status('a-sleep')"));
is_deeply($a->{output}, { slept => JSON::PP::true, record => 'recorded' },
	'a-sleep: output');
is(join(',', map { "$_->{name}:$_->{type}:$_->{status}" } @{ $a->{steps} }),
	'nap:sleep:complete,record:step:complete', 'a-sleep: steps');
is($a->{steps}[1]{output}, 'recorded', 'a-sleep: record step output');
ok( $node->safe_psql(
		'postgres', q{
SELECT r.started_at >= n.wake_at
  FROM workflows.steps n, workflows.steps r
 WHERE n.instance_id = 'a-sleep' AND n.key = 'nap'
   AND r.instance_id = 'a-sleep' AND r.key = 'record'
}) eq 't',
	'a-sleep: the step after the sleep started once the sleep was over');

# (b)
my $b = decode_json(
	$node->safe_psql('postgres', "SELECT workflows.status('b-event')"));
is_deeply($b->{output}, { got => { k => 'v' }, type => 'go' },
	'b-event: output carries the event payload');
is(join(',', map { "$_->{name}:$_->{type}:$_->{status}" } @{ $b->{steps} }),
	'go:waitForEvent:complete,after_go:step:complete', 'b-event: steps');
is_deeply($b->{steps}[0]{output}{payload}, { k => 'v' },
	'b-event: the event step returned the payload');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FILTER (WHERE consumed_by = 'go'), count(*) FROM workflows.events WHERE instance_id = 'b-event'"
	),
	'1|1',
	'b-event: the one event was consumed by the step "go"');

# (c)
my $c = decode_json(
	$node->safe_psql('postgres', "SELECT workflows.status('c-retry')"));
is_deeply($c->{output}, { flaky => { attempt => 3 } }, 'c-retry: output');
is(scalar(@{ $c->{steps} }), 1, 'c-retry: one step');
my $st = $c->{steps}[0];
is($st->{status}, 'complete', 'c-retry: the step is complete');
is_deeply($st->{output}, { attempt => 3 }, 'c-retry: step output');
my @att = @{ $st->{attempts} };
is(scalar(@att), 3, 'c-retry: three attempts');
is(join(',', map { $_->{attempt} } @att), '1,2,3', 'c-retry: attempts numbered 1..3');
is( join(',', map { $_->{success} ? 'ok' : 'failed' } @att),
	'failed,failed,ok', 'c-retry: two failed attempts, then a success');
like($att[0]{error}{message}, qr/^flaky failure 1$/,
	'c-retry: attempt 1 error message');
like($att[1]{error}{message}, qr/^flaky failure 2$/,
	'c-retry: attempt 2 error message');
is($att[0]{error}{sqlstate}, 'P0001', 'c-retry: attempt 1 sqlstate');
ok(!defined $att[2]{error}, 'c-retry: the successful attempt has no error');
is( $node->safe_psql(
		'postgres', q{
SELECT bool_and(b.started_at >= a.ended_at + interval '2 seconds')
  FROM workflows.attempts a JOIN workflows.attempts b
    ON b.instance_id = a.instance_id AND b.step_key = a.step_key AND b.attempt = a.attempt + 1
 WHERE a.instance_id = 'c-retry'
}),
	't',
	'c-retry: each retry started at least 2 s after the failure before it');

$node->stop;
note sprintf('002_restart_waiting took %.1f s', time - $started);
done_testing();

# 015_orderly_stop.pl
#
# Restarts are not crashes.  A healthy step is cut short again and again by
# orderly stops -- a fast shutdown, an immediate shutdown,
# pg_terminate_backend() of its executor -- with workflows.max_step_crashes
# = 1 and a retry limit of 0, so that a single attempt charged as a crash or
# as a failure would end the instance errored.  Each interrupted attempt
# must be recorded as interrupted by a shutdown (57P01), retried at once
# after the start, charged to neither, and the step must finally complete
# with its effect written exactly once.  (The step naps a minute while the
# test cuts it short, so that however slow the machine the stop lands inside
# the attempt, and 2 seconds in the attempt that must complete.)

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('orderly_stop');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 2
workflows.max_step_crashes = 1
max_worker_processes = 16
restart_after_crash = on
});
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION workflows');
$node->safe_psql(
	'postgres', q{
CREATE TABLE effects (instance text NOT NULL, step text NOT NULL);
-- how long the step naps: long while the test cuts attempts short (so that
-- however slow the machine, the stop lands inside the attempt), short for
-- the attempt that must complete; read when the attempt starts
CREATE TABLE nap (secs float8 NOT NULL);
INSERT INTO nap VALUES (60);
CREATE FUNCTION slow(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('slow',
        'WITH nap AS (SELECT pg_sleep(secs) FROM public.nap) INSERT INTO public.effects SELECT $1::text, ''slow'' FROM nap RETURNING ''done''::text',
        jsonb_build_array(event->>'instanceId'),
        '{"retries": {"limit": 0}}');
END
$$;
SELECT workflows.register('slow', 'slow(jsonb)');
});

# wait until an executor runs the step (naps in it); returns its pid.  One
# query finds it and gives its pid: a poll, then a second query for the pid,
# could find the attempt gone in between.
sub step_running
{
	my $pid = '';
	for (my $i = 0; $i < 1800 && $pid eq ''; $i++)
	{
		$pid = $node->safe_psql('postgres',
			q{SELECT pid FROM pg_stat_activity
			  WHERE backend_type = 'workflows executor' AND query LIKE '%FROM public.nap%'
			    AND state = 'active' AND wait_event = 'PgSleep'});
		select(undef, undef, undef, 0.1) if $pid eq '';
	}
	die 'the step did not start' if $pid eq '';
	die "more than one executor runs the step: $pid" if $pid !~ /^\d+$/;
	return $pid;
}

# the attempt cut short by the next stop naps a minute; the one after it
# only a moment (it must complete)
sub next_attempt_naps
{
	my ($secs) = @_;
	$node->safe_psql('postgres', "UPDATE nap SET secs = $secs");
}

$node->safe_psql('postgres', q{SELECT workflows.create('slow', '{}', 'slow-1')});

step_running();
$node->stop('fast');
$node->start;

step_running();
$node->stop('immediate');
$node->start;

my $pid = step_running();
next_attempt_naps(2);
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");

$node->poll_query_until('postgres',
	q{SELECT status IN ('complete', 'errored') FROM workflows.instances WHERE id = 'slow-1'})
  or die 'the instance did not finish';

is($node->safe_psql('postgres', q{SELECT status FROM workflows.instances WHERE id = 'slow-1'}),
	'complete', 'the step completed despite three stops');
is($node->safe_psql('postgres', q{SELECT count(*) FROM effects WHERE instance = 'slow-1'}),
	'1', 'its effect was written exactly once');
is( $node->safe_psql(
		'postgres', q{
SELECT string_agg(CASE WHEN success THEN 'ok' ELSE error->>'sqlstate' END, ',' ORDER BY attempt)
FROM workflows.attempts WHERE instance_id = 'slow-1' AND step_key = 'slow'}),
	'57P01,57P01,57P01,ok',
	'three attempts recorded as interrupted by a shutdown, then the successful one');
is( $node->safe_psql(
		'postgres',
		q{SELECT interrupted || '/' || attempts FROM workflows.steps WHERE instance_id = 'slow-1' AND key = 'slow'}),
	'3/4', 'the step counts its interrupted attempts apart');
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM workflows.attempts WHERE error->>'sqlstate' = 'WF008'}),
	'0', 'no stop was counted as a crash');

# A step that is not the first thing its transaction writes: the sleep
# before it ends and its event is taken in the same transaction.  Cutting
# it short (an orderly stop, then a real crash) rolls all three back; the
# instance must carry on from the state that was committed, not fail with
# "took another path" (WF005) over a step recorded out of place.
$node->safe_psql(
	'postgres', q{
CREATE FUNCTION after_event(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM workflows.sleep('nap', '1 second');
    PERFORM workflows.wait_for_event('go', 'go', '1 hour');
    RETURN workflows.step('slow',
        'WITH nap AS (SELECT pg_sleep(secs) FROM public.nap) INSERT INTO public.effects SELECT $1::text, ''slow'' FROM nap RETURNING ''done''::text',
        jsonb_build_array(event->>'instanceId'), '{"retries": {"limit": 0}}');
END
$$;
SELECT workflows.register('after-event', 'after_event(jsonb)');
});
foreach my $how ('fast', 'kill')
{
	my $id = "after-event-$how";
	next_attempt_naps(60);
	$node->safe_psql('postgres',
		"SELECT workflows.create('after-event', '{}', '$id'); SELECT workflows.send_event('$id', 'go')");
	my $pid = step_running();
	next_attempt_naps(2);
	if ($how eq 'fast')
	{
		$node->stop('fast');
		$node->start;
	}
	else
	{
		# a crash is charged: allow one
		$node->safe_psql('postgres',
			"ALTER SYSTEM SET workflows.max_step_crashes = 3; SELECT pg_reload_conf()");
		kill 'KILL', $pid;
		$node->poll_query_until('postgres', 'SELECT 1', '1')
		  or die 'the server did not come back';
	}
	$node->poll_query_until('postgres',
		"SELECT status IN ('complete', 'errored') FROM workflows.instances WHERE id = '$id'")
	  or die "$id did not finish";
	is( $node->safe_psql('postgres',
			"SELECT status || ' ' || coalesce(error->>'sqlstate', '') FROM workflows.instances WHERE id = '$id'"),
		'complete ', "$id: a step cut short after an event taken in its transaction ($how) completes");
	is($node->safe_psql('postgres', "SELECT count(*) FROM effects WHERE instance = '$id'"),
		'1', "$id: its effect was written exactly once");
	is( $node->safe_psql('postgres',
			"SELECT string_agg(key, ',' ORDER BY seq) FROM workflows.steps WHERE instance_id = '$id'"),
		'nap,go,slow', "$id: its steps stand in the order they ran");
	is( $node->safe_psql('postgres', qq{
SELECT string_agg(CASE WHEN success THEN 'ok' ELSE error->>'sqlstate' END, ',' ORDER BY attempt)
FROM workflows.attempts WHERE instance_id = '$id' AND step_key = 'slow'}),
		$how eq 'fast' ? 'ok' : 'WF008,ok',
		$how eq 'fast'
		? "$id: the stop charged nothing (all it cut short was rolled back)"
		: "$id: the crash was charged to the step, which then ran again");
}
$node->safe_psql('postgres', "ALTER SYSTEM RESET workflows.max_step_crashes; SELECT pg_reload_conf()");

# a step that terminates its own executor is still the step's doing
$node->safe_psql(
	'postgres', q{
CREATE FUNCTION suicide(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('suicide', 'SELECT pg_terminate_backend(pg_backend_pid())');
END
$$;
SELECT workflows.register('suicide', 'suicide(jsonb)');
SELECT workflows.create('suicide', '{}', 'suicide-1');
});
$node->poll_query_until('postgres',
	q{SELECT status = 'errored' FROM workflows.instances WHERE id = 'suicide-1'})
  or die 'the self-terminating step was not quarantined';
is($node->safe_psql('postgres',
		q{SELECT error->>'sqlstate' FROM workflows.instances WHERE id = 'suicide-1'}),
	'WF008', 'a step terminating its own executor is quarantined (max_step_crashes = 1)');

$node->stop;
done_testing();

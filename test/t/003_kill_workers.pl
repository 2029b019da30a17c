# 003_kill_workers.pl
#
# The launcher and the executors come back on their own when somebody
# terminates them (pg_terminate_backend), and work goes on afterwards.  A
# cancel (pg_cancel_backend) aimed at an executor that runs a step fails
# that attempt only: it is recorded with SQLSTATE 57014 and retried, and the
# executor itself stays.  A terminate aimed at an executor in the middle of
# a step rolls the step back; the step runs again, once.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Time::HiRes qw(time);

my $started = time;

my $node = PostgreSQL::Test::Cluster->new('kill_workers');
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

CREATE FUNCTION two_steps(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    id text := event->>'instanceId';
BEGIN
    PERFORM workflows.step('first',
        'INSERT INTO public.effects VALUES ($1::text, ''first'') RETURNING 1',
        jsonb_build_array(id));
    PERFORM workflows.step('second',
        'INSERT INTO public.effects VALUES ($1::text, ''second'') RETURNING 2',
        jsonb_build_array(id));
    RETURN '"done"';
END
$$;

-- one step that waits for advisory lock 42 first
CREATE FUNCTION locked(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('locked',
        'WITH l AS (SELECT pg_advisory_xact_lock(42)) '
        'INSERT INTO public.effects SELECT $1::text, ''locked'' FROM l RETURNING ''locked''::text',
        jsonb_build_array(event->>'instanceId'),
        '{"retries": {"limit": 3, "delay": "100 ms"}}');
END
$$;

SELECT workflows.register('two_steps', 'two_steps(jsonb)');
SELECT workflows.register('locked', 'locked(jsonb)');
});

my $workers_sql = q{
SELECT count(*) FILTER (WHERE backend_type = 'workflows launcher') || '/' ||
       count(*) FILTER (WHERE backend_type = 'workflows executor')
  FROM pg_stat_activity
};

sub pids
{
	my ($type) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE backend_type = '$type'"
	);
}

# run instances of two_steps and check that they complete, each step once
sub run_instances
{
	my ($prefix, $n) = @_;
	my @ids = map { "$prefix-$_" } 1 .. $n;
	$node->safe_psql('postgres',
		join('', map { "SELECT workflows.create('two_steps', '{}', '$_');" } @ids));
	$node->poll_query_until(
		'postgres', qq{
SELECT count(*) FROM workflows.instances
 WHERE id LIKE '$prefix-%' AND status IN ('complete', 'errored', 'terminated')
}, $n)
	  or die "instances $prefix-* did not finish";
	is( $node->safe_psql(
			'postgres',
			"SELECT count(*) FROM workflows.instances WHERE id LIKE '$prefix-%' AND status = 'complete' AND output = '\"done\"'"
		),
		$n,
		"$prefix: all $n instances complete");
	is( $node->safe_psql(
			'postgres', qq{
SELECT count(*), count(DISTINCT (instance, step)) FROM effects WHERE instance LIKE '$prefix-%'
}),
		2 * $n . '|' . 2 * $n,
		"$prefix: every step of every instance wrote exactly once");
}

$node->poll_query_until('postgres', $workers_sql, '1/2')
  or die 'launcher and executors did not start';
ok(1, 'one launcher and two executors run');

run_instances('before', 3);

my $blocked_sql = q{
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type = 'workflows executor'
   AND wait_event_type = 'Lock' AND wait_event = 'advisory'
};

my $locker = $node->background_psql('postgres');

# ---- terminate the launcher (while an executor is inside a step) ----
# The new launcher stops the executors of its predecessor: the one inside a
# step rolls back, and the step runs again under a new executor.
$locker->query_safe('SELECT pg_advisory_lock(42)');
$node->safe_psql('postgres', "SELECT workflows.create('locked', '{}', 'launcher-1')");
$node->poll_query_until('postgres', $blocked_sql, '1')
  or die 'the executor did not block on the lock';

my $launcher = pids('workflows launcher');
my $executors = pids('workflows executor');
like($launcher, qr/^\d+$/, "launcher pid $launcher");
is( $node->safe_psql('postgres', "SELECT pg_terminate_backend($launcher)"),
	't', 'pg_terminate_backend on the launcher');

# The postmaster starts a new launcher (bgw_restart_time); it stops the
# executors it has no handles for and starts new ones.
$node->poll_query_until(
	'postgres', qq{
SELECT count(*) FILTER (WHERE backend_type = 'workflows launcher' AND pid <> $launcher) || '/' ||
       count(*) FILTER (WHERE backend_type = 'workflows executor' AND pid NOT IN ($executors)) || '/' ||
       count(*) FILTER (WHERE backend_type IN ('workflows launcher', 'workflows executor'))
  FROM pg_stat_activity
}, '1/2/3')
  or die 'the launcher did not come back with new executors';
ok(1, 'a new launcher runs, with two new executors and nothing else');
is($node->safe_psql('postgres', $workers_sql), '1/2', 'one launcher, two executors');

# the step of launcher-1 runs again in a new executor; let it through
$node->poll_query_until('postgres', $blocked_sql, '1')
  or die 'no new executor took the step of launcher-1 up again';
$locker->query_safe('SELECT pg_advisory_unlock(42)');
$node->poll_query_until(
	'postgres', q{
SELECT status IN ('complete', 'errored', 'terminated') FROM workflows.instances WHERE id = 'launcher-1'
})
  or die 'launcher-1 did not finish';
is( $node->safe_psql('postgres',
		"SELECT status, output FROM workflows.instances WHERE id = 'launcher-1'"),
	'complete|"locked"', 'launcher-1: complete');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM effects WHERE instance = 'launcher-1'"),
	'1', 'launcher-1: the step wrote once');
is( $node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE success), count(*) FILTER (WHERE NOT success AND error->>'sqlstate' NOT IN ('WF008', '57P01')) <= 0 AND count(*) FILTER (WHERE NOT success) <= 1 FROM workflows.attempts WHERE instance_id = 'launcher-1'"
	),
	'1|t',
	'launcher-1: one successful attempt; the stopped one at most recorded as interrupted');

run_instances('after-launcher', 3);

# ---- terminate every executor ----
$launcher = pids('workflows launcher');
$executors = pids('workflows executor');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'workflows executor'"
	),
	'2',
	'pg_terminate_backend on both executors');

$node->poll_query_until(
	'postgres', qq{
SELECT count(*) FILTER (WHERE backend_type = 'workflows launcher' AND pid = $launcher) || '/' ||
       count(*) FILTER (WHERE backend_type = 'workflows executor' AND pid NOT IN ($executors)) || '/' ||
       count(*) FILTER (WHERE backend_type IN ('workflows launcher', 'workflows executor'))
  FROM pg_stat_activity
}, '1/2/3')
  or die 'the executors did not come back';
ok(1, 'the launcher restarted both executors, and stayed');

run_instances('after-executors', 3);

# ---- cancel an executor in the middle of a step ----
$locker->query_safe('SELECT pg_advisory_lock(42)');

$node->safe_psql('postgres', "SELECT workflows.create('locked', '{}', 'cancel-1')");
$node->poll_query_until('postgres', $blocked_sql, '1')
  or die 'the executor did not block on the lock';
my $victim = $node->safe_psql('postgres', q{
SELECT pid FROM pg_stat_activity
 WHERE backend_type = 'workflows executor' AND wait_event = 'advisory'
});
is($node->safe_psql('postgres', "SELECT pg_cancel_backend($victim)"),
	't', "pg_cancel_backend on executor $victim");

# the attempt failed with 57014 and is recorded; the retry blocks again
$node->poll_query_until(
	'postgres', q{
SELECT count(*) FROM workflows.attempts
 WHERE instance_id = 'cancel-1' AND step_key = 'locked' AND attempt = 1
   AND NOT success AND error->>'sqlstate' = '57014'
}, '1')
  or die 'the cancelled attempt was not recorded';
ok(1, 'the cancelled attempt is recorded as failed with SQLSTATE 57014');
$node->poll_query_until('postgres', $blocked_sql, '1')
  or die 'the retry did not block on the lock again';
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM workflows.attempts WHERE instance_id = 'cancel-1'"),
	'1',
	'the retry is running (blocked) and has recorded nothing yet');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE pid = $victim AND backend_type = 'workflows executor'"
	),
	'1',
	'the cancelled executor is still running');

$locker->query_safe('SELECT pg_advisory_unlock(42)');

$node->poll_query_until(
	'postgres', q{
SELECT status IN ('complete', 'errored', 'terminated') FROM workflows.instances WHERE id = 'cancel-1'
})
  or die 'cancel-1 did not finish';

my $doc = decode_json(
	$node->safe_psql('postgres', "SELECT workflows.status('cancel-1')"));
is($doc->{status}, 'complete', 'cancel-1: complete');
is($doc->{output}, 'locked', 'cancel-1: output');
my @att = @{ $doc->{steps}[0]{attempts} };
is(scalar(@att), 2, 'cancel-1: two attempts');
is( join(',', map { ($_->{success} ? 'ok' : 'failed') . ':' . ($_->{error}{sqlstate} // '') } @att),
	'failed:57014,ok:',
	'cancel-1: a cancelled attempt (57014), then a success');
like($att[0]{error}{message}, qr/canceling statement due to user request/,
	'cancel-1: the cancelled attempt says why');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM effects WHERE instance = 'cancel-1'"),
	'1', 'cancel-1: the step wrote once');

# ---- terminate an executor in the middle of a step ----
$locker->query_safe('SELECT pg_advisory_lock(42)');
$node->safe_psql('postgres', "SELECT workflows.create('locked', '{}', 'terminate-1')");
$node->poll_query_until('postgres', $blocked_sql, '1')
  or die 'the executor did not block on the lock';
$victim = $node->safe_psql('postgres', q{
SELECT pid FROM pg_stat_activity
 WHERE backend_type = 'workflows executor' AND wait_event = 'advisory'
});
is($node->safe_psql('postgres', "SELECT pg_terminate_backend($victim)"),
	't', "pg_terminate_backend on executor $victim while it runs a step");

# an executor (the new one, or the one that was not terminated) takes the
# instance again and blocks in the step again
$node->poll_query_until(
	'postgres', qq{
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type = 'workflows executor' AND pid <> $victim
   AND wait_event = 'advisory'
}, '1')
  or die 'no executor took the step up again';
ok(1, 'another executor runs the step again');

$locker->query_safe('SELECT pg_advisory_unlock(42)');
$locker->quit;

$node->poll_query_until(
	'postgres', q{
SELECT status IN ('complete', 'errored', 'terminated') FROM workflows.instances WHERE id = 'terminate-1'
})
  or die 'terminate-1 did not finish';
is( $node->safe_psql('postgres',
		"SELECT status, output FROM workflows.instances WHERE id = 'terminate-1'"),
	'complete|"locked"', 'terminate-1: complete');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM effects WHERE instance = 'terminate-1'"),
	'1', 'terminate-1: the step wrote once');
is( $node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE success), count(*) FILTER (WHERE NOT success AND error->>'sqlstate' NOT IN ('WF008', '57P01')) <= 0 AND count(*) FILTER (WHERE NOT success) <= 1 FROM workflows.attempts WHERE instance_id = 'terminate-1'"
	),
	'1|t',
	'terminate-1: one successful attempt; the terminated one at most recorded as interrupted');

ok($node->poll_query_until('postgres', $workers_sql, '1/2'),
	'at the end: one launcher, two executors');

$node->stop;
note sprintf('003_kill_workers took %.1f s', time - $started);
done_testing();
